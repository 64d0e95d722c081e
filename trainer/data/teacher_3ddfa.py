"""3DDFA_V2 as a teacher: its MobileNet-V1 (width 0.5) regressor and dense 3DMM, written here.

The network takes a 120x120 BGR crop normalised as (x - 127.5) / 128 and regresses 62 numbers,
normalised by the mean/std in ``param_mean_std_62d_120x120.pkl``. De-normalised they are

* ``[0:12]``: a 3x4 camera matrix ``[sR | t]`` from model space to the 120-pixel crop (y up);
* ``[12:52]``: 40 shape coefficients, ``[52:62]``: 10 expression coefficients,

and the dense face is ``u + W_shp a_shp + W_exp a_exp`` over the 53,215 BFM vertices. The crop
follows 3DDFA_V2's conventions (the two ROI boxes below, a 1-pixel offset left over from MATLAB,
the crop's y axis pointing up), which we keep because the weights were trained with them.

**Into the UV position map.** PRNet's 256x256 UV layout was made by rasterising this same BFM
through the per-vertex UV coordinates of ``BFM_UV.mat`` (v flipped: row = 255 - 255 v). We
rebuild it as a barycentric interpolation: each face pixel of the layout falls in one triangle
of the BFM's UV-plane triangulation, and its position is that triangle's blend of three
vertices. Checked against ``uv_prnet/canonical_vertices.npy`` (``UVBridge.check``): the mean
shape rasterised this way matches the canonical face up to a similarity with a reflection
(image y points down, the BFM's up), median residual 0.11% of the face diagonal, p90 0.22%,
max 0.9%. So one sparse (43,867 x 53,215) matrix takes a teacher mesh to a label, and for the
62-parameter model the whole UV basis is precomputed (``UVBridge.basis``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

SIZE = 120
N_SHP, N_EXP = 40, 10


# --- the network ------------------------------------------------------------------------------


class DepthwiseBlock(nn.Module):
    """3x3 depthwise (stride s) + BN + ReLU, then 1x1 pointwise + BN + ReLU (names match the
    state dict: conv_dw, bn_dw, conv_sep, bn_sep)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn_dw(self.conv_dw(x)))
        return self.relu(self.bn_sep(self.conv_sep(x)))


# (name, input channels, output channels, stride) at width 1.0; 3DDFA_V2 uses width 0.5
_BLOCKS = [("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
           ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2)] + \
          [(f"dw5_{i}", 512, 512, 1) for i in range(1, 6)] + [("dw5_6", 512, 1024, 2), ("dw6", 1024, 1024, 1)]


class MobileNetV1(nn.Module):
    """MobileNet-V1 regressor: 120x120 crop -> 62 normalised parameters (plus 3DDFA_V2's unused
    136-number landmark head, kept so the state dict loads strictly)."""

    def __init__(self, width: float = 0.5, num_params: int = 62) -> None:
        super().__init__()
        c = lambda n: int(n * width)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(32), 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        self.relu = nn.ReLU(inplace=True)
        for name, cin, cout, stride in _BLOCKS:
            setattr(self, name, DepthwiseBlock(c(cin), c(cout), stride))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc_param = nn.Linear(c(1024), num_params)
        self.fc_lm = nn.Linear(c(1024), 136)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        return self.fc_param(torch.flatten(self.avgpool(x), 1))


def load_network(path: Path) -> MobileNetV1:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    sd = ck.get("state_dict", ck)
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    net = MobileNetV1()
    net.load_state_dict(sd, strict=True)
    return net.eval()


# --- crops ------------------------------------------------------------------------------------


def roi_from_box(box: np.ndarray) -> np.ndarray:
    """3DDFA_V2's ROI from a face-detector box (x0, y0, x1, y1): a square of 1.58x the mean side,
    moved down by 0.14 of it."""
    x0, y0, x1, y1 = [float(v) for v in box[:4]]
    old = (x1 - x0 + y1 - y0) / 2.0
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 + old * 0.14
    side = old * 1.58
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def roi_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """3DDFA_V2's ROI from 68 landmarks (N, 2+): the square around their box, side = the diagonal
    of that square."""
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    c = (lo + hi) / 2.0
    r = float((hi - lo).max()) / 2.0
    side = np.sqrt(2.0) * 2 * r
    return np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])


def roi_matrix(roi: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(2, 3) image -> crop map that cuts ``roi`` out and resizes it to ``size`` the way
    ``cv2.resize`` samples (pixel centres)."""
    x0, y0, x1, y1 = roi
    kx, ky = size / (x1 - x0), size / (y1 - y0)
    return np.array([[kx, 0, kx * (0.5 - x0) - 0.5], [0, ky, ky * (0.5 - y0) - 0.5]])


def crop_roi(image: np.ndarray, roi: np.ndarray, size: int = SIZE) -> np.ndarray:
    return cv2.warpAffine(image, roi_matrix(roi, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


# --- the teacher ------------------------------------------------------------------------------


@dataclass
class Fit:
    """One face as the teacher sees it, in image coordinates: ``v_img = A @ v + b`` for a model
    vertex ``v = u + W [shp; exp]``. x right, y down, z toward the camera (image-pixel units)."""

    A: np.ndarray  # (3, 3)
    b: np.ndarray  # (3,)
    coef: np.ndarray  # (50,) 40 shape, then 10 expression coefficients
    roi: np.ndarray  # (4,) the crop it was regressed from

    def as_vector(self) -> np.ndarray:
        """(62,) float32: A row-major, b, coefficients."""
        return np.concatenate([self.A.ravel(), self.b, self.coef]).astype(np.float32)

    @staticmethod
    def from_vector(v: np.ndarray) -> Fit:
        v = np.asarray(v, np.float64)
        return Fit(v[:9].reshape(3, 3), v[9:12].copy(), v[12:62].copy(), np.zeros(4))


class Teacher3DDFA:
    """The 3DDFA_V2 MobileNet-0.5 teacher over the shipped files in ``root``."""

    def __init__(self, root: Path, threads: int = 0) -> None:
        root = Path(root)
        if threads:
            torch.set_num_threads(threads)
        self.net = load_network(root / "mb05_120x120.pth")
        with open(root / "param_mean_std_62d_120x120.pkl", "rb") as fh:
            ms = pickle.load(fh)
        self.p_mean = np.asarray(ms["mean"], np.float64)
        self.p_std = np.asarray(ms["std"], np.float64)
        u = (np.load(root / "u_shp.npy") + np.load(root / "u_exp.npy")).reshape(-1, 3)
        w = np.concatenate([np.load(root / "w_shp_sim.npy"), np.load(root / "w_exp_sim.npy")], 1)
        self.u = u.astype(np.float64)  # (N, 3)
        self.w = w.reshape(-1, 3, N_SHP + N_EXP).astype(np.float64)  # (N, 3, 50)
        self.kpt = (np.load(root / "keypoints_sim.npy")[::3] // 3).astype(np.int64)  # (68,) vertex ids
        self.root = root

    # network
    def regress(self, crops: np.ndarray) -> np.ndarray:
        """(B, 120, 120, 3) uint8 BGR crops -> (B, 62) de-normalised parameters."""
        x = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32))
        with torch.inference_mode():
            p = self.net((x - 127.5) / 128.0).numpy().astype(np.float64)
        return p * self.p_std + self.p_mean

    @staticmethod
    def fit_from_params(p: np.ndarray, roi: np.ndarray, size: int = SIZE) -> Fit:
        """De-normalised parameters regressed from ``roi`` -> image-space Fit (3DDFA_V2's
        similar_transform: the 1-pixel offset, y flipped, depth scaled by the mean scale)."""
        cam = p[:12].reshape(3, 4)
        x0, y0, x1, y1 = roi
        sx, sy = (x1 - x0) / size, (y1 - y0) / size
        d = np.diag([sx, -sy, (sx + sy) / 2.0])
        a = d @ cam[:, :3]
        b = d @ cam[:, 3] + np.array([x0 - sx, sy * size + y0, -(sx + sy) / 2.0])
        return Fit(a, b, p[12:62].copy(), np.asarray(roi, np.float64))

    def model_vertices(self, coef: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        u, w = (self.u, self.w) if idx is None else (self.u[idx], self.w[idx])
        return u + w @ coef

    def vertices(self, fit: Fit, idx: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) image-space vertices (all 53,215, or the rows ``idx``)."""
        return self.model_vertices(fit.coef, idx) @ fit.A.T + fit.b

    def landmarks(self, fit: Fit) -> np.ndarray:
        return self.vertices(fit, self.kpt)

    def fit_rois(self, image: np.ndarray, rois: list[np.ndarray]) -> list[Fit]:
        crops = np.stack([crop_roi(image, r) for r in rois])
        return [self.fit_from_params(p, r) for p, r in zip(self.regress(crops), rois)]

    def fit(self, image: np.ndarray, box: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> Fit:
        """3DDFA_V2's two passes: a first fit from the detector ``box`` (or from earlier
        ``landmarks``, as its video tracking does), then a refit from the first fit's landmarks."""
        roi = roi_from_landmarks(landmarks) if landmarks is not None else roi_from_box(box)
        first = self.fit_rois(image, [roi])[0]
        return self.fit_rois(image, [roi_from_landmarks(self.landmarks(first))])[0]


def _barycentric(tri: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weights (u, v) of vertices 1 and 2 of triangles (N, 3, 2) at points (N, 2)."""
    e1, e2, d = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], q - tri[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    return (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det, (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det


def locate_on_grid(points: np.ndarray, simplices: np.ndarray, size: int) -> np.ndarray:
    """(size, size) index of a triangle holding each integer pixel (x = column, y = row), -1
    where none does. Same answer as ``Delaunay.find_simplex`` on the grid, but the BFM's UV
    triangulation is too skinny for its walk (tens of seconds): each triangle here visits the
    few grid pixels of its bounding box instead."""
    grid = np.full((size, size), -1, np.int64)
    p = points[simplices]  # (T, 3, 2)
    lo = np.ceil(p.min(1) - 1e-9).astype(np.int64)
    n = np.floor(p.max(1) + 1e-9).astype(np.int64) - lo + 1  # pixels spanned per axis
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    flat = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0] == 0

    def mark(t: np.ndarray, x: np.ndarray) -> None:
        u, v = _barycentric(p[t], x.astype(np.float64))
        ok = (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (x >= 0).all(1) & (x < size).all(1)
        grid[x[ok, 1], x[ok, 0]] = t[ok]

    small = (n <= 8).all(1) & ~flat
    for i in range(8):
        for j in range(8):
            t = np.flatnonzero(small & (n[:, 0] > i) & (n[:, 1] > j))
            mark(t, lo[t] + [i, j])
    for t in np.flatnonzero(~small & ~flat):  # the few long triangles along the hull
        xs, ys = np.meshgrid(np.arange(n[t, 0]), np.arange(n[t, 1]))
        mark(np.full(xs.size, t), lo[t] + np.c_[xs.ravel(), ys.ravel()])
    return grid


class UVBridge:
    """Teacher mesh -> PRNet UV layout: barycentric weights of each layout face pixel over the
    BFM vertices, found in the BFM's UV-plane triangulation (``BFM_UV.mat``)."""

    def __init__(self, bfm_uv: np.ndarray, face_ind: np.ndarray, uv_size: int = 256) -> None:
        from scipy.spatial import Delaunay

        s = uv_size - 1
        plane = np.c_[bfm_uv[:, 0] * s, s - bfm_uv[:, 1] * s]  # face3d's process_uv: v flipped
        tri = Delaunay(plane)
        rows, cols = np.divmod(np.asarray(face_ind, np.int64), uv_size)
        q = np.c_[cols, rows].astype(np.float64)
        simplex = locate_on_grid(tri.points, tri.simplices, uv_size)[rows, cols]
        if (simplex < 0).any():
            raise ValueError(f"{int((simplex < 0).sum())} layout pixels fall outside the BFM's UV plane")
        self.vertex = tri.simplices[simplex].astype(np.int64)  # (V, 3)
        u, v = _barycentric(plane[self.vertex], q)
        self.weights = np.c_[1.0 - u - v, u, v]  # (V, 3)

    @classmethod
    def from_files(cls, teacher_root: Path, face_ind: np.ndarray, uv_size: int = 256) -> UVBridge:
        import scipy.io

        uv = scipy.io.loadmat(str(Path(teacher_root) / "BFM_UV.mat"))["UV"].astype(np.float64)
        return cls(uv, face_ind, uv_size)

    def apply(self, per_vertex: np.ndarray) -> np.ndarray:
        """(N, ...) per-BFM-vertex values -> (V, ...) per layout face pixel."""
        w = self.weights.reshape(self.weights.shape + (1,) * (per_vertex.ndim - 1))
        return (per_vertex[self.vertex] * w).sum(1)

    def basis(self, teacher: Teacher3DDFA) -> tuple[np.ndarray, np.ndarray]:
        """The teacher's model on the layout: mean (V, 3) and basis (V, 3, 50), float32."""
        return self.apply(teacher.u).astype(np.float32), self.apply(teacher.w).astype(np.float32)

    def check(self, teacher: Teacher3DDFA, canonical: np.ndarray) -> dict:
        """Residual of the rasterised mean shape against the layout's canonical face after the
        best similarity (reflection allowed), as fractions of the canonical face's diagonal."""
        p = self.apply(teacher.u)
        mp, mc = p.mean(0), canonical.mean(0)
        a, c = p - mp, canonical - mc
        u, s, vt = np.linalg.svd(c.T @ a)
        r = u @ vt
        k = s.sum() / (a**2).sum()
        res = np.linalg.norm(k * a @ r.T - c, axis=1)
        diag = float(np.linalg.norm(canonical.max(0) - canonical.min(0)))
        return {"median": float(np.median(res) / diag), "p90": float(np.percentile(res, 90) / diag),
                "max": float(res.max() / diag), "reflection": bool(np.linalg.det(r) < 0)}
