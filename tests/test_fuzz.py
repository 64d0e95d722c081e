"""Standing fuzz suite (hypothesis): hostile bytes into the file reader, the wire decoder, the
transport envelopes, bundle manifests and image inputs. Seeds are real encoded streams
(hostile_streams.corpus), real manifests and real images; mutations are byte-level (flips,
interesting values, inserts, deletes, splices, truncation) and structure-aware (msgpack header
fields, payload descriptors, record heads, image header sizes).

Each case checks one promise: the target returns or raises its typed error (fuzz_targets.py),
nothing else. The "ci" profile (default) runs in about 20 s; ``--hypothesis-profile=long``
runs 5000 examples per target (benchmarks/fuzz_long.sh). A failure prints the hypothesis blob
that reproduces it.
"""

from __future__ import annotations

import functools
import json
import math
import struct

import cv2
import msgpack
import numpy as np
from fuzz_targets import (
    ENVELOPE,
    FILE,
    FILE_V2,
    IMAGE,
    LIVE_V2,
    MANIFEST,
    PACKETS_V2,
    REQUEST,
    check,
    decode_messages,
    receive_live_v2,
)
from hostile_streams import corpus, flat, real_stream, shipped_codec, v2_stream
from hypothesis import given, settings
from hypothesis import strategies as st
from streamcap_codecs import FaceStreamDecoder, ScapWriter
from streamcap_codecs.container import FILE_HEADER


def examples(scale: float) -> settings:
    """The active profile's example count, scaled for a target's cost (so the long profile
    deepens every target)."""
    return settings(max_examples=max(10, int(settings().max_examples * scale)))


# ------------------------------------------------------------------------------ mutations

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF]

# JSON/msgpack-shaped values of every type a field can be forged to
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.sampled_from([0, -1, 2**31, 2**63 - 1, 16384])
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12) | st.binary(max_size=12),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=8)


def mutate_bytes(data: st.DataObject, buf: bytes, splice: bytes = b"", max_ops: int = 4) -> bytes:
    b = bytearray(buf)
    for _ in range(data.draw(st.integers(1, max_ops), label="ops")):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "dup", "splice"]))
        n = len(b)
        at = data.draw(st.integers(0, max(n - 1, 0)))
        if op == "flip" and n:
            b[at] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and n:
            b[at] = data.draw(st.sampled_from(INTERESTING))
        elif op == "insert":
            b[at:at] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            del b[at:at + data.draw(st.integers(1, 64))]
        elif op == "truncate":
            del b[at:]
        elif op == "dup" and n:
            k = data.draw(st.integers(1, 256))
            b[at:at] = b[at:at + k]
        elif op == "splice" and splice:
            s0 = data.draw(st.integers(0, len(splice) - 1))
            b[at:at] = splice[s0:s0 + data.draw(st.integers(1, 512))]
    return bytes(b)


def mutate_header(data: st.DataObject, frame0: bytes) -> bytes:
    """Replace, drop or add one msgpack header field, or one payload-descriptor entry."""
    try:
        head = msgpack.unpackb(frame0, strict_map_key=False)
    except Exception:  # already damaged by an earlier mutation
        return mutate_bytes(data, frame0)
    if not isinstance(head, dict):
        return mutate_bytes(data, frame0)
    op = data.draw(st.sampled_from(["field", "drop", "add", "descriptor"]))
    if op == "descriptor" and isinstance(head.get("p"), list) and head["p"] and all(
            isinstance(d, list) and len(d) == 5 and isinstance(d[2], list) and d[2] for d in head["p"]):
        d = data.draw(st.integers(0, len(head["p"]) - 1))
        i = data.draw(st.integers(0, 4))
        if i == 2 and data.draw(st.booleans()):  # a shape entry
            shape = list(head["p"][d][2])
            shape[data.draw(st.integers(0, len(shape) - 1))] = data.draw(st.integers(-1, 2**40))
            head["p"][d][2] = shape
        else:
            head["p"][d][i] = data.draw(VALUES)
    elif op == "drop" and head:
        head.pop(data.draw(st.sampled_from(sorted(head, key=repr))))
    elif op == "add" or not head:
        head[data.draw(st.text(max_size=2))] = data.draw(VALUES)
    else:
        head[data.draw(st.sampled_from(sorted(head, key=repr)))] = data.draw(VALUES)
    try:
        return msgpack.packb(head, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return frame0


def mutate_message(data: st.DataObject, frames: tuple[bytes, ...]) -> list[bytes]:
    out = list(frames)
    op = data.draw(st.sampled_from(["header", "bytes", "payload", "frames"]))
    if op == "header":
        out[0] = mutate_header(data, out[0])
    elif op == "bytes":
        out[0] = mutate_bytes(data, out[0])
    elif op == "payload" and len(out) > 1:
        i = data.draw(st.integers(1, len(out) - 1))
        out[i] = mutate_bytes(data, out[i], splice=out[0])
    else:
        if data.draw(st.booleans()) and len(out) > 1:
            del out[data.draw(st.integers(1, len(out) - 1))]
        else:
            out.append(data.draw(st.binary(max_size=32)))
    return out


# ------------------------------------------------------------------------------ wire decoder


@functools.lru_cache(maxsize=1)
def _decoder_factory():
    bundle, basis = shipped_codec()
    return lambda: FaceStreamDecoder(basis, bundle.layout, posmaps=False)


@examples(2.0)
@given(data=st.data())
def test_fuzz_wire_decoder(data):
    """A window of a real stream, some of its messages mutated, dropped, repeated or reordered:
    the decoder raises CodecError per bad message and decodes the rest."""
    seeds = corpus()
    start = data.draw(st.integers(0, len(seeds) - 1))
    window = [list(m) for m in seeds[start:start + data.draw(st.integers(1, 12))]]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(window) - 1))
        op = data.draw(st.sampled_from(["mutate", "mutate", "drop", "repeat", "swap"]))
        if op == "mutate":
            window[i] = mutate_message(data, tuple(window[i]))
        elif op == "drop" and len(window) > 1:
            del window[i]
        elif op == "repeat":
            window.insert(i, window[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(window) - 1))
            window[i], window[j] = window[j], window[i]
    decode_messages(_decoder_factory(), [seeds[0]] + window)  # the stream header first


# ------------------------------------------------------------------------------ .scap files


@functools.lru_cache(maxsize=1)
def _scap_seeds() -> tuple[bytes, ...]:
    import tempfile
    from pathlib import Path

    out = []
    with tempfile.TemporaryDirectory() as d:
        for i, msgs in enumerate((flat(real_stream()), flat(real_stream(6, (96, 64), residual=True, seed=3)))):
            p = Path(d) / f"{i}.scap"
            with ScapWriter(p) as w:
                w.write_all(msgs)
            out.append(p.read_bytes())
    return tuple(out)


def _forged_head(data: st.DataObject, room: int) -> bytes:
    """A record head whose fields look right (resync candidates), with a drawn length."""
    length = data.draw(st.integers(0, max(room, 1)))
    n = data.draw(st.integers(1, 6))
    f0 = data.draw(st.integers(1, 4096))
    return struct.pack("<IBBI", length, 1, n, f0) + b"\x81\xa1v\x01"


@examples(1.0)
@given(data=st.data())
def test_fuzz_scap_file(data):
    """A real .scap damaged anywhere (header, records, index, trailer): opening it raises
    CodecError or reading yields what is whole."""
    seeds = _scap_seeds()
    buf = seeds[data.draw(st.integers(0, len(seeds) - 1))]
    op = data.draw(st.sampled_from(["bytes", "bytes", "head", "body"]))
    if op == "bytes":
        buf = mutate_bytes(data, buf, splice=seeds[0], max_ops=8)
    elif op == "head":
        at = data.draw(st.integers(FILE_HEADER.size, len(buf)))
        buf = buf[:at] + _forged_head(data, len(buf) - at) + buf[at:]
    else:
        at = data.draw(st.integers(FILE_HEADER.size, len(buf) - 1))
        buf = buf[:at] + mutate_bytes(data, buf[at:at + 64]) + buf[at + 64:]
    check(FILE, buf)


# ------------------------------------------------------------------------------ stream v2


@examples(0.05)  # each example runs AV1 decoding: ~10 in CI, 250 in the long profile
@given(data=st.data())
def test_fuzz_wire_v2_packets(data):
    """Real v2 packets, some mutated (bytes, splices from other packets), dropped or repeated:
    the v2 decoder returns frames or raises CodecError, and keeps decoding."""
    basis, layout, packets, _ = v2_stream()
    pkts = list(packets)
    for _ in range(data.draw(st.integers(1, 4), label="packets hit")):
        i = data.draw(st.integers(0, len(pkts) - 1))
        op = data.draw(st.sampled_from(["mutate", "mutate", "drop", "repeat"]))
        if op == "mutate":
            pkts[i] = mutate_bytes(data, pkts[i], splice=pkts[data.draw(st.integers(0, len(pkts) - 1))])
        elif op == "drop":
            del pkts[i]
        else:
            pkts.insert(i, pkts[i])
    check(PACKETS_V2, basis, layout, [p for p in pkts if p])


def _live_v2(packets, t0: float) -> list[bytes]:
    from streamcap.transport import pack_envelope2

    return [pack_envelope2(i + 1, t0 + i / 30, t0 + i / 30 - 0.02, p) for i, p in enumerate(packets)]


def test_live_v2_receive_loop_decodes_the_seed():
    """The live target's wiring: the unharmed seed, in live envelopes, decodes every frame."""
    import time

    basis, layout, packets, _ = v2_stream()
    assert receive_live_v2(basis, layout, _live_v2(packets, time.time())) == len(packets) - 1  # (one header)


@examples(0.05)
@given(data=st.data())
def test_fuzz_live_v2_messages(data):
    """Real v2 packets in live envelopes, as ``streamcap receive`` gets them off the socket,
    envelopes or packets mutated, some dropped or repeated: the receive loop's decoding half
    (transport parse, LiveDecoder, plate warp) counts and skips what is bad and never raises."""
    import time

    basis, layout, packets, _ = v2_stream()
    msgs = _live_v2(packets, time.time())
    for _ in range(data.draw(st.integers(1, 4), label="messages hit")):
        i = data.draw(st.integers(0, len(msgs) - 1))
        op = data.draw(st.sampled_from(["envelope", "packet", "packet", "drop", "repeat"]))
        if op == "envelope":
            msgs[i] = mutate_bytes(data, msgs[i][:8]) + msgs[i][8:]
        elif op == "packet":
            # a repeat or drop before this has moved messages against packets: take one at random
            src = packets[data.draw(st.integers(0, len(packets) - 1))]
            p = mutate_bytes(data, src, splice=packets[data.draw(st.integers(0, len(packets) - 1))])
            msgs[i] = _live_v2([p], time.time())[0] if p else b"\xd2"
        elif op == "drop":
            del msgs[i]
        else:
            msgs.insert(i, msgs[i])
    check(LIVE_V2, basis, layout, msgs)


@examples(0.05)
@given(data=st.data())
def test_fuzz_scap_v2_file(data):
    """A real .scap v2 damaged anywhere: opening it raises CodecError or reading decodes what is whole."""
    basis, layout, _, buf = v2_stream()
    if data.draw(st.booleans()):
        buf = mutate_bytes(data, buf, max_ops=8)
    else:
        at = data.draw(st.integers(8, len(buf) - 1))
        buf = buf[:at] + mutate_bytes(data, buf[at:at + 64]) + buf[at + 64:]
    check(FILE_V2, basis, layout, buf)


# ------------------------------------------------------------------------------ transport


ENV_KEYS = st.sampled_from(["v", "k", "s", "t", "c", "i"]) | st.text(max_size=2)


@examples(2.0)
@given(env=st.dictionaries(ENV_KEYS, VALUES, max_size=7), data=st.data())
def test_fuzz_envelope_and_request(env, data):
    try:
        raw = msgpack.packb(env, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        raw = b"\xc1"
    check(ENVELOPE, raw)
    good = msgpack.packb({"v": 1, "k": "d", "s": 5, "t": 1.5, "c": 1.0})
    check(ENVELOPE, mutate_bytes(data, good))
    try:
        req = msgpack.packb({"ids": data.draw(VALUES)}, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        req = b""
    check(REQUEST, req)
    check(REQUEST, mutate_bytes(data, msgpack.packb({"ids": [1, 2, 3]})))


# ------------------------------------------------------------------------------ manifests


@functools.lru_cache(maxsize=1)
def _manifest():
    bundle, _ = shipped_codec()
    return bundle.root, json.loads((bundle.root / "manifest.json").read_text())


@examples(1.0)
@given(data=st.data())
def test_fuzz_manifest(data):
    """The shipped manifest with one value forged (any JSON type, NaN, nesting): a Bundle or
    one BundleError."""
    root, good = _manifest()
    m = json.loads(json.dumps(good))
    where = data.draw(st.sampled_from(["model", "model", "top", "files", "sha256"]))
    if where == "model":
        m["model"][data.draw(st.sampled_from(sorted(m["model"])))] = data.draw(VALUES | st.just(math.nan))
    elif where == "top":
        m[data.draw(st.sampled_from(sorted(m)))] = data.draw(VALUES)
    else:
        key = data.draw(st.sampled_from(sorted(m[where])))
        m[where][key] = data.draw(VALUES | st.sampled_from(["../../etc/passwd", "/etc/passwd", ""]))
    for k, v in list(m.items()):  # bytes do not go into JSON
        if isinstance(v, bytes):
            m[k] = v.decode("latin-1")
    check(MANIFEST, root, _jsonable(m))


def _jsonable(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


# ------------------------------------------------------------------------------ images


@functools.lru_cache(maxsize=1)
def _image_seeds() -> tuple[bytes, ...]:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), (5, 5), 2)
    return tuple(cv2.imencode(ext, img)[1].tobytes() for ext in (".jpg", ".png", ".bmp", ".webp", ".tiff"))


def _resize_header(data: st.DataObject, buf: bytes) -> bytes:
    """Make the header claim another size (never decoded when too big)."""
    w, h = data.draw(st.integers(0, 70000)), data.draw(st.integers(0, 70000))
    b = bytearray(buf)
    if buf[:2] == b"\xff\xd8":
        i = buf.find(b"\xff\xc0")
        if i > 0:
            struct.pack_into(">HH", b, i + 5, h % 65536, w % 65536)
    elif buf[:4] == b"\x89PNG":
        struct.pack_into(">II", b, 16, w, h)
    elif buf[:2] == b"BM":
        struct.pack_into("<ii", b, 18, w, h)
    return bytes(b)


@examples(1.0)
@given(data=st.data())
def test_fuzz_image_input(data):
    """Real JPEG/PNG/BMP/WebP/TIFF files, damaged or claiming another size: an image within the
    limits or one InputError."""
    seeds = _image_seeds()
    buf = seeds[data.draw(st.integers(0, len(seeds) - 1))]
    if data.draw(st.booleans()):
        buf = _resize_header(data, buf)
    if data.draw(st.booleans()):
        buf = mutate_bytes(data, buf)
    check(IMAGE, buf)
