"""Train the UV position-map generator.

    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --arch light --steps 20000
    python trainer/train.py pretrain --data .cache/dataset --out runs/light128 --resume
    torchrun --nproc_per_node 8 trainer/train.py pretrain ...        (multi-GPU, DDP)

``pretrain`` is the supervised stage: the weighted-mask loss (16:4:3:0) between predicted and
pseudo-labelled UV maps. Checkpoints are self-describing ({model_name, cfg, spec, state_dict,
step, optimizer, scheduler, best_val, rng}); ``last.pt`` is written every ``--ckpt-every`` steps
and on Ctrl-C, ``best.pt`` whenever the validation NME improves (Ctrl-C and SIGTERM save too); ``--resume`` continues from
``last.pt`` exactly (same data order, same schedule). Metrics go to ``metrics.jsonl`` (and
TensorBoard when it is installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import ModelSpec, default_layout
from streamcap.engine.nets import DEFAULT_INPUT, build_generator
from trainer.data.dataset import PosmapDataset, cache_meta, load_cache
from trainer.losses import weight_mask_tensor, weighted_position_loss


@dataclass
class PretrainConfig:
    data: str = ".cache/dataset"
    out: str = "runs/pretrain"
    arch: str = "light"
    input_size: int = 0  # 0: the arch's default
    width: float = 1.0
    steps: int = 20000
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
    extra: dict = field(default_factory=dict)


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


def cosine_lr(step: int, cfg: PretrainConfig) -> float:
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
                        persistent_workers=cfg.workers > 0, drop_last=True)
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
                rec = {"step": step, "loss": float(loss.detach()), "lr": opt.param_groups[0]["lr"], "samples_per_s": sps}
                bar.set_postfix(loss=f"{float(loss):.4f}", sps=f"{sps:.1f}")
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if tb:
                    tb.add_scalar("train/loss", float(loss), step)
            if step % cfg.ckpt_every == 0:
                checkpoint(last)
            if (step % cfg.val_every == 0 or step == cfg.steps) and rank == 0:
                result = validate(model, vds, kpt, device, cfg.val_limit)
                result["step"] = step
                log.write(json.dumps(result) + "\n")
                log.flush()
                if tb:
                    tb.add_scalar("val/nme2d", result["val_nme2d"], step)
                    tb.add_scalar("val/nme3d", result["val_nme3d"], step)
                tqdm.write(f"step {step}: val NME 2D {result['val_nme2d'] * 100:.2f}%  3D {result['val_nme3d'] * 100:.2f}%")
                if result["val_nme2d"] < best:
                    best = result["val_nme2d"]
                    checkpoint(out / "best.pt", {"val": result})
    except KeyboardInterrupt:
        checkpoint(last)
        bar.close()
        print(f"interrupted at step {step}: saved {last} (resume with --resume)", file=sys.stderr)
        raise SystemExit(130)
    checkpoint(last, {"val": result})
    bar.close()
    log.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return result


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    p = sub.add_parser("pretrain", help="supervised weighted-mask training of the generator")
    d = PretrainConfig()
    p.add_argument("--data", default=d.data)
    p.add_argument("--out", default=d.out)
    p.add_argument("--arch", choices=("light", "prnet"), default=d.arch)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--width", type=float, default=d.width)
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--val-limit", type=int, default=d.val_limit)
    p.add_argument("--resume", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "pretrain":
        fields = PretrainConfig.__dataclass_fields__
        cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        res = pretrain(cfg)
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
