"""Optional keyframe residual: what the linear basis misses, as a coarse UV-grid map.

A face's identity detail that the K components cannot express is nearly constant while the
face is in view, so a keyframe may carry it once, as a (G, G, 3) int8 map in canonical units,
and the decoder adds it to every frame until the next keyframe.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamcap.geometry.layout import UVLayout


def pool_residual(residual: np.ndarray, layout: UVLayout, grid: int) -> np.ndarray:
    """(V, 3) per-vertex residual -> (G, G, 3) float32 cell means; empty cells take the mean of
    their filled neighbours so upsampling does not pull the face border toward zero."""
    s = layout.size
    if grid < 1 or s % grid:
        raise ValueError(f"residual grid {grid} must divide the UV size {s}")
    f = s // grid
    vals = np.zeros((s * s, 3), np.float64)
    vals[layout.face_ind] = residual
    cnt = np.zeros(s * s, np.float64)
    cnt[layout.face_ind] = 1.0
    sums = vals.reshape(grid, f, grid, f, 3).sum((1, 3))
    n = cnt.reshape(grid, f, grid, f).sum((1, 3))
    valid = n > 0
    cells = np.zeros((grid, grid, 3), np.float64)
    cells[valid] = sums[valid] / n[valid][:, None]
    for _ in range(grid):
        if valid.all():
            break
        w = cv2.boxFilter(valid.astype(np.float64), -1, (3, 3), normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
        acc = cv2.boxFilter(cells * valid[..., None], -1, (3, 3), normalize=False,
                            borderType=cv2.BORDER_CONSTANT)
        grow = ~valid & (w > 0)
        if not grow.any():
            break
        cells[grow] = acc[grow] / w[grow][:, None]
        valid = valid | grow
    return cells.astype(np.float32)


def quantise_residual(cells: np.ndarray, step: float) -> np.ndarray:
    """(G, G, 3) float cells -> int8 at ``step`` units (clipped to +-127 steps)."""
    return np.clip(np.rint(cells / np.float32(step)), -127, 127).astype(np.int8)


def residual_vertices(q: np.ndarray, step: float, layout: UVLayout) -> np.ndarray:
    """(G, G, 3) int8 residual -> (V, 3) float32 per-vertex offsets (bilinear upsampling)."""
    cells = q.astype(np.float32) * np.float32(step)
    s = layout.size
    up = cv2.resize(cells, (s, s), interpolation=cv2.INTER_LINEAR)
    return up.reshape(-1, 3)[layout.face_ind].astype(np.float32)
