"""Train the UV position-map generator.

    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --arch light --steps 20000
    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --resume
    torchrun --nproc_per_node 8 trainer/train.py pretrain ...        (multi-GPU, DDP)
    python trainer/train.py cycle --init runs/light128 --data .cache/dataset --out runs/cycle [--preset d1]

``pretrain`` is the supervised stage: the weighted-mask loss (16:4:3:0) between predicted and
pseudo-labelled UV maps. Checkpoints are self-describing ({model_name, cfg, spec, state_dict,
step, optimizer, scheduler, best_val, rng}); ``last.pt`` is written every ``--ckpt-every`` steps
and on Ctrl-C, ``best.pt`` whenever the validation NME improves (Ctrl-C and SIGTERM save too);
``--resume`` continues from ``last.pt`` exactly (same data order, same schedule). Metrics go to ``metrics.jsonl`` (and
TensorBoard when it is installed).

``cycle`` fine-tunes a pretrained generator with the cycle-GAN stage of ``trainer/cycle.py``
(critics D1 on UV maps and D2 on landmarks, render and cycle-consistency losses; a seeded
fraction of the training samples is treated as unlabelled). It is single-process, and keeps the
same checkpoint, resume, progress, TensorBoard and SIGTERM conventions; its checkpoints also hold
the critics and their optimiser and export with ``trainer/export.py`` like pretrain's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import ModelSpec, default_layout
from streamcap.engine.nets import DEFAULT_INPUT, build_generator
from trainer.cycle import PRESETS, CycleModels, UVTables, config_fields, cycle_step, discriminator_step, preset
from trainer.data.dataset import PosmapDataset, cache_meta, load_cache
from trainer.losses import weight_mask_tensor, weighted_position_loss
from trainer.models.discriminators import LandmarkDiscriminator, UVDiscriminator


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


@dataclass
class PretrainConfig(RunConfig):
    out: str = "runs/pretrain"
    steps: int = 20000
    arch: str = "light"
    input_size: int = 0  # 0: the arch's default
    width: float = 1.0
    extra: dict = field(default_factory=dict)


def add_run_flags(p: argparse.ArgumentParser, d: RunConfig) -> None:
    """One flag per RunConfig field (``--val-every``...), defaults from the stage's config ``d``."""
    for f in fields(RunConfig):
        flag, default = "--" + f.name.replace("_", "-"), getattr(d, f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action="store_true")
        else:
            p.add_argument(flag, type=type(default), default=default)


def quiet_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which saves a checkpoint and
    then shuts them down; a worker killed first would make the main process die without saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StepSampler(Sampler[int]):
    """Deterministic infinite index stream: epoch e is a seeded permutation; starts at any step,
    so a resumed run sees exactly the data it would have seen. Ranks take interleaved slices."""

    def __init__(self, n: int, batch: int, seed: int, start_step: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.batch, self.seed, self.start = n, batch, seed, start_step
        self.rank, self.world = rank, world

    def __iter__(self):
        pos = self.start * self.batch * self.world
        while True:
            epoch, off = divmod(pos, self.n)
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            for p in range(off, self.n):
                if (p - off) % self.world == self.rank:
                    yield int(perm[p])
            pos = (epoch + 1) * self.n

    def __len__(self) -> int:  # effectively infinite
        return 2**62


def cosine_lr(step: int, cfg: RunConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def validate(model: torch.nn.Module, ds: PosmapDataset, kpt: torch.Tensor, device: torch.device,
             limit: int = 0, batch: int = 32) -> dict[str, float]:
    """NME of the 68 landmarks read from the UV map (2D, and 3D after removing mean depth),
    normalised by sqrt(w*h) of the label's landmark box: the AFLW2000-3D measure."""
    model.eval()
    n = len(ds) if not limit else min(limit, len(ds))
    e2, e3 = [], []
    for s in range(0, n, batch):
        xs, ys = zip(*(ds[i] for i in range(s, min(n, s + batch))))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        p = model(x).flatten(2)[:, :, kpt].transpose(1, 2).float()  # (B, 68, 3)
        g = y.flatten(2)[:, :, kpt].transpose(1, 2)
        wh = g[..., :2].amax(1) - g[..., :2].amin(1)
        norm = torch.sqrt(wh[:, 0] * wh[:, 1])
        e2.append((torch.linalg.vector_norm(p[..., :2] - g[..., :2], dim=-1).mean(1) / norm).cpu())
        pz, gz = p.clone(), g.clone()
        pz[..., 2] -= pz[..., 2].mean(1, keepdim=True)
        gz[..., 2] -= gz[..., 2].mean(1, keepdim=True)
        e3.append((torch.linalg.vector_norm(pz - gz, dim=-1).mean(1) / norm).cpu())
    model.train()
    return {"val_nme2d": float(torch.cat(e2).mean()), "val_nme3d": float(torch.cat(e3).mean()), "val_n": n}


def stop_interrupted(checkpoint: Callable[[Path], None], last: Path, bar: object, step: int) -> NoReturn:
    """Ctrl-C / SIGTERM in any stage: save ``last`` so ``--resume`` continues, say so, exit 130."""
    checkpoint(last)
    bar.close()  # type: ignore[attr-defined]
    print(f"interrupted at step {step}: saved {last} (resume with --resume)", file=sys.stderr)
    raise SystemExit(130)


def validate_and_log(model: torch.nn.Module, ds: PosmapDataset, kpt: torch.Tensor, device: torch.device,
                     limit: int, step: int, log: IO[str], tb: object | None) -> dict[str, float]:
    """validate() at ``step``, recorded where every stage records it: metrics.jsonl, TensorBoard, the bar."""
    from tqdm import tqdm

    result = validate(model, ds, kpt, device, limit)
    result["step"] = step
    log.write(json.dumps(result) + "\n")
    log.flush()
    if tb is not None:
        tb.add_scalar("val/nme2d", result["val_nme2d"], step)
        tb.add_scalar("val/nme3d", result["val_nme3d"], step)
    tqdm.write(f"step {step}: val NME 2D {result['val_nme2d'] * 100:.2f}%  3D {result['val_nme3d'] * 100:.2f}%")
    return result


def pretrain(cfg: PretrainConfig) -> dict:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
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
        model.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, best = int(ck["step"]), float(ck.get("best_val", best))
        torch.set_rng_state(ck["rng"])
        if rank == 0:
            print(f"resumed from {last} at step {step}", flush=True)

    meta = cache_meta(Path(cfg.data))
    train_data = load_cache(Path(cfg.data), "train")
    val_data = load_cache(Path(cfg.data), "val")
    ds = PosmapDataset(train_data, input_size, meta["context"], train=True, seed=cfg.seed,
                       mean=spec.mean, std=spec.std, output_scale=spec.output_scale)
    vds = PosmapDataset(val_data, input_size, meta["context"], train=False,
                        mean=spec.mean, std=spec.std, output_scale=spec.output_scale)
    layout = default_layout()
    weight = weight_mask_tensor(layout.weight_mask).to(device)
    kpt = torch.as_tensor(layout.kpt_flat, device=device)
    sampler = StepSampler(len(ds), cfg.batch, cfg.seed, step, rank, world)
    loader = DataLoader(ds, batch_size=cfg.batch, sampler=sampler, num_workers=cfg.workers,
                        persistent_workers=cfg.workers > 0, drop_last=True, worker_init_fn=quiet_worker)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    use_amp = device.type == "cuda"
    log = open(out / "metrics.jsonl", "a")
    tb = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tb"))
        except Exception:  # tensorboard is optional
            tb = None

    def checkpoint(path: Path, extra: dict | None = None) -> None:
        if rank != 0:
            return
        save_atomic({"model_name": "streamcap-generator", "cfg": gen_cfg, "spec": asdict(spec),
                     "train_cfg": asdict(cfg), "state_dict": model.state_dict(), "step": step,
                     "optimizer": opt.state_dict(), "best_val": best, "rng": torch.get_rng_state(),
                     "data": {"train": len(ds), "val": len(vds), "meta": meta}, **(extra or {})}, path)

    from tqdm import tqdm

    def on_term(signum: int, frame: object) -> None:  # kill/timeout: same clean stop as Ctrl-C
        raise KeyboardInterrupt

    if rank == 0:
        signal.signal(signal.SIGTERM, on_term)
    bar = tqdm(total=cfg.steps, initial=step, disable=rank != 0, desc="pretrain", unit="step", dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    it = iter(loader)
    result: dict = {}
    try:
        while step < cfg.steps:
            x, y = next(it)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(step, cfg)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                pred = net(x)
            loss = weighted_position_loss(pred.float(), y, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += x.shape[0] * world
            bar.update(1)
            if step % cfg.log_every == 0 and rank == 0:
                sps = seen / (time.perf_counter() - t0)
                rec = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"],
                       "samples_per_s": sps}
                bar.set_postfix(loss=f"{float(loss):.4f}", sps=f"{sps:.1f}")
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if tb:
                    tb.add_scalar("train/loss", float(loss), step)
            if step % cfg.ckpt_every == 0:
                checkpoint(last)
            if (step % cfg.val_every == 0 or step == cfg.steps) and rank == 0:
                result = validate_and_log(model, vds, kpt, device, cfg.val_limit, step, log, tb)
                if result["val_nme2d"] < best:
                    best = result["val_nme2d"]
                    checkpoint(out / "best.pt", {"val": result})
    except KeyboardInterrupt:
        stop_interrupted(checkpoint, last, bar, step)
    checkpoint(last, {"val": result})
    bar.close()
    log.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


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


def load_generator_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A generator and its checkpoint from a run folder (best.pt, else last.pt) or a file."""
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    ck = torch.load(path, map_location=device, weights_only=False)
    if ck.get("model_name") != "streamcap-generator":
        raise SystemExit(f"{path} is not a streamcap generator checkpoint")
    model = build_generator(**ck["cfg"]).to(device)
    model.load_state_dict(ck["state_dict"])
    return model, ck


def cycle(cfg: CycleTrainConfig) -> dict:
    """Run the cycle-GAN stage (single process); checkpoints are exportable by trainer/export.py."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
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
    if resuming:
        opt.load_state_dict(ck0["optimizer"])
        for name, net in (("d1", d1), ("d2", d2)):
            if net is not None and ck0.get(name) is not None:
                net.load_state_dict(ck0[name])
        if opt_d is not None and ck0.get("optimizer_d") is not None:
            opt_d.load_state_dict(ck0["optimizer_d"])
        step, best = int(ck0["step"]), float(ck0.get("best_val", best))
        torch.set_rng_state(ck0["rng"])
        print(f"resumed from {last} at step {step}", flush=True)

    meta = cache_meta(Path(cfg.data))
    ds = PosmapDataset(load_cache(Path(cfg.data), "train"), spec.input_size, meta["context"], train=True,
                       seed=cfg.seed, mean=spec.mean, std=spec.std, output_scale=spec.output_scale)
    vds = PosmapDataset(load_cache(Path(cfg.data), "val"), spec.input_size, meta["context"], train=False,
                        mean=spec.mean, std=spec.std, output_scale=spec.output_scale)
    cds = LabelDropDataset(ds, cfg.unlabelled_frac, cfg.seed)
    kpt = torch.as_tensor(layout.kpt_flat, device=device)
    loader = DataLoader(cds, batch_size=cfg.batch, sampler=StepSampler(len(cds), cfg.batch, cfg.seed, step),
                        num_workers=cfg.workers, persistent_workers=cfg.workers > 0, drop_last=True,
                        worker_init_fn=quiet_worker)
    log = open(out / "metrics.jsonl", "a")
    try:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tb"))
    except Exception:  # tensorboard is optional
        tb = None

    def checkpoint(path: Path, extra: dict | None = None) -> None:
        save_atomic({"model_name": "streamcap-generator", "cfg": gen_cfg, "spec": asdict(spec),
                     "train_cfg": asdict(cfg), "cycle_cfg": asdict(ccfg), "stage": "cycle",
                     "init": ck0.get("init", str(cfg.init)), "state_dict": model.state_dict(), "step": step,
                     "optimizer": opt.state_dict(), "d1": d1.state_dict() if d1 is not None else None,
                     "d2": d2.state_dict() if d2 is not None else None,
                     "optimizer_d": opt_d.state_dict() if opt_d is not None else None, "best_val": best,
                     "rng": torch.get_rng_state(),
                     "data": {"train": len(ds), "val": len(vds), "labelled": int(cds.labelled.sum()), "meta": meta},
                     **(extra or {})}, path)

    from tqdm import tqdm

    def on_term(signum: int, frame: object) -> None:  # kill/timeout: same clean stop as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"cycle[{cfg.preset}]", unit="step", dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    it = iter(loader)
    result: dict = {}
    try:
        while step < cfg.steps:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
            lr = cosine_lr(step, cfg)
            for g in opt.param_groups:
                g["lr"] = lr
            if opt_d is not None:
                for g in opt_d.param_groups:
                    g["lr"] = cfg.lr_d * lr / cfg.lr
            keep: dict[str, torch.Tensor] = {}
            losses = cycle_step(batch, models, ccfg, keep)
            opt.zero_grad(set_to_none=True)
            # a batch can carry nothing to learn from under a preset (e.g. 'pretrain' on a batch
            # whose samples are all unlabelled): skip the update instead of failing
            if losses["total"].requires_grad:
                losses["total"].backward()
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
            dlosses: dict[str, torch.Tensor] = {}
            if opt_d is not None:
                dlosses = discriminator_step(batch, models, ccfg, keep)
                opt_d.zero_grad(set_to_none=True)
                if dlosses["total"].requires_grad:
                    dlosses["total"].backward()
                    opt_d.step()
            step += 1
            seen += batch["image"].shape[0]
            bar.update(1)
            if step % cfg.log_every == 0:
                sps = seen / (time.perf_counter() - t0)
                rec = {"step": step, "lr": lr, "samples_per_s": sps,
                       **{f"g_{k}": float(v.detach()) for k, v in losses.items()},
                       **{f"d_{k}": float(v.detach()) for k, v in dlosses.items()}}
                rec["loss"] = rec["g_total"]
                bar.set_postfix(loss=f"{rec['g_total']:.4f}", sup=f"{rec['g_sup']:.4f}", sps=f"{sps:.1f}")
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if tb:
                    for k, v in rec.items():
                        if k.startswith(("g_", "d_")):
                            tb.add_scalar(("cycle/" if k[0] == "g" else "disc/") + k[2:], v, step)
            if step % cfg.ckpt_every == 0:
                checkpoint(last)
            if step % cfg.val_every == 0 or step == cfg.steps:
                result = validate_and_log(model, vds, kpt, device, cfg.val_limit, step, log, tb)
                if result["val_nme2d"] < best:
                    best = result["val_nme2d"]
                    checkpoint(out / "best.pt", {"val": result})
    except KeyboardInterrupt:
        stop_interrupted(checkpoint, last, bar, step)
    checkpoint(last, {"val": result})
    bar.close()
    log.close()
    if tb:
        tb.close()
    return result


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
    for name in ("d1_width", "d1_size", "d2_hidden"):
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
    p.add_argument("--arch", choices=("light", "prnet"), default=d.arch)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--width", type=float, default=d.width)
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
