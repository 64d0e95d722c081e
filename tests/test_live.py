"""The live path end to end: ``streamcap send`` on a real clip and ``streamcap receive``
processes on 127.0.0.1 (random ports), with the shipped model bundle. The module's sender
speaks stream v2 (the default); one test runs a ``--format 1`` sender.

Every process runs in its own process group with a wall-clock limit and is killed in
``finally``; receivers also carry ``--timeout`` so none waits for a sender forever. Assertions
are on what was decoded (frame indices, digests of the decoded geometry and of the rendered
image, keyframe flags, counters), never on wall-clock times.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import msgpack
import pytest

CLIP = "lp_d19.mp4"
LIMIT_S = 120  # no process of this file lives longer
ENV = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
ENV.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", LP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


class Proc:
    """A ``streamcap`` process in its own process group; stderr is collected line by line."""

    def __init__(self, *args: object) -> None:
        self.args = [str(a) for a in args]
        self.p = subprocess.Popen([sys.executable, "-m", "streamcap.cli", *self.args], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                                  start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = LIMIT_S) -> re.Match:
        """The first stderr line matching ``pattern``; fails if the process ends or time runs out."""
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            for line in self.lines[seen:]:
                if m := re.search(pattern, line):
                    return m
            seen = len(self.lines)
            if self.p.poll() is not None and not self._t.is_alive() and seen == len(self.lines):
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen from streamcap {' '.join(self.args)}:\n{self.stderr}")

    def wait(self, timeout: float = LIMIT_S) -> int:
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            cmd = " ".join(self.args)
            raise AssertionError(f"streamcap {cmd} did not end within {timeout} s:\n{self.stderr}") from None
        self._t.join(5)
        return rc

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, sig)

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(10)


def send(clip: Path, *extra: object) -> Proc:
    return Proc("send", "--video", clip, "--loop", "--realtime", "--bind", "tcp://127.0.0.1:*", "--threads", "1",
                "--keyframe-every", "0", *extra)  # no periodic keyframes: a receiver renders only what it asked for


def receive(endpoint: str, stats: Path, *extra: object) -> Proc:
    return Proc("receive", "--connect", endpoint, "--headless", "--timeout", "30", "--stats", stats, *extra)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def clip(shared_data: Path) -> Path:
    c = shared_data / "videos" / CLIP
    if not c.is_file():
        pytest.skip(f"{c} not found")
    return c


@pytest.fixture(scope="module")
def sender(clip: Path, tmp_path_factory: pytest.TempPathFactory):
    """One sender for the module, looping the clip in real time with no periodic keyframes."""
    stats = tmp_path_factory.mktemp("sender") / "send.json"
    s = send(clip, "--stats", stats)
    try:
        s.endpoint = s.wait_for(r"sending on (tcp://127\.0\.0\.1:\d+)").group(1)
        s.stats = stats
        yield s
    finally:
        s.kill()


def test_latest_frame_skips_what_a_slow_consumer_cannot_take():
    import numpy as np

    from streamcap.capture import Frame, LatestFrame

    def source(n: int, fail: bool):
        for i in range(n):
            time.sleep(0.002)
            yield Frame(i, i / 30, np.zeros((2, 2, 3), np.uint8), time.time())
        if fail:
            raise OSError("camera unplugged")

    live = LatestFrame(source(200, fail=False))
    got = []
    for f in live:
        got.append(f.index)
        time.sleep(0.02)
    assert got == sorted(got) and got[-1] == 199 and live.skipped == 200 - len(got) > 0
    failing = LatestFrame(source(5, fail=True))
    with pytest.raises(OSError, match="unplugged"):
        for _ in failing:
            pass
    endless = LatestFrame(source(10**9, fail=False))
    next(iter(endless))
    assert endless.close(2.0)


def test_receive_says_waiting_for_sender_then_times_out(tmp_path):
    r = receive("tcp://127.0.0.1:9", tmp_path / "r.json", "--timeout", "1")
    try:
        assert r.wait() == 2
        assert "waiting for sender" in r.stderr and "no stream from tcp://127.0.0.1:9 within 1 s" in r.stderr
        assert "Traceback" not in r.stderr
        assert load(tmp_path / "r.json")["rendered"] == 0
    finally:
        r.kill()


def test_two_receivers_decode_the_same_frames(sender, tmp_path):
    # 40 frames, so the two receivers overlap even when one starts a second later on a loaded machine
    rs = [receive(sender.endpoint, tmp_path / f"r{i}.json", "--frames", "40") for i in range(2)]
    try:
        for r in rs:
            assert r.wait() == 0, r.stderr
    finally:
        for r in rs:
            r.kill()
    logs = [load(tmp_path / f"r{i}.json") for i in range(2)]
    for s in logs:
        assert s["rendered"] == 40 and s["bad"] == 0 and s["malformed"] == 0 and s["lost"] == 0
        idx = [f["i"] for f in s["frame_log"]]  # every decoded frame; "shown" unless it was behind
        assert idx == sorted(idx) and len(set(idx)) == len(idx) >= 40
        assert sum(len(f["faces"]) for f in s["frame_log"]) >= 15  # the clip shows one face throughout
        assert s["latency_ms"]["p50"] > 0
    by_index = [{f["i"]: f for f in s["frame_log"] if f["faces"]} for s in logs]
    common = sorted(set(by_index[0]) & set(by_index[1]))
    assert len(common) >= 10, "the receivers started together: most frames should be common"
    for i in common:
        a, b = by_index[0][i], by_index[1][i]
        assert (a["faces"], a["geo"]) == (b["faces"], b["geo"]), f"frame {i} decoded differently"
        if a["shown"] and b["shown"]:
            assert a["img"] == b["img"], f"frame {i} rendered differently"


def test_late_joiner_gets_a_keyframe_and_renders_at_once(sender, tmp_path):
    first = receive(sender.endpoint, tmp_path / "a.json", "-o", tmp_path / "a.mp4")
    late = None
    try:
        first.wait_for("first frame")
        time.sleep(1.0)  # the stream is running on deltas now
        late = receive(sender.endpoint, tmp_path / "b.json", "--frames", "5")
        assert late.wait() == 0, late.stderr
        first.signal(signal.SIGINT)  # Ctrl-C: the mp4 is closed and stays playable
        assert first.wait() == 130, first.stderr
    finally:
        first.kill()
        if late is not None:
            late.kill()
    a, b = load(tmp_path / "a.json"), load(tmp_path / "b.json")
    # the sender sends no periodic keyframes: the late joiner's first faces are the ones it asked
    # for, and they came within one second of stream (30 sender frames of this 30 fps clip) of it
    # hearing the stream; counted in stream frames, not wall-clock, so a busy CI machine is no excuse
    assert b["rendered"] == 5 and b["join_frames"] <= 30, b
    assert all(k == 1 for _, _, k in b["frame_log"][0]["faces"]) and b["frame_log"][0]["faces"]
    print(f"late joiner: first frame {b['join_s']} s after hearing the sender ({b['join_frames']} sender frames)")
    # the first receiver got the same keyframe (PUB fans out) and decoded the same frames
    a_frames = {f["i"]: f for f in a["frame_log"]}
    for f in b["frame_log"]:
        if f["i"] in a_frames:
            assert a_frames[f["i"]]["geo"] == f["geo"]
    assert a["stopped_by"] == "SIGINT" and a["rendered"] > 5
    assert "stopped by SIGINT" in first.stderr
    assert frame_count(tmp_path / "a.mp4") == a["rendered"]


def test_message_loss_recovers_through_keyframe_requests(sender, tmp_path):
    r = receive(sender.endpoint, tmp_path / "r.json", "--frames", "30", "--simulate-loss", "0.2")
    try:
        assert r.wait() == 0, r.stderr
    finally:
        r.kill()
    s = load(tmp_path / "r.json")
    assert s["lost_by_hook"] > 0 and s["keyframe_requests"] > 1 and s["rendered"] == 30
    # after a frame where the face was stale or missing, a later frame shows it fresh again
    # from a keyframe: recovered through the request, not a periodic keyframe (there are none)
    log = s["frame_log"]
    recovered = 0
    for n, f in enumerate(log):
        hurt = not f["faces"] or any(stale for _, stale, _ in f["faces"])
        if hurt and any(any(k and not st for _, st, k in g["faces"]) for g in log[n + 1:]):
            recovered += 1
    assert recovered >= 1, log
    fresh = sum(1 for f in log if f["faces"] and not any(st for _, st, _ in f["faces"]))
    assert fresh >= 10


def _junk_v2() -> list[bytes]:
    """v2 packets a receiver must count as bad and skip, each failing before any state changes."""
    from streamcap_codecs.packet import StreamHeader2, pack

    forged = pack(StreamHeader2(0, "nobody", "0" * 16, "0" * 16, 64, 30000, 1, 64, 64, 64))
    return [b"\x03 kind 3 is no packet", b"\x04\xff", b"\x01\x09 header of wire version 9", forged, b"\x02",
            b"\x0c" + b"\xff" * 12]


def _forward_with_junk(endpoint: str, stop: threading.Event, injected: dict[str, int], ready: list[str]) -> None:
    """Relay the sender's stream to a new endpoint (and keyframe requests back), injecting junk
    after every third message: broken envelopes and messages the codec must reject, of the
    stream's own version."""
    from streamcap.transport import Publisher, Subscriber

    up, down = Subscriber(endpoint), Publisher("tcp://127.0.0.1:*")
    ready.append(down.endpoint)
    n = 0
    try:
        while not stop.is_set():
            for ids in down.poll_requests():
                up.request_keyframe(ids)
            r = up.recv(0.05)
            if r is None:
                down.heartbeat()
                continue
            if r.version == 2:
                down.send_packet(r.frames[0], capture_ts=r.capture_ts)
            else:
                down.send(r.frames, capture_ts=r.capture_ts)
            n += 1
            if n % 3:
                continue
            if r.version == 2:
                junk_envelopes = [[b"\xd2"], [b"\xd2" + b"\xff" * 11 + b"\x00"], [b"\xd2\x80\x80\x80\x01\x00\x00x"],
                                  [msgpack.packb({"v": 99, "k": "d", "s": 1, "t": 0.0})]]
                down.pub.send_multipart(junk_envelopes[n // 3 % len(junk_envelopes)])
                injected["envelopes"] += 1
                junk = _junk_v2()
                down.send_packet(junk[n // 3 % len(junk)])
                injected["messages"] += 1
                continue
            head = msgpack.unpackb(r.frames[0])
            junk_envelopes = [[b"\xc1 not msgpack"], [msgpack.packb({"v": 99, "k": "d", "s": 1, "t": 0.0})]]
            junk_messages = [[b"\x00garbage"], [], [*r.frames, b"one frame too many"], [r.frames[0][:-3]],
                             [msgpack.packb({**head, "v": 99}), *r.frames[1:]], [b"x"] * 7]
            env = junk_envelopes[n // 3 % len(junk_envelopes)]
            down.pub.send_multipart(env)
            injected["envelopes"] += 1
            down.send(junk_messages[n // 3 % len(junk_messages)])
            injected["messages"] += 1
    finally:
        up.close()
        down.close()


def _receive_through_junk(endpoint: str, tmp_path: Path, frames: int) -> tuple[dict, dict[str, int], str]:
    """A receiver behind the junk relay until it rendered ``frames``: (its stats, injected, stderr)."""
    stop, injected, ready = threading.Event(), {"envelopes": 0, "messages": 0}, []
    t = threading.Thread(target=_forward_with_junk, args=(endpoint, stop, injected, ready), daemon=True)
    t.start()
    r = None
    try:
        end = time.monotonic() + 10
        while not ready and time.monotonic() < end:
            time.sleep(0.05)
        r = receive(ready[0], tmp_path / "r.json", "--frames", frames)
        assert r.wait() == 0, r.stderr
    finally:
        stop.set()
        t.join(10)
        if r is not None:
            r.kill()
    return load(tmp_path / "r.json"), injected, r.stderr


def test_malformed_messages_are_counted_and_skipped(sender, tmp_path):
    s, injected, err = _receive_through_junk(sender.endpoint, tmp_path, 15)
    assert s["rendered"] == 15 and "Traceback" not in err
    assert injected["envelopes"] > 0 and s["malformed"] > 0 and s["bad"] > 0
    assert s["malformed"] <= injected["envelopes"] and s["bad"] <= injected["messages"]
    assert sum(1 for f in s["frame_log"] if f["faces"] and not any(st for _, st, _ in f["faces"])) >= 10
    assert "bundle 'nobody'" in err  # the forged header's bundle is named once, its packets skipped


def test_format_1_sender_is_received_too(clip, tmp_path):
    """``send --format 1`` (for receivers from before stream v2): a receiver tells the version
    from what arrives, joins through a v1 request, decodes, and skips v1 junk."""
    s = send(clip, "--format", "1")
    try:
        ep = s.wait_for(r"sending on (tcp://127\.0\.0\.1:\d+) \(stream v1").group(1)
        st, injected, err = _receive_through_junk(ep, tmp_path, 10)
    finally:
        s.kill()
    assert st["rendered"] == 10 and "Traceback" not in err
    assert st["malformed"] > 0 and st["bad"] > 0 and st["bad"] <= injected["messages"]
    assert sum(1 for f in st["frame_log"] if f["faces"] and not any(x for _, x, _ in f["faces"])) >= 6


def test_wrong_curve_key_decodes_nothing(clip, tmp_path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    for d in (keys, other):
        assert Proc("keygen", d).wait() == 0
    stranger = tmp_path / "stranger"  # knows the server's public key, but its own pair is not authorised
    stranger.mkdir()
    for f in ("client.key", "client.key_secret"):
        (stranger / f).write_bytes((other / f).read_bytes())
    (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
    s = send(clip, "--curve-keys", keys)
    procs = [s]
    try:
        ep = s.wait_for(r"sending on (tcp://127\.0\.0\.1:\d+)").group(1)
        good = receive(ep, tmp_path / "good.json", "--curve-keys", keys, "-o", tmp_path / "good.mp4")
        bad = receive(ep, tmp_path / "bad.json", "--curve-keys", stranger, "--timeout", "6")
        plain = receive(ep, tmp_path / "plain.json", "--timeout", "6")
        procs += [good, bad, plain]
        for p in (bad, plain):
            assert p.wait() == 2, p.stderr
            assert "no stream from" in p.stderr and "Traceback" not in p.stderr
        good.wait_for("first frame")
        good.signal(signal.SIGTERM)  # SIGTERM behaves like Ctrl-C
        assert good.wait() == 143, good.stderr
        s.signal(signal.SIGTERM)
        assert s.wait() == 143 and "stopped by SIGTERM" in s.stderr
    finally:
        for p in procs:
            p.kill()
    for name in ("bad", "plain"):
        st = load(tmp_path / f"{name}.json")
        assert st["rendered"] == 0 and st["messages"] == 0 and st["first_heard_s"] is None
    g = load(tmp_path / "good.json")
    assert g["rendered"] >= 1 and g["stopped_by"] == "SIGTERM"
    assert frame_count(tmp_path / "good.mp4") == g["rendered"]


def test_sender_stops_cleanly_on_sigint(sender):
    sender.signal(signal.SIGINT)
    assert sender.wait(60) == 130, sender.stderr
    assert re.search(r"stopped by SIGINT after \d+ frames", sender.stderr)
    st = load(sender.stats)
    assert st["frames"] > 0 and st["stopped_by"] == "SIGINT" and st["keyframe_requests"] > 0
