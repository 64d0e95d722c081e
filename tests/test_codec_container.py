"""The .scap container: write/read, index and seek, interrupted writes, truncation, CRC damage,
wrong magic and version."""

from __future__ import annotations

import logging
import shutil
import struct

import numpy as np
import pytest
from codec_synth import face_sequence, small_layout, synthetic_basis, texture
from streamcap_codecs import (
    FaceKeyframe,
    FaceStreamDecoder,
    FaceStreamEncoder,
    FrameStart,
    ScapReader,
    ScapWriter,
    StreamHeader,
)
from streamcap_codecs.container import FILE_HEADER, KEY

from streamcap.errors import CodecError

N = 100
FPS = 10.0  # keyframes every 2 s -> frames 0, 20, 40, 60, 80


@pytest.fixture(scope="module")
def stream(layout):
    """(basis, layout, messages per frame, truth) for a 2-face, 100-frame stream."""
    small = small_layout(layout, 4)
    basis, fields = synthetic_basis(small, rank=6, k=6, n=30)
    a = face_sequence(small, fields, N, seed=1, centre=(150, 200))
    b = face_sequence(small, fields, N, seed=2, centre=(450, 200))
    enc = FaceStreamEncoder(basis, small, quality=50, texture_size=16, fps=FPS, keyframe_every_s=2.0)
    img = np.full((120, 160, 3), 60, np.uint8)
    tex = texture(small)
    per_frame = []
    for i in range(N):
        faces = [(1, a[i], tex)] + ([(2, b[i], tex)] if 30 <= i < 70 else [])
        per_frame.append(enc.encode(img, faces))
    return basis, small, per_frame


def _write(path, per_frame, close=True):
    w = ScapWriter(path)
    for msgs in per_frame:
        w.write_all(msgs)
    if close:
        w.close()
    return w


def _decode(basis, lay, msgs):
    dec = FaceStreamDecoder(basis, lay)
    out = [f for m in msgs for f in dec.feed(m)]
    return out + dec.flush()


def test_write_read_round_trip_and_index(stream, tmp_path):
    per_frame = stream[2]
    p = tmp_path / "a.scap"
    with ScapWriter(p) as w:
        for msgs in per_frame:
            w.write_all(msgs)
    flat = [m for msgs in per_frame for m in msgs]
    with ScapReader(p) as r:
        assert list(r) == flat
        assert not r.truncated and r.skipped == 0
        assert r.n_frames == N and [e.frame_index for e in r.index] == list(range(N))
        assert [e.frame_index for e in r.index if e.key] == [0, 20, 40, 60, 80]
        assert isinstance(r.header, StreamHeader) and r.header == flat[0]
        # every index offset points at that frame's FrameStart
        starts = [m for m in flat if isinstance(m, FrameStart)]
        for e in r.index[::17]:
            assert r.message_at(e.offset) == starts[e.frame_index]


def test_seek_decodes_like_a_full_decode(stream, tmp_path):
    basis, lay, per_frame = stream
    p = tmp_path / "s.scap"
    _write(p, per_frame)
    with ScapReader(p) as r:
        full = {f.frame_index: f for f in _decode(basis, lay, list(r))}
        msgs = list(r.messages(start_frame=47))
    assert isinstance(msgs[0], StreamHeader)
    assert isinstance(msgs[1], FrameStart) and msgs[1].frame_index == 40  # last seek point <= 47
    part = _decode(basis, lay, msgs)
    assert [f.frame_index for f in part] == list(range(40, N))
    for f in part:
        ref = full[f.frame_index]
        assert [d.face_id for d in f.faces] == [d.face_id for d in ref.faces]
        for d, e in zip(f.faces, ref.faces):
            np.testing.assert_array_equal(d.vertices, e.vertices)
        assert f.need_keyframe == ()


def test_interrupted_write_leaves_a_readable_prefix(stream, tmp_path):
    per_frame = stream[2]
    p = tmp_path / "i.scap"
    w = _write(p, per_frame[:30], close=False)  # the encoder "crashes": no index, no trailer
    copy = tmp_path / "copy.scap"
    shutil.copyfile(p, copy)
    w.close()
    with ScapReader(copy) as r:
        msgs = list(r)
        assert msgs == [m for f in per_frame[:30] for m in f]
        assert r.n_frames == 30 and [e.frame_index for e in r.index if e.key] == [0, 20]
        assert not r.truncated


@pytest.mark.parametrize("cut_frac", [0.13, 0.5, 0.77, 0.999])
def test_truncated_file_yields_whole_records_then_warns(stream, tmp_path, caplog, cut_frac):
    basis, lay, per_frame = stream
    p = tmp_path / "t.scap"
    _write(p, per_frame)
    data = p.read_bytes()
    cut = int(len(data) * cut_frac)
    (tmp_path / "cut.scap").write_bytes(data[:cut])
    flat = [m for msgs in per_frame for m in msgs]
    with caplog.at_level(logging.WARNING), ScapReader(tmp_path / "cut.scap") as r:
        msgs = list(r)
    assert msgs == flat[:len(msgs)]
    offsets = _record_offsets(data)
    whole = sum(1 for o in offsets[1:] if o <= cut)  # records that end before the cut
    assert len(msgs) == min(whole, len(flat))
    if len(msgs) < len(flat):
        assert r.truncated and any("truncated" in rec.message for rec in caplog.records)
    frames = _decode(basis, lay, msgs)  # and what is there decodes
    assert len(frames) >= 1


def _record_offsets(data: bytes) -> list[int]:
    """Offsets where records start, then the end of the last record."""
    pos, out = FILE_HEADER.size, []
    while pos + 5 <= len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        out.append(pos)
        if data[pos + 4] == 2:  # index record: stop
            break
        pos += 5 + length + 4
    out.append(pos)
    return out


def test_corrupt_record_is_skipped_or_raises_in_strict_mode(stream, tmp_path, caplog):
    basis, lay, per_frame = stream
    p = tmp_path / "c.scap"
    _write(p, per_frame)
    data = bytearray(p.read_bytes())
    flat = [m for msgs in per_frame for m in msgs]
    offsets = _record_offsets(bytes(data))
    victim = next(i for i, m in enumerate(flat) if isinstance(m, FaceKeyframe) and i > 100)
    data[offsets[victim] + 12] ^= 0x5A  # inside the record body: CRC no longer matches
    (tmp_path / "bad.scap").write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING), ScapReader(tmp_path / "bad.scap") as r:
        msgs = list(r)
        assert r.skipped == 1
    assert msgs == flat[:victim] + flat[victim + 1:]
    # the decoder notices the loss (seq gap) and goes on
    frames = _decode(basis, lay, msgs)
    assert any(f.gap for f in frames) and frames[-1].complete
    with ScapReader(tmp_path / "bad.scap", strict=True) as r, pytest.raises(CodecError, match="corrupt"):
        list(r)


def test_damaged_length_field_resyncs_on_the_next_record(stream, tmp_path):
    per_frame = stream[2]
    p = tmp_path / "l.scap"
    _write(p, per_frame)
    data = bytearray(p.read_bytes())
    flat = [m for msgs in per_frame for m in msgs]
    offsets = _record_offsets(bytes(data))
    struct.pack_into("<I", data, offsets[50], 0x00FFFFF0)  # absurd length
    (tmp_path / "bad.scap").write_bytes(bytes(data))
    with ScapReader(tmp_path / "bad.scap") as r:
        msgs = list(r)
    assert msgs == flat[:50] + flat[51:]


def test_missing_or_bad_index_is_rebuilt(stream, tmp_path):
    per_frame = stream[2]
    p = tmp_path / "x.scap"
    _write(p, per_frame)
    data = bytearray(p.read_bytes())
    with ScapReader(p) as r:
        good_index = r.index
    data[-20] ^= 0xFF  # inside the index record
    (tmp_path / "x2.scap").write_bytes(bytes(data))
    with ScapReader(tmp_path / "x2.scap") as r:
        assert r.index == good_index
        assert len(list(r)) == sum(len(m) for m in per_frame)


def test_not_a_scap_file_and_wrong_version(tmp_path):
    (tmp_path / "empty.scap").write_bytes(b"")
    (tmp_path / "junk.scap").write_bytes(b"GIF89a" + b"\x00" * 100)
    (tmp_path / "v9.scap").write_bytes(FILE_HEADER.pack(b"SCAP", 9, 0))
    for name, match in (("empty", "not a .scap"), ("junk", "not a .scap"), ("v9", "version 9")):
        with pytest.raises(CodecError, match=match):
            ScapReader(tmp_path / f"{name}.scap")
    with pytest.raises(FileNotFoundError):
        ScapReader(tmp_path / "missing.scap")


def test_writer_closes_on_exception_and_counts_key_frames(stream, tmp_path):
    per_frame = stream[2]
    p = tmp_path / "e.scap"
    with pytest.raises(RuntimeError), ScapWriter(p) as w:
        for msgs in per_frame[:25]:
            w.write_all(msgs)
        raise RuntimeError("camera unplugged")
    with ScapReader(p) as r:
        assert r.n_frames == 25 and r.index[0].flags & KEY and not r.truncated
        assert r.seek_offset(24) == r.index[20].offset and r.seek_offset(5) == r.index[0].offset
