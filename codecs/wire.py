"""Messages <-> byte frames: a msgpack header, then one raw frame per payload. Never pickle.

``to_frames(msg) -> list[bytes]`` and ``from_frames(frames) -> msg`` are pure functions. An
incoming message is checked field by field (types, ranges, shapes, sizes, version, payload
lengths, JPEG dimensions) before any array is built, so every malformed, truncated, forged or
wrong-version input raises ``CodecError`` and nothing else. Layout: FORMAT.md.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from streamcap.errors import CodecError

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
from .quant import POSE_LEN, STEP_MAX, STEP_MIN

from .limits import (
    MAX_ARRAY_SIDE,
    MAX_COMPONENTS,
    MAX_FACE_ID,
    MAX_FACES,
    MAX_FPS,
    MAX_FRAME_PIXELS,
    MAX_FRAME_SIDE,
    MAX_FRAMES,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    MAX_RESIDUAL_SIDE,
    MAX_SEQ,
    MAX_STR,
    MAX_TEXTURE_SIDE,
    MAX_TS_US,
    frame_size_ok,
)

DTYPES = {"i1": np.dtype("<i1"), "i2": np.dtype("<i2"), "i4": np.dtype("<i4"), "u1": np.dtype("u1")}
CODECS = ("r", "z", "j")  # raw, raw deflate, JPEG

_COMMON = {"v": int, "k": int, "q": int, "t": int, "p": list}
_FIELDS: dict[Kind, dict[str, type]] = {
    Kind.STREAM_HEADER: {"b": str, "l": str, "B": str, "K": int, "r": float, "w": int, "h": int},
    Kind.FRAME_START: {"i": int, "F": list, "n": int},
    Kind.FACE_KEYFRAME: {"f": int, "s": float},
    Kind.FACE_DELTA: {"f": int, "r": int, "s": float},
    Kind.BACKGROUND: {},
    Kind.FACE_GONE: {"f": int},
    Kind.KEYFRAME_REQUEST: {"f": int},
}
_OPTIONAL_FIELDS: dict[Kind, dict[str, type]] = {Kind.FACE_KEYFRAME: {"rs": float}}
# payload name -> (required, allowed dtypes, allowed codecs, ndim, max elements, max side)
_PAYLOADS: dict[Kind, dict[str, tuple[bool, tuple[str, ...], tuple[str, ...], int, int, int]]] = {
    Kind.FACE_KEYFRAME: {
        "P": (True, ("i1", "i2", "i4"), ("r", "z"), 1, POSE_LEN, POSE_LEN),
        "C": (True, ("i1", "i2", "i4"), ("r", "z"), 1, MAX_COMPONENTS, MAX_COMPONENTS),
        "T": (False, ("u1",), ("j",), 3, 3 * MAX_TEXTURE_SIDE**2, MAX_TEXTURE_SIDE),
        "R": (False, ("i1",), ("r", "z"), 3, 3 * MAX_RESIDUAL_SIDE**2, MAX_RESIDUAL_SIDE),
    },
    Kind.FACE_DELTA: {"D": (True, ("i1", "i2", "i4"), ("r", "z"), 1, POSE_LEN + MAX_COMPONENTS,
                            POSE_LEN + MAX_COMPONENTS)},
    Kind.BACKGROUND: {"J": (True, ("u1",), ("j",), 3, 3 * MAX_FRAME_PIXELS, MAX_FRAME_SIDE)},
}


# ----------------------------------------------------------------------------------- encoding

_MESSAGE_TYPES = (StreamHeader, FrameStart, FaceKeyframe, FaceDelta, BackgroundKeyframe, FaceGone,
                  KeyframeRequest)


def to_frames(msg: Message) -> list[bytes]:
    """Serialise a message: [msgpack header, payload...]. CodecError if it cannot be sent."""
    if not isinstance(msg, _MESSAGE_TYPES):
        raise CodecError(f"not a codec message: {type(msg).__name__}")
    head: dict[str, Any] = {"v": FORMAT_VERSION, "k": int(msg.kind), "q": _out_int(msg.seq, 0, MAX_SEQ),
                            "t": _out_ts(msg.ts)}
    payloads: list[tuple[str, str, list[int], str, bytes]] = []
    if isinstance(msg, StreamHeader):
        if msg.version != FORMAT_VERSION:
            raise CodecError(f"cannot write format version {msg.version}")
        head.update(b=_out_str(msg.bundle_id), l=_out_str(msg.layout_hash), B=_out_str(msg.basis_id),
                    K=_out_int(msg.n_components, 1, MAX_COMPONENTS), r=_out_fps(msg.fps),
                    w=_out_int(msg.width, 0, MAX_FRAME_SIDE), h=_out_int(msg.height, 0, MAX_FRAME_SIDE))
        if not frame_size_ok(head["w"], head["h"], allow_zero=True):
            raise CodecError(f"frame {head['w']}x{head['h']} exceeds {MAX_FRAME_PIXELS} pixels")
    elif isinstance(msg, FrameStart):
        ids = [_out_int(i, 0, MAX_FACE_ID) for i in msg.face_ids]
        if len(ids) > MAX_FACES or len(set(ids)) != len(ids):
            raise CodecError("face ids must be unique and at most MAX_FACES")
        head.update(i=_out_int(msg.frame_index, 0, MAX_SEQ), F=ids,
                    n=_out_int(msg.n_messages, 0, 2 * MAX_FACES + 2))
    elif isinstance(msg, FaceKeyframe):
        head.update(f=_out_int(msg.face_id, 0, MAX_FACE_ID), s=_out_step(msg.step))
        payloads.append(_int_payload("P", msg.pose_q, (POSE_LEN,)))
        payloads.append(_int_payload("C", msg.coeffs_q, None))
        if msg.texture_jpeg:
            side = _out_int(msg.texture_size, 1, MAX_TEXTURE_SIDE)
            payloads.append(("T", "u1", [side, side, 3], "j", bytes(msg.texture_jpeg)))
        if msg.residual_q is not None:
            head["rs"] = _out_step(msg.residual_step)
            payloads.append(_int_payload("R", msg.residual_q, None, only="i1"))
    elif isinstance(msg, FaceDelta):
        head.update(f=_out_int(msg.face_id, 0, MAX_FACE_ID), r=_out_int(msg.ref_seq, 0, MAX_SEQ),
                    s=_out_step(msg.step))
        pose = np.asarray(msg.pose_dq)
        if pose.shape != (POSE_LEN,):
            raise CodecError(f"pose delta must be ({POSE_LEN},), got {pose.shape}")
        payloads.append(_int_payload("D", np.concatenate([pose, np.asarray(msg.coeff_dq).ravel()]), None))
    elif isinstance(msg, BackgroundKeyframe):
        shape = [_out_int(msg.height, 1, MAX_FRAME_SIDE), _out_int(msg.width, 1, MAX_FRAME_SIDE), 3]
        if not frame_size_ok(shape[1], shape[0]):
            raise CodecError(f"background {shape[1]}x{shape[0]} exceeds {MAX_FRAME_PIXELS} pixels")
        payloads.append(("J", "u1", shape, "j", bytes(msg.jpeg)))
    elif isinstance(msg, FaceGone):
        head["f"] = _out_int(msg.face_id, 0, MAX_FACE_ID)
    else:
        head["f"] = _out_int(msg.face_id, ALL_FACES, MAX_FACE_ID)
    if payloads:
        head["p"] = [[n, dt, shape, codec, len(data)] for n, dt, shape, codec, data in payloads]
    # steps travel as float32 (they are float32 values); the stream header keeps float64 fps
    single = not isinstance(msg, StreamHeader)
    frames = [msgpack.packb(head, use_bin_type=True, use_single_float=single)]
    frames.extend(p[4] for p in payloads)
    if len(frames[0]) > MAX_HEADER_BYTES or any(len(f) > MAX_PAYLOAD_BYTES for f in frames[1:]):
        raise CodecError("message exceeds the wire size limits")
    return frames


def message_size(msg: Message) -> int:
    """Bytes of a message on the wire (header + payloads, without transport framing)."""
    return sum(len(f) for f in to_frames(msg))


def _int_payload(name: str, arr: np.ndarray, shape: tuple[int, ...] | None,
                 only: str | None = None) -> tuple[str, str, list[int], str, bytes]:
    """Integer array -> narrowest little-endian dtype, deflated when that is smaller."""
    a = np.asarray(arr)
    if a.dtype.kind not in "iu" or (shape is not None and a.shape != shape) or a.size == 0:
        raise CodecError(f"payload {name}: expected a non-empty integer array {shape or ''}")
    lo, hi = (int(a.min()), int(a.max()))
    for dt in ([only] if only else ["i1", "i2", "i4"]):
        info = np.iinfo(DTYPES[dt])
        if info.min <= lo and hi <= info.max:
            break
    else:
        raise CodecError(f"payload {name}: values {lo}..{hi} do not fit {only or 'int32'}")
    raw = np.ascontiguousarray(a, DTYPES[dt]).tobytes()
    packed = _deflate(raw)
    if len(packed) < len(raw):
        return name, dt, list(a.shape), "z", packed
    return name, dt, list(a.shape), "r", raw


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    return c.compress(data) + c.flush()


def _out_int(v: Any, lo: int, hi: int) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise CodecError(f"integer field {v!r} outside {lo}..{hi}")
    return int(v)


def _out_float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"not a number: {v!r}") from exc
    if not math.isfinite(f):
        raise CodecError(f"non-finite number {f}")
    return f


def _out_ts(v: Any) -> int:
    us = round(_out_float(v) * 1e6)
    if not -MAX_TS_US <= us <= MAX_TS_US:
        raise CodecError(f"timestamp {v} out of range")
    return us


def _out_fps(v: Any) -> float:
    f = _out_float(v)
    if not 0.0 <= f <= MAX_FPS:
        raise CodecError(f"frame rate {f} outside 0..{MAX_FPS}")
    return f


def _out_step(v: Any) -> float:
    f = float(np.float32(_out_float(v)))
    if not STEP_MIN <= f <= STEP_MAX:
        raise CodecError(f"quantisation step {f} outside {STEP_MIN}..{STEP_MAX}")
    return f


def _out_str(s: Any) -> str:
    if not isinstance(s, str) or len(s) > MAX_STR or not s.isascii():
        raise CodecError(f"string field must be ASCII of at most {MAX_STR} chars")
    return s


# ----------------------------------------------------------------------------------- decoding


def from_frames(frames: Sequence[Any]) -> Message:
    """Parse and validate one message; CodecError on anything malformed or unsupported."""
    if not isinstance(frames, (list, tuple)) or not 1 <= len(frames) <= MAX_FRAMES:
        raise CodecError("a message is a list of 1..6 byte frames")
    try:
        bufs = [bytes(memoryview(f)) for f in frames]
    except TypeError as exc:
        raise CodecError("message frames must be bytes") from exc
    head = _unpack_header(bufs[0])
    version = head.get("v")
    if type(version) is not int:
        raise CodecError("message header has no version")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported wire format version {version} (this runtime reads {FORMAT_VERSION})")
    try:
        kind = Kind(_get(head, "k", int))
    except ValueError as exc:
        raise CodecError(f"unknown message kind {head.get('k')!r}") from exc
    allowed = {**_COMMON, **_FIELDS[kind], **_OPTIONAL_FIELDS.get(kind, {})}
    extra = set(head) - set(allowed)
    if extra:
        raise CodecError(f"unknown header fields {sorted(extra)}")
    for key in _FIELDS[kind]:
        if key not in head:
            raise CodecError(f"{kind.name} header lacks '{key}'")
    seq = _int_in(head, "q", 0, MAX_SEQ)
    ts = _int_in(head, "t", -MAX_TS_US, MAX_TS_US) / 1e6
    payloads = _payloads(kind, head.get("p", []), bufs[1:])
    builder = _BUILDERS[kind]
    return builder(head, seq, ts, payloads)


def _unpack_header(buf: bytes) -> dict[str, Any]:
    if not 1 <= len(buf) <= MAX_HEADER_BYTES:
        raise CodecError(f"message header of {len(buf)} bytes (1..{MAX_HEADER_BYTES} allowed)")
    try:
        head = msgpack.unpackb(buf, raw=False, strict_map_key=True, use_list=True, timestamp=0,
                               max_str_len=MAX_HEADER_BYTES, max_bin_len=0, max_ext_len=0,
                               max_array_len=2 * MAX_FACES, max_map_len=32)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise CodecError(f"message header is not valid msgpack: {exc}") from exc
    if not isinstance(head, dict) or not all(isinstance(k, str) for k in head):
        raise CodecError("message header is not a map with string keys")
    return head


def _get(head: dict[str, Any], key: str, typ: type) -> Any:
    if key not in head:
        raise CodecError(f"header lacks '{key}'")
    v = head[key]
    if typ is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CodecError(f"header field '{key}' must be a finite number")
        return float(v)
    if typ is int and isinstance(v, bool):
        raise CodecError(f"header field '{key}' must be an integer")
    if not isinstance(v, typ):
        raise CodecError(f"header field '{key}' must be {typ.__name__}")
    return v


def _int_in(head: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = _get(head, key, int)
    if not lo <= v <= hi:
        raise CodecError(f"header field '{key}'={v} outside {lo}..{hi}")
    return v


def _step_in(head: dict[str, Any], key: str) -> float:
    v = _get(head, key, float)
    if not STEP_MIN <= v <= STEP_MAX:
        raise CodecError(f"quantisation step {v} outside {STEP_MIN}..{STEP_MAX}")
    return float(np.float32(v))  # steps are float32 values on both sides


def _str_in(head: dict[str, Any], key: str) -> str:
    v = _get(head, key, str)
    if len(v) > MAX_STR or not v.isascii():
        raise CodecError(f"header field '{key}' must be ASCII of at most {MAX_STR} chars")
    return v


def _payloads(kind: Kind, descs: Any, bufs: list[bytes]) -> dict[str, Any]:
    """Check the descriptors against the schema and the frames; return name -> array / bytes."""
    schema = _PAYLOADS.get(kind, {})
    if not isinstance(descs, list) or len(descs) != len(bufs):
        raise CodecError(f"header describes {len(descs) if isinstance(descs, list) else '?'} payloads, "
                         f"{len(bufs)} frames came")
    out: dict[str, Any] = {}
    for desc, buf in zip(descs, bufs):
        if not (isinstance(desc, list) and len(desc) == 5):
            raise CodecError("payload descriptor must be [name, dtype, shape, codec, nbytes]")
        name, dt, shape, codec, nbytes = desc
        if not isinstance(name, str) or name not in schema or name in out:
            raise CodecError(f"unexpected or repeated payload {name!r} in a {kind.name}")
        _, dtypes, codecs_, ndim, max_elems, max_side = schema[name]
        if dt not in dtypes or codec not in codecs_:
            raise CodecError(f"payload {name}: dtype {dt!r} / codec {codec!r} not allowed")
        if not (isinstance(shape, list) and len(shape) == ndim
                and all(type(s) is int and 1 <= s <= MAX_ARRAY_SIDE for s in shape)):
            raise CodecError(f"payload {name}: bad shape {shape!r}")
        if max(shape) > max_side or math.prod(shape) > max_elems:  # before anything is inflated or decoded
            raise CodecError(f"payload {name}: shape {shape} exceeds the format's limits")
        if type(nbytes) is not int or nbytes != len(buf):
            raise CodecError(f"payload {name}: header says {nbytes!r} bytes, frame has {len(buf)}")
        if not 1 <= len(buf) <= MAX_PAYLOAD_BYTES:
            raise CodecError(f"payload {name}: {len(buf)} bytes outside 1..{MAX_PAYLOAD_BYTES}")
        if codec == "j":
            size = jpeg_size(buf)
            if size is None or tuple(shape) != size or size[2] != 3:
                raise CodecError(f"payload {name}: not a {shape[0]}x{shape[1]} colour JPEG")
            out[name] = (buf, shape)
            continue
        dtype = DTYPES[dt]
        expect = int(np.prod(shape)) * dtype.itemsize
        if expect > MAX_PAYLOAD_BYTES:
            raise CodecError(f"payload {name}: {shape} is too large")
        raw = buf if codec == "r" else _inflate(buf, expect)
        if len(raw) != expect:
            raise CodecError(f"payload {name}: {len(raw)} bytes for shape {shape} {dt}")
        out[name] = np.frombuffer(raw, dtype).reshape(shape).astype(np.int32)
    missing = [n for n, (req, *_rest) in schema.items() if req and n not in out]
    if missing:
        raise CodecError(f"{kind.name} lacks payloads {missing}")
    return out


def _inflate(buf: bytes, expect: int) -> bytes:
    """Raw-deflate decompression bounded to ``expect`` bytes (no decompression bombs)."""
    d = zlib.decompressobj(-15)
    try:
        raw = d.decompress(buf, expect + 1)
    except zlib.error as exc:
        raise CodecError(f"payload does not inflate: {exc}") from exc
    if len(raw) != expect or not d.eof or d.unconsumed_tail or d.unused_data:
        raise CodecError("compressed payload has the wrong length or trailing bytes")
    return raw


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(buf: bytes) -> tuple[int, int, int] | None:
    """(height, width, components) from a JPEG's frame header, or None if it has none; read
    before decoding so a forged header cannot make the decoder allocate a huge image."""
    if buf[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(buf)
    while i + 4 <= n:
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            return None
        (seglen,) = struct.unpack_from(">H", buf, i + 2)
        if seglen < 2:
            return None
        if marker in _SOF:
            if i + 10 > n or seglen < 8:
                return None
            h, w = struct.unpack_from(">HH", buf, i + 5)
            return h, w, buf[i + 9]
        i += 2 + seglen
    return None


# ------------------------------------------------------------------------------ per-kind builders


def _build_header(head: dict, seq: int, ts: float, _p: dict) -> StreamHeader:
    fps = _get(head, "r", float)
    if not 0.0 <= fps <= MAX_FPS:
        raise CodecError(f"frame rate {fps} outside 0..{MAX_FPS}")
    w, h = _int_in(head, "w", 0, MAX_FRAME_SIDE), _int_in(head, "h", 0, MAX_FRAME_SIDE)
    if not frame_size_ok(w, h, allow_zero=True):  # before any frame buffer exists
        raise CodecError(f"frame {w}x{h} exceeds the format's {MAX_FRAME_PIXELS} pixels")
    return StreamHeader(seq=seq, ts=ts, bundle_id=_str_in(head, "b"), layout_hash=_str_in(head, "l"),
                        basis_id=_str_in(head, "B"), n_components=_int_in(head, "K", 1, MAX_COMPONENTS),
                        fps=fps, width=w, height=h, version=FORMAT_VERSION)


def _build_frame_start(head: dict, seq: int, ts: float, _p: dict) -> FrameStart:
    ids = head["F"]
    if not isinstance(ids, list) or len(ids) > MAX_FACES:
        raise CodecError("face id list too long")
    if not all(type(i) is int and 0 <= i <= MAX_FACE_ID for i in ids) or len(set(ids)) != len(ids):
        raise CodecError("face ids must be unique non-negative integers")
    return FrameStart(seq=seq, ts=ts, frame_index=_int_in(head, "i", 0, MAX_SEQ), face_ids=tuple(ids),
                      n_messages=_int_in(head, "n", 0, 2 * MAX_FACES + 2))


def _build_keyframe(head: dict, seq: int, ts: float, p: dict) -> FaceKeyframe:
    pose, coeffs = p["P"], p["C"]
    if pose.shape != (POSE_LEN,) or not 1 <= coeffs.shape[0] <= MAX_COMPONENTS:
        raise CodecError("keyframe pose must be (7,) and coefficients (K,), K <= MAX_COMPONENTS")
    tex, side = b"", 0
    if "T" in p:
        tex, shape = p["T"]
        if shape[0] != shape[1] or shape[0] > MAX_TEXTURE_SIDE:
            raise CodecError(f"texture must be square and at most {MAX_TEXTURE_SIDE} px")
        side = shape[0]
    res, rstep = None, 0.0
    if ("R" in p) != ("rs" in head):
        raise CodecError("a residual needs its step and the step its residual")
    if "R" in p:
        res, rstep = p["R"], _step_in(head, "rs")
        if res.shape[0] != res.shape[1] or res.shape[2] != 3 or res.shape[0] > MAX_RESIDUAL_SIDE:
            raise CodecError(f"residual must be (G, G, 3) with G <= {MAX_RESIDUAL_SIDE}")
        res = res.astype(np.int8)
    return FaceKeyframe(seq=seq, ts=ts, face_id=_int_in(head, "f", 0, MAX_FACE_ID), pose_q=pose,
                        coeffs_q=coeffs, step=_step_in(head, "s"), texture_jpeg=tex, texture_size=side,
                        residual_q=res, residual_step=rstep)


def _build_delta(head: dict, seq: int, ts: float, p: dict) -> FaceDelta:
    d = p["D"]
    if not POSE_LEN + 1 <= d.shape[0] <= POSE_LEN + MAX_COMPONENTS:
        raise CodecError("delta payload must hold 7 pose and 1..MAX_COMPONENTS coefficient deltas")
    ref = _int_in(head, "r", 0, MAX_SEQ)
    if ref >= seq:
        raise CodecError(f"delta refers to message {ref}, not before its own seq {seq}")
    return FaceDelta(seq=seq, ts=ts, face_id=_int_in(head, "f", 0, MAX_FACE_ID), ref_seq=ref,
                     pose_dq=d[:POSE_LEN].copy(), coeff_dq=d[POSE_LEN:].copy(), step=_step_in(head, "s"))


def _build_background(head: dict, seq: int, ts: float, p: dict) -> BackgroundKeyframe:
    jpeg, shape = p["J"]
    return BackgroundKeyframe(seq=seq, ts=ts, jpeg=jpeg, width=shape[1], height=shape[0])


def _build_gone(head: dict, seq: int, ts: float, _p: dict) -> FaceGone:
    return FaceGone(seq=seq, ts=ts, face_id=_int_in(head, "f", 0, MAX_FACE_ID))


def _build_request(head: dict, seq: int, ts: float, _p: dict) -> KeyframeRequest:
    return KeyframeRequest(seq=seq, ts=ts, face_id=_int_in(head, "f", ALL_FACES, MAX_FACE_ID))


_BUILDERS = {
    Kind.STREAM_HEADER: _build_header,
    Kind.FRAME_START: _build_frame_start,
    Kind.FACE_KEYFRAME: _build_keyframe,
    Kind.FACE_DELTA: _build_delta,
    Kind.BACKGROUND: _build_background,
    Kind.FACE_GONE: _build_gone,
    Kind.KEYFRAME_REQUEST: _build_request,
}
