"""What every training stage shares around its step: processes, data order, schedule, logs,
checkpoints and the periodic validation.

Kept apart from ``train.py`` so that the stages there read as their losses and updates only,
and so that the ablation and export scripts can load and validate a generator without the
training loops.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Sampler

from streamcap.engine.nets import build_generator
from trainer.data.dataset import PosmapDataset

Save = Callable[[Path, "dict | None"], None]


@dataclass
class Dist:
    """Where this process stands in a ``torchrun`` job; world 1 is a plain single process."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist(threads: int = 0) -> Dist:
    """Read torchrun's WORLD_SIZE/RANK/LOCAL_RANK, join the process group (NCCL on GPUs, gloo on
    CPUs) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device(f"cuda:{local}")
    else:
        device = torch.device("cpu")
    if threads:
        torch.set_num_threads(threads)
    return Dist(rank, world, device)


def close_dist(dist: Dist) -> None:
    if dist.world > 1 and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def any_rank(flag: bool, dist: Dist) -> bool:
    """True on every rank when it is true on any: ranks must agree whether to join an update."""
    if dist.world <= 1:
        return flag
    t = torch.tensor([float(flag)], device=dist.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item())


def average_gradients(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """Data parallelism for nets updated one after another in a step (the generator, then the
    critics), where a DDP wrapper's one-forward-one-backward contract does not hold: one flat
    all-reduce of every rank's gradients, divided by the world size. A missing gradient counts
    as zeros, so every rank joins the same collective."""
    if world <= 1:
        return
    params = list(params)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    torch.distributed.all_reduce(flat)
    flat /= world
    off = 0
    for p in params:
        p.grad = flat[off:off + p.numel()].view_as(p)
        off += p.numel()


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


def quiet_worker(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process, which saves a checkpoint and
    then shuts them down; a worker killed first would make the main process die without saving."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def cosine_lr(step: int, lr: float, warmup: int, steps: int) -> float:
    """Linear warm-up, then cosine decay to 2% of ``lr`` at ``steps``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def save_atomic(obj: dict, path: Path) -> None:
    """Write then rename: a kill mid-save never leaves a truncated checkpoint behind."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


def resume_from(ck: dict, parts: dict[str, "torch.nn.Module | torch.optim.Optimizer | None"], last: Path,
                main: bool = True) -> tuple[int, float]:
    """Load each named state of a ``last.pt`` checkpoint into its module or optimiser (absent
    ones, e.g. a critic the preset does not use, are skipped), restore the RNG, and return
    (step, best validation NME) so the loop continues exactly where it stopped."""
    for key, obj in parts.items():
        if obj is not None and ck.get(key) is not None:
            obj.load_state_dict(ck[key])
    torch.set_rng_state(ck["rng"])
    step = int(ck["step"])
    if main:
        print(f"resumed from {last} at step {step}", flush=True)
    return step, float(ck.get("best_val", float("inf")))


@torch.no_grad()
def landmark_errors(model: torch.nn.Module, ds: PosmapDataset, kpt: torch.Tensor, device: torch.device,
                    limit: int = 0, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample NME of the 68 landmarks read from the UV map, 2D and 3D (after removing each
    set's mean depth), normalised by sqrt(w*h) of the label's landmark box: the AFLW2000-3D measure."""
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
    return torch.cat(e2).numpy(), torch.cat(e3).numpy()


def validate(model: torch.nn.Module, ds: PosmapDataset, kpt: torch.Tensor, device: torch.device,
             limit: int = 0, batch: int = 32) -> dict[str, float]:
    """Mean 2D and 3D NME over ``ds`` (the first ``limit`` samples): what training selects on."""
    e2, e3 = landmark_errors(model, ds, kpt, device, limit, batch)
    return {"val_nme2d": float(e2.mean()), "val_nme3d": float(e3.mean()), "val_n": len(e2)}


class RunLog:
    """A run's metrics.jsonl, TensorBoard writer (when installed) and progress bar. Only rank 0
    writes; on the other ranks every call is a no-op, so the stages need no rank checks."""

    def __init__(self, out: Path, total: int, step: int, desc: str, enabled: bool = True) -> None:
        from tqdm import tqdm

        self.enabled = enabled
        self.file = open(out / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard is optional
                self.tb = None
        self.bar = tqdm(total=total, initial=step, disable=not enabled, desc=desc, unit="step", dynamic_ncols=True)

    def record(self, rec: dict, scalars: dict[str, float] | None = None, step: int = 0) -> None:
        """One line of metrics.jsonl, and ``scalars`` (tag -> value) to TensorBoard at ``step``."""
        if not self.enabled:
            return
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        if self.tb is not None:
            for tag, v in (scalars or {}).items():
                self.tb.add_scalar(tag, v, step)

    def image(self, tag: str, img: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 picture to TensorBoard (nothing without it)."""
        if self.enabled and self.tb is not None:
            self.tb.add_image(tag, img, step, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def validate_and_log(model: torch.nn.Module, ds: PosmapDataset, kpt: torch.Tensor, device: torch.device,
                     limit: int, step: int, log: RunLog) -> dict[str, float]:
    """validate() at ``step``, recorded where every stage records it: metrics.jsonl, TensorBoard, the bar."""
    result = validate(model, ds, kpt, device, limit)
    result["step"] = step
    log.record(result, {"val/nme2d": result["val_nme2d"], "val/nme3d": result["val_nme3d"]}, step)
    log.bar.write(f"step {step}: val NME 2D {result['val_nme2d'] * 100:.2f}%  3D {result['val_nme3d'] * 100:.2f}%")
    return result


def periodic(step: int, steps: int, ckpt_every: int, val_every: int, out: Path, save: Save, best: float,
             evaluate: Callable[[int], dict], main: bool = True) -> tuple[float, dict | None]:
    """A stage's duties after each step: last.pt every ``ckpt_every``; on rank 0, validation
    every ``val_every`` and at the end, with best.pt whenever the 2D NME improves.
    Returns the best NME so far and the validation result, if one ran."""
    if step % ckpt_every == 0 and step != steps:  # the end is saved once, with its validation, by run_steps
        save(out / "last.pt", {"step": step, "best_val": best})
    if not main or (step % val_every and step != steps):
        return best, None
    result = evaluate(step)
    if result["val_nme2d"] < best:
        best = result["val_nme2d"]
        save(out / "best.pt", {"step": step, "best_val": best, "val": result})
    return best, result


def run_steps(one_step: Callable[[int], None], step: int, cfg: "RunSchedule", out: Path, save: Save, best: float,
              evaluate: Callable[[int], dict], log: RunLog, dist: Dist) -> dict:
    """Drive a stage from ``step`` to ``cfg.steps``: ``one_step(step)`` trains (and logs) one
    batch, then the periodic duties run. Ctrl-C or SIGTERM saves last.pt and exits 130; the end
    saves last.pt with the final validation. ``save(path, extra)`` gets ``step`` and
    ``best_val`` in ``extra``. Returns the last validation result."""
    stop_on_sigterm()
    result: dict = {}
    try:
        while step < cfg.steps:
            one_step(step)
            step += 1
            log.bar.update(1)
            best, res = periodic(step, cfg.steps, cfg.ckpt_every, cfg.val_every, out, save, best, evaluate, dist.main)
            result = res or result
    except KeyboardInterrupt:
        save(out / "last.pt", {"step": step, "best_val": best})
        log.close()
        print(f"interrupted at step {step}: saved {out / 'last.pt'} (resume with --resume)", file=sys.stderr)
        raise SystemExit(130) from None
    save(out / "last.pt", {"step": step, "best_val": best, "val": result})
    log.close()
    close_dist(dist)
    return result


class RunSchedule(Protocol):
    """The fields of a stage's config that ``run_steps`` reads."""

    steps: int
    ckpt_every: int
    val_every: int


def stop_on_sigterm() -> None:
    """kill/timeout stop a run like Ctrl-C does: the loop's KeyboardInterrupt handler saves."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
