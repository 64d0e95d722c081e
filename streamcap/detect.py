"""Face detection and 68-point landmarks with dlib.

HOG (frontal, ~20 ms per 640x480 frame) is the default; dlib's MMOD CNN is more robust to pose
but takes ~1.5 s per frame on a CPU, so the tracker detects rarely and follows faces from
their landmarks in between. The model files come from the ``face-recognition-models`` package,
found with ``importlib.util.find_spec`` (importing it needs pkg_resources, which is gone).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from .errors import BundleError, InputError

DETECT_MAX_SIDE = 640  # detect on a copy no larger than this; boxes are scaled back


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0

    @property
    def array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], np.float64)

    def iou(self, other: Box | np.ndarray) -> float:
        a, b = self.array, other.array if isinstance(other, Box) else np.asarray(other, np.float64)
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return float(inter / union) if union > 0 else 0.0


def model_file(name: str) -> Path:
    """Path of one of dlib's model files shipped by face-recognition-models."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise BundleError("face-recognition-models is not installed (dlib's landmark/detector files)")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise BundleError(f"dlib model file missing: {path}")
    return path


@cache
def _dlib_models(kind: str):
    import dlib

    if kind == "hog":
        return dlib.get_frontal_face_detector()
    if kind == "mmod":
        return dlib.cnn_face_detection_model_v1(str(model_file("mmod_human_face_detector.dat")))
    if kind == "landmarks68":
        return dlib.shape_predictor(str(model_file("shape_predictor_68_face_landmarks.dat")))
    raise ValueError(kind)


def _rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image[..., ::-1])


class FaceDetector:
    """Every face in a frame as a ``Box`` (image pixels), largest first."""

    def __init__(self, kind: str = "hog", upsample: int = 0, max_side: int = DETECT_MAX_SIDE) -> None:
        if kind not in ("hog", "mmod"):
            raise InputError(f"unknown detector {kind!r} (hog or mmod)")
        self.kind, self.upsample, self.max_side = kind, upsample, max_side
        self._det = _dlib_models(kind)

    def detect(self, image: np.ndarray) -> list[Box]:
        rgb = _rgb(image)
        k = min(1.0, self.max_side / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else rgb
        boxes = []
        if self.kind == "hog":
            rects, scores, _ = self._det.run(small, self.upsample, 0.0)
            for r, s in zip(rects, scores):
                boxes.append(Box(r.left() / k, r.top() / k, r.right() / k, r.bottom() / k, float(s)))
        else:
            for d in self._det(small, self.upsample):
                r = d.rect
                boxes.append(Box(r.left() / k, r.top() / k, r.right() / k, r.bottom() / k, float(d.confidence)))
        return sorted(boxes, key=lambda b: -(b.x1 - b.x0) * (b.y1 - b.y0))


class LandmarkPredictor:
    """dlib's 68-point shape predictor (~0.6 ms per face)."""

    def __init__(self) -> None:
        import dlib

        self._sp = _dlib_models("landmarks68")
        self._rect = dlib.rectangle

    def predict(self, image: np.ndarray, box: Box | np.ndarray, rgb: np.ndarray | None = None) -> np.ndarray:
        """(68, 2) float32 image-pixel landmarks of the face in ``box``."""
        b = box.array if isinstance(box, Box) else np.asarray(box, np.float64)
        rect = self._rect(*[int(round(v)) for v in b[:4]])
        shape = self._sp(_rgb(image) if rgb is None else rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float32)


def box_from_landmarks(lm: np.ndarray) -> np.ndarray:
    """A detector-like square box around 68 landmarks (x0, y0, x1, y1), used to re-run the
    shape predictor on the next frame without detecting again."""
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    c = (lo + hi) / 2
    side = float((hi - lo).max())
    # measured on the shared photos: dlib's HOG box is 1.05x the landmark box's longer side and
    # its centre sits 0.1 side higher; matching that keeps the predictor from drifting
    c = c + np.array([0.0, -0.0976 * side])
    side *= 1.05
    return np.r_[c - side / 2, c + side / 2]


def best_overlap(boxes: list[Box], target: np.ndarray, min_iou: float = 0.3) -> Box | None:
    """The box overlapping ``target`` (x0, y0, x1, y1) most, if by at least ``min_iou``."""
    best, score = None, min_iou
    for b in boxes:
        s = b.iou(target)
        if s > score:
            best, score = b, s
    return best
