"""Video output with PyAV (H.264 by default): OpenCV 5 cannot write H.264.

Frames are flushed as they come and the container is closed on any exit, so an interrupted
``decode`` or ``receive`` leaves a playable file holding every frame written so far.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import InputError


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` name the same file (same path, or links to one file)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_video_output(path: str | Path, protect: Iterable[str | Path] = ()) -> Path:
    """An output video path that can be written without harm, checked before any work starts:
    a known video suffix, not a folder, and not one of ``protect`` (the command's inputs:
    writing over one would destroy what is being read). InputError if not."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"output {p} is a folder: give a video file name ({', '.join(VIDEO_SUFFIXES)})")
    if p.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output {p} must end in one of {', '.join(VIDEO_SUFFIXES)}")
    for src in protect:
        if same_file(p, Path(src)):
            raise InputError(f"output {p} is the input file: refusing to overwrite it")
    return p


class VideoWriter:
    """Write BGR uint8 frames (H, W, 3) to an mp4/mkv/mov/avi file (checked on construction)."""

    def __init__(self, path: str | Path, fps: float, codec: str = "libx264", crf: int = 20,
                 bit_rate: int | None = None, options: dict[str, str] | None = None) -> None:
        self.path = check_video_output(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.codec = codec
        self.opts = dict(options or {})
        if bit_rate is None and codec == "libx264":
            self.opts.setdefault("crf", str(crf))
        self.bit_rate = bit_rate
        self._container = None
        self._stream = None
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), mode="w")
        except (OSError, ValueError, av.error.FFmpegError) as exc:
            raise InputError(f"cannot write video {self.path}: {exc}") from exc
        s = self._container.add_stream(self.codec, rate=self.fps)
        s.width, s.height = width + width % 2, height + height % 2
        s.pix_fmt = "yuv420p"
        if self.bit_rate:
            s.bit_rate = int(self.bit_rate)
        s.options = self.opts
        self._stream = s

    def write(self, frame: np.ndarray) -> None:
        if self._container is None:
            self._open(frame.shape[1], frame.shape[0])
        assert self._stream is not None and self._container is not None
        if frame.shape[1] != self._stream.width or frame.shape[0] != self._stream.height:
            pad = np.zeros((self._stream.height, self._stream.width, 3), np.uint8)
            pad[: frame.shape[0], : frame.shape[1]] = frame[: self._stream.height, : self._stream.width]
            frame = pad
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            assert self._stream is not None
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
