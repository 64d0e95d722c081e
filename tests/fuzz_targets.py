"""Fuzz targets: small functions from hostile bytes to a decode, each with the errors it may raise.

A target returns normally or raises one of its ``allowed`` errors (the typed error the command
line turns into one line); anything else (an internal error, a crash, unbounded memory) is a
bug the fuzz suite reports. A new packet format (issue 14) adds or replaces targets here; the
strategies in test_fuzz.py only ever hand bytes to them.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streamcap_codecs import FaceStreamDecoder, ScapReader, from_frames
from streamcap_codecs.limits import MAX_FRAME_PIXELS, MAX_TEXTURE_SIDE

from streamcap.errors import BundleError, CodecError, InputError


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable
    allowed: tuple[type[BaseException], ...]


def _check_frames(frames) -> None:
    """Invariants on what a decoder hands on: bounded pictures, finite geometry."""
    for fr in frames:
        if fr.background is not None:
            h, w = fr.background.shape[:2]
            assert w * h <= MAX_FRAME_PIXELS, (w, h)
        for f in fr.faces:
            assert np.isfinite(f.vertices).all()
            if f.texture is not None:
                assert max(f.texture.shape[:2]) <= max(MAX_TEXTURE_SIDE, 1024)


def decode_messages(decoder_factory: Callable[[], FaceStreamDecoder], messages: Sequence[Sequence[bytes]]) -> int:
    """Wire frames of a message sequence -> parse -> a fresh decoder, as a receiver does: a
    message that raises CodecError is skipped, decoding goes on. Returns frames decoded."""
    dec = decoder_factory()
    n = 0
    for frames in messages:
        try:
            out = dec.feed(from_frames(list(frames)))
        except CodecError:
            continue
        _check_frames(out)
        n += len(out)
    out = dec.flush()
    _check_frames(out)
    return n + len(out)


def read_file(data: bytes) -> int:
    """``.scap`` bytes -> open, read every message, every index entry's message."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.scap"
        path.write_bytes(data)
        with ScapReader(path) as r:
            n = sum(1 for _ in r)
            for e in r.index[:50]:
                try:
                    r.message_at(e.offset)
                except CodecError:
                    pass
            if r.index:
                n += sum(1 for _ in r.messages(start_frame=r.index[len(r.index) // 2].frame_index))
        return n


def load_manifest(template: Path, manifest: object) -> None:
    """A manifest (any JSON value) in a copy of a bundle folder -> load_bundle."""
    from streamcap.bundle import load_bundle

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for f in template.iterdir():
            if f.name != "manifest.json":
                (root / f.name).symlink_to(f)
        try:
            text = json.dumps(manifest)
        except (ValueError, RecursionError):
            return
        (root / "manifest.json").write_text(text)
        load_bundle(root, verify=False)


def read_image_bytes(data: bytes) -> tuple[int, ...]:
    from streamcap.capture import MAX_IMAGE_PIXELS, read_image

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "img"
        path.write_bytes(data)
        img = read_image(path)
    assert img.ndim == 3 and img.shape[0] * img.shape[1] <= MAX_IMAGE_PIXELS
    return img.shape


def parse_envelope(data: bytes) -> None:
    from streamcap.transport import parse_envelope as parse

    env = parse(data)
    assert env.kind in ("d", "h") and 0 <= env.seq < 2**63


def parse_request(data: bytes) -> None:
    from streamcap.transport import parse_request as parse

    ids = parse(data)
    assert ids is None or len(ids) <= 256


def decode_packets_v2(basis, layout, packets: Sequence[bytes], seqs: Sequence[int | None] | None = None) -> int:
    """Stream v2 packets -> a fresh v2 decoder: a packet that raises CodecError is skipped,
    decoding goes on. Without ``seqs`` as a live receiver (the 5-bit seq in each packet), with
    them as the file reader (each packet's full seq from its chunk). Returns frames decoded."""
    from streamcap_codecs.decoder2 import FaceStreamDecoder2

    dec = FaceStreamDecoder2(basis, layout)
    n = 0
    for i, pkt in enumerate(packets):
        try:
            fr = dec.feed(bytes(pkt)) if seqs is None else dec.feed(bytes(pkt), seqs[i])
        except CodecError:
            continue
        if fr is not None:
            _check_frames([fr])
            n += 1
    return n


def receive_live_v2(basis, layout, messages: Sequence[bytes]) -> int:
    """Raw one-part ZeroMQ messages -> the transport's parse (``parse_message``) -> the receive
    loop's decoding half (``LiveDecoder``) -> the plate warp of each frame with a plate, as
    ``streamcap receive`` handles them: nothing may raise. Returns frames decoded."""
    import time

    from streamcap.commands.live import LiveDecoder, ReceiverCodec
    from streamcap.transport import Received, parse_message

    live = LiveDecoder(ReceiverCodec(basis, layout, "synthetic"))
    last: int | None = None
    n = 0
    for m in messages:
        try:
            env, payload, version = parse_message([bytes(m)], last, time.time())
        except ValueError:
            continue
        last = env.seq
        for fr in live.feed(Received(payload, env.seq, env.sent, env.capture, version)):
            _check_frames([fr])
            if fr.background is not None:
                live.decoder.head_warp([f for f in fr.faces if f.vertices.size])
            n += 1
    return n


def read_file_v2(basis, layout, data: bytes) -> int:
    """``.scap`` v2 bytes -> open, read every chunk's packets, decode them (the decode command's
    loop)."""
    from streamcap_codecs.scap2 import ScapReader2

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.scap"
        path.write_bytes(data)
        with ScapReader2(path) as r:
            read = [(seq, bytes(pkt)) for seq, pkt in r.packets()]
    return decode_packets_v2(basis, layout, [p for _, p in read], [s for s, _ in read])


FILE = Target("scap file", read_file, (CodecError,))
PACKETS_V2 = Target("wire v2 packets", decode_packets_v2, (CodecError,))
FILE_V2 = Target("scap v2 file", read_file_v2, (CodecError,))
LIVE_V2 = Target("live v2 messages", receive_live_v2, ())  # the receive loop raises nothing
IMAGE = Target("image input", read_image_bytes, (InputError,))
MANIFEST = Target("bundle manifest", load_manifest, (BundleError,))
ENVELOPE = Target("transport envelope", parse_envelope, (ValueError,))
REQUEST = Target("keyframe request", parse_request, (ValueError,))


def check(target: Target, *args) -> None:
    """Run a target; its allowed errors are fine, anything else propagates (a finding)."""
    try:
        target.run(*args)
    except target.allowed:
        pass
