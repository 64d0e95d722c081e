"""Label variants on top of the 3DDFA_V2 teacher, and the fused label chosen by measurement.

* ``TTA``: the two-pass fit, then the second-pass crop jittered (shifts, scales) on the image
  and on its mirror; the meshes are averaged in image space (the mirrored ones mapped back
  through the BFM's left-right vertex pairing, ``mirror_map``) and the 62 parameters refitted
  to the average (``refit``).
* ``fuse_expression``: keep 3DDFA_V2's pose, shape and contour; re-solve only its 10
  expression coefficients so that the model's eye and lip landmarks meet MediaPipe's, region by
  region where MediaPipe agrees with the teacher on where that region is and how big it is
  (``region_agrees``: a MediaPipe mesh on another face, or drifted, is ignored). A ridge toward
  the teacher's own expression, scaled by the coefficients' training spread, keeps it well posed.
* ``hybrid68`` / ``SurfaceSpread``: what the 10 expression bases cannot hold (blinks, most of
  the lip detail) as per-landmark offsets, spread smoothly over the surface of the UV layout.
* ``Fuser``: all three in order; a label is a ``Fit`` (62 numbers) plus (68, 3) offsets.

``benchmarks/label_study.py`` measures them against 3DDFA_V2 alone and MediaPipe alone, and
docs/training.md (section 7) has the table and the decision.
"""

from __future__ import annotations

import numpy as np

from trainer.data.teacher_3ddfa import SIZE, Fit, Teacher3DDFA, crop_roi, roi_from_landmarks

# 68-point index of each point's mirror image (iBUG 300-W numbering)
FLIP68 = np.r_[16:-1:-1, 26:16:-1, 27:31, 35:30:-1, 45:41:-1, 47:45:-1, 39:35:-1, 41:39:-1,
               54:47:-1, 59:54:-1, 64:59:-1, 67:64:-1]
REGIONS = {"left_eye": np.arange(36, 42), "right_eye": np.arange(42, 48), "mouth": np.arange(48, 68)}
JITTER = ((0.0, 0.0, 1.0), (0.03, 0.0, 1.0), (-0.03, 0.0, 1.0), (0.0, 0.03, 1.0), (0.0, -0.03, 1.0),
          (0.0, 0.0, 0.95), (0.0, 0.0, 1.05))  # (dx, dy) as fractions of the side, scale


def mirror_map(teacher: Teacher3DDFA) -> np.ndarray:
    """(N,) for each BFM vertex the vertex nearest its mirror image (the mean face mirrored
    about the plane half-way between the 68 landmarks and their mirror partners)."""
    from scipy.spatial import cKDTree

    u, k = teacher.u, teacher.kpt
    c = float(np.mean((u[k, 0] + u[k[FLIP68], 0]) / 2.0))
    m = u.copy()
    m[:, 0] = 2.0 * c - m[:, 0]
    return cKDTree(u).query(m)[1].astype(np.int64)


def refit(u: np.ndarray, w: np.ndarray, target: np.ndarray, coef0: np.ndarray, iters: int = 4) -> Fit:
    """Fit ``A (u + W c) + b`` to image-space vertices ``target`` (M, 3), given the model's mean
    ``u`` (M, 3) and basis ``w`` (M, 3, 50) at those vertices, by alternating a least-squares
    affine (A, b) and linear coefficients c (columns scaled to unit norm, a tiny ridge)."""
    c = np.asarray(coef0, np.float64).copy()
    ridge = 1e-6 * np.eye(w.shape[2])
    ones = np.ones((len(u), 1))
    for _ in range(iters):
        sol, *_ = np.linalg.lstsq(np.c_[u + w @ c, ones], target, rcond=None)
        a, b = sol[:3].T, sol[3]
        j = np.einsum("ij,mjk->mik", a, w).reshape(-1, w.shape[2])
        scale = np.linalg.norm(j, axis=0) + 1e-12
        js = j / scale
        c = np.linalg.solve(js.T @ js + ridge, js.T @ (target - b - u @ a.T).ravel()) / scale
    sol, *_ = np.linalg.lstsq(np.c_[u + w @ c, ones], target, rcond=None)
    return Fit(sol[:3].T, sol[3], c, np.zeros(4))


class TTA:
    """Test-time averaging over the mirror and small crop jitters of the second pass, on a fixed
    random subset of ``n_fit`` vertices plus the 68 landmarks (enough to pin 62 numbers)."""

    def __init__(self, teacher: Teacher3DDFA, n_fit: int = 1000, seed: int = 0) -> None:
        self.teacher = teacher
        rng = np.random.default_rng(seed)
        idx = np.unique(np.r_[teacher.kpt, rng.choice(len(teacher.u), n_fit, replace=False)])
        mirror = mirror_map(teacher)[idx]
        self.u, self.w = teacher.u[idx], teacher.w[idx]
        self.u_m, self.w_m = teacher.u[mirror], teacher.w[mirror]

    def fit(self, image: np.ndarray, box: np.ndarray | None = None, landmarks: np.ndarray | None = None) -> Fit:
        """``Teacher3DDFA.fit``'s two passes, then the average around its result."""
        return self.around(image, self.teacher.fit(image, box, landmarks))

    def around(self, image: np.ndarray, first: Fit) -> Fit:
        """The average of the jittered, mirrored refits around a two-pass ``first`` fit."""
        t = self.teacher
        roi = roi_from_landmarks(t.landmarks(first))
        w = image.shape[1]
        mirrored = np.ascontiguousarray(image[:, ::-1])
        mroi = np.array([w - roi[2], roi[1], w - roi[0], roi[3]])
        crops, rois, flips = [], [], []
        for flip, img, r in ((False, image, roi), (True, mirrored, mroi)):
            side = r[2] - r[0]
            cx, cy = (r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0
            for dx, dy, s in JITTER:
                h = side * s / 2.0
                jr = np.array([cx + dx * side - h, cy + dy * side - h, cx + dx * side + h, cy + dy * side + h])
                crops.append(crop_roi(img, jr))
                rois.append(jr)
                flips.append(flip)
        acc = np.zeros_like(self.u)
        coefs = []
        for p, r, flip in zip(t.regress(np.stack(crops)), rois, flips):
            f = t.fit_from_params(p, r, SIZE)
            if flip:  # mirror back: vertex j sits where the mirror fit put its partner, x reflected
                v = (self.u_m + self.w_m @ f.coef) @ f.A.T + f.b
                v[:, 0] = (w - 1) - v[:, 0]
            else:
                v = (self.u + self.w @ f.coef) @ f.A.T + f.b
                coefs.append(f.coef)
            acc += v
        out = refit(self.u, self.w, acc / len(rois), np.mean(coefs, 0))
        out.roi = roi
        return out


def region_agrees(ref: np.ndarray, other: np.ndarray, face: float, shift: float = 0.05,
                  size_ratio: float = 1.3) -> bool:
    """Does ``other`` (n, 2) mark the same region as ``ref``: centres within ``shift`` of the
    face size and widths within a factor ``size_ratio``? (Openings may differ; place and size
    may not.)"""
    if not np.isfinite(other).all():
        return False
    if np.linalg.norm(ref.mean(0) - other.mean(0)) > shift * face:
        return False
    wr, wo = np.ptp(ref[:, 0]), np.ptp(other[:, 0])
    return bool(wo > 0 and max(wr / wo, wo / wr) < size_ratio)


def agreeing_regions(lm: np.ndarray, other68: np.ndarray, regions: dict[str, np.ndarray] = REGIONS) -> list[str]:
    face = float(np.sqrt(np.prod(np.ptp(lm[:, :2], 0))))
    return [name for name, idx in regions.items() if region_agrees(lm[idx, :2], other68[idx, :2], face)]


def hybrid68(lm: np.ndarray, other68: np.ndarray,
             regions: dict[str, np.ndarray] = REGIONS) -> tuple[np.ndarray, list[str]]:
    """The teacher's 68 points (N, 3) with the agreeing eye and lip regions taken from
    ``other68`` in x and y (depth stays the teacher's): what a dense per-vertex correction of
    those regions would put on the landmarks, beyond what the 10 expression bases can."""
    used = agreeing_regions(lm, other68, regions)
    out = np.array(lm, np.float64, copy=True)
    for name in used:
        out[regions[name], :2] = other68[regions[name], :2]
    return out, used


def fuse_expression(teacher: Teacher3DDFA, fit: Fit, other68: np.ndarray, prior: float = 1e-2,
                    regions: dict[str, np.ndarray] = REGIONS) -> tuple[Fit, list[str]]:
    """Re-solve the 10 expression coefficients of ``fit`` so that its landmarks in the agreeing
    ``regions`` meet ``other68`` (68, 2+) in 2D; returns the new Fit and the regions used.

    Minimises sum |P A W_exp[k] e - r_k|^2 / face^2 + prior * sum ((e - e0) / sigma)^2 over the
    landmark vertices k of those regions, where r_k is what the fixed pose and shape leave
    to reach MediaPipe's point and sigma the expression coefficients' spread in 3DDFA_V2's
    training normalisation. Pose (A, b) and shape stay the teacher's."""
    lm = teacher.landmarks(fit)[:, :2]
    face = float(np.sqrt(np.prod(np.ptp(lm, 0))))
    used = agreeing_regions(lm, other68, regions)
    if not used:
        return fit, used
    pts = np.concatenate([regions[n] for n in used])
    vid = teacher.kpt[pts]
    n_shp = 40
    w_exp = teacher.w[vid][:, :, n_shp:]  # (K, 3, 10)
    jac = np.einsum("ij,kjl->kil", fit.A[:2], w_exp).reshape(-1, w_exp.shape[2]) / face
    base = teacher.u[vid] + teacher.w[vid][:, :, :n_shp] @ fit.coef[:n_shp]
    r = ((other68[pts, :2] - (base @ fit.A[:2].T + fit.b[:2])) / face).ravel()
    sigma = teacher.p_std[12 + n_shp:]
    e0 = fit.coef[n_shp:]
    # in units of sigma: z = (e - e0) / sigma  ->  (J S) z = r - J e0
    js = jac * sigma
    z = np.linalg.solve(js.T @ js + prior * np.eye(len(sigma)), js.T @ (r - jac @ e0))
    coef = fit.coef.copy()
    coef[n_shp:] = e0 + sigma * z
    return Fit(fit.A.copy(), fit.b.copy(), coef, fit.roi.copy()), used


class SurfaceSpread:
    """Spread per-landmark offsets over the face surface, for the eye and lip detail that the 10
    expression bases cannot hold (``hybrid68``'s points on a dense label).

    A Gaussian RBF over the layout's mean face (model units, ``sigma`` 4 mm: the lids are
    6-7 mm apart there, the inner lips 2-3 mm), with all 68 landmarks as centres, so the
    contour, brow and nose landmarks pin the field at zero and it fades within about 3 sigma
    of the eyes and mouth. The operator depends only on the layout, so it is precomputed:
    ``posmap = teacher posmap + op @ offsets`` with ``offsets`` (68, 3) in the posmap's own
    coordinates (image or crop pixels; the map is linear, so it commutes with the crop)."""

    def __init__(self, mean_face: np.ndarray, kpt_vertex: np.ndarray, sigma: float = 4000.0,
                 ridge: float = 1e-6) -> None:
        c = mean_face[kpt_vertex].astype(np.float64)
        kcc = np.exp(-np.sum((c[:, None] - c[None]) ** 2, -1) / (2 * sigma**2))
        inv = np.linalg.inv(kcc + ridge * np.eye(len(c)))
        d2 = np.sum((mean_face[:, None, :].astype(np.float64) - c[None]) ** 2, -1)
        self.op = (np.exp(-d2 / (2 * sigma**2)) @ inv).astype(np.float32)  # (V, 68)
        self.kpt_vertex = np.asarray(kpt_vertex, np.int64)

    def offsets(self, posmap_vertices: np.ndarray, other68: np.ndarray,
                regions: dict[str, np.ndarray] = REGIONS) -> tuple[np.ndarray, list[str]]:
        """(68, 3) offsets taking the label's landmarks to ``hybrid68``'s, and the regions used."""
        return self.landmark_offsets(posmap_vertices[self.kpt_vertex], other68, regions)

    @staticmethod
    def landmark_offsets(lm: np.ndarray, other68: np.ndarray,
                         regions: dict[str, np.ndarray] = REGIONS) -> tuple[np.ndarray, list[str]]:
        """``offsets`` from the label's 68 landmark vertices ``lm`` (68, 3) alone."""
        target, used = hybrid68(lm, other68, regions)
        return (target - lm).astype(np.float32), used

    def apply(self, posmap_vertices: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        return posmap_vertices + self.op @ offsets


class Fuser:
    """The chosen labels (docs/training.md, section 7): 3DDFA_V2 averaged (``TTA``), its
    expression re-solved to MediaPipe's eye and lip points (``fuse_expression``), and what the
    expression bases cannot hold spread over the surface (``SurfaceSpread``). A label is the
    Fit's 62 numbers plus (68, 3) landmark offsets: ``posmap(fit, offsets)`` rebuilds it."""

    def __init__(self, teacher: Teacher3DDFA, mean: np.ndarray, basis: np.ndarray, kpt_vertex: np.ndarray,
                 prior: float = 1e-2, tta: bool = True) -> None:
        self.teacher, self.mean, self.basis, self.prior = teacher, mean, basis, prior
        self.tta = TTA(teacher) if tta else None  # only ``label`` averages; ``fuse`` takes any fit
        self.spread = SurfaceSpread(mean, kpt_vertex)
        self.kpt_vertex = np.asarray(kpt_vertex, np.int64)

    def posmap(self, fit: Fit, offsets: np.ndarray | None = None) -> np.ndarray:
        """(V, 3) layout vertices of ``fit`` (plus the spread ``offsets``), in fit's pixels."""
        a, b = fit.A.astype(np.float32), fit.b.astype(np.float32)
        v = (self.mean + self.basis @ fit.coef.astype(np.float32)) @ a.T + b
        return v if offsets is None else self.spread.apply(v, offsets)

    def label(self, image: np.ndarray, first: Fit, mediapipe68: np.ndarray | None) -> tuple[Fit, np.ndarray, list[str]]:
        """From a two-pass fit and MediaPipe's 68 points (None: none found) to (Fit, offsets,
        regions taken from MediaPipe)."""
        return self.fuse(self.tta.around(image, first), mediapipe68)

    def fuse(self, averaged: Fit, mediapipe68: np.ndarray | None) -> tuple[Fit, np.ndarray, list[str]]:
        """``label`` after the averaging."""
        fit = averaged
        if mediapipe68 is None:
            return fit, np.zeros((68, 3), np.float32), []
        fit, used = fuse_expression(self.teacher, fit, mediapipe68, self.prior)
        k = self.kpt_vertex  # the posmap at its 68 landmark vertices only: the rest is not read
        lm = (self.mean[k] + self.basis[k] @ fit.coef.astype(np.float32)) @ fit.A.astype(np.float32).T \
            + fit.b.astype(np.float32)
        offsets, used_spread = self.spread.landmark_offsets(lm, mediapipe68)
        return fit, offsets, sorted(set(used) | set(used_spread))
