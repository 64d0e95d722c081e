"""Speed measurements shared by ``streamcap bench`` and the scripts under ``benchmarks/``.

Every figure is a wall-clock time per call with the warm-up calls excluded, reported as p50,
p99 and mean in milliseconds. Benchmarks print tables and write JSON; tests never assert times.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from .capture import VideoSource


def stats(times_ms: Iterable[float], digits: int | None = None) -> dict[str, float]:
    """n, p50, p99 and mean of a series ({"n": 0} when empty); ``digits`` rounds them for JSON."""
    t = np.asarray(list(times_ms), np.float64)
    if t.size == 0:
        return {"n": 0}
    out = {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99)), "mean": float(t.mean())}
    if digits is not None:
        out = {k: round(v, digits) for k, v in out.items()}
    return {"n": int(t.size), **out}


def timed(fn: Callable[[], object], repeat: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return stats(out)


def letterbox(image: np.ndarray, width: int = 640, height: int = 480) -> np.ndarray:
    """Fit ``image`` into width x height keeping its aspect, black bars elsewhere."""
    k = min(width / image.shape[1], height / image.shape[0])
    small = cv2.resize(image, (round(image.shape[1] * k), round(image.shape[0] * k)), interpolation=cv2.INTER_AREA)
    out = np.zeros((height, width, 3), np.uint8)
    y, x = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def clip_frames(path: Path, n: int, size: tuple[int, int] | None = (640, 480)) -> list[np.ndarray]:
    frames = []
    with VideoSource(path) as src:
        for f in src:
            frames.append(letterbox(f.image, *size) if size else f.image)
            if len(frames) >= n:
                break
    return frames


def bench_detect(frames: list[np.ndarray], redetect_every: int = 10) -> dict[str, dict]:
    """Detector (HOG upsample 0 and 1), 68 landmarks per face, tracker per frame."""
    from .detect import FaceDetector, LandmarkPredictor
    from .track import FaceTracker

    res: dict[str, dict] = {}
    for up in (0, 1):
        det = FaceDetector("hog", upsample=up)
        it = iter(range(10**9))
        res[f"hog_upsample{up}_ms_per_frame"] = timed(lambda: det.detect(frames[next(it) % len(frames)]),
                                                      repeat=min(len(frames), 60 if up else 150))
    det = FaceDetector("hog")
    lmk = LandmarkPredictor()
    boxes = [(f, det.detect(f)) for f in frames[:30]]
    boxes = [(f, b[0]) for f, b in boxes if b]
    if boxes:
        k = iter(range(10**9))
        res["landmarks68_ms_per_face"] = timed(lambda: lmk.predict(*boxes[next(k) % len(boxes)]), repeat=300)
    tracker = FaceTracker(detector=det, predictor=lmk, redetect_every=redetect_every)
    tt = []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        tracker.update(f, i / 30)
        if i >= 3:
            tt.append((time.perf_counter() - t0) * 1e3)
    res[f"tracker_ms_per_frame_redetect{redetect_every}"] = stats(tt)
    return res


def bench_engine(bundle, backends: Iterable[str], threads: int, batches: Iterable[int] = (1, 4),
                 repeat: int = 50) -> dict[str, dict]:
    """ms per face of the generator for each backend that loads, at each batch size."""
    from .engine import create_engine
    from .errors import StreamcapError

    res: dict[str, dict] = {}
    rng = np.random.default_rng(0)
    s = bundle.spec.input_size
    for name in backends:
        try:
            eng = create_engine(bundle, name, threads=threads)
        except StreamcapError as exc:
            res[name] = {"unavailable": str(exc)}
            continue
        for b in batches:
            crops = rng.integers(0, 255, (b, s, s, 3), dtype=np.uint8)
            st = timed(lambda: eng.infer(crops), repeat=repeat)
            res[f"{eng.name}_batch{b}"] = {k: (v / b if k != "n" else v) for k, v in st.items()}
    return res


def format_stats(title: str, rows: dict[str, dict]) -> str:
    lines = [title, f"{'measure':<42}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'n':>6}"]
    for k, v in rows.items():
        if "p50" in v:
            lines.append(f"{k:<42}{v['p50']:>9.2f}{v['p99']:>9.2f}{v['mean']:>9.2f}{v['n']:>6}")
        else:
            lines.append(f"{k:<42}  {next(iter(v.values()), '')}")
    return "\n".join(lines)
