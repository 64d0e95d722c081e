"""A linear geometry basis for faces, and the pose normalisation it is defined in.

The codec never sends vertices. It sends a head pose plus the coordinates of the
pose-normalised face in a small linear basis learnt by PCA over training faces
(``trainer/build_codec_basis.py``). The basis ships in the model bundle as an ``.npz`` file
(manifest key ``codec_basis``); its content hash (``basis_id``) travels in every stream
header so a receiver with another basis refuses the stream instead of drawing garbage.

Coefficient scale: with V vertices, ``decode(c) = mean + sqrt(V) * (c @ components)`` with
orthonormal component rows, so a coefficient error of ``e`` moves the face by ``e`` canonical
units RMS per vertex. One quantisation step therefore means the same geometric error whatever
the number of vertices, which keeps ``--quality`` meaningful across layouts.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamcap.errors import BundleError, CodecError
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import Pose, matrix_to_euler, similarity_fit

log = logging.getLogger(__name__)

BASIS_VERSION = 1
BASIS_FORMAT = "streamcap-codec-basis"


@dataclass(frozen=True, eq=False)
class GeometryBasis:
    """PCA basis of pose-normalised faces.

    Shapes: ``mean`` (V, 3), ``components`` (K, V*3) with orthonormal rows, ``stdev`` (K,) the
    training standard deviation of each coefficient (in coefficient units, see module doc).
    """

    mean: np.ndarray
    components: np.ndarray
    stdev: np.ndarray
    layout_hash: str = ""
    _id: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        mean = np.ascontiguousarray(self.mean, np.float32)
        comps = np.ascontiguousarray(self.components, np.float32)
        stdev = np.ascontiguousarray(self.stdev, np.float32)
        if mean.ndim != 2 or mean.shape[1] != 3 or mean.shape[0] < 1:
            raise ValueError(f"basis mean must be (V, 3), got {mean.shape}")
        if comps.ndim != 2 or comps.shape[1] != mean.size or comps.shape[0] < 1:
            raise ValueError(f"basis components must be (K, {mean.size}), got {comps.shape}")
        if stdev.shape != (comps.shape[0],):
            raise ValueError(f"basis stdev must be ({comps.shape[0]},), got {stdev.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "stdev", stdev)

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def id(self) -> str:
        """16 hex digits of SHA-256 over the float32 tables: what a stream header names."""
        if not self._id:
            h = hashlib.sha256()
            for arr in (self.mean, self.components, self.stdev):
                h.update(np.asarray(arr.shape, np.int64).tobytes())
                h.update(arr.tobytes())
            object.__setattr__(self, "_id", h.hexdigest()[:16])
        return self._id

    @property
    def _unit(self) -> np.float32:
        return np.float32(np.sqrt(self.n_vertices))

    def encode(self, vertices_canon: np.ndarray) -> np.ndarray:
        """(V, 3) canonical-frame vertices -> (K,) float32 coefficients (orthogonal projection)."""
        v = np.asarray(vertices_canon, np.float32)
        if v.shape != self.mean.shape:
            raise ValueError(f"expected vertices {self.mean.shape}, got {v.shape}")
        return (self.components @ (v - self.mean).ravel()) / self._unit

    def projector(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(vertex indices, mean at them, (K, 3 * len(indices)) matrix) to fit coefficients from
        every ``step``-th vertex alone by least squares: ``encode_many(v, step)``. The full
        components (K x 3V floats, 34 MB) outgrow the CPU caches, a quarter of them does not; on faces
        the fit is the orthogonal projection to within a few hundredths of a quantisation step
        (measured in ``docs/results/profile.md``). Falls back to step 1 when the subset would
        leave fewer than 4 rows per component."""
        if step <= 1 or 3 * (self.n_vertices // step) < 4 * self.n_components:
            return np.arange(self.n_vertices), self.mean, self.components / self._unit
        cache = self.__dict__.setdefault("_projectors", {})
        if step not in cache:
            idx = np.arange(0, self.n_vertices, step)
            cols = (idx[:, None] * 3 + np.arange(3)).ravel()
            sub = self.components[:, cols].astype(np.float64)
            p = np.linalg.pinv(sub.T) / float(self._unit)  # (K, 3 * len(idx))
            cache[step] = (idx, np.ascontiguousarray(self.mean[idx]), np.ascontiguousarray(p, np.float32))
        return cache[step]

    def encode_many(self, vertices_canon: np.ndarray, step: int = 1) -> np.ndarray:
        """(N, V, 3) -> (N, K): ``encode`` of N faces, from every ``step``-th vertex (see
        ``projector``). With ``step`` > 1 the input may also be (N, len(idx), 3), only the
        vertices ``projector(step)`` reads. One matrix-vector product per face: with the
        single-threaded OpenBLAS the runtime uses, that beat one (K, N) product."""
        v = np.asarray(vertices_canon, np.float32)
        idx, mean, proj = self.projector(step)
        if v.ndim == 3 and v.shape[1] == self.n_vertices and len(idx) != self.n_vertices:
            v = v[:, idx]
        if v.ndim != 3 or v.shape[1:] != mean.shape:
            raise ValueError(f"expected vertices (N, *{self.mean.shape}), got {v.shape}")
        return np.stack([proj @ f.ravel() for f in v - mean]) if len(v) else np.zeros((0, len(proj)), np.float32)

    def decode(self, coeffs: np.ndarray) -> np.ndarray:
        """(K,) coefficients (fewer are zero-padded) -> (V, 3) float32 canonical-frame vertices."""
        c = np.asarray(coeffs, np.float32).ravel()
        if c.size > self.n_components:
            raise ValueError(f"{c.size} coefficients for a {self.n_components}-component basis")
        flat = (c * self._unit) @ self.components[: c.size]
        return self.mean + flat.reshape(-1, 3)

    def truncate(self, k: int) -> GeometryBasis:
        """The first ``k`` components (PCA order), e.g. to compare K without refitting."""
        if not 1 <= k <= self.n_components:
            raise ValueError(f"k={k} outside 1..{self.n_components}")
        return GeometryBasis(self.mean, self.components[:k], self.stdev[:k], self.layout_hash)

    def save(self, path: str | Path, dtype: str = "float16") -> None:
        """Write the ``.npz`` table. Components are stored as float16 by default (half the size;
        the error it adds is far below one quantisation step); ``id`` is that of the stored data."""
        if dtype not in ("float16", "float32"):
            raise ValueError("dtype must be float16 or float32")
        np.savez(
            path,
            format=np.array(BASIS_FORMAT),
            version=np.int32(BASIS_VERSION),
            layout_hash=np.array(self.layout_hash),
            mean=self.mean.astype(np.float32),
            components=self.components.astype(dtype),
            stdev=self.stdev.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | Path, layout: UVLayout | None = None) -> GeometryBasis:
        """Read and validate a basis table; BundleError if it is missing, corrupt, of another
        version or made for another UV layout than ``layout``."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise BundleError(f"codec basis not found: {path}") from exc
        except Exception as exc:  # zip, header and value errors all mean "corrupt"
            raise BundleError(f"codec basis {path} is corrupt: {exc}") from exc
        need = {"format", "version", "layout_hash", "mean", "components", "stdev"}
        if not need <= data.keys():
            raise BundleError(f"codec basis {path} lacks {sorted(need - data.keys())}")
        if str(data["format"]) != BASIS_FORMAT:
            raise BundleError(f"{path} is not a streamcap codec basis")
        if int(data["version"]) != BASIS_VERSION:
            raise BundleError(f"codec basis {path} has version {int(data['version'])}, "
                              f"this runtime reads {BASIS_VERSION}")
        try:
            basis = cls(data["mean"], data["components"], data["stdev"], str(data["layout_hash"]))
        except ValueError as exc:
            raise BundleError(f"codec basis {path}: {exc}") from exc
        finite = all(np.isfinite(a).all() for a in (basis.mean, basis.components, basis.stdev))
        if not finite:
            raise BundleError(f"codec basis {path} holds NaN or infinite values")
        if layout is not None:
            check_layout(basis, layout, BundleError)
        return basis


def check_layout(basis: GeometryBasis, layout: UVLayout, error: type[Exception] = CodecError) -> None:
    """Raise ``error`` unless ``basis`` was built for ``layout`` (vertex count and hash)."""
    if basis.n_vertices != layout.n_vertices:
        raise error(f"codec basis has {basis.n_vertices} vertices, the UV layout {layout.n_vertices}")
    if basis.layout_hash and basis.layout_hash != layout.hash:
        raise error(f"codec basis was built for UV layout {basis.layout_hash}, not {layout.hash}")


def fit_basis(normalised_vertices: np.ndarray, k: int, max_samples: int = 2000, seed: int = 0,
              layout_hash: str = "") -> GeometryBasis:
    """PCA of pose-normalised faces (N, V, 3) -> a K-component basis.

    Uses at most ``max_samples`` faces (random subset) and the SVD of the small (n, n) Gram
    matrix rather than of the (n, V*3) data, so memory stays at one float32 copy of the subset.
    """
    x_all = normalised_vertices
    if x_all.ndim != 3 or x_all.shape[2] != 3:
        raise ValueError(f"expected (N, V, 3) vertices, got {x_all.shape}")
    n_all, n_vert = x_all.shape[:2]
    pick = np.arange(n_all)
    if n_all > max_samples:
        pick = np.sort(np.random.default_rng(seed).choice(n_all, max_samples, replace=False))
    n = len(pick)
    if not 1 <= k <= n - 1:
        raise ValueError(f"k={k} needs at least k+1 faces, got {n}")
    # one float32 working copy (fancy indexing already copies; the full set is copied here)
    x = np.asarray(x_all[pick], np.float32) if n < n_all else np.array(x_all, np.float32)
    x = x.reshape(n, -1)
    mean = x.mean(0, dtype=np.float64).astype(np.float32)
    x -= mean
    gram = (x @ x.T).astype(np.float64)
    u, sv2, _ = np.linalg.svd(gram, hermitian=True)
    sv2 = np.maximum(sv2[:k], 0.0)
    if sv2[-1] <= 1e-12 * max(sv2[0], 1e-30):
        raise ValueError(f"the faces span fewer than k={k} independent directions")
    comps = (u[:, :k].T.astype(np.float32) @ x) / np.sqrt(sv2)[:, None].astype(np.float32)
    # one Gram-Schmidt pass in float64 removes the float32 round-off of the projection
    q, r = np.linalg.qr(comps.T.astype(np.float64))
    comps = (q * np.sign(np.diag(r))).T.astype(np.float32)
    stdev = np.sqrt(sv2 / max(n - 1, 1)) / np.sqrt(n_vert)
    return GeometryBasis(mean.reshape(n_vert, 3), comps, stdev.astype(np.float32), layout_hash)


def pose_from_similarity(scale: float, rot: np.ndarray, t: np.ndarray) -> Pose:
    """Pose from the similarity parts (Euler angles filled in for display)."""
    yaw, pitch, roll = matrix_to_euler(rot)
    return Pose(np.asarray(rot, np.float32), np.asarray(t, np.float32), float(scale), yaw, pitch, roll)


def normalise_pose(vertices: np.ndarray, layout: UVLayout, step: int = 4) -> tuple[Pose, np.ndarray]:
    """Image-space vertices (V, 3) -> (pose, canonical-frame vertices (V, 3) float32).

    The pose is the similarity fit of ``layout.canonical`` to the vertices (every ``step``-th
    vertex); the canonical-frame vertices are the input with that similarity undone, so
    ``from_canonical(canon, pose)`` gives the input back.
    """
    v = np.asarray(vertices, np.float32)
    scale, rot, t = similarity_fit(layout.canonical[::step], v[::step])
    pose = pose_from_similarity(scale, rot, t)
    return pose, to_canonical(v, pose)


def to_canonical(vertices: np.ndarray, pose: Pose) -> np.ndarray:
    """Undo ``pose``: (V, 3) image space -> (V, 3) float32 canonical frame, R^T (v - t) / s."""
    rot = np.asarray(pose.rotation, np.float64)
    out = (np.asarray(vertices, np.float64) - np.asarray(pose.translation, np.float64)) @ rot
    return (out / pose.scale).astype(np.float32)


def from_canonical(vertices_canon: np.ndarray, pose: Pose) -> np.ndarray:
    """Apply ``pose``: (V, 3) canonical frame -> (V, 3) float32 image space, s R c + t."""
    rot = np.asarray(pose.rotation, np.float32)
    v = np.asarray(vertices_canon, np.float32) @ (np.float32(pose.scale) * rot.T)
    return v + np.asarray(pose.translation, np.float32)
