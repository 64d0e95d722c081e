"""MediaPipe FaceMesh per-face time on a clip: the speed yardstick for the generator.

Runs in the labelling venv (mediapipe pulls opencv-contrib, which must not replace the
runtime's headless OpenCV):

    .venv-label/bin/python benchmarks/bench_mediapipe.py ../shared/data/videos/lp_d9.mp4 --frames 300 --json mp.json

Times ``FaceMesh.process`` per frame in tracking mode (static_image_mode=False, up to ``--faces``
faces), the mode in which MediaPipe is fastest, with the first 10 frames excluded as warm-up; a
clip shorter than warm-up plus ``--frames`` is looped. Prints p50, p99 and mean in ms per frame, the points per face
(468) and the frame size.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")

import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--faces", type=int, default=1, help="max_num_faces")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import mediapipe as mp

    cap = cv2.VideoCapture(str(args.clip))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    frames = [frames[i % len(frames)] for i in range(args.frames + args.warmup)]
    times, found = [], 0
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=args.faces,
                                         refine_landmarks=False) as fm:
        for i, rgb in enumerate(frames):
            t0 = time.perf_counter()
            res = fm.process(rgb)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(dt)
                found += len(res.multi_face_landmarks or [])
    t = np.asarray(times)
    out = {"method": "mediapipe-facemesh-0.10.14", "clip": args.clip.name, "frame_size": list(frames[0].shape[1::-1]),
           "frames": len(t), "max_faces": args.faces, "faces_found": found, "points_per_face": 468,
           "ms_p50": float(np.percentile(t, 50)), "ms_p99": float(np.percentile(t, 99)), "ms_mean": float(t.mean())}
    print(f"MediaPipe FaceMesh on {args.clip.name} {out['frame_size'][0]}x{out['frame_size'][1]}: "
          f"p50 {out['ms_p50']:.2f} ms, p99 {out['ms_p99']:.2f} ms, mean {out['ms_mean']:.2f} ms per frame "
          f"({found} faces in {len(t)} frames, 468 points each)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
