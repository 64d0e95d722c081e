"""Training curves of a run, from its ``metrics.jsonl`` (the same scalars TensorBoard gets), to PNG.

    python trainer/plot_curves.py runs/mobile160 -o docs/results/mobile160_curves.png

Left: training loss (a moving average over ``--smooth`` logged points, raw points faint) and the
learning rate; right: held-out NME (2D and 3D) at each validation. A resumed run logs some
steps twice; the last record of a step wins. Prints the validation rows as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def read_metrics(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """(training rows by step, validation rows by step); later rows replace earlier ones."""
    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
            continue
        if "step" not in row:
            continue
        (val if "val_nme2d" in row else train if "loss" in row else {})[int(row["step"])] = row
    return train, val


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="run folder (holds metrics.jsonl)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--smooth", type=int, default=25, help="moving-average window in logged points")
    ap.add_argument("--title", default="")
    args = ap.parse_args(argv)
    src = args.run / "metrics.jsonl"
    if not src.is_file():
        print(f"plot_curves: no {src}", file=sys.stderr)
        return 2
    train, val = read_metrics(src)
    if not train:
        print(f"plot_curves: no training rows in {src}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array(sorted(train))
    loss = np.array([train[s]["loss"] for s in steps])
    lr = np.array([train[s].get("lr", np.nan) for s in steps])
    k = max(1, min(args.smooth, len(loss)))
    smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(steps, loss, color="0.8", lw=0.6, label="loss")
    a.plot(steps[k - 1:], smooth, color="C0", label=f"loss, mean of {k}")
    a.set_xlabel("step")
    a.set_ylabel("weighted position loss")
    a.set_yscale("log")
    a2 = a.twinx()
    a2.plot(steps, lr, color="C3", lw=0.8, label="learning rate")
    a2.set_ylabel("learning rate")
    a.legend(loc="upper right")
    a2.legend(loc="lower left")
    if val:
        vs = np.array(sorted(val))
        b.plot(vs, [100 * val[s]["val_nme2d"] for s in vs], "o-", label="2D")
        b.plot(vs, [100 * val[s]["val_nme3d"] for s in vs], "s-", label="3D")
        b.set_xlabel("step")
        b.set_ylabel("held-out NME vs labels (%)")
        b.legend()
        b.grid(alpha=0.3)
    fig.suptitle(args.title or args.run.name)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    if val:
        print("| step | " + " | ".join(str(s) for s in sorted(val)) + " |")
        print("|---" * (len(val) + 1) + "|")
        for key, name in (("val_nme2d", "2D"), ("val_nme3d", "3D")):
            print(f"| {name} | " + " | ".join(f"{100 * val[s][key]:.2f}%" for s in sorted(val)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
