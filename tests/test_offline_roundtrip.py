"""encode -> .scap -> decode -> mp4 on a real clip, plus damaged streams."""

from __future__ import annotations

import subprocess
import sys

import av
import pytest

N = 15


def streamcap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamcap.cli", *args], capture_output=True, text=True, timeout=300)


def frame_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def encoded(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    scap = d / "clip.scap"
    p = streamcap("encode", str(shared_data / "videos" / "lp_d19.mp4"), "-o", str(scap), "--max-frames", str(N),
                  "--threads", "2", "--format", "1")
    assert p.returncode == 0, p.stderr
    assert "15 frames, 15 faces" in p.stdout
    return scap


N2 = 76  # two .scap v2 chunks (2 s each at 30 fps); --kbps 8 codes every 2nd frame, so an even count


@pytest.fixture(scope="module")
def encoded_v2(shared_data, tmp_path_factory):
    scap = tmp_path_factory.mktemp("rt2") / "clip.scap"
    p = streamcap("encode", str(shared_data / "videos" / "lp_d19.mp4"), "-o", str(scap), "--max-frames", str(N2),
                  "--threads", "2", "--kbps", "8")
    assert p.returncode == 0, p.stderr
    assert f"{N2} frames" in p.stdout and "kbit/s by kind: geometry" in p.stdout
    assert scap.read_bytes()[4:6] == b"\x02\x00"
    return scap


def test_v2_roundtrip_keeps_every_frame_and_a_cut_loses_only_the_last_chunk(encoded_v2, tmp_path):
    out = tmp_path / "re.mp4"
    p = streamcap("decode", str(encoded_v2), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert frame_count(out) == N2
    cut = tmp_path / "cut.scap"
    cut.write_bytes(encoded_v2.read_bytes()[:-40])  # trailer, index and the end of the last chunk
    p = streamcap("decode", str(cut), "-o", str(tmp_path / "cut.mp4"))
    assert p.returncode == 0, p.stderr
    assert "truncated" in p.stdout
    assert frame_count(tmp_path / "cut.mp4") == 60


def test_roundtrip_keeps_every_frame(encoded, tmp_path):
    out = tmp_path / "re.mp4"
    p = streamcap("decode", str(encoded), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert frame_count(out) == N
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (480, 480)


def test_truncated_stream_decodes_its_prefix(encoded, tmp_path):
    cut = tmp_path / "cut.scap"
    data = encoded.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out = tmp_path / "cut.mp4"
    p = streamcap("decode", str(cut), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "truncated" in p.stdout
    assert 0 < frame_count(out) < N


def test_forged_and_foreign_streams_fail_in_one_line(tmp_path, encoded):
    bad = tmp_path / "bad.scap"
    bad.write_bytes(b"not a stream at all" * 10)
    p = streamcap("decode", str(bad), "-o", str(tmp_path / "x.mp4"))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    p = streamcap("encode", str(tmp_path / "missing.mp4"))
    assert p.returncode == 2 and "no such file" in p.stderr
