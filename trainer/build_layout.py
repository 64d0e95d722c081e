"""Build the shipped UV layout table from PRNet's UV data files.

Usage: python trainer/build_layout.py [--src ../shared/data/uv_prnet] [-o streamcap/models/uv_layout_v1.npz]

Regions (loss weights 16:4:3:0):
  3 eyes-nose-mouth: PRNet's weight-mask eye/nose/mouth level and the 68 landmark pixels
  2 face: inside the convex hull of the 68 landmarks (jaw line and brows)
  1 forehead-cheeks: the rest of the face surface above the jaw line
  0 neck/outside: below the jaw line, or not face surface
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.geometry.layout import UVLayout, grid_triangles

JAW = slice(0, 17)


def default_src() -> Path:
    data = os.environ.get("STREAMCAP_DATA")
    base = Path(data) if data else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "uv_prnet"


def build_layout(src: Path) -> UVLayout:
    """Read PRNet's UV files under ``src`` and return the layout table."""
    canonical = np.load(src / "canonical_vertices.npy").astype(np.float32)
    face_ind = np.loadtxt(src / "face_ind.txt").astype(np.int64)
    kpt = np.loadtxt(src / "uv_kpt_ind.txt").astype(np.int64).T  # (68, 2) x, y
    weight_png = cv2.imread(str(src / "uv_weight_mask.png"), cv2.IMREAD_GRAYSCALE)
    if weight_png is None:
        raise FileNotFoundError(src / "uv_weight_mask.png")
    size = weight_png.shape[0]
    face = np.zeros(size * size, bool)
    face[face_ind] = True
    face = face.reshape(size, size)

    hull = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(kpt.astype(np.int32)), 1)
    hull = hull.astype(bool)
    jaw = kpt[JAW]
    order = np.argsort(jaw[:, 0])
    chin_v = float(jaw[:, 1].max())
    jaw_v = np.interp(np.arange(size), jaw[order, 0], jaw[order, 1], left=chin_v, right=chin_v)
    below_jaw = np.arange(size)[:, None] > jaw_v[None, :]

    regions = np.zeros((size, size), np.uint8)
    regions[face & ~below_jaw] = 1
    regions[face & hull] = 2
    enm = weight_png >= 53  # PRNet's eye/nose/mouth level (64, with anti-aliased edges) and landmarks
    enm.reshape(-1)[kpt[:, 1] * size + kpt[:, 0]] = True
    regions[face & enm] = 3

    return UVLayout(
        size=size,
        face_ind=face_ind,
        canonical=canonical,
        kpt_uv=kpt,
        regions=regions,
        triangles=grid_triangles(face),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=default_src())
    ap.add_argument("-o", "--out", type=Path, default=Path("streamcap/models/uv_layout_v1.npz"))
    args = ap.parse_args(argv)
    layout = build_layout(args.src)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    layout.save(args.out)
    counts = np.bincount(layout.regions.ravel(), minlength=4)
    print(f"wrote {args.out}: {layout.n_vertices} vertices, {len(layout.triangles)} triangles, "
          f"regions {counts.tolist()}, hash {layout.hash}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
