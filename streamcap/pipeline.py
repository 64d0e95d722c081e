"""capture -> detect/track -> engine -> geometry, shared by ``encode``, ``send`` and ``bench``.

Decoding runs in its own thread and hands frames over a bounded queue, so neither a slow
decoder nor a slow generator stalls the other, and memory stays bounded however long the
video is. Every tracked face of a frame goes through the generator in one batch, and the
generator's landmarks go back to the tracker to place the next frame's crops.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .reconstruct import FaceResult, Reconstructor
from .track import FaceTracker

log = logging.getLogger(__name__)


# Inference threads when the user gives none (--threads 0). The pipeline already runs decoding
# and detection in threads of their own, and ONNX Runtime's second thread spins while it waits,
# taking the core the codec and geometry need: on the 2-core machine, `streamcap bench --what
# profile` alternating 1 and 2 threads gave 107 / 103 fps (1 face) and 33 / 38 fps (3 faces) with
# one thread, 60 / 78 and 20 / 24 with two (docs/results/profile.md).
PIPELINE_THREADS = 1

STAGES = ("decode", "detect", "track", "crop", "generator", "geometry", "codec", "write")


@dataclass
class StageTimes:
    """Per-stage wall times of one frame in milliseconds. ``decode`` is the time spent waiting
    for the decode thread; ``detect`` the time the frame waited for detection (its own, when there
    was no face, or the collection of the one started a frame earlier); ``codec`` and ``write``
    are filled in by the caller that encodes and writes the faces."""

    decode: float = 0.0
    detect: float = 0.0
    track: float = 0.0
    crop: float = 0.0
    generator: float = 0.0
    geometry: float = 0.0
    codec: float = 0.0
    write: float = 0.0
    faces: int = 0

    @property
    def engine(self) -> float:
        """crop + generator + geometry."""
        return self.crop + self.generator + self.geometry


@dataclass
class FrameResult:
    index: int
    timestamp: float
    image: np.ndarray  # (H, W, 3) uint8 BGR
    faces: list[tuple[int, FaceResult]] = field(default_factory=list)  # (track id, result)
    times: StageTimes = field(default_factory=StageTimes)

    def codec_input(self) -> list[tuple]:
        """[(track id, vertices, texture getter)] for ``FaceStreamEncoder.encode``: the texture
        is sampled only when the encoder sends a keyframe."""
        return [(tid, f.vertices, (lambda f=f: f.texture)) for tid, f in self.faces]


_END = object()


def prefetch(frames: Iterable, depth: int = 4) -> Iterator:
    """Iterate ``frames`` in a background thread through a queue of at most ``depth`` items.
    Exceptions in the producer are re-raised in the consumer; stopping early ends the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    t = threading.Thread(target=produce, name="streamcap-decode", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


class FacePipeline:
    """Tracks faces and reconstructs them, one frame at a time."""

    def __init__(self, reconstructor: Reconstructor, tracker: FaceTracker, texture: bool = True) -> None:
        self.rec = reconstructor
        self.tracker = tracker
        self.texture = texture

    @classmethod
    def create(cls, bundle, backend: str = "auto", threads: int = 0, detector: str = "yunet",
               landmarks: str = "generator", redetect_every: int = 10) -> FacePipeline:
        """The pipeline the commands use: ``bundle``'s generator on ``backend`` with ``threads``
        (0: ``PIPELINE_THREADS``), a tracker with ``detector`` (yunet, hog, mmod) and landmarks from
        the generator or dlib."""
        from .detect import FaceDetector
        from .engine import create_engine

        rec = Reconstructor(bundle, create_engine(bundle, backend, threads=threads or PIPELINE_THREADS))
        tracker = FaceTracker(rec.canonical68, redetect_every=redetect_every, detector=FaceDetector(detector),
                              landmarks=landmarks)
        return cls(rec, tracker)

    def process(self, index: int, timestamp: float, image: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        tracks = self.tracker.update(image, timestamp)
        t1 = time.perf_counter()
        crops = self.rec.crops_for([t.landmarks for t in tracks])
        t2 = time.perf_counter()
        st: dict[str, float] = {}
        faces = self.rec.run(image, crops, texture=self.texture, times=st)
        t3 = time.perf_counter()
        self.tracker.observe(tracks, [f.landmarks for f in faces], timestamp, (image.shape[1], image.shape[0]))
        t4 = time.perf_counter()
        detect = self.tracker.last_detect_ms
        times = StageTimes(detect=detect, track=(t1 - t0) * 1e3 - detect + (t4 - t3) * 1e3,
                           crop=(t2 - t1) * 1e3 + st.get("crop", 0.0), generator=st.get("generator", 0.0),
                           geometry=st.get("geometry", 0.0), faces=len(tracks))
        return FrameResult(index, timestamp, image, [(t.id, f) for t, f in zip(tracks, faces)], times)

    def close(self) -> None:
        self.tracker.close()

    def run(self, source: Iterable, depth: int = 4) -> Iterator[FrameResult]:
        """Frames from ``source`` (objects with index, timestamp, image) -> results."""
        it = prefetch(source, depth)
        while True:
            t0 = time.perf_counter()
            try:
                frame = next(it)
            except StopIteration:
                return
            wait = (time.perf_counter() - t0) * 1e3
            res = self.process(frame.index, frame.timestamp, frame.image)
            res.times.decode = wait
            yield res

    def encode(self, source: Iterable, encoder, writer, max_frames: int = 0, stop=None) -> Iterator[FrameResult]:
        """Run ``source`` through the pipeline, ``encoder`` (a ``FaceStreamEncoder``) and ``writer``
        (anything with ``write(message)``); yield each frame's result with its codec and write
        times filled in. ``stop`` (anything with ``requested``, e.g. ``GracefulStop``) ends it after
        the current frame. ``streamcap encode`` and ``streamcap bench`` share it."""
        for res in self.run(source):
            if (max_frames and res.index >= max_frames) or (stop is not None and stop.requested):
                break
            t0 = time.perf_counter()
            msgs = encoder.encode(res.image, res.codec_input(), ts=res.timestamp, frame_index=res.index)
            t1 = time.perf_counter()
            for m in msgs:
                writer.write(m)
            res.times.codec = (t1 - t0) * 1e3
            res.times.write = (time.perf_counter() - t1) * 1e3
            yield res
