"""Faces in a frame -> 3D: crop each face, run the generator once for the batch, read geometry.

This is the engine -> geometry step of the pipeline, shared by ``reconstruct``, ``eval``,
``encode`` and ``send``; detection and tracking happen before it and hand over one 68-point
landmark set (or a crop) per face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bundle import Bundle
from .geometry.crop import CropTransform, crop_from_landmarks
from .geometry.posmap import Pose, estimate_pose, landmarks68, sample_texture, vertices


@dataclass
class FaceResult:
    """One reconstructed face, everything in image pixels (x right, y down, z toward camera)."""

    crop: CropTransform
    posmap: np.ndarray  # (S, S, 3) float32 image-space UV position map
    vertices: np.ndarray  # (V, 3) float32
    landmarks: np.ndarray  # (68, 3) float32
    pose: Pose
    texture: np.ndarray | None = None  # (S, S, 3) uint8 BGR, sampled from the frame


def crop_to_image(posmap_crop: np.ndarray, crop: CropTransform) -> np.ndarray:
    """(S, S, 3) crop-pixel position map -> image-pixel position map."""
    return crop.to_image(posmap_crop.reshape(-1, 3)).reshape(posmap_crop.shape)


class Reconstructor:
    """Batches every face of a frame through one engine call."""

    def __init__(self, bundle: Bundle, engine) -> None:
        self.bundle = bundle
        self.engine = engine
        self.layout = bundle.layout
        self.spec = bundle.spec

    def crops_for(self, landmark_sets: Sequence[np.ndarray]) -> list[CropTransform]:
        """The generator's crop for each face from its 68 image-space landmarks."""
        return [crop_from_landmarks(lm, self.spec.input_size, self.spec.crop_expand, self.spec.crop_shift_y)
                for lm in landmark_sets]

    def run(self, image: np.ndarray, crops: Sequence[CropTransform], texture: bool = True) -> list[FaceResult]:
        """Reconstruct the faces at ``crops`` in ``image`` (H, W, 3) uint8 BGR."""
        if not crops:
            return []
        batch = np.stack([c.warp(image) for c in crops])
        maps = self.engine.infer(batch)  # (N, S, S, 3) crop pixels
        out = []
        for crop, pm_crop in zip(crops, maps):
            pm = crop_to_image(pm_crop, crop)
            verts = vertices(pm, self.layout)
            out.append(FaceResult(
                crop=crop, posmap=pm, vertices=verts, landmarks=landmarks68(pm, self.layout),
                pose=estimate_pose(verts, self.layout),
                texture=sample_texture(image, pm, self.layout) if texture else None,
            ))
        return out
