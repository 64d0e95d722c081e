"""The UV layout: which UV pixels hold face surface, how they connect, and where the landmarks sit.

A UV position map is an (S, S, 3) image whose pixel (row v, column u) stores the x, y, z of
one point of the face surface. The layout is fixed per model bundle, so it ships inside the
bundle as a compact ``.npz`` table (built once by ``trainer/build_layout.py``) and the runtime
never needs the third-party source files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BundleError

LAYOUT_VERSION = 1

# Loss weights per region, as in PRNet's weighted-mask loss (16:4:3:0).
REGION_WEIGHTS: tuple[float, float, float, float] = (0.0, 3.0, 4.0, 16.0)
REGION_NAMES: tuple[str, str, str, str] = ("neck/outside", "forehead-cheeks", "face", "eyes-nose-mouth")


@dataclass(frozen=True)
class UVLayout:
    """Static description of the UV position-map layout.

    Coordinates of ``canonical`` follow the image convention used everywhere in streamcap:
    x right, y down, z toward the camera.
    """

    size: int
    face_ind: np.ndarray  # (V,) int32 flat row-major indices of face pixels in the (S, S) grid
    canonical: np.ndarray  # (V, 3) float32 mean face, one row per face pixel
    kpt_uv: np.ndarray  # (68, 2) int32 UV pixel (x=column, y=row) of each landmark
    regions: np.ndarray  # (S, S) uint8 region id 0..3, see REGION_NAMES
    triangles: np.ndarray  # (T, 3) int32 indices into the face-pixel list
    version: int = LAYOUT_VERSION
    _hash: str = field(default="", compare=False, repr=False)

    @property
    def n_vertices(self) -> int:
        return int(self.face_ind.shape[0])

    @property
    def face_mask(self) -> np.ndarray:
        """(S, S) bool: True where a UV pixel holds face surface."""
        mask = np.zeros(self.size * self.size, dtype=bool)
        mask[self.face_ind] = True
        return mask.reshape(self.size, self.size)

    @property
    def weight_mask(self) -> np.ndarray:
        """(S, S) float32 per-pixel loss weight from the region ids (16:4:3:0)."""
        return np.asarray(REGION_WEIGHTS, dtype=np.float32)[self.regions]

    @property
    def kpt_flat(self) -> np.ndarray:
        """(68,) flat grid indices of the landmark pixels."""
        return (self.kpt_uv[:, 1] * self.size + self.kpt_uv[:, 0]).astype(np.int64)

    @property
    def kpt_vertex(self) -> np.ndarray:
        """(68,) indices of the landmark pixels in the face-pixel (vertex) list."""
        grid = np.full(self.size * self.size, -1, np.int64)
        grid[self.face_ind] = np.arange(self.n_vertices)
        idx = grid[self.kpt_flat]
        if (idx < 0).any():
            raise ValueError("a landmark UV pixel lies outside the face mask")
        return idx

    @property
    def uv_coords(self) -> np.ndarray:
        """(V, 2) float32 texture coordinates in [0, 1] (u right, v down) of each vertex."""
        rows, cols = np.divmod(self.face_ind, self.size)
        return np.stack([(cols + 0.5) / self.size, (rows + 0.5) / self.size], 1).astype(np.float32)

    @property
    def hash(self) -> str:
        """Short content hash; a stream or bundle names the layout it was made with."""
        if self._hash:
            return self._hash
        h = hashlib.sha256()
        for arr, dtype in ((self.face_ind, np.int32), (self.kpt_uv, np.int32),
                           (self.regions, np.uint8), (self.triangles, np.int32)):
            h.update(np.ascontiguousarray(arr, dtype=dtype).tobytes())
        h.update(np.round(self.canonical, 3).astype(np.float32).tobytes())
        digest = h.hexdigest()[:16]
        object.__setattr__(self, "_hash", digest)
        return digest

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            version=np.int32(self.version),
            size=np.int32(self.size),
            face_ind=self.face_ind.astype(np.int32),
            canonical=self.canonical.astype(np.float32),
            kpt_uv=self.kpt_uv.astype(np.int32),
            regions=self.regions.astype(np.uint8),
            triangles=self.triangles.astype(np.int32),
        )

    @classmethod
    def load(cls, path: str | Path) -> UVLayout:
        """Load and validate a layout table; raise BundleError on anything inconsistent."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise BundleError(f"UV layout not found: {path}") from exc
        except Exception as exc:  # zipfile / pickle / value errors all mean "corrupt"
            raise BundleError(f"UV layout {path} is corrupt: {exc}") from exc
        need = {"version", "size", "face_ind", "canonical", "kpt_uv", "regions", "triangles"}
        if not need <= data.keys():
            raise BundleError(f"UV layout {path} lacks {sorted(need - data.keys())}")
        version = int(data["version"])
        if version != LAYOUT_VERSION:
            raise BundleError(f"UV layout {path} has version {version}, this runtime reads {LAYOUT_VERSION}")
        size = int(data["size"])
        layout = cls(
            size=size,
            face_ind=data["face_ind"].astype(np.int64),
            canonical=data["canonical"].astype(np.float32),
            kpt_uv=data["kpt_uv"].astype(np.int64),
            regions=data["regions"],
            triangles=data["triangles"].astype(np.int64),
            version=version,
        )
        n = layout.n_vertices
        ok = (
            layout.canonical.shape == (n, 3)
            and layout.kpt_uv.shape == (68, 2)
            and layout.regions.shape == (size, size)
            and layout.triangles.ndim == 2
            and layout.triangles.shape[1] == 3
            and (layout.face_ind.max(initial=0) < size * size)
            and (layout.triangles.max(initial=0) < n)
        )
        if not ok:
            raise BundleError(f"UV layout {path} has inconsistent array shapes")
        return layout


def grid_triangles(face_mask: np.ndarray) -> np.ndarray:
    """Triangulate the face region of a UV grid.

    Every 2x2 block of face pixels gives two triangles; a block with exactly three face pixels
    gives one, so the mesh border follows the mask without holes. Returns (T, 3) indices into the
    row-major list of face pixels. Winding is (top-left, top-right, bottom-left), so on a frontal face in image axes
    (x right, y down, z toward the camera) cross(v1 - v0, v2 - v0) points toward the camera.
    """
    index = np.full(face_mask.shape, -1, dtype=np.int64)
    flat = np.flatnonzero(face_mask.ravel())
    index.ravel()[flat] = np.arange(flat.size)
    a = index[:-1, :-1]  # top-left
    b = index[:-1, 1:]  # top-right
    c = index[1:, :-1]  # bottom-left
    d = index[1:, 1:]  # bottom-right
    tris = []
    full = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0)
    tris.append(np.stack([a[full], b[full], c[full]], 1))
    tris.append(np.stack([b[full], d[full], c[full]], 1))
    # blocks with exactly one missing corner: one triangle from the other three
    for keep, missing in (((a, b, c), d), ((b, d, c), a), ((a, b, d), c), ((a, d, c), b)):
        sel = (missing < 0) & (keep[0] >= 0) & (keep[1] >= 0) & (keep[2] >= 0)
        tris.append(np.stack([k[sel] for k in keep], 1))
    return np.concatenate(tris, 0).astype(np.int32)
