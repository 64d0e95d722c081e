"""Pseudo ground truth: turn the teacher's 468 sparse 3D points into dense UV position maps.

300W-LP and the Basel Face Model cannot be had here, so labels come from MediaPipe FaceMesh
(the teacher) and the canonical face of the UV layout:

1. ``register``: once, find for each teacher point the canonical vertex it corresponds to.
   The teacher's 68-landmark subset is found by nearest neighbour against dlib's 68 points on
   frontal frames; the canonical face is aligned (similarity) and then warped (3D thin-plate
   spline on those 68 pairs) onto the teacher's mean shape, and each teacher point takes the
   nearest warped canonical vertex as its anchor.
2. ``DenseLabeller``: per frame, a similarity maps the canonical anchors onto the teacher's
   points; what the similarity cannot explain (expression, identity) is a residual that a
   3D biharmonic RBF spreads smoothly over the whole canonical surface. The dense operator is
   fixed by the anchors, so it is precomputed once and a label costs one matrix product.

Everything is in image pixels, x right, y down, z toward the camera (relative depth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import similarity_fit

INNER = np.arange(17, 68)  # brows, nose, eyes, mouth: stable correspondences


def _rbf_system(centers: np.ndarray, smooth: float) -> np.ndarray:
    """Inverse of the biharmonic RBF system with an affine term, shape (n+4, n+4)."""
    n = len(centers)
    k = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    p = np.concatenate([np.ones((n, 1)), centers], 1)
    a = np.zeros((n + 4, n + 4))
    a[:n, :n] = k - smooth * np.eye(n)  # phi(r) = r is conditionally *negative* definite
    a[:n, n:] = p
    a[n:, :n] = p.T
    return np.linalg.inv(a)


def rbf_operator(centers: np.ndarray, targets: np.ndarray, smooth: float) -> np.ndarray:
    """Linear map (M, n): values at n centres -> smooth interpolant at M targets."""
    n = len(centers)
    inv = _rbf_system(centers.astype(np.float64), smooth)[:, :n]  # (n+4, n)
    out = np.empty((len(targets), n), np.float64)
    for s in range(0, len(targets), 8192):
        t = targets[s : s + 8192].astype(np.float64)
        phi = np.linalg.norm(t[:, None] - centers[None], axis=-1)
        basis = np.concatenate([phi, np.ones((len(t), 1)), t], 1)
        out[s : s + 8192] = basis @ inv
    return out


def procrustes_mean(shapes: np.ndarray, iters: int = 5) -> np.ndarray:
    """Mean of (M, N, 3) point sets after removing each one's similarity transform."""
    mean = shapes[0].astype(np.float64)
    for _ in range(iters):
        aligned = []
        for s in shapes:
            sc, rot, t = similarity_fit(s, mean)
            aligned.append(sc * s @ rot.T + t)
        mean = np.mean(aligned, 0)
    return mean


@dataclass
class Registration:
    """Teacher -> layout correspondence: ``anchors[i]`` is the vertex of teacher point i."""

    anchors: np.ndarray  # (468,) int64 vertex indices
    teacher68: np.ndarray  # (68,) int64 teacher point index closest to each dlib landmark
    mean_shape: np.ndarray  # (468, 3) teacher mean shape (arbitrary similarity frame)

    def save(self, path) -> None:
        np.savez(path, anchors=self.anchors, teacher68=self.teacher68, mean_shape=self.mean_shape)

    @classmethod
    def load(cls, path) -> Registration:
        with np.load(path) as z:
            return cls(z["anchors"], z["teacher68"], z["mean_shape"])


def register(layout: UVLayout, teacher: np.ndarray, dlib68: np.ndarray) -> Registration:
    """Find the teacher's anchors on the canonical face.

    teacher: (M, 468, 3) points of M near-frontal faces; dlib68: (M, 68, 2) dlib's landmarks of
    the same faces (image pixels).
    """
    votes = np.stack([np.argmin(np.linalg.norm(t[None, :, :2] - d[:, None], axis=-1), 1)
                      for t, d in zip(teacher, dlib68)])  # (M, 68)
    teacher68 = np.array([np.bincount(v).argmax() for v in votes.T], np.int64)
    mean = procrustes_mean(teacher)
    kv = layout.canonical[layout.kpt_vertex].astype(np.float64)
    canon = layout.canonical.astype(np.float64)
    s, rot, t = similarity_fit(kv[INNER], mean[teacher68[INNER]])
    canon_a = s * canon @ rot.T + t
    # non-rigid ICP: warp the aligned canonical face onto the teacher's mean shape through the
    # current correspondences, re-pick each teacher point's nearest vertex, repeat.
    src_pts, dst_pts = s * kv @ rot.T + t, mean[teacher68]
    anchors = np.zeros(len(mean), np.int64)
    for _ in range(4):
        keep = _separated(src_pts, 2.0 * s)
        op = rbf_operator(src_pts[keep], canon_a, smooth=5.0 * s)
        warped = canon_a + op @ (dst_pts[keep] - src_pts[keep])
        for s0 in range(0, len(mean), 64):
            d = np.linalg.norm(mean[s0 : s0 + 64, None] - warped[None], axis=-1)
            anchors[s0 : s0 + 64] = d.argmin(1)
        src_pts, dst_pts = canon_a[anchors], mean
    return Registration(anchors, teacher68, mean.astype(np.float32))


def _separated(points: np.ndarray, min_dist: float) -> np.ndarray:
    """Indices of a greedy subset of ``points`` at least ``min_dist`` apart (keeps RBF systems
    well conditioned: near-duplicate centres with different values make them explode)."""
    kept: list[int] = []
    for i, p in enumerate(points):
        if not kept or np.min(np.linalg.norm(points[kept] - p, axis=1)) >= min_dist:
            kept.append(i)
    return np.asarray(kept, np.int64)


class DenseLabeller:
    """Dense UV labels from one face's 468 teacher points (image pixels)."""

    def __init__(self, layout: UVLayout, reg: Registration, smooth: float = 10.0, min_sep: float = 3.0):
        self.layout = layout
        self.canon = layout.canonical.astype(np.float64)
        # near-duplicate anchors (two teacher points on about one vertex) make the RBF ill-posed
        self.keep = _separated(self.canon[reg.anchors], min_sep)
        self.anchor_vertices = reg.anchors[self.keep]
        self.centers = self.canon[self.anchor_vertices]
        self.op = rbf_operator(self.centers, self.canon, smooth).astype(np.float64)  # (V, n)

    def vertices(self, points: np.ndarray) -> np.ndarray:
        """(468, 3) teacher points -> (V, 3) dense vertices in the same image space."""
        p = points[self.keep].astype(np.float64)
        s, rot, t = similarity_fit(self.centers, p)
        resid = ((p - t) @ rot) / s - self.centers  # in the canonical frame
        dense = self.canon + self.op @ resid
        return (s * dense @ rot.T + t).astype(np.float32)

    def posmap(self, points: np.ndarray) -> np.ndarray:
        """(468, 3) teacher points -> (S, S, 3) image-space position map (0 off the face)."""
        pm = np.zeros((self.layout.size * self.layout.size, 3), np.float32)
        pm[self.layout.face_ind] = self.vertices(points)
        return pm.reshape(self.layout.size, self.layout.size, 3)
