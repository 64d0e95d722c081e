"""Speed yardstick: our per-face pipeline beside MediaPipe FaceMesh, same clip, same machine.

    python benchmarks/speed_vs_mediapipe.py ../shared/data/videos/lp_d9.mp4 --frames 300 --threads 2 \
        [--mediapipe-python .venv-label/bin/python] [--json docs/results/speed.json]

Ours, per frame with one face (ms, warm-up excluded): tracking (dlib landmarks, detection every
10 frames), crop + generator (ONNX Runtime, N threads), geometry (UV map -> vertices, 68
landmarks, pose, texture). MediaPipe runs in its own venv (it would replace the runtime's
OpenCV) through ``benchmarks/bench_mediapipe.py`` on the same frames.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.benchmark import stats
from streamcap.bundle import load_bundle
from streamcap.capture import VideoSource
from streamcap.engine import create_engine
from streamcap.geometry.posmap import estimate_pose, landmarks68, sample_texture, vertices
from streamcap.reconstruct import crop_to_image
from streamcap.track import FaceTracker


def ours(clip: Path, frames: int, threads: int, bundle_path: Path | None, warmup: int = 10) -> dict:
    bundle = load_bundle(bundle_path)
    engine = create_engine(bundle, "ort", threads=threads)
    layout = bundle.layout
    tracker = FaceTracker(crop_size=bundle.spec.input_size)
    t_track, t_engine, t_geom, n_faces = [], [], [], 0
    with VideoSource(clip) as src:
        for f in src:
            if f.index >= frames + warmup:
                break
            t0 = time.perf_counter()
            tracks = tracker.update(f.image, f.timestamp)
            t1 = time.perf_counter()
            if not tracks:
                continue
            crops = [t.crop for t in tracks]
            maps = engine.infer(np.stack([c.warp(f.image) for c in crops]))
            t2 = time.perf_counter()
            for c, m in zip(crops, maps):
                pm = crop_to_image(m, c)
                v = vertices(pm, layout)
                landmarks68(pm, layout)
                estimate_pose(v, layout)
                sample_texture(f.image, pm, layout)
            t3 = time.perf_counter()
            if f.index >= warmup:
                k = len(tracks)
                n_faces += k
                t_track.append((t1 - t0) * 1e3 / k)
                t_engine.append((t2 - t1) * 1e3 / k)
                t_geom.append((t3 - t2) * 1e3 / k)
    total = np.asarray(t_track) + np.asarray(t_engine) + np.asarray(t_geom)
    return {"bundle": bundle.name, "input_size": bundle.spec.input_size, "threads": threads, "faces": n_faces,
            "points_per_face": layout.n_vertices, "track_ms": stats(t_track), "crop_generator_ms": stats(t_engine),
            "geometry_ms": stats(t_geom), "total_ms": stats(total)}


def mediapipe(clip: Path, frames: int, python: Path) -> dict | None:
    if not python.exists():
        return None
    script = Path(__file__).with_name("bench_mediapipe.py")
    out = Path("/tmp/streamcap_mp_bench.json")
    p = subprocess.run([str(python), str(script), str(clip), "--frames", str(frames), "--json", str(out)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"mediapipe benchmark failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--mediapipe-python", type=Path, default=Path(".venv-label/bin/python"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    res = {"clip": args.clip.name, "ours": ours(args.clip, args.frames, args.threads, args.bundle),
           "mediapipe": mediapipe(args.clip, args.frames, args.mediapipe_python)}
    o = res["ours"]
    print(f"{'per face, ms':<34}{'p50':>8}{'p99':>8}{'mean':>8}   points")
    for name, key in (("track (dlib 68, detect every 10)", "track_ms"), ("crop + generator (ORT)", "crop_generator_ms"),
                      ("geometry (mesh, lmk, pose, tex)", "geometry_ms"), ("streamcap total", "total_ms")):
        s = o[key]
        points = o["points_per_face"] if key == "total_ms" else ""
        print(f"{name:<34}{s['p50']:>8.2f}{s['p99']:>8.2f}{s['mean']:>8.2f}   {points}")
    m = res["mediapipe"]
    if m:
        print(f"{'MediaPipe FaceMesh (tracking)':<34}{m['ms_p50']:>8.2f}{m['ms_p99']:>8.2f}{m['ms_mean']:>8.2f}   468")
        ratio = o["crop_generator_ms"]["p50"] / m["ms_p50"]
        print(f"generator / MediaPipe time (p50): {ratio:.2f}x for {o['points_per_face'] / 468:.0f}x the points")
        res["generator_over_mediapipe_p50"] = ratio
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
