"""Accuracy on the held-out people of the dataset cache: model vs teacher vs dlib.

    python benchmarks/accuracy_heldout.py --cache .cache/dataset [--profiles .cache/valprof] \
        [--bundle streamcap/models/light128] [--json docs/results/accuracy.json]

Two references, because the pseudo ground truth comes from the teacher itself:
* the **labels** (teacher + dense labeller): NME of 68 points (2D, and 3D after removing mean
  depth) / sqrt(w*h) of the label's landmark box, per |yaw| bin and balanced, on real held-out
  frames and on profiled (rotated, re-rendered) held-out frames; dlib beside it in 2D.
* the **human annotation** of the 25 d3dfr photos (5 points: eye centres, nose tip, mouth
  corners): model vs teacher labels vs dlib, all against the same annotation.
The model crops from the label's landmarks, as the AFLW2000-3D protocol does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import load_bundle
from streamcap.commands.common import write_json
from streamcap.engine import create_engine
from streamcap.evaluate import format_table, nme2d, nme3d, summarise, yaw_bin
from streamcap.reconstruct import Reconstructor


def five_from68(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[36:42, :2].mean(0), lm[42:48, :2].mean(0), lm[30, :2], lm[48, :2], lm[54, :2]])


def load_val(folder: Path) -> dict[str, np.ndarray]:
    parts: dict[str, list] = {}
    for sh in sorted(folder.glob("*.npz")):
        if sh.name.endswith(".tmp.npz"):
            continue
        with np.load(sh) as z:
            keep = z["split"] == "val"
            if not keep.any():
                continue
            for k in ("images", "posmaps", "yaw", "dlib68", "ref5", "kind"):
                parts.setdefault(k, []).append(z[k][keep])
    return {k: np.concatenate(v) for k, v in parts.items()} if parts else {}


def run_set(data: dict[str, np.ndarray], rec: Reconstructor) -> dict[str, dict]:
    layout = rec.layout
    e2: dict[str, list[list[float]]] = {m: [[], [], []] for m in ("model", "dlib")}
    e3: list[list[float]] = [[], [], []]
    five: dict[str, list[float]] = {m: [] for m in ("model", "teacher", "dlib")}
    for i in range(len(data["images"])):
        gt = data["posmaps"][i].astype(np.float32).reshape(-1, 3)[layout.kpt_flat]
        out = rec.run(data["images"][i], rec.crops_for([gt[:, :2]]), texture=False)[0]
        b = yaw_bin(float(data["yaw"][i]))
        e2["model"][b].append(nme2d(out.landmarks, gt))
        e3[b].append(nme3d(out.landmarks, gt))  # label z is offset by the crop; mean depth is removed
        d68 = data["dlib68"][i]
        has_dlib = bool(np.isfinite(d68).all())
        if has_dlib:
            e2["dlib"][b].append(nme2d(d68, gt))
        ref = data["ref5"][i]
        if np.isfinite(ref).all():
            wh = np.ptp(gt[:, :2], 0)
            norm = float(np.sqrt(wh[0] * wh[1]))
            five["model"].append(float(np.linalg.norm(five_from68(out.landmarks) - ref, axis=1).mean() / norm))
            five["teacher"].append(float(np.linalg.norm(five_from68(gt) - ref, axis=1).mean() / norm))
            if has_dlib:
                five["dlib"].append(float(np.linalg.norm(five_from68(d68) - ref, axis=1).mean() / norm))
    res = {"model": summarise(e2["model"], e3, 0)}
    if any(e2["dlib"]):
        res["dlib"] = summarise(e2["dlib"], [[], [], []], 0)
    return {"table": res, "five_point_vs_human": {k: (float(np.mean(v)) if v else None, len(v))
                                                  for k, v in five.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(".cache/dataset"))
    ap.add_argument("--profiles", type=Path, default=None, help="folder of profiled val shards")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--backend", default="ort")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    bundle = load_bundle(args.bundle)
    rec = Reconstructor(bundle, create_engine(bundle, args.backend, threads=args.threads))
    out = {"bundle": bundle.name}
    real = load_val(args.cache / "shards")
    out["real"] = run_set(real, rec)
    print(f"held-out real frames and photos ({len(real['images'])}): NME vs labels")
    print(format_table(out["real"]["table"]))
    print("5-point NME vs human annotation (d3dfr):",
          {k: (f"{v[0] * 100:.2f}%" if v[0] is not None else None, v[1])
           for k, v in out["real"]["five_point_vs_human"].items()})
    if args.profiles:
        prof = load_val(args.profiles)
        if prof:
            out["profiled"] = run_set(prof, rec)
            print(f"\nheld-out profiled frames ({len(prof['images'])}): NME vs rotated labels")
            print(format_table(out["profiled"]["table"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
