"""MediaPipe FaceMesh over the labelled corpus's stored context crops (the fusion's first pass).

Runs in the MediaPipe venv (mediapipe pulls opencv-contrib-python, see teacher_mediapipe.py):

    .venv-label/bin/python trainer/data/mediapipe_corpus.py /work/cache/corpus -o /work/cache/corpus_fused

For every shard ``shards/<name>.npz`` of the corpus (``profile__*`` shards skipped: synthetic
rotated faces keep their 3DDFA_V2 labels) it writes ``<out>/mp__<name>.npz`` with the shard's
row order: ``points`` (N, 468, 3) float16 FaceMesh points in the crop's pixels (z toward the
camera, zero where none), ``found`` (N,) bool. The crops already carry the flips and the
label's coordinates, so nothing is mapped back. FaceMesh runs static (every crop on its own),
up to two faces; the one whose centre lies in the label's 68-point box, nearest its centre,
is kept (the study's ``pick_face``). Registration to 68 points happens in ``fuse_corpus.py``.
One side-car per shard, written atomically and skipped when present: resumable.
This module imports only numpy, cv2, tqdm and mediapipe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainer.data.teacher_mediapipe import _mesh, _points

SKIP_PREFIX = "profile__"


def corpus_shards(root: Path) -> list[Path]:
    """The corpus's finished shards that MediaPipe labels (no ``.tmp``, no profiled faces)."""
    return sorted(p for p in (Path(root) / "shards").glob("*.npz")
                  if not p.name.endswith(".tmp.npz") and not p.name.startswith(SKIP_PREFIX))


def pick(faces: list[np.ndarray], lm68: np.ndarray) -> np.ndarray | None:
    """The face whose points' centre is inside the 68-point box of ``lm68``, nearest its centre."""
    lo, hi = lm68[:, :2].min(0), lm68[:, :2].max(0)
    c = (lo + hi) / 2.0
    best, dist = None, np.inf
    for f in faces:
        m = f[:, :2].mean(0)
        d = float(np.linalg.norm(m - c))
        if (m >= lo).all() and (m <= hi).all() and d < dist:
            best, dist = f, d
    return best


def run_shard(mesh, shard: Path, bar: tqdm) -> dict[str, np.ndarray]:
    with np.load(shard) as z:
        blob, off, lm68 = z["jpeg"], z["offsets"], z["lm68"]
    n = len(lm68)
    points = np.zeros((n, 468, 3), np.float16)
    found = np.zeros(n, bool)
    for i in range(n):
        img = cv2.imdecode(blob[off[i]:off[i + 1]], cv2.IMREAD_COLOR)
        bar.update(1)
        if img is None:
            continue
        h, w = img.shape[:2]
        face = pick(_points(mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)), w, h), lm68[i])
        if face is not None:
            points[i] = face
            found[i] = True
    return {"points": points, "found": found}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="label_corpus.py output (with shards/)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="side-car folder")
    ap.add_argument("--limit", type=int, default=0, help="only the first N shards (timing)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in corpus_shards(args.corpus) if not (args.out / f"mp__{s.stem}.npz").exists()]
    if args.limit:
        todo = todo[: args.limit]
    total = 0
    for s in todo:
        with np.load(s) as z:
            total += len(z["offsets"]) - 1
    with tqdm(total=total, desc="mediapipe", unit="crop", smoothing=0.05) as bar, _mesh(True, 2) as mesh:
        for s in todo:
            dst = args.out / f"mp__{s.stem}.npz"
            if dst.exists():  # another process took it meanwhile
                continue
            rec = run_shard(mesh, s, bar)
            tmp = args.out / f"mp__{s.stem}.tmp.npz"
            np.savez(tmp, **rec)
            tmp.rename(dst)
            tqdm.write(f"{s.stem}: {int(rec['found'].sum())}/{len(rec['found'])} found")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
