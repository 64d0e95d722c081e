"""Face detection (YuNet by default, dlib HOG / MMOD as options) and dlib's 68-point landmarks.

YuNet (libfacedetection, Apache-2.0) runs through OpenCV's ``cv2.FaceDetectorYN``; its ONNX file
ships in ``streamcap/models/yunet/`` with its licence, so nothing downloads at run time. It gives
a box and 5 keypoints (eyes, nose tip, mouth corners) per face: the box places the first crop
of a face and the eye keypoints turn it (``track.seed_landmarks``). Its box is taller than dlib's
(about 1.37x its width, hairline to chin), and dlib's is square around brows to chin; nothing
downstream takes the box itself, the crop comes from the seeded landmarks, and dlib's predictor
is always given dlib's own box. ``benchmarks/detectors.py`` compares the detectors.

dlib HOG (frontal only) and MMOD (a CNN, ~1.5 s per frame on a CPU) stay as options; they give
no keypoints, so their faces are seeded with dlib's 68-point predictor, whose model file (like
MMOD's) comes from the ``face-recognition-models`` package, found with
``importlib.util.find_spec`` (importing it needs pkg_resources, which is gone).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from .errors import BundleError, InputError

DETECT_MAX_SIDE = 640  # detect on a copy no larger than this; boxes are scaled back
DETECTORS = ("yunet", "hog", "mmod")
YUNET_MODEL = Path(__file__).resolve().parent / "models" / "yunet" / "yunet_s_640_640.onnx"
# benchmarks/detectors.py: 0.8 finds all 6 faces of the group photo (its lowest score is 0.88),
# every photo and clip frame of people that 0.7 finds, and nothing in feat_no_face.mp4, with
# boxes on 4 of 12 animal photos where 0.7 boxes 6; 0.9 misses the tilted and the turned face
YUNET_SCORE = 0.8


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    # (5, 2) eye (image left), eye (image right), nose tip, mouth corner left, right; or None
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)

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


def _check(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"expected an (H, W, 3) uint8 BGR image, got {image.shape} {image.dtype}")


def _rgb(image: np.ndarray) -> np.ndarray:
    _check(image)
    return np.ascontiguousarray(image[..., ::-1])


class FaceDetector:
    """Every face in a frame as a ``Box`` (image pixels), largest first.

    ``kind``: ``yunet`` (default; boxes with 5 keypoints, ``score`` is its threshold), ``hog``
    or ``mmod`` (dlib; ``upsample`` doubles the image that many times to find smaller faces).
    One detector serves one thread at a time.
    """

    def __init__(self, kind: str = "yunet", upsample: int = 0, max_side: int = DETECT_MAX_SIDE,
                 score: float = YUNET_SCORE) -> None:
        if kind not in DETECTORS:
            raise InputError(f"unknown detector {kind!r} ({', '.join(DETECTORS)})")
        self.kind, self.upsample, self.max_side, self.score = kind, upsample, max_side, score
        self._det = _yunet(score) if kind == "yunet" else _dlib_models(kind)
        self._size: tuple[int, int] | None = None

    def detect(self, image: np.ndarray) -> list[Box]:
        _check(image)
        k = min(1.0, self.max_side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else image
        boxes = []
        if self.kind == "yunet":
            size = (small.shape[1], small.shape[0])
            if size != self._size:
                self._det.setInputSize(size)
                self._size = size
            _, found = self._det.detect(np.ascontiguousarray(small))
            for f in found if found is not None else ():
                x, y, w, h = (float(v) / k for v in f[:4])
                boxes.append(Box(x, y, x + w, y + h, float(f[14]), (f[4:14].reshape(5, 2) / k).astype(np.float32)))
        elif self.kind == "hog":
            rects, scores, _ = self._det.run(small[..., ::-1].copy(), self.upsample, 0.0)
            for r, s in zip(rects, scores):
                boxes.append(Box(r.left() / k, r.top() / k, r.right() / k, r.bottom() / k, float(s)))
        else:
            for d in self._det(small[..., ::-1].copy(), self.upsample):
                r = d.rect
                boxes.append(Box(r.left() / k, r.top() / k, r.right() / k, r.bottom() / k, float(d.confidence)))
        return sorted(boxes, key=lambda b: -(b.x1 - b.x0) * (b.y1 - b.y0))


def _yunet(score: float):
    if not YUNET_MODEL.is_file():
        raise BundleError(f"YuNet model file missing: {YUNET_MODEL}")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # a harmless backend warning
    try:
        return cv2.FaceDetectorYN.create(str(YUNET_MODEL), "", (320, 320), score, 0.3, 5000)
    finally:
        cv2.utils.logging.setLogLevel(level)


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
