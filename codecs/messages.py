"""The message schema of a face stream (wire format version 1, see FORMAT.md).

A stream is: one StreamHeader, then per video frame one FrameStart followed by exactly
``FrameStart.n_messages`` messages (a BackgroundKeyframe, FaceGone for faces that left, one
FaceKeyframe or FaceDelta per listed face). KeyframeRequest flows the other way (receiver ->
sender). ``seq`` counts every message of a stream by one, so a receiver sees any loss.

Integer payloads are numpy arrays (int32 in memory; the wire picks the narrowest dtype).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import IntEnum

import numpy as np

FORMAT_VERSION = 1


class Kind(IntEnum):
    """Message kind codes (the header's ``k``)."""

    STREAM_HEADER = 1
    FRAME_START = 2
    FACE_KEYFRAME = 3
    FACE_DELTA = 4
    BACKGROUND = 5
    FACE_GONE = 6
    KEYFRAME_REQUEST = 7


class _Msg:
    """Field-wise equality that understands numpy arrays (tests compare round trips)."""

    kind: Kind

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):  # type: ignore[arg-type]
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass(eq=False)
class StreamHeader(_Msg):
    """What a receiver must agree with before decoding: format, model, UV layout, basis, video."""

    seq: int
    ts: float
    bundle_id: str
    layout_hash: str
    basis_id: str
    n_components: int
    fps: float
    width: int
    height: int
    version: int = FORMAT_VERSION
    kind = Kind.STREAM_HEADER


@dataclass(eq=False)
class FrameStart(_Msg):
    """Marks a video frame: the faces present and how many messages of this frame follow."""

    seq: int
    ts: float
    frame_index: int
    face_ids: tuple[int, ...]
    n_messages: int
    kind = Kind.FRAME_START


@dataclass(eq=False)
class FaceKeyframe(_Msg):
    """Absolute state of one face.

    ``pose_q`` (7,) pose integers (quant.py), ``coeffs_q`` (K,) coefficient integers at
    ``step``; ``texture_jpeg`` a square JPEG of ``texture_size`` px (empty: no texture);
    ``residual_q`` optional (G, G, 3) int8 low-resolution UV map of what the basis misses, at
    ``residual_step`` canonical units per integer.
    """

    seq: int
    ts: float
    face_id: int
    pose_q: np.ndarray
    coeffs_q: np.ndarray
    step: float
    texture_jpeg: bytes = b""
    texture_size: int = 0
    residual_q: np.ndarray | None = None
    residual_step: float = 0.0
    kind = Kind.FACE_KEYFRAME


@dataclass(eq=False)
class FaceDelta(_Msg):
    """Change of one face since the message ``ref_seq`` (its previous keyframe or delta):
    ``pose_dq`` (7,) and ``coeff_dq`` (K,) integer differences, coefficients at ``step``."""

    seq: int
    ts: float
    face_id: int
    ref_seq: int
    pose_dq: np.ndarray
    coeff_dq: np.ndarray
    step: float
    kind = Kind.FACE_DELTA


@dataclass(eq=False)
class BackgroundKeyframe(_Msg):
    """Low-quality JPEG of the whole frame (``width`` x ``height`` as encoded)."""

    seq: int
    ts: float
    jpeg: bytes
    width: int
    height: int
    kind = Kind.BACKGROUND


@dataclass(eq=False)
class FaceGone(_Msg):
    """The face left the picture; the receiver drops its state."""

    seq: int
    ts: float
    face_id: int
    kind = Kind.FACE_GONE


@dataclass(eq=False)
class KeyframeRequest(_Msg):
    """Receiver -> sender: send a keyframe of ``face_id`` (ALL_FACES: every face, background
    and header). ``seq`` counts the receiver's own requests."""

    seq: int
    ts: float
    face_id: int
    kind = Kind.KEYFRAME_REQUEST


ALL_FACES = -1

Message = (StreamHeader | FrameStart | FaceKeyframe | FaceDelta | BackgroundKeyframe | FaceGone
           | KeyframeRequest)
FACE_MESSAGES = (FaceKeyframe, FaceDelta)
