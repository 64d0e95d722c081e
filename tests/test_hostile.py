"""Issue 16: every hostile-input case found by fuzzing decode, receive and the CLI, one test each
(numbered as in the issue's closing note). Each fails on the code before the fix.

Library-level where the fix lives in the library; through the CLI where the promise is "one line
on stderr and a non-zero exit".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import msgpack
import numpy as np
import pytest
import zmq
from hostile_streams import flat, forged_heads, real_stream, repeated, shipped_codec, write_scap
from streamcap_codecs import FaceGone, FaceStreamDecoder, ScapReader, ScapWriter, StreamHeader, from_frames, to_frames
from streamcap_codecs import container as container_mod
from streamcap_codecs.limits import (
    MAX_FRAME_PIXELS,
    REQUEST_ALL_MAX_S,
    REQUEST_ALL_MIN_S,
    REQUEST_FACE_MAX_S,
    REQUEST_FACE_MIN_S,
)

from streamcap.errors import BundleError, CameraUnavailable, CodecError, InputError

ENV = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
ENV.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def streamcap(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamcap.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A short real stream of the shipped bundle, as ``base.scap`` (the issue's starting point)."""
    return write_scap(tmp_path_factory.mktemp("hostile") / "base.scap", flat(real_stream()))


class _CrcBudget:
    """zlib stand-in for the container module that fails once more than ``limit`` bytes were
    CRC'd (a work bound that does not depend on the machine's speed)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def crc32(self, data, start=0):
        self.used += len(data)
        if self.used > self.limit:
            raise AssertionError(f"resync CRC'd {self.used} bytes: not linear in the file size")
        return zlib.crc32(data, start)

    def __getattr__(self, name):
        return getattr(zlib, name)


# ------------------------------------------------------------------------- 1. decode hangs


@pytest.mark.parametrize("junk", ["ones", "forged"])
def test_01a_crafted_junk_is_rejected_with_linear_work(tmp_path, monkeypatch, junk):
    """The issue's 20 MB b'\\x01' file (lengths that fit, so every offset was CRC-checked over
    16 MB) and a denser forgery: rejected with CRC work bounded by a few times the file size."""
    data = b"\x01" * (18 << 20) if junk == "ones" else forged_heads(2 << 20)
    path = tmp_path / "j.scap"
    path.write_bytes(b"SCAP\x01\x00\x00\x00" + data)
    budget = _CrcBudget(16 * len(data) + (1 << 20))
    monkeypatch.setattr(container_mod, "zlib", budget)
    with ScapReader(path) as r:
        assert list(r) == [] and r.truncated and r.header is None


def test_01b_valid_stream_then_junk_decodes_every_frame(tmp_path, base, monkeypatch):
    path = tmp_path / "tail.scap"
    path.write_bytes(base.read_bytes() + forged_heads(1 << 20))
    monkeypatch.setattr(container_mod, "zlib", _CrcBudget(8 << 20))
    with ScapReader(path) as r:
        assert list(r) == flat(real_stream()) and r.truncated


# ------------------------------------------------------------------------- 2. forged envelopes


def _settle(pub, sub) -> None:
    """Send until the subscriber hears (PUB drops what goes out before a peer is connected)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pub.send([b"hello"])
        if sub.recv(0.1) is not None:
            while sub.recv(0.1) is not None:
                pass
            return
    raise AssertionError("subscriber never heard the publisher")


def _raw_pub_into(sub):
    raw = zmq.Context.instance().socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    sub.sub.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    return raw


@pytest.mark.parametrize("seq", [math.inf, 2**64 - 1, -1, "7", None, True])
def test_02_forged_envelope_sequence_numbers_are_malformed(seq):
    from streamcap.transport import parse_envelope

    with pytest.raises(ValueError):
        parse_envelope(msgpack.packb({"v": 1, "k": "d", "s": seq, "t": 1.0}))
    for t in (math.nan, math.inf, "x"):
        with pytest.raises(ValueError):
            parse_envelope(msgpack.packb({"v": 1, "k": "d", "s": 1, "t": t}))


def test_02_forged_envelopes_neither_crash_nor_poison_the_receiver():
    from streamcap.transport import Publisher, Subscriber

    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    raw = _raw_pub_into(sub)
    try:
        _settle(pub, sub)
        for s in (math.inf, 2**64 - 1, (1 << 63) - 1):
            raw.send_multipart([msgpack.packb({"v": 1, "k": "d", "s": s, "t": time.time()}), b"x"])
        time.sleep(0.2)
        for _ in range(3):
            pub.send([b"b"])
        got = []
        while (r := sub.recv(0.5)) is not None:
            got.append(r.frames[0])
        assert b"b" in got and sub.stats.malformed == 2  # inf and 2^64-1; 2^63-1 is in range
        assert sub.stats.lost < 10  # a forged jump is a discontinuity, not 1.8e19 lost messages
    finally:
        raw.close()
        sub.close()
        pub.close()


# ------------------------------------------------------------------------- 3. decode overwrites its input


def test_03_decode_refuses_to_overwrite_its_input(tmp_path, base):
    clip = tmp_path / "clip.mp4"
    shutil.copyfile(base, clip)
    before = clip.read_bytes()
    assert "overwrite" in one_line_error(streamcap("decode", clip))
    assert "overwrite" in one_line_error(streamcap("decode", clip, "-o", tmp_path / ".." / tmp_path.name / "clip.mp4"))
    os.link(clip, tmp_path / "link.mp4")  # another name for the same file
    assert "overwrite" in one_line_error(streamcap("decode", clip, "-o", tmp_path / "link.mp4"))
    assert clip.read_bytes() == before


# ------------------------------------------------------------------------- 4. one big message cuts a receiver off


def test_04_receiver_reconnects_after_an_oversized_message_part():
    from streamcap.transport import Publisher, Subscriber

    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    try:
        _settle(pub, sub)
        pub.send([b"x" * (18 << 20)])  # over the receiver's message-size limit: libzmq drops the connection
        deadline = time.monotonic() + 8
        got = None
        while got is None and time.monotonic() < deadline:
            pub.send([b"after"])
            got = sub.recv(0.2)
        assert got is not None and got.frames == [b"after"] and sub.stats.reconnects >= 1
    finally:
        sub.close()
        pub.close()


# ------------------------------------------------------------------------- 5. SIGTERM loses the output


def sigterm_once_written(args: list[str], out: Path, settle: float) -> str:
    """Run ``streamcap ARGS``, SIGTERM it ``settle`` s after ``out`` has bytes; it must exit
    128 + SIGTERM. Returns its stderr."""
    p = subprocess.Popen([sys.executable, "-m", "streamcap.cli", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        time.sleep(settle)
        assert p.poll() is None, f"{args[0]} finished before it could be stopped"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    return err


def test_05_decode_stopped_by_sigterm_leaves_a_playable_video(tmp_path):
    long = write_scap(tmp_path / "long.scap", repeated(real_stream(), 300))  # 3000 frames
    out = tmp_path / "out.mp4"
    err = sigterm_once_written(["decode", str(long), "-o", str(out)], out, 0.5)
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    n = frame_count(out)
    assert 0 < n < 3000 and f"holds {n} frames" in err


@pytest.mark.parametrize("fmt", ["1", "2"])
def test_05_encode_stopped_by_sigterm_keeps_what_it_wrote(shared_data, tmp_path, fmt):
    """The same for ``encode``: a SIGTERM mid-clip ends the loop after the current frame, the
    .scap is closed properly with those frames and the line says how many."""
    out = tmp_path / "out.scap"
    # a few frames in: the clip is 250 frames, encoded at 50-100 frames/s
    err = sigterm_once_written(["encode", str(shared_data / "videos" / "lp_d19.mp4"), "-o", str(out),
                                "--format", fmt], out, 0.3)
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    n = int(err.split(" holds ")[1].split()[0])
    assert 0 < n < 250 and out.is_file() and not list(tmp_path.glob("*partial*"))
    from streamcap_codecs.scap2 import file_version

    assert file_version(out) == int(fmt)  # a finished file of the asked format, not a torn one


# ------------------------------------------------------------------------- 6-9. sizes and rates


def _raw_scap(path: Path, messages: list[list[bytes]]) -> Path:
    """A .scap of these wire frames, written without the writer's validation (no index)."""
    body = b"".join(container_mod._record(1, container_mod._message_body(f)) for f in messages)
    path.write_bytes(b"SCAP\x01\x00\x00\x00" + body)
    return path


def _header_frames(**change) -> list[bytes]:
    h = real_stream()[0][0]
    assert isinstance(h, StreamHeader)
    frames = to_frames(h)
    head = msgpack.unpackb(frames[0])
    head.update(change)
    return [msgpack.packb(head, use_bin_type=True)]


def test_06_frame_size_beyond_the_format_limit_is_refused_before_allocating(tmp_path, base):
    with pytest.raises(CodecError, match="outside 0..8192"):
        from_frames(_header_frames(w=16384, h=16384))
    with pytest.raises(CodecError, match="exceeds"):  # each side allowed, the area is not
        from_frames(_header_frames(w=8192, h=8192))
    with pytest.raises(CodecError, match="exceeds"):
        to_frames(StreamHeader(seq=0, ts=0.0, bundle_id="", layout_hash="", basis_id="", n_components=1, fps=30.0,
                               width=8192, height=8192))
    rest = flat(real_stream())[1:]
    path = _raw_scap(tmp_path / "big.scap", [_header_frames(w=8192, h=8192)] + [to_frames(m) for m in rest])
    p = streamcap("decode", path, "-o", tmp_path / "big.mp4")  # later headers are valid: decodes
    assert p.returncode == 0 and "8192x8192 exceeds" in p.stderr, p.stderr
    assert frame_count(tmp_path / "big.mp4") == len(real_stream())
    only = _raw_scap(tmp_path / "only.scap", [_header_frames(w=8192, h=8192)] +
                     [to_frames(m) for m in rest if not isinstance(m, StreamHeader)])
    assert "8192x8192 exceeds" in one_line_error(streamcap("decode", only, "-o", tmp_path / "only.mp4"))


def _jpeg_claiming(w: int, h: int, comps: int = 3) -> bytes:
    """A tiny JPEG whose frame header (SOF0) claims w x h: never to be decoded."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 8 + 3 * comps, 8, h, w, comps) + b"\x01\x11\x00" * comps
    return b"\xff\xd8" + sof + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"\x00" * 64 + b"\xff\xd9"


def test_07_background_plate_beyond_the_limit_is_refused_before_decoding():
    bg = next(m for m in flat(real_stream()) if type(m).__name__ == "BackgroundKeyframe")
    frames = to_frames(bg)
    head = msgpack.unpackb(frames[0])
    jpeg = _jpeg_claiming(16384, 16384)
    head["p"] = [["J", "u1", [16384, 16384, 3], "j", len(jpeg)]]
    with pytest.raises(CodecError, match="exceeds"):
        from_frames([msgpack.packb(head), jpeg])
    assert 16384 * 16384 > MAX_FRAME_PIXELS


def test_08_forged_stream_headers_cannot_stop_rendering():
    """20 forged headers a second (a new frame size each) between real frames: at most one
    reset a second, so real frames keep decoding with faces."""
    bundle, basis = shipped_codec()
    clock = [0.0]
    dec = FaceStreamDecoder(basis, bundle.layout, posmaps=False, min_restart_s=1.0, clock=lambda: clock[0])
    msgs = flat(real_stream(30))
    header = msgs[0]
    with_faces = rejected = 0
    for i, m in enumerate(msgs):
        clock[0] = i * 0.05
        if i > 0:
            fake = StreamHeader(**{**header.__dict__, "seq": 0, "width": 64 + i, "height": 48})
            try:
                dec.feed(fake)
            except CodecError:
                rejected += 1
        try:
            frames = dec.feed(m)
        except CodecError:
            continue
        with_faces += sum(1 for f in frames if f.faces and not all(x.stale for x in f.faces))
    assert rejected > 0.8 * (len(msgs) - 1)
    assert with_faces >= 15  # of 30 frames


@pytest.mark.parametrize("limit", [1.0, 0.0])
def test_08_forged_v2_stream_headers_cannot_stop_decoding(limit):
    """Stream v2: 20 forged headers a second (a restart and a new frame size each) between real
    packets. With the live receiver's limit (one reset a second) real frames keep decoding with
    fresh faces; without it (0: a file reader) nearly all go stale, which shows the test bites."""
    from dataclasses import replace

    from hostile_streams import v2_stream
    from streamcap_codecs.decoder2 import FaceStreamDecoder2
    from streamcap_codecs.packet import pack, unpack

    basis, layout, packets, _ = v2_stream(30, key_every=4)
    hdr = unpack(packets[0])
    clock = [0.0]
    dec = FaceStreamDecoder2(basis, layout, posmaps=False, warp_plate=False, min_restart_s=limit,
                             clock=lambda: clock[0])
    fresh = rejected = 0
    for i, p in enumerate(packets):
        clock[0] = i * 0.05
        if i > 1:
            try:
                dec.feed(pack(replace(hdr, next_seq=0, width=64 + 2 * i, height=48)))
            except CodecError:
                rejected += 1
        try:
            fr = dec.feed(p)
        except CodecError:
            continue
        fresh += fr is not None and bool(fr.faces) and not any(f.stale for f in fr.faces)
    if limit:
        assert rejected >= 0.8 * (len(packets) - 2)
        assert fresh >= 20  # of 30 frames
    else:
        assert rejected == 0 and fresh <= 10


def test_08_forged_headers_cannot_flip_a_live_receiver_between_versions_or_bundles():
    """A v1 stream with forged v2 headers of the same codec between its messages: the receive
    loop takes a header of another version only when the stream in use has gone quiet for a
    second, so the v1 frames keep decoding; once the v1 stream stops, a v2 header is taken."""
    from streamcap_codecs.packet import StreamHeader2, pack, unpack

    from streamcap.commands.live import LiveDecoder, ReceiverCodec
    from streamcap.transport import Received

    bundle, basis = shipped_codec()
    clock = [0.0]
    live = LiveDecoder(ReceiverCodec(basis, bundle.layout, bundle.name), clock=lambda: clock[0])
    forged = pack(StreamHeader2(0, bundle.name, bundle.layout.hash, basis.id, basis.n_components, 10000, 1,
                                160, 120, 64))
    fresh = 0
    msgs = flat(real_stream(30))
    for i, m in enumerate(msgs):
        clock[0] = i * 0.01
        if clock[0] > 0.05:  # (once the first frames decoded)
            live.feed(Received([forged], i, 0.0, None, 2))
        for fr in live.feed(Received(to_frames(m), i, 0.0, None, 1)):
            fresh += bool(fr.faces) and not any(f.stale for f in fr.faces)
    assert live.version == 1 and live.bad > 0
    assert fresh >= 25  # of 30 frames
    clock[0] += 0.5
    live.feed(Received([forged], 0, 0.0, None, 2))
    assert live.version == 1  # the v1 stream stopped only half a second ago
    clock[0] += 0.6
    live.feed(Received([forged], 0, 0.0, None, 2))
    assert live.version == 2 and live.header == unpack(forged)


def _requests(layout: int) -> tuple[bytes, bytes, bytes, bytes]:
    """(everything, face 3, malformed, oversized) keyframe requests, v1 msgpack or v2 packets."""
    if layout == 1:
        return (msgpack.packb({"ids": None}), msgpack.packb({"ids": [3]}),
                msgpack.packb({"ids": list(range(300))}),  # more than MAX_FACES ids
                msgpack.packb({"ids": list(range(10_000))}))
    from streamcap_codecs.packet import Request, pack

    return pack(Request(-1)), pack(Request(3)), pack(Request(3)) + b"junk", b"\x02" + b"\x80" * 5000


@pytest.mark.parametrize("layout", [1, 2])
def test_09_keyframe_request_flood_is_rate_limited(layout):
    from streamcap.transport import Publisher

    everything, face3, malformed, oversized = _requests(layout)
    pub = Publisher("tcp://127.0.0.1:*")
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(pub.endpoint.rsplit(":", 1)[0] + f":{int(pub.endpoint.rsplit(':', 1)[1]) + 1}")
    try:
        honoured, t0 = [], time.monotonic()
        for _ in range(60):  # a request for everything every 20 ms, for about 1.2 s
            dealer.send(everything)
            dealer.send(face3)
            dealer.send(malformed)
            honoured += pub.poll_requests()
            time.sleep(0.02)
        time.sleep(0.2)
        honoured += pub.poll_requests()  # drain the flood
        elapsed = time.monotonic() - t0
        alls = sum(1 for r in honoured if r is None)
        faces = sum(1 for r in honoured if r is not None)
        assert pub.stats.requests == 120 and pub.stats.malformed == 60
        assert 1 <= alls <= elapsed / REQUEST_ALL_MIN_S + 1
        assert 1 <= faces <= elapsed / REQUEST_FACE_MIN_S + 1
        before = pub.stats.requests + pub.stats.malformed
        dealer.send(oversized)  # over MAX_REQUEST_BYTES: the peer is dropped
        time.sleep(0.2)
        pub.poll_requests()
        assert pub.stats.requests + pub.stats.malformed == before
    finally:
        dealer.close()
        pub.close()


def test_09_a_flood_backs_off_and_a_calm_request_is_served_at_once():
    from streamcap.transport import RequestLimiter

    lim = RequestLimiter()
    alls = faces = 0
    for k in range(1000):  # 20 s of a request for everything and for face 3 every 20 ms
        lim.add(None)
        lim.add([3])
        for r in lim.due(k * 0.02):
            alls += r is None
            faces += r is not None
    assert alls <= 20 / REQUEST_ALL_MAX_S + 4 and faces <= 20 / REQUEST_FACE_MAX_S + 4
    lim.add(None)  # a receiver joining after the flood, 10 s later
    assert lim.due(30.0)[0] is None  # (with the last deferred face request)


# ------------------------------------------------------------------------- 10. camera -1


def test_10_negative_camera_index_is_one_line():
    with pytest.raises(CameraUnavailable):
        from streamcap.capture import CameraSource

        CameraSource(-1)
    assert "camera index" in one_line_error(streamcap("send", "--camera", "-1"))


# ------------------------------------------------------------------------- 11. a failed encode destroys an output


def test_11_failed_write_keeps_the_existing_file(tmp_path, base):
    target = tmp_path / "keep.scap"
    shutil.copyfile(base, target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), ScapWriter(target) as w:
        w.write_all(flat(real_stream())[:3])
        raise RuntimeError("the video stopped decoding")
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.partial"))
    with ScapWriter(target) as w:  # a finished write replaces it
        w.write_all(flat(real_stream())[:3])
    with ScapReader(target) as r:
        assert len(list(r)) == 3


def test_11_encode_onto_an_existing_stream_that_fails_keeps_it(tmp_path, base):
    """A video whose frames do not decode: the encode fails after its output was opened."""
    from streamcap.videowriter import VideoWriter

    target = tmp_path / "keep.scap"
    shutil.copyfile(base, target)
    before = target.read_bytes()
    video = tmp_path / "zeroed.mp4"
    with VideoWriter(video, 10) as vw:
        for i in range(5):
            vw.write(np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = bytearray(video.read_bytes())
    at = data.find(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)  # every coded frame zeroed
    video.write_bytes(bytes(data))
    assert "no decodable frame" in one_line_error(streamcap("encode", video, "-o", target, "--threads", "1"))
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.partial"))


# ------------------------------------------------------------------------- 12, 16. images


def _png_claiming(w: int, h: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    idat = zlib.compress(b"\x00" * 200_000)  # small on disk, claims a huge picture
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_12_16_huge_image_headers_are_refused_before_decoding(tmp_path):
    from streamcap.capture import read_image

    jpg, png = tmp_path / "huge.jpg", tmp_path / "huge.png"
    jpg.write_bytes(_jpeg_claiming(65000, 65000))
    png.write_bytes(_png_claiming(30000, 30000))
    for p in (jpg, png):
        with pytest.raises(InputError, match=r"image is (65000x65000|30000x30000)"):
            read_image(p)


def test_12_a_huge_image_does_not_abort_a_reconstruct_batch(tmp_path, shared_data):
    jpg = tmp_path / "huge.jpg"
    jpg.write_bytes(_jpeg_claiming(65000, 65000))
    out = tmp_path / "out"
    p = streamcap("reconstruct", jpg, shared_data / "images" / "lp_s0.jpg", "-o", out, "--threads", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr and "internal error" not in p.stderr
    assert "huge.jpg: image is" in p.stderr
    assert (out / "lp_s0.json").is_file()


# ------------------------------------------------------------------------- 13. manifests


@pytest.mark.parametrize("change, match", [
    ({"input_size": "128"}, "input_size"),
    ({"mean": [float("nan"), 0, 0]}, "mean"),
    ({"std": [0, 255, 255]}, "std"),
    ({"output_scale": -1}, "output_scale"),
])
def test_13_bad_manifest_values_are_one_bundle_error(tmp_path, change, match):
    bundle, _ = shipped_codec()
    folder = tmp_path / "b"
    shutil.copytree(bundle.root, folder, ignore=shutil.ignore_patterns("*.onnx", "*.pt"))
    m = json.loads((folder / "manifest.json").read_text())
    m["model"].update(change)
    for key in ("onnx", "torch"):
        (folder / m["files"][key]).write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=match):
        from streamcap.bundle import load_bundle

        load_bundle(folder, verify=False)


def test_13_deeply_nested_manifest_is_one_line(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    assert "nested" in one_line_error(streamcap("reconstruct", tmp_path / "x.jpg", "--bundle", folder))


# ------------------------------------------------------------------------- 14, 15. output paths


def test_14_15_bad_output_paths_fail_up_front_in_one_line(tmp_path, base):
    assert "must end in" in one_line_error(streamcap("decode", base, "-o", tmp_path / "out.scapx"))
    assert "is a folder" in one_line_error(streamcap("decode", base, "-o", tmp_path))
    assert "is a folder" in one_line_error(streamcap("receive", "--headless", "--stats", tmp_path,
                                                     "--connect", "tcp://127.0.0.1:9", "--timeout", "1"))
    assert "is a folder" in one_line_error(streamcap("receive", "--headless", "-o", tmp_path,
                                                     "--connect", "tcp://127.0.0.1:9", "--timeout", "1"))


# ------------------------------------------------------------------------- 17, 18. numbers and ports


def test_17_18_nan_timeout_and_out_of_range_ports_are_refused():
    assert "--timeout" in one_line_error(streamcap("receive", "--headless", "--timeout", "nan", timeout=30))
    assert "--keyframe-every" in one_line_error(streamcap("send", "--video", "x.mp4", "--keyframe-every", "nan"))
    for cmd, flag, value in ((["send", "--video"], "--texture-size", "3"), (["encode"], "--texture-fps", "nan"),
                             (["send", "--video"], "--frame-step", "0")):  # the v2 flags, before anything loads
        assert flag in one_line_error(streamcap(*cmd, "x.mp4", flag, value))
    for ep in ("tcp://127.0.0.1:99999", "tcp://127.0.0.1:65535", "tcp://127.0.0.1:0"):
        assert "outside 1..65534" in one_line_error(streamcap("receive", "--headless", "--connect", ep))


# ------------------------------------------------------------------------- 19. bundle names from a stream


def test_19_bundle_name_in_a_stream_is_never_a_path(tmp_path):
    evil = tmp_path / "evil"  # a folder the file names: a manifest that would fail to load
    evil.mkdir()
    (evil / "manifest.json").write_text("{}")
    forged = [StreamHeader(**{**m.__dict__, "bundle_id": str(evil)}) if isinstance(m, StreamHeader) else m
              for m in flat(real_stream())]
    path = write_scap(tmp_path / "named.scap", forged)
    p = streamcap("decode", path, "-o", tmp_path / "named.mp4")
    assert p.returncode == 0, p.stderr  # decoded with the shipped bundle whose codec matches
    assert frame_count(tmp_path / "named.mp4") == len(real_stream())
    from streamcap.bundle import shipped_bundle

    assert shipped_bundle("light128") is not None
    for name in ("../models/light128", "/tmp", str(tmp_path), "light128/..", "", ".", "light128\0"):
        assert shipped_bundle(name) is None


# ------------------------------------------------------------------------- 20. one damaged header record


def test_20_a_damaged_first_header_names_the_damage_and_the_rest_decodes(tmp_path, base):
    data = bytearray(base.read_bytes())
    data[8 + 5 + 10] ^= 0x55  # inside the first record (the StreamHeader): its CRC fails
    path = tmp_path / "hd.scap"
    path.write_bytes(bytes(data))
    with ScapReader(path) as r:
        assert r.header is not None and "CRC" in (r.header_damage or "")
    out = tmp_path / "hd.mp4"
    p = streamcap("decode", path, "-o", out)
    assert p.returncode == 0, p.stderr
    assert frame_count(out) == len(real_stream()) and "CRC mismatch" in p.stderr
    single = write_scap(tmp_path / "one.scap", [m for i, m in enumerate(flat(real_stream()))
                                                if i == 0 or not isinstance(m, StreamHeader)])
    data = bytearray(single.read_bytes())
    data[8 + 5 + 10] ^= 0x55
    single.write_bytes(bytes(data))
    assert "CRC mismatch" in one_line_error(streamcap("decode", single, "-o", tmp_path / "one.mp4"))


# ------------------------------------------------------------------------- 21. a forged sequence number


def test_21_a_forged_sequence_number_does_not_drop_the_rest(tmp_path):
    bundle, basis = shipped_codec()
    msgs = flat(real_stream())
    cut = len(msgs) // 3
    forged = msgs[:cut] + [FaceGone(seq=(1 << 63) - 1, ts=0.0, face_id=99)] + msgs[cut:]
    path = write_scap(tmp_path / "seq.scap", forged)
    dec = FaceStreamDecoder(basis, bundle.layout, posmaps=False)
    with ScapReader(path) as r:
        frames = [f for m in r for f in dec.feed(m)] + dec.flush()
    # the forged message makes a frame of unknown index (-1); every real frame follows
    assert [f.frame_index for f in frames if f.frame_index >= 0] == list(range(len(real_stream())))
    assert frames[-1].faces and not frames[-1].faces[0].stale


# ------------------------------------------------------------------------- 22. CURVE handshake


def test_22_a_refused_curve_handshake_is_named(tmp_path):
    from streamcap.transport import CurveKeys, Publisher, Subscriber, keygen

    keygen(tmp_path / "keys")
    keygen(tmp_path / "other")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    for f in ("client.key", "client.key_secret"):
        (stranger / f).write_bytes((tmp_path / "other" / f).read_bytes())
    (stranger / "server.key").write_bytes((tmp_path / "keys" / "server.key").read_bytes())
    pub = Publisher("tcp://127.0.0.1:*", curve=CurveKeys(tmp_path / "keys"))
    bad, plain = Subscriber(pub.endpoint, curve=CurveKeys(stranger)), Subscriber(pub.endpoint)
    try:
        for _ in range(15):
            pub.send([b"x"])
            assert bad.recv(0.1) is None and plain.recv(0.1) is None
        assert "refused this receiver's key" in (bad.handshake_error or "")
        assert "CurveZMQ" in (plain.handshake_error or "")
    finally:
        bad.close()
        plain.close()
        pub.close()
