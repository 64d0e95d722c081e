"""Faces in a frame -> 3D: crop each face, run the generator once for the batch, read geometry.

This is the engine -> geometry step of the pipeline, shared by ``reconstruct``, ``eval``,
``encode`` and ``send``; detection and tracking happen before it and hand over one 68-point
landmark set (or a crop) per face.

Geometry is cheap by construction: only the UV pixels that hold face surface (and the 68 landmark
pixels among them) are moved from crop to image space, the pose comes from the 68 landmarks,
and the full image-space position map and the UV texture are computed only when something asks
for them (``FaceResult.posmap`` / ``.texture``), e.g. the codec on a keyframe.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .bundle import Bundle
from .geometry.crop import CropTransform, crop_from_landmarks
from .geometry.layout import UVLayout
from .geometry.posmap import Pose, pose_from_landmarks, sample_texture


def crop_to_image(posmap_crop: np.ndarray, crop: CropTransform) -> np.ndarray:
    """(S, S, 3) crop-pixel position map -> image-pixel position map."""
    return crop.to_image(posmap_crop.reshape(-1, 3)).reshape(posmap_crop.shape)


def points_to_image(xyz: np.ndarray, crop: CropTransform) -> np.ndarray:
    """(3, N) crop-pixel x, y, z rows -> (N, 3) image pixels in float32 (``crop.to_image`` in
    float32, on coordinate rows)."""
    (a, b, c), (d, e, f) = crop.inverse_matrix().astype(np.float32)
    x, y = xyz[0], xyz[1]
    out = np.empty((xyz.shape[1], 3), np.float32)
    out[:, 0] = a * x + b * y + c
    out[:, 1] = d * x + e * y + f
    out[:, 2] = (xyz[2] - np.float32(crop.size / 2.0)) * np.float32(1.0 / crop.scale)
    return out


def gather_rows(posmap: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """(S, S, 3) position map -> (3, len(flat)) x, y, z at the flat pixel indices ``flat``. Fast
    when the map is a channel-first array seen channel-last (what the engines return)."""
    cf = posmap.transpose(2, 0, 1)
    if cf.flags.c_contiguous:
        return np.take(cf.reshape(3, -1), flat, axis=1)
    return np.take(posmap.reshape(-1, 3), flat, axis=0).T


class FaceResult:
    """One reconstructed face, everything in image pixels (x right, y down, z toward camera).

    ``vertices`` (V, 3), ``landmarks`` (68, 3) and ``pose`` are computed at once; ``posmap``
    ((S, S, 3) image-space UV position map) and ``texture`` ((S, S, 3) uint8 BGR sampled from the
    frame, or None when made with ``texture=False``) on first access, unless ``texture`` is given.
    """

    def __init__(self, crop: CropTransform | None, posmap_crop: np.ndarray | None, vertices: np.ndarray,
                 landmarks: np.ndarray, pose: Pose, layout: UVLayout, image: np.ndarray | None,
                 texture: np.ndarray | None = None) -> None:
        self.crop, self.vertices, self.landmarks, self.pose = crop, vertices, landmarks, pose
        self._posmap_crop, self._layout, self._image = posmap_crop, layout, image
        self._posmap: np.ndarray | None = None
        self._texture: np.ndarray | None = texture

    @property
    def posmap(self) -> np.ndarray:
        if self._posmap is None:
            self._posmap = crop_to_image(self._posmap_crop, self.crop)
        return self._posmap

    @property
    def texture(self) -> np.ndarray | None:
        if self._texture is None and self._image is not None:
            self._texture = sample_texture(self._image, self.posmap, self._layout)
        return self._texture


class Reconstructor:
    """Batches every face of a frame through one engine call."""

    def __init__(self, bundle: Bundle, engine) -> None:
        self.bundle = bundle
        self.engine = engine
        self.layout = bundle.layout
        self.spec = bundle.spec
        # face pixels first, then the 68 landmark pixels: one gather and one transform per face
        self._gather = np.r_[self.layout.face_ind, self.layout.kpt_flat]
        self._canon68 = self.layout.canonical[self.layout.kpt_vertex].astype(np.float64)

    @property
    def canonical68(self) -> np.ndarray:
        """(68, 3) landmarks of the layout's mean face (seeds tracks from detector keypoints)."""
        return self._canon68

    def crops_for(self, landmark_sets: Sequence[np.ndarray]) -> list[CropTransform]:
        """The generator's crop for each face from its 68 image-space landmarks."""
        return [crop_from_landmarks(lm, self.spec.input_size, self.spec.crop_expand, self.spec.crop_shift_y)
                for lm in landmark_sets]

    def run(self, image: np.ndarray, crops: Sequence[CropTransform], texture: bool = True,
            times: dict[str, float] | None = None) -> list[FaceResult]:
        """Reconstruct the faces at ``crops`` in ``image`` (H, W, 3) uint8 BGR. ``times`` (if
        given) receives the ms spent in "crop", "generator" and "geometry"."""
        if not crops:
            return []
        t0 = time.perf_counter()
        batch = np.stack([c.warp(image) for c in crops])
        t1 = time.perf_counter()
        maps = self.engine.infer(batch)  # (N, S, S, 3) crop pixels
        t2 = time.perf_counter()
        out = []
        n = self.layout.n_vertices
        for crop, pm_crop in zip(crops, maps):
            pts = points_to_image(gather_rows(pm_crop, self._gather), crop)
            lm = pts[n:]
            out.append(FaceResult(crop, pm_crop, pts[:n], lm, pose_from_landmarks(lm, self._canon68), self.layout,
                                  image if texture else None))
        if times is not None:
            t3 = time.perf_counter()
            times["crop"] = times.get("crop", 0.0) + (t1 - t0) * 1e3
            times["generator"] = times.get("generator", 0.0) + (t2 - t1) * 1e3
            times["geometry"] = times.get("geometry", 0.0) + (t3 - t2) * 1e3
        return out
