"""capture -> detect/track -> engine -> geometry, shared by ``encode``, ``send`` and ``bench``.

Decoding runs in its own thread and hands frames over a bounded queue, so neither a slow
decoder nor a slow generator stalls the other, and memory stays bounded however long the
video is. Every tracked face of a frame goes through the generator in one batch.
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

log = logging.getLogger(__name__)


@dataclass
class StageTimes:
    """Per-stage wall times of one frame in milliseconds."""

    decode_wait: float = 0.0
    track: float = 0.0
    engine: float = 0.0
    faces: int = 0


@dataclass
class FrameResult:
    index: int
    timestamp: float
    image: np.ndarray  # (H, W, 3) uint8 BGR
    faces: list[tuple[int, FaceResult]] = field(default_factory=list)  # (track id, result)
    times: StageTimes = field(default_factory=StageTimes)


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

    def __init__(self, reconstructor: Reconstructor, tracker, texture: bool = True) -> None:
        self.rec = reconstructor
        self.tracker = tracker
        self.texture = texture

    def process(self, index: int, timestamp: float, image: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        tracks = self.tracker.update(image, timestamp)
        t1 = time.perf_counter()
        crops = self.rec.crops_for([t.landmarks for t in tracks])
        faces = self.rec.run(image, crops, texture=self.texture)
        t2 = time.perf_counter()
        times = StageTimes(track=(t1 - t0) * 1e3, engine=(t2 - t1) * 1e3, faces=len(tracks))
        return FrameResult(index, timestamp, image, [(t.id, f) for t, f in zip(tracks, faces)], times)

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
            res.times.decode_wait = wait
            yield res
