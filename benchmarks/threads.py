"""Why the runtime keeps BLAS, OpenCV and (for video) ONNX Runtime to one thread each.

    python benchmarks/threads.py [--rounds 3]

Alternating, so a change in the machine's load hits both settings alike; median ms per call:

- codec coefficient fit (``GeometryBasis.encode_many``, every 4th vertex, 1 and 3 faces) with
  OpenBLAS on 1 thread and on its default (run in child processes: the setting must precede numpy);
- YuNet on 60 letterboxed 640x480 frames of the shipped example clip, OpenCV on 1 and 2 threads;
- the generator on a batch of 3 crops, ONNX Runtime on 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO))

CHILD = """
import time, numpy as np
from streamcap.bundle import load_bundle
from streamcap.commands.codec import load_codec
basis = load_codec(load_bundle())
idx = basis.projector(4)[0]
for n in (1, 3):
    x = np.random.default_rng(0).random((n, len(idx), 3), dtype=np.float32)
    basis.encode_many(x, 4)
    t = []
    for _ in range(40):
        t0 = time.perf_counter(); basis.encode_many(x, 4); t.append((time.perf_counter() - t0) * 1e3)
    print(n, float(np.median(t)))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    import cv2

    from streamcap.benchmark import clip_frames, timed
    from streamcap.bundle import load_bundle
    from streamcap.detect import FaceDetector
    from streamcap.engine import create_engine

    bundle = load_bundle()
    frames = clip_frames(REPO / "examples" / "talking_lp_d3.mp4", 60)
    det = FaceDetector()
    crops = np.random.default_rng(0).integers(0, 255, (3, bundle.spec.input_size, bundle.spec.input_size, 3),
                                              dtype=np.uint8)
    engines = {n: create_engine(bundle, "ort", threads=n) for n in (1, 2)}
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for blas in ("1", "default"):
            env = dict(os.environ)
            env.pop("OPENBLAS_NUM_THREADS", None)
            if blas == "1":
                env["OPENBLAS_NUM_THREADS"] = "1"
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
            for line in out.stdout.split("\n"):
                if line.strip():
                    n, ms = line.split()
                    rows.setdefault(f"codec fit, {n} face(s), OpenBLAS {blas} thread(s)", []).append(float(ms))
        for n in (1, 2):
            cv2.setNumThreads(n)
            it = iter(range(10**9))
            rows.setdefault(f"YuNet 640x480, OpenCV {n} thread(s)", []).append(
                timed(lambda: det.detect(frames[next(it) % len(frames)]), len(frames))["p50"])
        for n, eng in engines.items():
            rows.setdefault(f"generator batch of 3, ONNX Runtime {n} thread(s)", []).append(
                timed(lambda: eng.infer(crops), 40)["p50"])
    for name, v in rows.items():
        print(f"{name:<52} {float(np.median(v)):8.2f} ms   (rounds: {', '.join(f'{x:.2f}' for x in v)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
