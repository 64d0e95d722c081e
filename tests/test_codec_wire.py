"""Wire format: every message kind round-trips; malformed, forged, truncated and wrong-version
input raises CodecError and nothing else (hypothesis fuzzing)."""

from __future__ import annotations

import zlib

import cv2
import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamcap_codecs import (
    ALL_FACES,
    FORMAT_VERSION,
    BackgroundKeyframe,
    FaceDelta,
    FaceGone,
    FaceKeyframe,
    FrameStart,
    KeyframeRequest,
    StreamHeader,
    from_frames,
    message_size,
    to_frames,
)
from streamcap_codecs.wire import jpeg_size

from streamcap.errors import CodecError


def _jpeg(h: int, w: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return buf.tobytes()


def sample_messages() -> list:
    rng = np.random.default_rng(0)
    return [
        StreamHeader(seq=0, ts=0.0, bundle_id="light128", layout_hash="5fc73d010872cb02",
                     basis_id="0123456789abcdef", n_components=64, fps=29.97, width=1280, height=720),
        FrameStart(seq=1, ts=0.0, frame_index=0, face_ids=(3, 7), n_messages=3),
        BackgroundKeyframe(seq=2, ts=0.0, jpeg=_jpeg(36, 64), width=64, height=36),
        FaceKeyframe(seq=3, ts=0.0, face_id=3, pose_q=rng.integers(-30000, 30000, 7).astype(np.int32),
                     coeffs_q=rng.integers(-300, 300, 64).astype(np.int32), step=0.25,
                     texture_jpeg=_jpeg(32, 32, 1), texture_size=32),
        FaceKeyframe(seq=4, ts=0.0, face_id=7, pose_q=np.arange(7, dtype=np.int32) * 1_000_000,
                     coeffs_q=np.zeros(64, np.int32), step=1.5,
                     residual_q=rng.integers(-127, 127, (16, 16, 3)).astype(np.int8), residual_step=0.25),
        FaceDelta(seq=5, ts=0.033333, face_id=3, ref_seq=3, pose_dq=rng.integers(-5, 5, 7).astype(np.int32),
                  coeff_dq=rng.integers(-2, 2, 64).astype(np.int32), step=0.375),
        FaceDelta(seq=6, ts=0.033333, face_id=7, ref_seq=4, pose_dq=np.full(7, 40000, np.int32),
                  coeff_dq=np.full(64, -70000, np.int32), step=0.375),
        FaceGone(seq=7, ts=0.066667, face_id=7),
        KeyframeRequest(seq=0, ts=5.0, face_id=3),
        KeyframeRequest(seq=1, ts=5.0, face_id=ALL_FACES),
    ]


@pytest.mark.parametrize("msg", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_kind_round_trips(msg):
    frames = to_frames(msg)
    assert all(isinstance(f, bytes) for f in frames)
    back = from_frames(frames)
    assert back == msg
    assert message_size(msg) == sum(map(len, frames))
    # memoryview / bytearray frames (what a socket may hand over) parse the same
    assert from_frames([bytearray(f) for f in frames]) == msg


def test_header_names_version_kind_seq_ts_and_payloads():
    msg = sample_messages()[5]
    head = msgpack.unpackb(to_frames(msg)[0])
    assert head["v"] == FORMAT_VERSION and head["k"] == 4 and head["q"] == 5 and head["f"] == 3
    name, dtype, shape, codec, _ = head["p"][0]
    assert (name, dtype, shape) == ("D", "i1", [71]) and codec in ("r", "z")


def test_wrong_version_is_rejected():
    for msg in sample_messages():
        frames = to_frames(msg)
        head = msgpack.unpackb(frames[0])
        head["v"] = FORMAT_VERSION + 1
        with pytest.raises(CodecError, match="version"):
            from_frames([msgpack.packb(head)] + frames[1:])


def _forge(msg, **changes):
    frames = to_frames(msg)
    head = msgpack.unpackb(frames[0])
    payloads = list(frames[1:])
    for k, v in changes.items():
        if k == "payloads":
            payloads = v
        elif v is None:
            head.pop(k, None)
        else:
            head[k] = v
    return [msgpack.packb(head)] + payloads


def test_forged_headers_are_rejected():
    hdr, start, bg, key, _, delta = sample_messages()[:6]
    forged = [
        _forge(delta, k=99),  # unknown kind
        _forge(delta, x=1),  # unknown field
        _forge(delta, f=None),  # missing field
        _forge(delta, f=True),  # bool where an int belongs
        _forge(delta, f=-1),  # negative face id
        _forge(delta, s=float("nan")),  # non-finite step
        _forge(delta, s=0.0),  # zero step
        _forge(delta, r=5),  # refers to itself
        _forge(delta, q=-1),
        _forge(delta, t="now"),
        _forge(delta, payloads=[]),  # payload missing
        _forge(delta, p=[["D", "i1", [71], "r", 71]]),  # lies about size
        _forge(delta, p=[["D", "i8", [71], "r", 71]]),  # dtype not allowed
        _forge(delta, p=[["D", "i1", [16384, 16384], "z", 10]]),  # huge shape
        _forge(delta, p=[["D", "i1", [3], "r", 3]], payloads=[b"abc"]),  # too few coefficients
        _forge(start, F=[1, 1]),  # repeated face id
        _forge(start, F=list(range(300))),
        _forge(hdr, r=-5.0),
        _forge(hdr, b="x" * 1000),
        _forge(key, p=[["P", "i2", [6], "r", 12], ["C", "i1", [64], "r", 64]]),  # pose of 6
        _forge(bg, p=[["J", "u1", [99, 64, 3], "j", len(bg.jpeg)]]),  # JPEG is 36x64, not 99x64
        _forge(bg, payloads=[b"\xff\xd8" + b"\x00" * 50]),  # no frame header
        [b"\x93\x01\x02\x03"],  # msgpack array, not a map
        [b""],
        [],
        "not frames",
        [to_frames(delta)[0]] * 7,  # too many frames
        [12345],
    ]
    for frames in forged:
        with pytest.raises(CodecError):
            from_frames(frames)


def test_decompression_bomb_is_refused():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"\x00" * (8 << 20)) + bomb.flush()
    msg = sample_messages()[5]
    frames = _forge(msg, p=[["D", "i1", [71], "z", len(data)]], payloads=[data])
    with pytest.raises(CodecError):
        from_frames(frames)


def test_jpeg_size_reads_the_frame_header():
    assert jpeg_size(_jpeg(36, 64)) == (36, 64, 3)
    assert jpeg_size(b"\x89PNG") is None
    assert jpeg_size(_jpeg(36, 64)[:10]) is None


def test_unsendable_messages_raise_codec_error():
    key = sample_messages()[3]
    bad = [
        FaceDelta(seq=1, ts=0.0, face_id=1, ref_seq=0, pose_dq=np.zeros(6, np.int32),
                  coeff_dq=np.zeros(4, np.int32), step=1.0),
        FaceDelta(seq=1, ts=0.0, face_id=1, ref_seq=0, pose_dq=np.zeros(7, np.int32),
                  coeff_dq=np.zeros(4, np.float32), step=1.0),
        FaceDelta(seq=1, ts=float("inf"), face_id=1, ref_seq=0, pose_dq=np.zeros(7, np.int32),
                  coeff_dq=np.zeros(4, np.int32), step=1.0),
        FaceKeyframe(seq=1, ts=0.0, face_id=1, pose_q=key.pose_q, coeffs_q=key.coeffs_q, step=-1.0),
        FaceKeyframe(seq=1, ts=0.0, face_id=1, pose_q=key.pose_q, coeffs_q=key.coeffs_q, step=1.0,
                     residual_q=np.full((4, 4, 3), 300), residual_step=1.0),
        StreamHeader(seq=0, ts=0.0, bundle_id="b", layout_hash="l", basis_id="x", n_components=8,
                     fps=30.0, width=64, height=64, version=2),
        FrameStart(seq=0, ts=0.0, frame_index=-1, face_ids=(), n_messages=0),
        "a string",
    ]
    for msg in bad:
        with pytest.raises(CodecError):
            to_frames(msg)


ENCODED = [to_frames(m) for m in sample_messages()]


def _check_parse(frames):
    """The fuzz property: a CodecError, or a message that passes every check and re-encodes to
    the same bytes (a flipped bit in raw integer data is a different valid message; transports
    and the .scap CRC catch those)."""
    try:
        msg = from_frames(frames)
    except CodecError:
        return
    assert from_frames(to_frames(msg)) == msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(ENCODED) - 1), data=st.data())
def test_fuzz_byte_mutations(which, data):
    frames = [bytearray(f) for f in ENCODED[which]]
    n_mut = data.draw(st.integers(1, 8))
    for _ in range(n_mut):
        fi = data.draw(st.integers(0, len(frames) - 1))
        if not frames[fi]:
            continue
        pos = data.draw(st.integers(0, len(frames[fi]) - 1))
        frames[fi][pos] = data.draw(st.integers(0, 255))
    _check_parse([bytes(f) for f in frames])


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, len(ENCODED) - 1), data=st.data())
def test_fuzz_truncations_always_fail(which, data):
    frames = list(ENCODED[which])
    fi = data.draw(st.integers(0, len(frames) - 1))
    cut = data.draw(st.integers(0, len(frames[fi]) - 1))
    frames[fi] = frames[fi][:cut]
    with pytest.raises(CodecError):
        from_frames(frames)


@settings(max_examples=200, deadline=None)
@given(which=st.integers(0, len(ENCODED) - 1), data=st.data())
def test_fuzz_frame_drops_duplicates_and_junk(which, data):
    frames = list(ENCODED[which])
    op = data.draw(st.sampled_from(["drop", "dup", "junk", "swap"]))
    if op == "drop":
        frames.pop(data.draw(st.integers(0, len(frames) - 1)))
    elif op == "dup":
        frames.append(frames[data.draw(st.integers(0, len(frames) - 1))])
    elif op == "junk":
        frames.insert(data.draw(st.integers(0, len(frames))), data.draw(st.binary(max_size=64)))
    elif len(frames) > 1:
        frames[0], frames[1] = frames[1], frames[0]
    else:
        frames = [frames[0] + b"\x00"]
    with pytest.raises(CodecError):
        from_frames(frames)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=0, max_size=7))
def test_fuzz_random_bytes(frames):
    _check_parse(frames)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list("vkqtpfrsbiFnlBKwh") + ["rs"]),
                       st.one_of(st.integers(-2**64, 2**64), st.floats(), st.text(max_size=5),
                                 st.booleans(), st.none(), st.lists(st.integers(), max_size=4),
                                 st.binary(max_size=4)),
                       max_size=12),
       st.lists(st.binary(max_size=40), max_size=4))
def test_fuzz_random_headers(head, payloads):
    try:
        packed = msgpack.packb(head)
    except (OverflowError, ValueError):
        return
    _check_parse([packed, *payloads])
