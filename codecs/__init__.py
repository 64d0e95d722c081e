"""streamcap face codec (import name ``streamcap_codecs``): geometry basis, wire format,
stream encoder/decoder and the ``.scap`` container. Pure numpy/OpenCV/msgpack; see FORMAT.md."""

from .basis import GeometryBasis, fit_basis, from_canonical, normalise_pose, to_canonical
from .container import IndexEntry, ScapReader, ScapWriter
from .decoder import DecodedFace, DecodedFrame, FaceStreamDecoder
from .encoder import EncoderStats, FaceStreamEncoder
from .messages import (
    ALL_FACES,
    FORMAT_VERSION,
    BackgroundKeyframe,
    FaceDelta,
    FaceGone,
    FaceKeyframe,
    FrameStart,
    KeyframeRequest,
    Kind,
    Message,
    StreamHeader,
)
from .quant import quality_to_step
from .wire import from_frames, message_size, to_frames

__all__ = [
    "ALL_FACES", "FORMAT_VERSION", "BackgroundKeyframe", "DecodedFace", "DecodedFrame", "EncoderStats",
    "FaceDelta", "FaceGone", "FaceKeyframe", "FaceStreamDecoder", "FaceStreamEncoder", "FrameStart",
    "GeometryBasis", "IndexEntry", "KeyframeRequest", "Kind", "Message", "ScapReader", "ScapWriter",
    "StreamHeader", "fit_basis", "from_canonical", "from_frames", "message_size", "normalise_pose",
    "quality_to_step", "to_canonical", "to_frames",
]
