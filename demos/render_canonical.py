"""Render the layout's canonical face at a few yaws, textured and shaded, into one PNG.

    python demos/render_canonical.py [-o canonical_render.png] [--yaws -60 -30 0 30 60]

Top row: a synthetic UV texture (colour ramps over u and v, checker lines every 16 UV pixels)
so you can see the texture follow the surface; bottom row: Lambert-shaded geometry.
Runs headless (EGL); no display needed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import default_layout
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import euler_to_matrix
from streamcap.render import FaceRenderer

TILE = 256


def posed_posmap(layout: UVLayout, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """(S, S, 3) position map of the canonical face turned by ``yaw``, centred in a tile."""
    c = layout.canonical - layout.canonical.mean(0)
    scale = 0.8 * TILE / np.ptp(c[:, :2], axis=0).max()
    v = scale * c @ euler_to_matrix(yaw, pitch, 0).T
    v[:, :2] += TILE / 2 - (v[:, :2].min(0) + v[:, :2].max(0)) / 2  # centre the 2D box
    pm = np.zeros((layout.size, layout.size, 3), np.float32)
    pm.reshape(-1, 3)[layout.face_ind] = v
    return pm


def demo_texture(size: int) -> np.ndarray:
    """(S, S, 3) uint8 BGR: blue ramps with u, green with v, dark lines every 16 pixels."""
    rows, cols = np.mgrid[0:size, 0:size]
    tex = np.stack([cols * 255 // size, rows * 255 // size, np.full_like(rows, 170)], -1)
    lines = (rows % 16 == 0) | (cols % 16 == 0)
    tex[lines] //= 3
    return tex.astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("canonical_render.png"))
    ap.add_argument("--yaws", type=float, nargs="+", default=[-60, -30, 0, 30, 60])
    args = ap.parse_args(argv)

    layout = default_layout()
    tex = demo_texture(layout.size)
    bg = np.full((TILE, TILE, 3), 48, np.uint8)
    rows = [[], []]
    with FaceRenderer(TILE, TILE, layout) as r:
        for yaw in args.yaws:
            pm = posed_posmap(layout, yaw)
            rows[0].append(r.render(bg, [(pm, tex)]))
            rows[1].append(r.render(bg, [(pm, None)]))
    for img, yaw in zip(rows[0], args.yaws):
        cv2.putText(img, f"yaw {yaw:+.0f}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
    grid = np.vstack([np.hstack(row) for row in rows])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), grid)
    print(f"wrote {args.output} ({grid.shape[1]}x{grid.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
