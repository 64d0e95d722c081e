"""Multi-face tracking: stable IDs, rare detection, landmarks followed frame to frame.

Detection (dlib HOG) runs every ``redetect_every`` frames or when there is no face yet; in
between, each face's box comes from its previous landmarks and the 68-point predictor runs
inside it, which is ~30x cheaper than detecting. On detection frames, detections are matched
to tracks by IoU: matched tracks are re-anchored, unmatched detections start new tracks with
new IDs, and tracks with no detection for ``max_misses`` detection rounds are dropped.
Landmarks are smoothed with a One-Euro filter (little lag when the head moves fast, little
jitter when it is still).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .detect import Box, FaceDetector, LandmarkPredictor, box_from_landmarks
from .geometry.crop import CropTransform, crop_from_landmarks


class OneEuroFilter:
    """One-Euro low-pass filter (Casiez et al. 2012) over arrays of any shape."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.astype(np.float32)
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = self._alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff, dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.astype(np.float32)


@dataclass
class Track:
    id: int
    landmarks: np.ndarray  # (68, 2) float32, smoothed
    raw: np.ndarray  # (68, 2) float32, as predicted this frame
    crop: CropTransform
    age: int = 0
    misses: int = 0
    filt: OneEuroFilter = field(default_factory=OneEuroFilter, repr=False)

    @property
    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) of the landmarks."""
        return np.r_[self.landmarks.min(0), self.landmarks.max(0)]


class FaceTracker:
    """``update(image, t)`` -> the faces of this frame, each with a stable ``id``."""

    def __init__(self, crop_size: int = 256, redetect_every: int = 10, max_misses: int = 2,
                 max_faces: int = 16, detector: FaceDetector | None = None,
                 predictor: LandmarkPredictor | None = None, min_iou: float = 0.3) -> None:
        self.crop_size = crop_size
        self.redetect_every = max(1, redetect_every)
        self.max_misses = max_misses
        self.max_faces = max_faces
        self.detector = detector or FaceDetector()
        self.predictor = predictor or LandmarkPredictor()
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self.frame = 0
        self._next_id = 0

    def _new_track(self, raw: np.ndarray, t: float) -> Track:
        tr = Track(self._next_id, raw, raw, crop_from_landmarks(raw, self.crop_size))
        tr.landmarks = tr.filt(raw, t)
        self._next_id += 1
        return tr

    def _follow(self, tr: Track, raw: np.ndarray, t: float) -> None:
        tr.raw = raw
        tr.landmarks = tr.filt(raw, t)
        tr.crop = crop_from_landmarks(tr.landmarks, self.crop_size)
        tr.age += 1

    def update(self, image: np.ndarray, timestamp: float) -> list[Track]:
        rgb = np.ascontiguousarray(image[..., ::-1])
        detect = self.frame % self.redetect_every == 0 or not self.tracks
        self.frame += 1
        if detect:
            boxes = self.detector.detect(image)[: self.max_faces]
            self._associate(boxes, rgb, image, timestamp)
        else:
            for tr in self.tracks:
                raw = self.predictor.predict(image, box_from_landmarks(tr.raw), rgb)
                self._follow(tr, raw, timestamp)
        return [tr for tr in self.tracks if tr.misses == 0]

    def _associate(self, boxes: list[Box], rgb: np.ndarray, image: np.ndarray, t: float) -> None:
        pairs = sorted(((b.iou(box_from_landmarks(tr.raw)), i, j) for i, b in enumerate(boxes)
                        for j, tr in enumerate(self.tracks)), reverse=True)
        used_b, used_t = set(), set()
        for iou, i, j in pairs:
            if iou < self.min_iou or i in used_b or j in used_t:
                continue
            used_b.add(i)
            used_t.add(j)
            tr = self.tracks[j]
            tr.misses = 0
            self._follow(tr, self.predictor.predict(image, boxes[i], rgb), t)
        for j, tr in enumerate(self.tracks):
            if j not in used_t:
                tr.misses += 1
        self.tracks = [tr for tr in self.tracks if tr.misses <= self.max_misses]
        for i, b in enumerate(boxes):
            if i not in used_b and len(self.tracks) < self.max_faces:
                self.tracks.append(self._new_track(self.predictor.predict(image, b, rgb), t))
