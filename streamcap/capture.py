"""Frame sources: still images, video files (PyAV) and cameras (OpenCV).

Each source yields ``Frame`` objects (index, timestamp in seconds, BGR uint8 image) and turns
unreadable input into one typed error: a missing file, a file that is not an image or video,
a camera that cannot be opened or delivers nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import CameraUnavailable, InputError, InputNotFound, VideoError

log = logging.getLogger(__name__)


@dataclass
class Frame:
    index: int
    timestamp: float  # seconds from the start of the source
    image: np.ndarray  # (H, W, 3) uint8 BGR


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFound(f"{p}: no such file")
    data = np.fromfile(str(p), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"{p}: not an image (or an unsupported format)")
    return img


class VideoSource:
    """Decode a video file with PyAV; ``loop`` restarts at the end, ``realtime`` paces frames at
    the file's own rate (for live sending from a file)."""

    def __init__(self, path: str | Path, loop: bool = False, realtime: bool = False) -> None:
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise InputNotFound(f"{self.path}: no such file")
        self.loop, self.realtime = loop, realtime
        try:
            self._container = av.open(str(self.path))
            if not self._container.streams.video:
                raise VideoError(f"{self.path}: has no video stream")
            stream = self._container.streams.video[0]
        except av.error.FFmpegError as exc:
            raise VideoError(f"{self.path}: not a readable video ({exc.strerror or exc})") from exc
        self.fps = float(stream.average_rate or stream.guessed_rate or 25.0)
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        self.frame_count = int(stream.frames or 0)

    def _decode_once(self) -> Iterator[np.ndarray]:
        import av

        self._container.seek(0)
        try:
            for f in self._container.decode(video=0):
                yield f.to_ndarray(format="bgr24")
        except av.error.FFmpegError as exc:
            log.warning("%s: decoding stopped early: %s", self.path, exc)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        start = time.perf_counter()
        while True:
            got = False
            for img in self._decode_once():
                got = True
                ts = index / self.fps
                if self.realtime:
                    delay = start + ts - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                yield Frame(index, ts, img)
                index += 1
            if not got and index == 0:
                raise VideoError(f"{self.path}: no decodable frame")
            if not self.loop or not got:
                return

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CameraSource:
    """An OpenCV camera; fails within ``open_timeout`` seconds instead of hanging."""

    def __init__(self, index: int, open_timeout: float = 2.0) -> None:
        self.index = index
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            raise CameraUnavailable(f"camera {index} cannot be opened (no such device or in use)")
        deadline = time.monotonic() + open_timeout
        ok = False
        while time.monotonic() < deadline:
            ok, _ = cap.read()
            if ok:
                break
            time.sleep(0.05)
        if not ok:
            cap.release()
            raise CameraUnavailable(f"camera {index} opened but delivered no frame within {open_timeout:.0f} s")
        self._cap = cap
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 30.0)
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def __iter__(self) -> Iterator[Frame]:
        start = time.perf_counter()
        index = 0
        while True:
            ok, img = self._cap.read()
            if not ok:
                raise CameraUnavailable(f"camera {self.index} stopped delivering frames")
            yield Frame(index, time.perf_counter() - start, img)
            index += 1

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(camera: int | None = None, video: str | Path | None = None, loop: bool = False,
                realtime: bool = False) -> VideoSource | CameraSource:
    if camera is not None:
        return CameraSource(camera)
    if video is None:
        raise InputError("give a camera index or a video file")
    return VideoSource(video, loop=loop, realtime=realtime)
