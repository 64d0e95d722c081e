"""Crop transforms between a frame and the square face crop the generator sees.

A crop is a similarity transform (scale, optional rotation, shift) from image pixels to crop
pixels. Depth follows the same scale and is offset by half the crop size, so image-space z is
relative to the face's own mean depth (PRNet keeps z in image-pixel units the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropTransform:
    """Image -> crop similarity. ``matrix`` is (2, 3): crop_xy = matrix @ [x, y, 1]."""

    matrix: np.ndarray
    size: int

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    @classmethod
    def from_box(cls, center: tuple[float, float], side: float, size: int, angle_deg: float = 0.0) -> CropTransform:
        """Square box of ``side`` image pixels centred at ``center``, rotated by ``angle_deg``
        (counter-clockwise in the image), mapped onto a ``size`` x ``size`` crop."""
        k = size / float(side)
        a = np.deg2rad(angle_deg)
        rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]], np.float64) * k
        c = np.asarray(center, np.float64)
        shift = np.array([size / 2.0, size / 2.0]) - rot @ c
        return cls(np.concatenate([rot, shift[:, None]], 1), size)

    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) crop -> image."""
        return cv2.invertAffineTransform(self.matrix)

    def warp(self, image: np.ndarray) -> np.ndarray:
        """Cut the crop out of ``image`` (H, W, C) -> (size, size, C); outside is black."""
        return cv2.warpAffine(
            image, self.matrix, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Image-space points (..., 2 or 3) -> crop space. z (if any) is scaled and offset."""
        pts = np.asarray(points, np.float64)
        out = np.empty_like(pts)
        out[..., :2] = pts[..., :2] @ self.matrix[:, :2].T + self.matrix[:, 2]
        if pts.shape[-1] == 3:
            out[..., 2] = pts[..., 2] * self.scale + self.size / 2.0
        return out.astype(np.float32)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Crop-space points (..., 2 or 3) -> image space; inverse of ``to_crop``."""
        pts = np.asarray(points, np.float64)
        inv = self.inverse_matrix()
        out = np.empty_like(pts)
        out[..., :2] = pts[..., :2] @ inv[:, :2].T + inv[:, 2]
        if pts.shape[-1] == 3:
            out[..., 2] = (pts[..., 2] - self.size / 2.0) / self.scale
        return out.astype(np.float32)


# Crop box from 68 landmarks: side = EXPAND * mean(box width, height), centre shifted up by
# SHIFT_Y * side so the forehead fits (landmarks stop at the brows). The trainer builds its
# crops with the same function, so runtime and training crops agree.
CROP_EXPAND = 1.6
CROP_SHIFT_Y = -0.06


def crop_from_landmarks(
    landmarks: np.ndarray, size: int, expand: float = CROP_EXPAND, shift_y: float = CROP_SHIFT_Y
) -> CropTransform:
    """(68, 2+) image-space landmarks -> the square crop the generator expects."""
    pts = np.asarray(landmarks, np.float64)[:, :2]
    lo, hi = pts.min(0), pts.max(0)
    side = expand * float(((hi - lo).sum()) / 2.0)
    center = (lo + hi) / 2.0 + np.array([0.0, shift_y * side])
    return CropTransform.from_box((float(center[0]), float(center[1])), max(side, 1.0), size)
