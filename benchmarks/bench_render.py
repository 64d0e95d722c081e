"""ModernGL renderer time per frame: the canonical face textured over a 640x480 background.

    python benchmarks/bench_render.py [--frames 100] [--width 640 --height 480] [--json out.json]

One render = background upload, per face a position-map + texture upload and one indexed draw,
and the RGB readback. Faces get a slightly different pose every frame, so uploads are real.
Warm-up renders are excluded; p50/p99/mean in ms. On a CPU-only machine this measures Mesa
llvmpipe (set LP_NUM_THREADS to pin its thread count).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.benchmark import format_stats, stats
from streamcap.bundle import default_layout
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import euler_to_matrix
from streamcap.render import FaceRenderer


def face_posmaps(layout: UVLayout, centre: tuple[float, float], scale: float, n: int) -> list:
    """``n`` (S, S, 3) position maps of the canonical face swaying in yaw around ``centre``."""
    c = layout.canonical - layout.canonical.mean(0)
    out = []
    for k in range(n):
        rot = euler_to_matrix(25.0 * np.sin(k / n * 2 * np.pi), 5.0, 0.0)
        pm = np.zeros((layout.size, layout.size, 3), np.float32)
        pm.reshape(-1, 3)[layout.face_ind] = scale * c @ rot.T + (*centre, 0.0)
        out.append(pm)
    return out


def uv_texture(size: int) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size]
    return np.stack([cols, rows, (cols + rows) // 2], -1).astype(np.uint8)


def run(width: int, height: int, frames: int, warmup: int) -> dict:
    layout = default_layout()
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tex = uv_texture(layout.size)
    cycle = 16
    one = [face_posmaps(layout, (width / 2, height / 2), 0.9, cycle)]
    quad = [
        face_posmaps(layout, (width * fx, height * fy), 0.45, cycle)
        for fx in (0.27, 0.73)
        for fy in (0.28, 0.72)
    ]
    res: dict = {"width": width, "height": height, "frames": frames, "warmup": warmup,
                 "faces_vertices": layout.n_vertices, "faces_triangles": len(layout.triangles),
                 "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS")}
    rows: dict[str, dict] = {}

    def frames_of(r: FaceRenderer, maps: list, shade: bool) -> dict:
        times = []
        for i in range(warmup + frames):
            faces = [(m[i % cycle], tex) for m in maps]
            t0 = time.perf_counter()
            r.render(bg, faces, shade=shade)
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                times.append(dt)
        return stats(times)

    with FaceRenderer(width, height, layout, mesh_step=2) as r:
        rows["1 face textured, mesh_step 2"] = frames_of(r, one, False)
        rows["4 faces textured, mesh_step 2"] = frames_of(r, quad, False)
    with FaceRenderer(width, height, layout) as r:
        res["gl_renderer"] = r.ctx.info.get("GL_RENDERER")
        rows["1 face textured"] = frames_of(r, one, False)
        rows["4 faces textured"] = frames_of(r, quad, False)
        rows["1 face shaded (geometry only)"] = frames_of(r, one, True)
        times = []
        for i in range(warmup + frames):
            t0 = time.perf_counter()
            r.face_ids()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        rows["face_ids() readback"] = stats(times)
    res["ms_per_frame"] = rows
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    res = run(args.width, args.height, args.frames, args.warmup)
    print(format_stats(f"render {args.width}x{args.height} on {res['gl_renderer']}",
                       res["ms_per_frame"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
