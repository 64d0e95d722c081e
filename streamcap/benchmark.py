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


def bench_detect(frames: list[np.ndarray]) -> dict[str, dict]:
    """ms per frame of each detector (YuNet, dlib HOG at upsample 0 and 1) and of dlib's 68-point
    predictor per face (the tracker's optional landmark source)."""
    from .detect import FaceDetector, LandmarkPredictor

    res: dict[str, dict] = {}
    for name, det, n in (("yunet", FaceDetector("yunet"), 150), ("hog_upsample0", FaceDetector("hog"), 150),
                         ("hog_upsample1", FaceDetector("hog", upsample=1), 60)):
        it = iter(range(10**9))
        res[f"{name}_ms_per_frame"] = timed(lambda: det.detect(frames[next(it) % len(frames)]),
                                            repeat=min(len(frames), n))
    lmk = LandmarkPredictor()
    det = FaceDetector("yunet")
    boxes = [(f, det.detect(f)) for f in frames[:30]]
    boxes = [(f, b[0]) for f, b in boxes if b]
    if boxes:
        k = iter(range(10**9))
        res["dlib_landmarks68_ms_per_face"] = timed(lambda: lmk.predict(*boxes[next(k) % len(boxes)]), repeat=300)
    return res


def side_by_side(clip: Path, out: Path, copies: int = 3) -> Path:
    """Write ``copies`` of ``clip`` side by side, each a third of the clip later than the one
    before (so the faces move differently): a several-face clip with the same decode path."""
    from .videowriter import VideoWriter

    with VideoSource(clip) as src:
        frames = [f.image for f in src]
        fps = src.fps
    n = len(frames)
    with VideoWriter(out, fps) as w:
        for i in range(n):
            w.write(np.hstack([frames[(i + k * n // copies) % n] for k in range(copies)]))
    return out


def profile_encode(bundle, clip: Path, frames: int, threads: int, backend: str = "auto",
                   detector: str = "yunet", landmarks: str = "generator", warmup: int = 10) -> dict:
    """``streamcap encode`` on ``clip`` (looped to ``frames`` frames after ``warmup``), timed per
    stage and end to end. Per stage: p50 / p99 / mean ms per frame; ``fps``: frames per second
    of wall time over the timed frames, everything included."""
    import tempfile

    from streamcap_codecs.container import ScapWriter
    from streamcap_codecs.encoder import FaceStreamEncoder

    from .commands.codec import load_codec
    from .pipeline import PIPELINE_THREADS, STAGES, FacePipeline

    basis = load_codec(bundle)
    warmup = max(1, warmup)
    pipe = FacePipeline.create(bundle, backend, threads, detector, landmarks)
    per_stage: dict[str, list[float]] = {k: [] for k in STAGES}
    faces: list[int] = []
    src = VideoSource(clip, loop=True)
    t_start = None
    try:
        with tempfile.TemporaryDirectory() as tmp, ScapWriter(Path(tmp) / "bench.scap") as w:
            enc = FaceStreamEncoder(basis, bundle.layout, fps=src.fps, bundle_id=bundle.name)
            for res in pipe.encode(src, enc, w, warmup + frames):
                if res.index >= warmup:
                    for k in STAGES:
                        per_stage[k].append(getattr(res.times, k))
                    faces.append(res.times.faces)
                elif res.index == warmup - 1:  # the clock starts when the first timed frame is asked for
                    t_start = time.perf_counter()
            wall = time.perf_counter() - (t_start or time.perf_counter())
    finally:
        src.close()
        pipe.close()
    runs = list(pipe.tracker.detect_runs)
    total = np.sum([per_stage[k] for k in STAGES], axis=0)
    return {"clip": clip.name, "size": [src.width, src.height], "frames": len(faces),
            "threads": threads or PIPELINE_THREADS,
            "detector": detector, "landmarks": landmarks, "bundle": bundle.name,
            "input_size": bundle.spec.input_size, "faces_per_frame": float(np.mean(faces)) if faces else 0.0,
            "stages": {k: stats(v, digits=2) for k, v in per_stage.items()}, "total": stats(total, digits=2),
            "detector_runs_ms": stats(runs, digits=2),
            "fps": round(len(faces) / wall, 1) if wall > 0 else 0.0}


def mediapipe_facemesh(clip: Path, frames: int, faces: int, python: Path) -> dict | None:
    """MediaPipe FaceMesh on the same clip through ``benchmarks/bench_mediapipe.py`` in its own
    venv (``python``; it would replace the runtime's OpenCV); None when that venv or the script
    (only in a source checkout) is missing."""
    import json
    import subprocess
    import sys
    import tempfile

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mediapipe.py"
    if not python.exists() or not script.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mp.json"
        p = subprocess.run([str(python), str(script), str(clip), "--frames", str(frames), "--faces", str(faces),
                            "--json", str(out)], capture_output=True, text=True)
        if p.returncode != 0:
            print(f"mediapipe benchmark failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return None
        return json.loads(out.read_text())


def format_profile(runs: dict[str, dict], mediapipe: dict[str, dict | None]) -> str:
    """The per-stage table: one p50 / p99 column pair per run (ms per frame)."""
    from .pipeline import STAGES

    names = list(runs)
    head = "| stage (ms per frame) | " + " | ".join(f"{n} p50 | {n} p99" for n in names) + " |"
    lines = [head, "| --- |" + " --- | --- |" * len(names)]
    for k in (*STAGES, "total"):
        cells = []
        for n in names:
            st = runs[n]["total"] if k == "total" else runs[n]["stages"][k]
            cells.append(f"{st['p50']:.2f} | {st['p99']:.2f}")
        lines.append(f"| {'**total**' if k == 'total' else k} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        st = runs[n]["detector_runs_ms"]
        cells.append(f"{st['p50']:.2f} | {st['p99']:.2f}" if st["n"] else " | ")
    lines.append(f"| (detector, per run, {runs[names[0]]['detector']}; off the frame's path but on its cores) | "
                 + " | ".join(cells) + " |")
    lines.append("| **encode fps (end to end)** | " + " | ".join(f"{runs[n]['fps']:.1f} | " for n in names) + " |")
    row = []
    for n in names:
        m = mediapipe.get(n)
        row.append(f"{m['ms_p50']:.2f} | {m['ms_p99']:.2f}" if m else "not run | ")
    lines.append("| MediaPipe FaceMesh, same frames (`process` per frame) | " + " | ".join(row) + " |")
    return "\n".join(lines)


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
