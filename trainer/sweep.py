"""Choose the generator's size by a short sweep at equal CPU time.

    python trainer/sweep.py --data .cache/corpus --out runs/sweep --cpu-minutes 15 \\
        mobile:160:1.0 mobile:160:1.5 mobile:128:1.5

Each candidate ``arch:input_size:width`` is first timed for a few steps (process CPU seconds
per step, one thread, data loading in the same process), then pretrained for as many steps as
``--cpu-minutes`` buys it, with the whole cosine schedule inside that budget, so every candidate
gets the same compute and a finished schedule. The table gives held-out NME (the first
``--val-limit`` held-out samples, a fixed shuffle of every source), steps, CPU minutes actually
used and ONNX Runtime ms per face at 2 threads, and goes to ``--out/sweep.json``. A finished
candidate is not run again (its ``last.pt`` holds the result); an interrupted one resumes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import ModelSpec
from streamcap.engine.nets import build_generator
from trainer.train import PretrainConfig, pretrain, train_val_datasets


def cpu_seconds_per_step(arch: str, size: int, width: float, data: Path, batch: int, steps: int = 12) -> float:
    """Process CPU seconds of one training step (load + forward + backward + update)."""
    torch.set_num_threads(1)
    ds, _, _ = train_val_datasets(data, ModelSpec(arch=arch, input_size=size), 0)
    net = build_generator(arch, input_size=size, width=width)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    rng = np.random.default_rng(0)

    def step() -> None:
        xs, ys = zip(*(ds[int(i)] for i in rng.integers(0, len(ds), batch)))
        loss = (net(torch.stack(xs)) - torch.stack(ys)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t = time.process_time()
    for _ in range(steps):
        step()
    return (time.process_time() - t) / steps


def ort_ms(arch: str, size: int, width: float, threads: int = 2, runs: int = 100) -> float:
    import onnxruntime as ort

    net = build_generator(arch, input_size=size, width=width).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.onnx"
        torch.onnx.export(net, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        for _ in range(10):
            sess.run(None, {"x": x})
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"x": x})
            ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", help="arch:input_size:width")
    ap.add_argument("--data", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--cpu-minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--val-limit", type=int, default=800)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    table = []
    for cand in args.candidates:
        arch, size, width = cand.split(":")
        size, width = int(size), float(width)
        run = args.out / f"{arch}{size}_w{width:g}"
        plan_file = run / "sweep_plan.json"
        if plan_file.is_file():
            plan = json.loads(plan_file.read_text())
        else:
            sps = cpu_seconds_per_step(arch, size, width, args.data, args.batch)
            plan = {"cpu_s_per_step": sps, "steps": max(50, int(args.cpu_minutes * 60 / sps))}
            run.mkdir(parents=True, exist_ok=True)
            plan_file.write_text(json.dumps(plan))
        print(f"{cand}: {plan['cpu_s_per_step']:.2f} CPU s/step -> {plan['steps']} steps", flush=True)
        cfg = PretrainConfig(data=str(args.data), out=str(run), steps=plan["steps"], batch=args.batch, lr=args.lr,
                             warmup=min(300, plan["steps"] // 10), workers=0, threads=1,
                             val_every=10**9, ckpt_every=100, log_every=20, val_limit=args.val_limit,
                             resume=True, arch=arch, input_size=size, width=width)
        t0 = time.process_time()
        ck = torch.load(run / "last.pt", weights_only=False) if (run / "last.pt").is_file() else {}
        res = ck.get("val") if ck.get("step") == plan["steps"] and ck.get("val") else pretrain(cfg)
        params = sum(p.numel() for p in build_generator(arch, input_size=size, width=width).parameters())
        table.append({"candidate": cand, **plan, "cpu_minutes_this_call": (time.process_time() - t0) / 60,
                      "val_nme2d": res["val_nme2d"], "val_nme3d": res["val_nme3d"], "val_n": res["val_n"],
                      "params": params, "ort_ms_2threads": ort_ms(arch, size, width)})
        (args.out / "sweep.json").write_text(json.dumps(table, indent=1))
    print("| candidate | params | steps | NME 2D | NME 3D | ORT ms/face (2 threads) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in table:
        print(f"| {r['candidate']} | {r['params'] / 1e6:.2f}M | {r['steps']} | {r['val_nme2d'] * 100:.2f}% | "
              f"{r['val_nme3d'] * 100:.2f}% | {r['ort_ms_2threads']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
