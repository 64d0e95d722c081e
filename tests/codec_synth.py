"""Synthetic faces for the codec tests: a small UV layout cut from the real one, a basis fitted
to smooth random deformations of the canonical face, and posed sequences with known truth."""

from __future__ import annotations

import numpy as np
from streamcap_codecs.basis import GeometryBasis, fit_basis, normalise_pose

from streamcap.geometry.layout import UVLayout, grid_triangles
from streamcap.geometry.posmap import euler_to_matrix


def small_layout(layout: UVLayout, factor: int = 4) -> UVLayout:
    """Every ``factor``-th UV pixel of ``layout``: same face, (S/factor)^2 grid, ~V/factor^2 vertices."""
    s_full, s = layout.size, layout.size // factor
    full_index = np.full(s_full * s_full, -1, np.int64)
    full_index[layout.face_ind] = np.arange(layout.n_vertices)
    sub = full_index.reshape(s_full, s_full)[::factor, ::factor]
    mask = sub >= 0
    rows, cols = np.nonzero(mask)
    return UVLayout(size=s, face_ind=(rows * s + cols).astype(np.int64),
                    canonical=layout.canonical[sub[rows, cols]].astype(np.float32),
                    kpt_uv=(layout.kpt_uv // factor).astype(np.int64),
                    regions=layout.regions[::factor, ::factor].copy(),
                    triangles=grid_triangles(mask).astype(np.int64))


def deformation_fields(layout: UVLayout, rank: int, seed: int = 0) -> np.ndarray:
    """(rank, V, 3) smooth displacement fields (canonical units, RMS ~3 each)."""
    rng = np.random.default_rng(seed)
    c = layout.canonical - layout.canonical.mean(0)
    c = c / np.abs(c).max()
    out = []
    for _ in range(rank):
        w = rng.normal(0, 2.5, (3, 3))
        phase = rng.uniform(0, 2 * np.pi, 3)
        f = np.sin(c @ w + phase) * rng.normal(0, 1, 3)
        f *= 3.0 / np.sqrt((f**2).sum(1).mean())
        out.append(f)
    return np.stack(out).astype(np.float32)


def synthetic_basis(layout: UVLayout, rank: int = 8, k: int = 8, n: int = 60,
                    seed: int = 0) -> tuple[GeometryBasis, np.ndarray]:
    """Fit a basis to ``n`` random posed faces made of ``rank`` deformation fields (so the fit
    also goes through pose normalisation). Returns (basis, fields)."""
    rng = np.random.default_rng(seed + 1)
    fields = deformation_fields(layout, rank, seed)
    faces = []
    for _ in range(n):
        canon = layout.canonical + np.tensordot(rng.normal(0, 1, rank), fields, 1)
        rot = euler_to_matrix(*rng.uniform(-30, 30, 3))
        v = rng.uniform(0.5, 2.0) * canon @ rot.T + rng.uniform(-200, 600, 3)
        faces.append(normalise_pose(v.astype(np.float32), layout)[1])
    return fit_basis(np.stack(faces), k, layout_hash=layout.hash), fields


def smooth_path(rng: np.random.Generator, n: int, dims: int, scale: float, period: float = 90.0) -> np.ndarray:
    """(n, dims) smooth random trajectories: a few sinusoids per dimension."""
    t = np.arange(n)[:, None]
    out = np.zeros((n, dims))
    for _ in range(3):
        freq = rng.uniform(0.3, 1.5, dims) / period
        out += rng.normal(0, scale / 2, dims) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.3, dims))
    return out


def face_sequence(layout: UVLayout, fields: np.ndarray, n: int, seed: int, centre=(320.0, 240.0),
                  size: float = 1.0) -> np.ndarray:
    """(n, V, 3) float32 image-space vertices: deforming canonical face on a smooth pose path."""
    rng = np.random.default_rng(seed)
    coef = smooth_path(rng, n, len(fields), 1.0)
    ang = smooth_path(rng, n, 3, 20.0)
    shift = smooth_path(rng, n, 3, 30.0) + np.array([centre[0], centre[1], 0.0])
    scale = size * np.exp(smooth_path(rng, n, 1, 0.1))[:, 0]
    mean = layout.canonical.mean(0)
    out = np.empty((n, layout.n_vertices, 3), np.float32)
    for i in range(n):
        canon = layout.canonical - mean + np.tensordot(coef[i], fields, 1)
        out[i] = scale[i] * canon @ euler_to_matrix(*ang[i]).T + shift[i]
    return out


def texture(layout: UVLayout, seed: int = 0) -> np.ndarray:
    """(S, S, 3) uint8 smooth coloured texture, black off the face."""
    rng = np.random.default_rng(seed)
    s = layout.size
    yy, xx = np.mgrid[0:s, 0:s] / s
    img = np.stack([128 + 100 * np.sin(2 * np.pi * (a * xx + b * yy)) for a, b in rng.uniform(0.5, 3, (3, 2))], -1)
    img[~layout.face_mask] = 0
    return img.astype(np.uint8)
