"""From a UV position map to the things a user wants: vertices, 68 landmarks, pose, texture.

All functions take image-space position maps (x, y in frame pixels, z toward the camera in the
same pixel units); ``CropTransform.to_image`` turns the generator's crop-space output into that.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .layout import UVLayout


@dataclass(frozen=True)
class Pose:
    """Similarity from the canonical face to the observed one: v = scale * R @ c + t.

    Euler angles in degrees with R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in image axes
    (x right, y down, z toward the camera): yaw > 0 moves the nose toward image right,
    pitch > 0 moves it down, roll > 0 turns the face clockwise on screen.
    """

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float
    yaw: float
    pitch: float
    roll: float

    def as_array(self) -> np.ndarray:
        """(7,) float32 [yaw, pitch, roll, tx, ty, tz, scale] for compact transport."""
        return np.array([self.yaw, self.pitch, self.roll, *self.translation, self.scale], np.float32)


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Degrees -> (3, 3) rotation R = Rz(roll) @ Ry(yaw) @ Rx(pitch)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler(rot: np.ndarray) -> tuple[float, float, float]:
    """(3, 3) rotation -> (yaw, pitch, roll) in degrees, inverse of ``euler_to_matrix``."""
    yaw = np.arcsin(np.clip(-rot[2, 0], -1.0, 1.0))
    pitch = np.arctan2(rot[2, 1], rot[2, 2])
    roll = np.arctan2(rot[1, 0], rot[0, 0])
    return tuple(float(v) for v in np.rad2deg([yaw, pitch, roll]))  # type: ignore[return-value]


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama) with dst ~ s * R @ src + t. Shapes (N, 3) -> (s, R, t)."""
    return SimilarityFit(src).fit(dst)


class SimilarityFit:
    """``similarity_fit`` from a fixed source point set, whose centring is done once (the codec
    fits the same canonical vertices to every face of every frame)."""

    def __init__(self, src: np.ndarray) -> None:
        src = np.asarray(src, np.float64)
        self.mu_s = src.mean(0)
        self.a = src - self.mu_s
        self.var = float((self.a**2).sum() / len(src))

    def fit(self, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        dst = np.asarray(dst, np.float64)
        mu_d = dst.mean(0)
        cov = (dst - mu_d).T @ self.a / len(dst)
        u, d, vt = np.linalg.svd(cov)
        sign = np.ones(3)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[2] = -1.0
        rot = u @ np.diag(sign) @ vt
        scale = float((d * sign).sum() / self.var) if self.var > 0 else 1.0
        t = mu_d - scale * rot @ self.mu_s
        return scale, rot, t


def vertices(posmap: np.ndarray, layout: UVLayout) -> np.ndarray:
    """(S, S, 3) position map -> (V, 3) float32 face vertices in layout order."""
    return posmap.reshape(-1, 3)[layout.face_ind].astype(np.float32)


def landmarks68(posmap: np.ndarray, layout: UVLayout) -> np.ndarray:
    """(S, S, 3) position map -> (68, 3) float32 landmarks read at their UV pixels."""
    return posmap.reshape(-1, 3)[layout.kpt_flat].astype(np.float32)


def estimate_pose(verts: np.ndarray, layout: UVLayout, step: int = 4) -> Pose:
    """Fit the canonical face to ``verts`` (V, 3); every ``step``-th vertex is enough and faster."""
    return _pose(*similarity_fit(layout.canonical[::step], verts[::step]))


def pose_from_landmarks(landmarks: np.ndarray, canonical68: np.ndarray) -> Pose:
    """Fit the canonical face's 68 landmarks (``layout.canonical[layout.kpt_vertex]``) to the
    observed (68, 3) ones: the pose at a fraction of the cost of a fit to every vertex."""
    return _pose(*similarity_fit(canonical68, landmarks))


def _pose(scale: float, rot: np.ndarray, t: np.ndarray) -> Pose:
    yaw, pitch, roll = matrix_to_euler(rot)
    return Pose(rot.astype(np.float32), t.astype(np.float32), scale, yaw, pitch, roll)


def sample_texture(image: np.ndarray, posmap: np.ndarray, layout: UVLayout | None = None) -> np.ndarray:
    """Read the frame's colours at each UV pixel's x, y -> (S, S, C) texture; with a layout,
    off-face pixels are filled from the face border (see ``fill_outside``)."""
    map_x = np.ascontiguousarray(posmap[..., 0], np.float32)
    map_y = np.ascontiguousarray(posmap[..., 1], np.float32)
    tex = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    if layout is not None:
        tex = fill_outside(tex, layout.face_mask)
    return tex


def fill_outside(tex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill pixels outside ``mask`` with nearby inside colours (push-pull over a pyramid), so
    bilinear filtering, mipmaps and JPEG blocks at the UV border never pull in black seams."""
    w = mask.astype(np.float32)
    acc = tex.astype(np.float32) * w[..., None]
    levels = [(acc, w)]
    while min(acc.shape[:2]) > 4:
        acc = cv2.resize(acc, (acc.shape[1] // 2, acc.shape[0] // 2), interpolation=cv2.INTER_AREA)
        w = cv2.resize(w, (w.shape[1] // 2, w.shape[0] // 2), interpolation=cv2.INTER_AREA)
        levels.append((acc, w))
    fill = levels[-1][0] / np.maximum(levels[-1][1], 1e-6)[..., None]
    for acc, w in reversed(levels[:-1]):
        up = cv2.resize(fill, (acc.shape[1], acc.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = acc / np.maximum(w, 1e-6)[..., None]
        a = np.clip(w * 4.0, 0.0, 1.0)[..., None]  # pixels with any inside coverage keep their colour
        fill = own * a + up * (1 - a)
    out = tex.copy()
    out[~mask] = np.clip(fill[~mask], 0, 255).astype(tex.dtype)
    return out


def visible_texture_mask(verts: np.ndarray, layout: UVLayout) -> np.ndarray:
    """(S, S) bool: UV pixels whose surface faces the camera (normal z > 0), so their sampled
    colour is the face's own and not whatever occludes it."""
    normals = vertex_normals(verts, layout.triangles)
    mask = np.zeros(layout.size * layout.size, bool)
    mask[layout.face_ind] = normals[:, 2] > 0
    return mask.reshape(layout.size, layout.size)


def vertex_normals(verts: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals, area-weighted from the triangles, oriented toward +z for a frontal
    face in image axes."""
    v = verts.astype(np.float64)
    e1 = v[triangles[:, 1]] - v[triangles[:, 0]]
    e2 = v[triangles[:, 2]] - v[triangles[:, 0]]
    fn = np.cross(e1, e2)
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, triangles[:, k], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    return n.astype(np.float32)
