"""Multi-face tracking: stable IDs, the detector run rarely and off the critical path.

A face is followed from its own previous geometry: after the generator has reconstructed a face,
the pipeline hands its 68 landmarks back (``observe``), and the next frame's crop comes from them.
So once a face is found, no detector and no landmark model runs for it at all.

Detection runs when there is no face (then in the frame itself: there is nothing else to wait
for) and otherwise every ``redetect_every`` frames in a worker thread, on that frame; its result
is collected at the start of the first frame that finds it finished (the next one, unless the
machine is busy: a frame never waits for it) and matched against the tracks, whose landmarks are
then from that frame or a few frames later. Matching is by IoU of landmark boxes: a YuNet detection
becomes 68 points by placing the canonical face's landmarks in its box, turned by the roll of its
eye keypoints (``seed_landmarks``); a dlib detection (no keypoints) by dlib's 68-point predictor. Matched tracks
carry on, unmatched detections start new tracks with new IDs, tracks no detection confirms for
``max_misses`` rounds are dropped, and so is a track whose landmarks leave the frame, shrink to
nothing or jump in size (track loss), which makes the next frame detect.

``landmarks="dlib"`` restores the older mode: dlib's 68-point predictor runs on every face of
every frame, before the generator, and ``observe`` is not needed.

The landmarks that place the crop are smoothed with a One-Euro filter (little lag when the head
moves fast, little jitter when it is still).
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .detect import Box, FaceDetector, LandmarkPredictor, box_from_landmarks
from .errors import InputError

LANDMARK_SOURCES = ("generator", "dlib")


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


def five_points(lm68: np.ndarray) -> np.ndarray:
    """(68, 2+) landmarks -> (5, 2): eye centres (image left, right), nose tip, mouth corners,
    in the order of YuNet's keypoints."""
    lm = np.asarray(lm68, np.float64)[:, :2]
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


# Where the 68 landmarks sit in a YuNet box, measured on 111 single-face photos and frames of the
# training identities with dlib's 68 points as the reference: the landmark box's centre is 0.008
# box widths right of and 0.163 box widths below the box centre, it is 1.03 box widths wide and
# 0.747 box heights tall (YuNet's box runs from the hairline to below the chin).
SEED_DX, SEED_DY, SEED_W, SEED_H = 0.008, 0.163, 1.03, 0.747


def seed_landmarks(box: Box, canonical68: np.ndarray) -> np.ndarray:
    """68 image points for a YuNet detection: the canonical face's landmarks, turned by the roll of
    the eye keypoints, stretched into the landmark box the detection box predicts (see the
    constants above). The box, not the 5 points, sets position and size: on a turned head the
    eyes, nose and mouth crowd to one side of the face, and a frontal face fitted to them would
    put the crop off the head. (68, 2) float32."""
    lm = np.asarray(canonical68, np.float64)[:, :2]
    lm = lm - lm.mean(0)
    if box.keypoints is not None:
        eye = box.keypoints[1] - box.keypoints[0]
        a = math.atan2(float(eye[1]), float(eye[0]))
        lm = lm @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    w, h = box.x1 - box.x0, box.y1 - box.y0
    centre = np.array([(box.x0 + box.x1) / 2 + SEED_DX * w, (box.y0 + box.y1) / 2 + SEED_DY * w])
    lo, hi = lm.min(0), lm.max(0)
    out = (lm - (lo + hi) / 2) / (hi - lo) * np.array([SEED_W * w, SEED_H * h]) + centre
    return out.astype(np.float32)


def face_seeds(detector: FaceDetector, image: np.ndarray, canonical68: np.ndarray,
               predictor: LandmarkPredictor | None = None, keypoints: bool = True) -> list[np.ndarray]:
    """(68, 2) landmarks of every face ``detector`` finds in ``image``, largest first: placed in a
    YuNet box by ``seed_landmarks`` (when ``keypoints``), else from dlib's 68-point ``predictor``."""
    out = []
    rgb = None
    for b in detector.detect(image):
        if b.keypoints is not None and keypoints:
            out.append(seed_landmarks(b, canonical68))
            continue
        if predictor is None:
            predictor = LandmarkPredictor()
        rgb = np.ascontiguousarray(image[..., ::-1]) if rgb is None else rgb
        out.append(predictor.predict(image, b, rgb))
    return out


def landmark_box(lm: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) around (68, 2+) landmarks."""
    return np.r_[lm[:, :2].min(0), lm[:, :2].max(0)]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    return Box(*a[:4]).iou(b)


@dataclass
class Track:
    id: int
    landmarks: np.ndarray  # (68, 2) float32, smoothed: places the next crop
    raw: np.ndarray  # (68, 2) float32, as last observed
    age: int = 0
    misses: int = 0
    filt: OneEuroFilter = field(default_factory=OneEuroFilter, repr=False)

    @property
    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) of the landmarks."""
        return landmark_box(self.landmarks)


class FaceTracker:
    """``update(image, t)`` -> the faces to reconstruct in this frame, each with a stable ``id``;
    then ``observe(tracks, landmarks, t)`` with the generator's landmarks of those faces."""

    def __init__(self, canonical68: np.ndarray, redetect_every: int = 10, max_misses: int = 2,
                 max_faces: int = 16, detector: FaceDetector | None = None,
                 predictor: LandmarkPredictor | None = None, landmarks: str = "generator",
                 min_iou: float = 0.3, background: bool = True) -> None:
        if landmarks not in LANDMARK_SOURCES:
            raise InputError(f"unknown landmark source {landmarks!r} ({', '.join(LANDMARK_SOURCES)})")
        self.canonical68 = np.asarray(canonical68, np.float64)
        self.redetect_every = max(1, redetect_every)
        self.max_misses = max_misses
        self.max_faces = max_faces
        self.detector = detector or FaceDetector()
        self.landmarks = landmarks
        need_dlib = landmarks == "dlib" or self.detector.kind != "yunet"
        self.predictor = predictor or (LandmarkPredictor() if need_dlib else None)
        self.min_iou = min_iou
        self.tracks: list[Track] = []
        self.frame = 0
        self.last_detect_ms = 0.0  # time this frame spent on detection (its own, or matching a late one)
        self.detect_runs: deque[float] = deque(maxlen=10000)  # ms of each detector run, in any thread
        self._next_id = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="streamcap-detect") if background else None
        self._pending: Future | None = None

    # -------------------------------------------------------------------------------- public

    def update(self, image: np.ndarray, timestamp: float) -> list[Track]:
        t0 = time.perf_counter()
        scheduled = self.frame % self.redetect_every == 0
        self.frame += 1
        if self._pending is not None and (self._pending.done() or not self.tracks):
            seeds = self._pending.result()  # usually a frame late, matched against that frame's tracks
            self._pending = None
            self._associate(seeds, timestamp)
        if not self.tracks:
            self._associate(self._seeds(image), timestamp)
        elif scheduled and self._pending is None:
            if self._pool is None:
                self._associate(self._seeds(image), timestamp)
            else:
                self._pending = self._pool.submit(self._seeds, image)
        self.last_detect_ms = (time.perf_counter() - t0) * 1e3
        if self.landmarks == "dlib":
            rgb = np.ascontiguousarray(image[..., ::-1])
            for tr in self.tracks:
                self._follow(tr, self.predictor.predict(image, box_from_landmarks(tr.raw), rgb), timestamp)
                tr.age += 1
        return list(self.tracks)

    def observe(self, tracks: list[Track], landmarks: list[np.ndarray], timestamp: float,
                frame_size: tuple[int, int]) -> None:
        """The generator's (68, 2+) image-space landmarks of ``tracks`` in this frame: the next
        frame's crops. A track whose landmarks are lost (see module doc) is dropped."""
        if self.landmarks == "dlib":
            return
        w, h = frame_size
        for tr, lm in zip(tracks, landmarks):
            lm = np.asarray(lm, np.float32)[:, :2]
            if self._lost(tr, lm, w, h):
                self.tracks = [t for t in self.tracks if t is not tr]
                continue
            self._follow(tr, lm, timestamp)
            tr.age += 1
        self._drop_duplicates()

    def wait_for_detection(self) -> None:
        """Block until a detection started in the background has finished (its result is still
        taken by the next ``update``)."""
        if self._pending is not None:
            self._pending.exception()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------------------ internals

    def _seeds(self, image: np.ndarray) -> list[np.ndarray]:
        t0 = time.perf_counter()
        seeds = face_seeds(self.detector, image, self.canonical68, self.predictor,
                           self.landmarks == "generator")[: self.max_faces]
        self.detect_runs.append((time.perf_counter() - t0) * 1e3)
        return seeds

    def _follow(self, tr: Track, raw: np.ndarray, t: float) -> None:
        tr.raw = raw
        tr.landmarks = tr.filt(raw, t)

    def _lost(self, tr: Track, lm: np.ndarray, w: int, h: int) -> bool:
        if not np.isfinite(lm).all():
            return True
        box = landmark_box(lm)
        side = float(max(box[2] - box[0], box[3] - box[1]))
        prev = tr.box
        prev_side = float(max(prev[2] - prev[0], prev[3] - prev[1]))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        return (side < 8 or not (0 <= cx < w and 0 <= cy < h)
                or not 0.5 < side / max(prev_side, 1e-6) < 2.0)

    def _drop_duplicates(self) -> None:
        """Two tracks that converged on one face: keep the older."""
        keep: list[Track] = []
        for tr in sorted(self.tracks, key=lambda t: t.id):
            if all(box_iou(tr.box, k.box) < 0.5 for k in keep):
                keep.append(tr)
        if len(keep) != len(self.tracks):
            self.tracks = [t for t in self.tracks if t in keep]

    def _associate(self, seeds: list[np.ndarray], t: float) -> None:
        boxes = [landmark_box(s) for s in seeds]
        pairs = sorted(((box_iou(b, tr.box), i, j) for i, b in enumerate(boxes)
                        for j, tr in enumerate(self.tracks)), reverse=True)
        used_b, used_t = set(), set()
        for iou, i, j in pairs:
            if iou < self.min_iou or i in used_b or j in used_t:
                continue
            used_b.add(i)
            used_t.add(j)
            self.tracks[j].misses = 0
        for j, tr in enumerate(self.tracks):
            if j not in used_t:
                tr.misses += 1
        self.tracks = [tr for tr in self.tracks if tr.misses <= self.max_misses]
        for i, s in enumerate(seeds):
            if i not in used_b and len(self.tracks) < self.max_faces:
                tr = Track(self._next_id, s, s)
                tr.landmarks = tr.filt(s, t)
                self.tracks.append(tr)
                self._next_id += 1
