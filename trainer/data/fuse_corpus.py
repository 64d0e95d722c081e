"""The fused labels (docs/training.md, section 7) for the whole corpus, as side-cars.

    .venv/bin/python trainer/data/fuse_corpus.py /work/cache/corpus -o /work/cache/corpus_fused \\
        --data ../shared/data --study .cache/label_study

Needs ``mediapipe_corpus.py``'s ``mp__<shard>.npz`` in ``-o`` and the MediaPipe -> 68-point
registration of the label study (``registration.npz`` in ``-o``; made once from the study's
MediaPipe pass over its five registration clips, ``--study``, and dlib, when missing).

Per shard it writes ``<out>/fused__<shard>.npz`` in the shard's row order: ``label`` (N, 62) the
fused 62 numbers (3DDFA_V2's pose and shape, expression re-solved to FaceMesh's agreeing eye
and lip points: ``label_fusion.fuse_expression``), ``offsets`` (N, 68, 3) float32 landmark
offsets in crop pixels that ``SurfaceSpread`` spreads over the surface, ``regions`` (N, 3) bool
(left eye, right eye, mouth taken from FaceMesh), ``mp68`` (N, 68, 3) FaceMesh's registered 68
points (zero where none), ``found`` (N,) bool. Rows where FaceMesh found no face or no region
agrees keep the 3DDFA_V2 label with zero offsets. The corpus labels are the two-pass fits, not
the study's mirror/jitter average (which needs the original image and 14 network passes).
Resumable (atomic writes per shard, done shards skipped); a progress bar counts rows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.data.label_fusion import REGIONS, Fuser
from trainer.data.labeller import Registration, register
from trainer.data.mediapipe_corpus import corpus_shards
from trainer.data.teacher_mediapipe import REG_CLIPS



def study_registration(data: Path, study: Path, layout, dlib=None) -> tuple[Registration, int]:
    """The label study's registration: FaceMesh's points (``study/mp_<clip>.npz``, static, every
    25th frame) against dlib's 68 on the same frames of the five registration clips; and the
    number of frames it used."""
    if dlib is None:
        from trainer.data.build_dataset import Dlib68

        dlib = Dlib68()
    pts, marks = [], []
    for clip in REG_CLIPS:
        z = np.load(Path(study) / f"mp_{clip}.npz")
        want = {int(f): k for k, f in enumerate(z["frames"]) if z["valid"][k, 0]}
        cap = cv2.VideoCapture(str(Path(data) / "videos" / f"{clip}.mp4"))
        i = 0
        while want and i <= max(want):
            ok, bgr = cap.read()
            if not ok:
                break
            if i in want:
                p = z["points"][want[i], 0]
                d = dlib.near(bgr, np.r_[p[:, :2].min(0), p[:, :2].max(0)])
                if d is not None:
                    pts.append(p)
                    marks.append(d)
            i += 1
        cap.release()
    return register(layout, np.asarray(pts), np.asarray(marks)), len(pts)


def fuse_shard(fuser: Fuser, labels: np.ndarray, points: np.ndarray, found: np.ndarray, teacher68: np.ndarray,
               bar: tqdm | None = None) -> dict[str, np.ndarray]:
    """Fused side-car arrays for one shard's ``labels`` (N, 62) and FaceMesh ``points`` (N, 468, 3)."""
    from trainer.data.teacher_3ddfa import Fit

    n = len(labels)
    out = {"label": np.asarray(labels, np.float32).copy(), "offsets": np.zeros((n, 68, 3), np.float32),
           "regions": np.zeros((n, len(REGIONS)), bool), "mp68": np.zeros((n, 68, 3), np.float32),
           "found": np.asarray(found, bool).copy()}
    names = list(REGIONS)
    for i in range(n):
        if bar is not None:
            bar.update(1)
        if not found[i]:
            continue
        mp68 = points[i, teacher68].astype(np.float32)
        out["mp68"][i] = mp68
        fit, offsets, used = fuser.fuse(Fit.from_vector(labels[i]), mp68)
        if used:
            out["label"][i] = fit.as_vector()
            out["offsets"][i] = offsets
            out["regions"][i] = [r in used for r in names]
    return out


def counts(out: Path) -> dict:
    """Rows fused / with each region / left at 3DDFA_V2 over all fused side-cars in ``out``."""
    c = {"shards": 0, "rows": 0, "found": 0, "fused": 0, "at_3ddfa": 0, **{r: 0 for r in REGIONS}}
    for f in sorted(Path(out).glob("fused__*.npz")):
        if f.name.endswith(".tmp.npz"):
            continue
        with np.load(f) as z:
            reg = z["regions"]
            c["shards"] += 1
            c["rows"] += len(reg)
            c["found"] += int(z["found"].sum())
            c["fused"] += int(reg.any(1).sum())
            c["at_3ddfa"] += int((~reg.any(1)).sum())
            for k, r in enumerate(REGIONS):
                c[r] += int(reg[:, k].sum())
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="label_corpus.py output (with shards/)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="side-car folder (holds mp__*.npz)")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--study", type=Path, default=Path(".cache/label_study"),
                    help="label_study.py mediapipe output (for the registration, once)")
    ap.add_argument("--prior", type=float, default=1e-2, help="the fusion's ridge (label study's tune)")
    ap.add_argument("--counts", action="store_true", help="only print the counts of the side-cars so far")
    args = ap.parse_args(argv)
    if args.counts:
        print(json.dumps(counts(args.out)))
        return 0
    import torch

    from streamcap.bundle import default_layout
    from trainer.data.teacher_3ddfa import Teacher3DDFA

    torch.set_num_threads(1)
    layout = default_layout()
    reg_path = args.out / "registration.npz"
    if not reg_path.exists():
        reg, _ = study_registration(args.data, args.study, layout)
        reg.save(args.out / "registration.tmp.npz")
        (args.out / "registration.tmp.npz").rename(reg_path)
    teacher68 = Registration.load(reg_path).teacher68
    teacher = Teacher3DDFA(args.data / "teacher_3ddfa_v2", threads=1)
    with np.load(args.corpus / "uv_basis.npz") as z:
        mean, basis = z["mean"], z["basis"]
    fuser = Fuser(teacher, mean, basis, layout.kpt_vertex, args.prior, tta=False)
    todo = [s for s in corpus_shards(args.corpus)
            if (args.out / f"mp__{s.stem}.npz").exists() and not (args.out / f"fused__{s.stem}.npz").exists()]
    waiting = [s.stem for s in corpus_shards(args.corpus) if not (args.out / f"mp__{s.stem}.npz").exists()]
    total = 0
    for s in todo:
        with np.load(s) as z:
            total += len(z["label"])
    with tqdm(total=total, desc="fusing", unit="row", smoothing=0.05) as bar:
        for s in todo:
            with np.load(s) as z:
                labels = z["label"]
            with np.load(args.out / f"mp__{s.stem}.npz") as z:
                points, found = z["points"], z["found"]
            if len(points) != len(labels):
                raise SystemExit(f"{s.stem}: {len(points)} MediaPipe rows for {len(labels)} labels (stale side-car?)")
            rec = fuse_shard(fuser, labels, points, found, teacher68, bar)
            tmp = args.out / f"fused__{s.stem}.tmp.npz"
            np.savez(tmp, **rec)
            tmp.rename(args.out / f"fused__{s.stem}.npz")
    if waiting:
        print(f"{len(waiting)} shards still without a MediaPipe side-car (run mediapipe_corpus.py, then again)")
    print(json.dumps(counts(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
