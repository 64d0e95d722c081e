"""Train the UV position-map generator.

    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --arch light --steps 20000
    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --resume
    torchrun --nproc_per_node 8 trainer/train.py pretrain|cycle ...  (multi-GPU data parallel)
    python trainer/train.py cycle --init runs/light128 --data .cache/dataset --out runs/cycle [--preset d1]

``pretrain`` is the supervised stage: the weighted-mask loss (16:4:3:0) between predicted and
pseudo-labelled UV maps. Checkpoints are self-describing ({model_name, cfg, spec, state_dict,
step, optimizer, scheduler, best_val, rng}); ``last.pt`` is written every ``--ckpt-every`` steps
and on Ctrl-C, ``best.pt`` whenever the validation NME improves (Ctrl-C and SIGTERM save too);
``--resume`` continues from ``last.pt`` exactly (same data order, same schedule). Metrics go to ``metrics.jsonl`` (and
TensorBoard when it is installed).

``cycle`` fine-tunes a pretrained generator with the cycle-GAN stage of ``trainer/cycle.py``
(critics D1 on UV maps and D2 on landmarks, render and cycle-consistency losses; a seeded
fraction of the training samples is treated as unlabelled). It keeps pretrain's checkpoint,
resume, progress, TensorBoard, SIGTERM and torchrun conventions (``trainer/runloop.py`` holds
them for both), adds sample images (``trainer/preview.py``) every ``--image-every`` steps, and its
checkpoints also hold the critics and their optimiser and export with ``trainer/export.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import ModelSpec, default_layout
from streamcap.engine.nets import ARCHS, DEFAULT_INPUT, build_generator
from trainer.cycle import PRESETS, CycleModels, UVTables, config_fields, cycle_step, discriminator_step, preset
from trainer.data.dataset import PosmapDataset, cache_meta, corpus_datasets, is_corpus, load_cache
from trainer.losses import opening_loss, weight_mask_tensor, weighted_position_loss
from trainer.models.discriminators import LandmarkDiscriminator, UVDiscriminator
from trainer.preview import preview
from trainer.runloop import (
    RunLog,
    StepSampler,
    any_rank,
    average_gradients,
    cosine_lr,
    init_dist,
    load_generator_checkpoint,
    quiet_worker,
    resume_from,
    run_steps,
    save_atomic,
    validate_and_log,
)


@dataclass
class RunConfig:
    """What every stage shares: data, schedule, checkpoints, logging. Stages add their own fields."""

    data: str = ".cache/dataset"
    out: str = "runs/run"
    steps: int = 10000
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 300
    seed: int = 0
    workers: int = 1
    threads: int = 0
    val_every: int = 1000
    ckpt_every: int = 250
    log_every: int = 20
    val_limit: int = 0
    resume: bool = False
    fused: str = ""  # fuse_corpus.py's side-car folder: train on the fused labels (corpus caches only)


@dataclass
class PretrainConfig(RunConfig):
    out: str = "runs/pretrain"
    steps: int = 20000
    arch: str = "light"
    input_size: int = 0  # 0: the arch's default
    width: float = 1.0
    pose_repeat: int = 1  # training samples with |yaw| >= pose_min are seen this many times per epoch
    pose_min: float = 30.0
    opening_weight: float = 0.0  # weight of the lip/eyelid gap term (losses.opening_loss); 0: off
    extra: dict = field(default_factory=dict)


def add_run_flags(p: argparse.ArgumentParser, d: RunConfig) -> None:
    """One flag per RunConfig field (``--val-every``...), defaults from the stage's config ``d``."""
    for f in fields(RunConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(d, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default), default=default)


def train_val_datasets(data: Path, spec: ModelSpec, seed: int,
                       fused: str = "") -> tuple[PosmapDataset, PosmapDataset, dict]:
    """The cache's training split (augmented, seeded) and held-out split, cropped for ``spec``;
    ``fused``: a label_corpus.py cache's fused side-cars (fuse_corpus.py)."""
    common = {"mean": spec.mean, "std": spec.std, "output_scale": spec.output_scale}
    if is_corpus(data):
        layout = default_layout()
        try:
            return corpus_datasets(data, spec.input_size, layout.face_ind, layout.size, seed,
                                   fused=Path(fused) if fused else None, kpt_vertex=layout.kpt_vertex, **common)
        except (FileNotFoundError, ValueError) as e:  # missing or stale side-cars: one line, exit 2
            print(f"train: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if fused:
        print(f"train: --fused needs a label_corpus.py cache, not {data}", file=sys.stderr)
        raise SystemExit(2)
    meta = cache_meta(data)
    ds = PosmapDataset(load_cache(data, "train"), spec.input_size, meta["context"], train=True, seed=seed, **common)
    vds = PosmapDataset(load_cache(data, "val"), spec.input_size, meta["context"], train=False, **common)
    return ds, vds, meta


def repeat_large_poses(ds, repeat: int, min_yaw: float):
    """``ds`` with every sample of |yaw| >= ``min_yaw`` degrees listed ``repeat`` times: large poses
    are rare in photos (about 5% of the corpus beyond 45 degrees) and the hardest to get right."""
    yaw = getattr(ds, "yaw", None)
    if repeat <= 1 or yaw is None:
        return ds
    large = np.flatnonzero(np.abs(np.asarray(yaw, np.float64)) >= min_yaw)
    idx = np.concatenate([np.arange(len(ds))] + [large] * (repeat - 1))
    sub = torch.utils.data.Subset(ds, idx.tolist())
    sub.yaw = np.asarray(yaw)[idx]
    return sub


def pretrain(cfg: PretrainConfig) -> dict:
    """The supervised stage: weighted-mask loss against the labels (DDP under torchrun)."""
    dist = init_dist(cfg.threads)
    device = dist.device
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    input_size = cfg.input_size or DEFAULT_INPUT[cfg.arch]
    spec = ModelSpec(arch=cfg.arch, input_size=input_size)
    gen_cfg = {"arch": cfg.arch, "input_size": input_size, "width": cfg.width}
    model = build_generator(**gen_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step, best = 0, float("inf")
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        ck = torch.load(last, map_location=device, weights_only=False)
        step, best = resume_from(ck, {"state_dict": model, "optimizer": opt}, last, dist.main)

    ds, vds, meta = train_val_datasets(Path(cfg.data), spec, cfg.seed, cfg.fused)
    ds = repeat_large_poses(ds, cfg.pose_repeat, cfg.pose_min)
    layout = default_layout()
    weight = weight_mask_tensor(layout.weight_mask).to(device)
    kpt = torch.as_tensor(layout.kpt_flat, device=device)
    sampler = StepSampler(len(ds), cfg.batch, cfg.seed, step, dist.rank, dist.world)
    loader = DataLoader(ds, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
                        persistent_workers=cfg.workers > 0, drop_last=True, worker_init_fn=quiet_worker)
    net = torch.nn.parallel.DistributedDataParallel(model) if dist.world > 1 else model
    use_amp = device.type == "cuda"

    def checkpoint(path: Path, extra: dict | None = None) -> None:
        if dist.main:
            save_atomic({"model_name": "streamcap-generator", "cfg": gen_cfg, "spec": asdict(spec),
                         "train_cfg": asdict(cfg), "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                         "rng": torch.get_rng_state(), "data": {"train": len(ds), "val": len(vds), "meta": meta},
                         **(extra or {})}, path)

    log = RunLog(out, cfg.steps, step, "pretrain", dist.main)
    start, t0, it = step, time.perf_counter(), iter(loader)

    def one_step(step: int) -> None:
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            pred = net(x)
        loss = weighted_position_loss(pred.float(), y, weight)
        if cfg.opening_weight:
            loss = loss + cfg.opening_weight * opening_loss(pred.float(), y, kpt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.log_every == 0:
            sps = (step + 1 - start) * cfg.batch * dist.world / (time.perf_counter() - t0)
            log.bar.set_postfix(loss=f"{float(loss.detach()):.4f}", sps=f"{sps:.1f}")
            log.record({"step": step + 1, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                        "samples_per_s": sps}, {"train/loss": float(loss.detach())}, step + 1)

    return run_steps(one_step, step, cfg, out, checkpoint, best,
                     lambda s: validate_and_log(model, vds, kpt, device, cfg.val_limit, s, log), log, dist)


# --- cycle-GAN stage (issue #4) ---------------------------------------------------------------


@dataclass
class CycleTrainConfig(RunConfig):
    """The ``cycle`` stage: fine-tune a pretrained generator with critics and render cycles.

    ``loss`` holds CycleConfig overrides on top of ``preset`` (the ablation column).
    """

    out: str = "runs/cycle"
    lr: float = 2e-4
    warmup: int = 200
    init: str = "runs/pretrain"  # pretrain run folder (best.pt, else last.pt) or a checkpoint file
    preset: str = "render"
    lr_d: float = 2e-4
    clip: float = 10.0  # generator gradient-norm clip (0: off)
    d1_width: int = 32
    d1_size: int = 128  # D1 sees the UV map resized to this
    d2_hidden: int = 256
    unlabelled_frac: float = 0.5  # training samples whose labels are hidden (fixed per sample)
    image_every: int = 500  # TensorBoard sample images (crop, mesh, re-render, novel view); 0: off
    loss: dict = field(default_factory=dict)


class LabelDropDataset(torch.utils.data.Dataset):
    """Wraps PosmapDataset into cycle batches: {image, target, labelled}. A fixed, seeded subset
    of samples is unlabelled, so the cycle and adversarial terms see frames without labels."""

    def __init__(self, ds: PosmapDataset, unlabelled_frac: float, seed: int) -> None:
        self.ds = ds
        rng = np.random.default_rng([seed, 4])
        self.labelled = rng.random(len(ds)) >= unlabelled_frac

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        x, y = self.ds[idx]
        return {"image": x, "target": y, "labelled": torch.tensor(bool(self.labelled[idx]))}


def cycle(cfg: CycleTrainConfig) -> dict:
    """Run the cycle-GAN stage; checkpoints are exportable by trainer/export.py. Under torchrun
    each rank takes its slice of every batch and the generator's and critics' gradients are
    averaged across ranks before each of their updates."""
    dist = init_dist(cfg.threads)
    device = dist.device
    torch.manual_seed(cfg.seed)  # same seed on every rank: the critics start identical
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    resuming = cfg.resume and last.is_file()
    model, ck0 = load_generator_checkpoint(last if resuming else Path(cfg.init), device)
    gen_cfg, spec = dict(ck0["cfg"]), ModelSpec(**ck0["spec"])
    ccfg = preset(cfg.preset)
    ccfg = replace(ccfg, input_size=spec.input_size, output_scale=spec.output_scale, amp=device.type == "cuda",
                   **cfg.loss)
    layout = default_layout()
    tables = UVTables(layout, ccfg.mesh_stride).to(device)
    d1 = UVDiscriminator(cfg.d1_width, ccfg.d1_condition, cfg.d1_size).to(device) if ccfg.w_adv_uv > 0 else None
    d2 = LandmarkDiscriminator(hidden=cfg.d2_hidden).to(device) if ccfg.w_adv_lmk > 0 else None
    models = CycleModels(model, d1, d2, tables)
    critics = [p for d in (d1, d2) if d is not None for p in d.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critics, lr=cfg.lr_d, betas=(0.5, 0.999)) if critics else None
    step, best = 0, float("inf")
    if resuming:  # the generator's weights came with ck0 already
        step, best = resume_from(ck0, {"optimizer": opt, "d1": d1, "d2": d2, "optimizer_d": opt_d}, last, dist.main)

    ds, vds, meta = train_val_datasets(Path(cfg.data), spec, cfg.seed, cfg.fused)
    cds = LabelDropDataset(ds, cfg.unlabelled_frac, cfg.seed)
    kpt = torch.as_tensor(layout.kpt_flat, device=device)
    sampler = StepSampler(len(cds), cfg.batch, cfg.seed, step, dist.rank, dist.world)
    loader = DataLoader(cds, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
                        persistent_workers=cfg.workers > 0, drop_last=True, worker_init_fn=quiet_worker)

    def checkpoint(path: Path, extra: dict | None = None) -> None:
        if not dist.main:
            return
        save_atomic({"model_name": "streamcap-generator", "cfg": gen_cfg, "spec": asdict(spec),
                     "train_cfg": asdict(cfg), "cycle_cfg": asdict(ccfg), "stage": "cycle",
                     "init": ck0.get("init", str(cfg.init)), "state_dict": model.state_dict(),
                     "optimizer": opt.state_dict(), "d1": d1.state_dict() if d1 is not None else None,
                     "d2": d2.state_dict() if d2 is not None else None,
                     "optimizer_d": opt_d.state_dict() if opt_d is not None else None,
                     "rng": torch.get_rng_state(), "world": dist.world,
                     "data": {"train": len(ds), "val": len(vds), "labelled": int(cds.labelled.sum()), "meta": meta},
                     **(extra or {})}, path)

    def update(loss: torch.Tensor, optimiser: torch.optim.Optimizer, params: list, clip: float = 0.0) -> None:
        # a batch can carry nothing to learn from under a preset (e.g. 'pretrain' on a batch whose
        # samples are all unlabelled): skip the update instead of failing, on every rank alike
        has_grad = loss.requires_grad
        if not any_rank(has_grad, dist):
            return
        optimiser.zero_grad(set_to_none=True)
        if has_grad:
            loss.backward()
        average_gradients(params, dist.world)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimiser.step()

    log = RunLog(out, cfg.steps, step, f"cycle[{cfg.preset}]", dist.main)
    gen_params = list(model.parameters())
    start, t0, it = step, time.perf_counter(), iter(loader)

    def one_step(step: int) -> None:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
        lr = cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        if opt_d is not None:
            for g in opt_d.param_groups:
                g["lr"] = cfg.lr_d * lr / cfg.lr
        keep: dict[str, torch.Tensor] = {}
        losses = cycle_step(batch, models, ccfg, keep)
        update(losses["total"], opt, gen_params, cfg.clip)
        dlosses: dict[str, torch.Tensor] = {}
        if opt_d is not None:
            dlosses = discriminator_step(batch, models, ccfg, keep)
            update(dlosses["total"], opt_d, critics)
        done = step + 1
        if done % cfg.log_every == 0:
            sps = (done - start) * cfg.batch * dist.world / (time.perf_counter() - t0)
            rec = {"step": done, "lr": lr, "samples_per_s": sps,
                   **{f"g_{k}": float(v.detach()) for k, v in losses.items()},
                   **{f"d_{k}": float(v.detach()) for k, v in dlosses.items()}}
            rec["loss"] = rec["g_total"]
            log.bar.set_postfix(loss=f"{rec['g_total']:.4f}", sup=f"{rec['g_sup']:.4f}", sps=f"{sps:.1f}")
            log.record(rec, {("cycle/" if k[0] == "g" else "disc/") + k[2:]: v for k, v in rec.items()
                             if k.startswith(("g_", "d_"))}, done)
        if cfg.image_every and done % cfg.image_every == 0 and log.tb is not None:
            log.image("samples/crop|mesh|rerender|novel_view",
                      preview(batch["image"], models, ccfg, spec.mean, spec.std), done)

    return run_steps(one_step, step, cfg, out, checkpoint, best,
                     lambda s: validate_and_log(model, vds, kpt, device, cfg.val_limit, s, log), log, dist)


def _flag_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def add_cycle_parser(sub: argparse._SubParsersAction) -> None:
    """The ``cycle`` subcommand: run options, then one flag per CycleConfig field (``--w-photo``,
    ``--cycle-yaw-deg``...) overriding the preset."""
    p = sub.add_parser("cycle", help="cycle-GAN stage on a pretrained generator (D1, D2, render cycles)")
    d = CycleTrainConfig()
    p.add_argument("--init", default=d.init, help="pretrain run folder or checkpoint")
    p.add_argument("--preset", choices=tuple(PRESETS), default=d.preset,
                   help="ablation column: which terms are on (see trainer/cycle.py)")
    add_run_flags(p, d)
    for name in ("d1_width", "d1_size", "d2_hidden", "image_every"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr_d", "clip", "unlabelled_frac"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    g = p.add_argument_group("loss weights and cycle knobs (default: the preset's)")
    for name, typ, default in config_fields():
        if name in ("input_size", "output_scale", "amp"):  # from the checkpoint's spec / the device
            continue
        g.add_argument("--" + name.replace("_", "-"), dest=f"loss_{name}", default=None, metavar=typ.__name__.upper(),
                       type=_flag_bool if typ is bool else typ, help=f"default {default}")


def cycle_config_from_args(args: argparse.Namespace) -> CycleTrainConfig:
    values = vars(args)
    loss = {k[5:]: v for k, v in values.items() if k.startswith("loss_") and v is not None}
    known = CycleTrainConfig.__dataclass_fields__
    return CycleTrainConfig(**{k: v for k, v in values.items() if k in known and k != "loss"}, loss=loss)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pretrain", help="supervised weighted-mask training of the generator")
    d = PretrainConfig()
    add_run_flags(p, d)
    p.add_argument("--arch", choices=tuple(ARCHS), default=d.arch)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--pose-repeat", type=int, default=d.pose_repeat,
                   help="list training samples with |yaw| >= --pose-min this many times per epoch")
    p.add_argument("--pose-min", type=float, default=d.pose_min, help="degrees (default %(default)s)")
    p.add_argument("--opening-weight", type=float, default=d.opening_weight,
                   help="weight of the inner-lip and eyelid gap loss (0: off)")
    add_cycle_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "pretrain":
        known = PretrainConfig.__dataclass_fields__
        cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k in known})
        res = pretrain(cfg)
        print(json.dumps(res))
    elif args.stage == "cycle":
        res = cycle(cycle_config_from_args(args))
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
