"""Every size and rate limit of the face stream, in one place (FORMAT.md §11 lists them).

A reader checks each limit *before* it allocates a buffer, inflates a payload or decodes an
image, so a forged size costs nothing. A new packet format extends this table rather than
scattering numbers through its parser; the fuzz suite (tests/test_fuzz.py) reads them from here.
"""

from __future__ import annotations

# one message
MAX_FRAMES = 6  # header frame + at most 5 payload frames
MAX_HEADER_BYTES = 4096  # the msgpack header frame
MAX_PAYLOAD_BYTES = 16 << 20  # one payload frame, also after decompression
MAX_MESSAGE_PART = MAX_PAYLOAD_BYTES + (1 << 20)  # one ZeroMQ message part (payload + slack)
MAX_STR = 128
MAX_COMPONENTS = 4096
MAX_FACES = 256  # faces per frame
MAX_SEQ = (1 << 63) - 1
MAX_FACE_ID = (1 << 31) - 1
MAX_FPS = 1000.0
MAX_TS_US = 1 << 62  # timestamps travel as integer microseconds

# pictures (checked against the header / JPEG frame header before any pixel is decoded)
MAX_FRAME_SIDE = 8192  # StreamHeader w, h and the background plate's sides
MAX_FRAME_PIXELS = 1 << 25  # w x h (33.5 Mpx: 7680 x 4320 fits)
MAX_TEXTURE_SIDE = 2048  # face texture T x T
MAX_RESIDUAL_SIDE = 256  # residual grid G x G x 3
MAX_ARRAY_SIDE = 16384  # any dimension of any payload array

# rates (a receiver / sender enforces them on its peer)
MAX_SEQ_JUMP = 1 << 16  # a seq further than this from the last one is a discontinuity, not a gap
MIN_RESTART_S = 1.0  # a receiver applies at most one stream reset (restart or new parameters) per second
MAX_REQUEST_BYTES = 4096  # one keyframe request message on the side channel
LIVE2_SEQ_MOD = 1 << 14  # a live v2 envelope carries its sequence number modulo this ...
LIVE2_MAX_GAP = 1024  # ... and a gap wider than this is a discontinuity (restart, forgery), not a loss
LIVE2_TIME_MOD = 1 << 21  # ... and its send time in ms modulo this (35 min; clocks must agree within half)
REQUEST_ALL_MIN_S = 0.5  # a sender honours at most one "everything" request per this interval,
REQUEST_ALL_MAX_S = 4.0  # ... doubling up to this while requests keep coming (a flood)
REQUEST_FACE_MIN_S = 0.2  # ... and at most one keyframe request per face per this interval,
REQUEST_FACE_MAX_S = 1.0  # ... doubling up to this

# .scap container
MAX_RECORD = MAX_FRAMES * (MAX_PAYLOAD_BYTES + 4) + 1  # a message record's body


def frame_size_ok(width: int, height: int, allow_zero: bool = False) -> bool:
    """``width`` x ``height`` is within the frame / plate limits (0 x 0 = unknown, if allowed)."""
    if allow_zero and width == 0 and height == 0:
        return True
    lo = 0 if allow_zero else 1
    return (lo <= width <= MAX_FRAME_SIDE and lo <= height <= MAX_FRAME_SIDE
            and width * height <= MAX_FRAME_PIXELS)
