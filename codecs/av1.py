"""AV1 through PyAV: libsvtav1 to encode (low-delay, one packet per picture), libdav1d to decode.

Used for the per-face UV texture video and for intra-coded pictures (background plates).
Packets are AV1 low-overhead bitstream (OBU) temporal units; the leading temporal delimiter
OBU (``12 00``) that every unit starts with is dropped on the wire and put back before
decoding (FORMAT.md §9.2).
"""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np

from streamcap.errors import CodecError

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
TD = b"\x12\x00"  # temporal delimiter OBU with an empty payload
MIN_SIDE = 64  # SVT-AV1's smallest picture side


def _strip(b: bytes) -> bytes:
    return b[2:] if b.startswith(TD) else b


def realtime_threads() -> list[int]:
    """Thread ids of this process on a real-time scheduling policy (SCHED_FIFO or SCHED_RR)."""
    if not hasattr(os, "sched_getscheduler"):
        return []
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []
    out = []
    for tid in tids:
        try:
            if os.sched_getscheduler(tid) in (os.SCHED_FIFO, os.SCHED_RR):
                out.append(tid)
        except OSError:  # the thread ended meanwhile
            pass
    return out


def ordinary_scheduling() -> None:
    """SVT-AV1, run as root, puts its worker threads and the thread that opens it on SCHED_FIFO
    at the highest priority (measured here: 17 threads after opening, 19 after the first picture,
    the caller's thread still FIFO after closing). A real-time policy starves every other process
    on the machine, so every real-time thread of this process goes back on the ordinary policy."""
    for tid in realtime_threads():
        try:
            os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            pass


def _new_decoder() -> av.CodecContext:
    dec = av.CodecContext.create("libdav1d", "r")
    dec.options = {"max_frame_delay": "1"}
    return dec


class VideoEncoder:
    """Low-delay AV1 encoder for a fixed picture size; ``encode`` returns one packet per picture."""

    def __init__(self, width: int, height: int, fps: float, kbps: float | None = None, crf: int = 50,
                 preset: int = 10) -> None:
        if width < MIN_SIDE or height < MIN_SIDE or width % 2 or height % 2:
            raise ValueError(f"AV1 picture must be even and at least {MIN_SIDE} px, got {width}x{height}")
        self.size = (int(width), int(height))
        self.fps = fps
        self.kbps = kbps
        self.crf = crf
        self.preset = preset
        self._cc: av.CodecContext | None = None
        self._pts = 0

    def _open(self) -> av.CodecContext:
        cc = av.CodecContext.create("libsvtav1", "w")
        cc.width, cc.height = self.size
        cc.pix_fmt = "yuv420p"
        rate = Fraction(self.fps).limit_denominator(1001)
        cc.framerate = rate
        cc.time_base = 1 / rate
        params = "pred-struct=1:lookahead=0:scd=0"
        if self.kbps:
            cc.bit_rate = int(self.kbps * 1000)
            params += ":rc=2"
        else:
            params += f":rc=0:crf={self.crf}"
        cc.options = {"preset": str(self.preset), "svtav1-params": params}
        cc.open()
        ordinary_scheduling()
        return cc

    def encode(self, image: np.ndarray, key: bool = False) -> bytes:
        """(H, W, 3) uint8 BGR -> the picture's packet (TD stripped). ``key``: intra picture
        with a sequence header (a decoder can start there)."""
        if self._cc is None:
            self._cc = self._open()
            key = True
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        f.pts = self._pts
        self._pts += 1
        if key:
            f.pict_type = av.video.frame.PictureType.I
        pkts = self._cc.encode(f)
        ordinary_scheduling()  # SVT starts more threads on the first pictures
        if len(pkts) != 1:
            raise RuntimeError(f"AV1 encoder gave {len(pkts)} packets for one picture (expected low delay)")
        return _strip(bytes(pkts[0]))

    def close(self) -> None:
        """Drain and release the encoder (SVT-AV1 wants an end of stream before it is freed)."""
        if self._cc is not None:
            try:
                self._cc.encode(None)
            except av.error.FFmpegError:
                pass
            self._cc = None
            ordinary_scheduling()


class VideoDecoder:
    """dav1d decoder; ``decode`` returns the picture of one packet (BGR) or raises CodecError."""

    def __init__(self) -> None:
        self._dec = _new_decoder()

    def reset(self) -> None:
        self._dec = _new_decoder()

    def decode(self, data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            frames = self._dec.decode(av.Packet(TD + data))
            if not frames:  # dav1d may hold a picture: drain it
                frames = self._dec.decode(None)
                self._dec = _new_decoder() if not frames else self._dec
        except (av.error.FFmpegError, ValueError) as exc:
            self.reset()
            raise CodecError(f"AV1 packet does not decode ({exc})") from exc
        if not frames:
            raise CodecError("AV1 packet gave no picture")
        img = frames[-1].to_ndarray(format="bgr24")
        if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
            raise CodecError(f"AV1 picture is {img.shape[1]}x{img.shape[0]}, stream says {size[0]}x{size[1]}")
        return img


def encode_intra(image: np.ndarray, crf: int = 45, preset: int = 8) -> bytes:
    """One picture as an AV1 intra packet (like AVIF without the HEIF box)."""
    h, w = image.shape[:2]
    enc = VideoEncoder(w, h, 1.0, crf=crf, preset=preset)
    try:
        return enc.encode(image, key=True)
    finally:
        enc.close()


def decode_intra(data: bytes) -> np.ndarray:
    """An intra packet -> picture (BGR); CodecError if it is not one."""
    dec = VideoDecoder()
    return dec.decode(data)
