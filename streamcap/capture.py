"""Frame sources: still images, video files (PyAV) and cameras (OpenCV).

Each source yields ``Frame`` objects (index, timestamp in seconds, BGR uint8 image) and turns
unreadable input into one typed error: a missing file, a file that is not an image or video,
a camera that cannot be opened or delivers nothing.
"""

from __future__ import annotations

import logging
import threading
from struct import error as struct_error
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import CameraUnavailable, InputError, InputNotFound, VideoError

log = logging.getLogger(__name__)
MAX_CAMERA_INDEX = 255


@dataclass
class Frame:
    index: int
    timestamp: float  # seconds from the start of the source
    image: np.ndarray  # (H, W, 3) uint8 BGR
    wall: float = 0.0  # time.time() when the source delivered it (capture time for latency)


MAX_IMAGE_BYTES = 256 << 20  # an input image file
MAX_IMAGE_SIDE = 32768
MAX_IMAGE_PIXELS = 1 << 26  # 67 Mpx (a 3-byte BGR copy is 200 MB)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image file's header, read without decoding a pixel (Pillow opens
    lazily; its own decompression-bomb check is off here because the caller applies limits),
    or None when it is not an image Pillow knows."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct_error):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR. Its size is checked from the header before it is
    decoded, so a small file that claims a huge picture costs nothing."""
    p = Path(path)
    if not p.is_file():
        raise InputNotFound(f"{p}: no such file")
    if p.stat().st_size > MAX_IMAGE_BYTES:
        raise InputError(f"{p}: larger than {MAX_IMAGE_BYTES >> 20} MB")
    data = np.fromfile(str(p), np.uint8)
    size = image_size(data.tobytes()) if data.size else None
    if size is None:
        raise InputError(f"{p}: not an image (or an unsupported format)")
    w, h = size
    if not (1 <= w <= MAX_IMAGE_SIDE and 1 <= h <= MAX_IMAGE_SIDE and w * h <= MAX_IMAGE_PIXELS):
        raise InputError(f"{p}: image is {w}x{h}; at most {MAX_IMAGE_PIXELS // 10**6} Mpx and "
                         f"{MAX_IMAGE_SIDE} px a side are read")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error:
        img = None
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
        n = 0
        try:
            for f in self._container.decode(video=0):
                yield f.to_ndarray(format="bgr24")
                n += 1
        except av.error.FFmpegError as exc:  # with no frame at all, the caller's error says it
            log.log(logging.WARNING if n else logging.INFO, "%s: decoding stopped early: %s", self.path, exc)

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
                yield Frame(index, ts, img, time.time())
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
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= MAX_CAMERA_INDEX:
            # OpenCV's "any camera" index -1 crashes its V4L2 backend when there is none
            raise CameraUnavailable(f"camera index must be 0..{MAX_CAMERA_INDEX}, got {index!r}")
        self.index = index
        # OpenCV's backends print their own warnings for a missing device; we say it in one line
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
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
            yield Frame(index, time.perf_counter() - start, img, time.time())
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


class LatestFrame:
    """Live view of a source: a thread reads it as fast as it delivers and keeps only the newest
    frame, so a consumer slower than the camera (or a ``realtime`` video) always gets the freshest
    frame instead of an ever older queued one. ``skipped`` counts frames it never saw. Errors of
    the source (a camera that stops) are re-raised in the consumer."""

    def __init__(self, source: Iterable[Frame]) -> None:
        self.skipped = 0
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._error: BaseException | None = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(source,), name="streamcap-capture", daemon=True)
        self._thread.start()

    def _read(self, source: Iterable[Frame]) -> None:
        try:
            for frame in source:
                with self._cond:
                    if self._frame is not None:
                        self.skipped += 1
                    self._frame = frame
                    self._cond.notify()
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify()

    def __iter__(self) -> Iterator[Frame]:
        try:
            while True:
                with self._cond:
                    while self._frame is None and not self._ended and not self._stop.is_set():
                        self._cond.wait(0.1)
                    frame, self._frame = self._frame, None
                    if frame is None or self._stop.is_set():
                        if self._error is not None:
                            raise self._error
                        return
                yield frame
        finally:
            self._stop.set()

    def stop(self) -> None:
        """Ask the reader thread to end after the frame it is reading."""
        self._stop.set()
        with self._cond:
            self._cond.notify()

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the reader thread and wait for it; True once it no longer touches the source."""
        self.stop()
        self._thread.join(timeout)
        return not self._thread.is_alive()
