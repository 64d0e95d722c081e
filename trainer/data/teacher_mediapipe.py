"""Run MediaPipe's legacy FaceMesh (the teacher) over clips and photos and store its 3D points.

Runs in its own virtual environment because mediapipe pulls opencv-contrib-python, which
would replace the runtime's headless OpenCV:

    python3 -m venv .venv-label && .venv-label/bin/pip install mediapipe==0.10.14
    .venv-label/bin/python trainer/data/teacher_mediapipe.py --data ../shared/data -o .cache/teacher

Output, one ``.npz`` per source (skipped when it exists, so the run is resumable):
``frames`` (F,) int frame index, ``points`` (F, K, 468, 3) float32 image pixels with z toward
the camera (MediaPipe's z is away from it, in units of the image width), ``valid`` (F, K) bool,
``size`` (2,) width, height. K is the most faces seen in one frame of that source.
This module imports only numpy, cv2 and mediapipe: nothing from streamcap.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXT = {".jpg", ".jpeg", ".png"}
# the clips whose every 25th frame registers FaceMesh's points to dlib's 68 (as build_dataset.py)
REG_CLIPS = ("lp_d10", "lp_d14", "lp_d6", "lp_d9", "lp_d3")


def _mesh(static: bool, max_faces: int):
    import mediapipe as mp

    return mp.solutions.face_mesh.FaceMesh(
        static_image_mode=static, max_num_faces=max_faces, refine_landmarks=False,
        min_detection_confidence=0.5, min_tracking_confidence=0.5,
    )


def _points(result, width: int, height: int) -> list[np.ndarray]:
    out = []
    for lm in result.multi_face_landmarks or []:
        a = np.array([(p.x, p.y, p.z) for p in lm.landmark], np.float32)
        out.append(np.stack([a[:, 0] * width, a[:, 1] * height, -a[:, 2] * width], 1))
    return out


def _pack(frames: list[int], faces: list[list[np.ndarray]], width: int, height: int) -> dict:
    k = max([len(f) for f in faces] + [1])
    pts = np.zeros((len(frames), k, 468, 3), np.float32)
    valid = np.zeros((len(frames), k), bool)
    for i, fl in enumerate(faces):
        # order faces left to right so a source's face slot is stable for single-face clips
        for j, p in enumerate(sorted(fl, key=lambda a: float(a[:, 0].mean()))):
            pts[i, j] = p
            valid[i, j] = True
    return {"frames": np.asarray(frames, np.int64), "points": pts, "valid": valid,
            "size": np.array([width, height], np.int64)}


def label_video(path: Path, stride: int = 1) -> dict:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"cannot open {path}")
    frames, faces = [], []
    width = height = 0
    with _mesh(static=False, max_faces=2) as mesh:
        idx = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            height, width = bgr.shape[:2]
            res = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            if idx % stride == 0:
                frames.append(idx)
                faces.append(_points(res, width, height))
            idx += 1
    cap.release()
    return _pack(frames, faces, width, height)


def label_image(path: Path, max_faces: int = 8) -> dict:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"cannot read {path}")
    height, width = bgr.shape[:2]
    with _mesh(static=True, max_faces=max_faces) as mesh:
        res = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return _pack([0], [_points(res, width, height)], width, height)


def sources(data: Path) -> list[Path]:
    vids = sorted((data / "videos").glob("*.mp4"))
    imgs = sorted(p for p in (data / "images").rglob("*") if p.suffix.lower() in IMAGE_EXT)
    return vids + imgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("-o", "--out", type=Path, default=Path(".cache/teacher"))
    ap.add_argument("--stride", type=int, default=1)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for src in sources(args.data):
        rel = src.relative_to(args.data)
        dst = args.out / (str(rel).replace("/", "__") + ".npz")
        if dst.exists():
            continue
        t0 = time.perf_counter()
        rec = label_video(src, args.stride) if src.suffix == ".mp4" else label_image(src)
        tmp = dst.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **rec)
        tmp.rename(dst)
        n = int(rec["valid"].sum())
        print(f"{rel}: {len(rec['frames'])} frames, {n} faces, {time.perf_counter() - t0:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
