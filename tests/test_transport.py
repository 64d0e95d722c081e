"""ZeroMQ transport on 127.0.0.1 only; every test ends by itself within a few seconds."""

from __future__ import annotations

import time

import pytest
import zmq

from streamcap.transport import CurveKeys, Publisher, Subscriber, keygen, side_endpoint


def settle(pub: Publisher, subs: list[Subscriber], seconds: float = 0.3) -> None:
    """PUB/SUB joins are asynchronous: heartbeat until every subscriber heard one."""
    end = time.monotonic() + 3.0
    while time.monotonic() < end and any(s.state != "live" for s in subs):
        pub.heartbeat(force=True)
        for s in subs:
            s.recv(0.02)
    assert all(s.state == "live" for s in subs)
    time.sleep(seconds / 10)


def test_side_endpoint():
    assert side_endpoint("tcp://*:5555") == "tcp://*:5556"
    assert side_endpoint("tcp://127.0.0.1:7000") == "tcp://127.0.0.1:7001"


def test_fan_out_to_two_subscribers():
    pub = Publisher("tcp://127.0.0.1:*")
    subs = [Subscriber(pub.endpoint), Subscriber(pub.endpoint)]
    try:
        settle(pub, subs)
        for i in range(20):
            assert pub.send([b"msg", str(i).encode()], capture_ts=time.time())
        for s in subs:
            got = [s.recv(1.0) for _ in range(20)]
            assert [g.frames[1] for g in got] == [str(i).encode() for i in range(20)]
            assert got[0].capture_ts is not None
    finally:
        for s in subs:
            s.close()
        pub.close()


def test_late_joiner_keyframe_request_arrives_within_a_second():
    pub = Publisher("tcp://127.0.0.1:*")
    late = Subscriber(pub.endpoint)
    try:
        t0 = time.monotonic()
        late.request_keyframe(None)
        late.request_keyframe([3, 4])
        reqs = []
        while time.monotonic() - t0 < 1.0 and len(reqs) < 2:
            reqs += pub.poll_requests()
            time.sleep(0.01)
        assert reqs == [None, [3, 4]]
    finally:
        late.close()
        pub.close()


def test_heartbeats_tell_waiting_live_and_stalled(monkeypatch):
    import streamcap.transport as t

    monkeypatch.setattr(t, "STALLED_S", 0.3)
    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    try:
        assert sub.state == "waiting for sender"
        assert sub.recv(0.1) is None
        pub.info = {"fps": 25}
        settle(pub, [sub])
        assert sub.sender_info == {"fps": 25}
        pub.close()
        sub.recv(0.4)
        assert sub.state == "stalled"
    finally:
        sub.close()


def test_a_subscriber_that_never_reads_does_not_block_the_sender():
    pub = Publisher("tcp://127.0.0.1:*", sndhwm=50)
    sub = Subscriber(pub.endpoint, rcvhwm=50)
    try:
        settle(pub, [sub])
        t0 = time.monotonic()
        for _ in range(10_000):
            pub.send([b"x" * 2000])
        assert time.monotonic() - t0 < 10.0  # generous: it must simply not block
        assert pub.stats.sent + pub.stats.dropped == 10_000
    finally:
        sub.close()
        pub.close()


def test_malformed_envelopes_are_counted_and_skipped():
    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    raw = zmq.Context.instance().socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    sub.sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        settle(pub, [sub])
        time.sleep(0.2)
        for junk in ([b"\xc1garbage"], [b"\x93\x01\x02\x03", b"x"], [b""]):
            raw.send_multipart(junk)
        time.sleep(0.2)
        pub.send([b"good"])
        got = sub.recv(1.0)
        assert got is not None and got.frames == [b"good"]
        assert sub.recv(0.3) is None  # the two sockets' messages interleave: drain the rest
        assert sub.stats.malformed == 3
    finally:
        raw.close()
        sub.close()
        pub.close()


def test_loss_hook_is_reproducible():
    pub = Publisher("tcp://127.0.0.1:*")
    subs = [Subscriber(pub.endpoint, drop_probability=0.3, seed=7) for _ in range(2)]
    try:
        settle(pub, subs)
        for i in range(100):
            pub.send([str(i).encode()])
        seen = []
        for s in subs:
            got = []
            while (r := s.recv(0.3)) is not None:
                got.append(r.frames[0])
            seen.append(got)
        assert seen[0] == seen[1] and 50 < len(seen[0]) < 90
    finally:
        for s in subs:
            s.close()
        pub.close()


def test_curve_only_the_right_key_receives(tmp_path):
    keygen(tmp_path / "keys")
    keygen(tmp_path / "other")  # a stranger's client pair
    good = CurveKeys(tmp_path / "keys")
    pub = Publisher("tcp://127.0.0.1:*", curve=good)
    ok = Subscriber(pub.endpoint, curve=good)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    for f in ("client.key", "client.key_secret"):
        (stranger / f).write_bytes((tmp_path / "other" / f).read_bytes())
    (stranger / "server.key").write_bytes((tmp_path / "keys" / "server.key").read_bytes())
    bad = Subscriber(pub.endpoint, curve=CurveKeys(stranger))
    try:
        settle(pub, [ok])
        for _ in range(5):
            pub.send([b"secret"])
            time.sleep(0.05)
        assert ok.recv(1.0).frames == [b"secret"]
        assert bad.recv(1.0) is None and bad.state == "waiting for sender"
    finally:
        ok.close()
        bad.close()
        pub.close()
    with pytest.raises(Exception, match="missing"):
        CurveKeys(tmp_path / "nowhere").server_secret()


def test_lost_messages_are_counted_from_envelope_gaps():
    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    hooked = Subscriber(pub.endpoint, drop_probability=0.3, seed=1)
    try:
        settle(pub, [sub, hooked])
        assert sub.heard_at is not None
        for _ in range(10):
            pub.send([b"a"])
        pub.seq += 5  # as if five envelopes had been dropped at the high-water mark
        for _ in range(10):
            pub.send([b"b"])
        pub.seq = 0  # a restarted sender counts from the start again: not a loss
        pub.send([b"c"])
        got = []
        while (r := sub.recv(0.3)) is not None:
            got.append(r.frames[0])
        while hooked.recv(0.3) is not None:
            pass
        assert got == [b"a"] * 10 + [b"b"] * 10 + [b"c"]
        assert sub.stats.lost == 5
        assert hooked.stats.lost == 5 + hooked.stats.lost_by_hook and hooked.stats.lost_by_hook > 0
    finally:
        sub.close()
        hooked.close()
        pub.close()


def test_bad_loss_probability_and_endpoint_are_refused():
    with pytest.raises(ValueError, match="loss probability"):
        Subscriber("tcp://127.0.0.1:5999", drop_probability=1.5)
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        Subscriber("ipc:///tmp/x")


def test_v2_packet_is_one_message_with_a_short_envelope():
    """A v2 packet travels as one message part: 0xD2, three varints (5-7 bytes), the packet;
    the receiver gets the packet back with send and capture times and says version 2."""
    from streamcap.transport import LIVE2

    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    raw = zmq.Context.instance().socket(zmq.SUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.setsockopt(zmq.SUBSCRIBE, bytes([LIVE2]))
    raw.connect(pub.endpoint)
    try:
        settle(pub, [sub])
        time.sleep(0.1)
        t = time.time()
        packets = [b"\x08" + bytes([i]) * (i + 1) for i in range(20)]
        for p in packets:
            assert pub.send_packet(p, capture_ts=t - 0.04)
        got = [sub.recv(1.0) for _ in packets]
        assert [g.frames for g in got] == [[p] for p in packets]
        assert all(g.version == 2 for g in got) and sub.version == 2
        assert all(abs(g.send_ts - t) < 0.5 and abs(g.send_ts - g.capture_ts - 0.04) < 0.002 for g in got)
        assert [g.seq for g in got] == list(range(got[0].seq, got[0].seq + 20))
        wire = raw.recv()
        assert wire[0] == LIVE2 and 5 <= len(wire) - len(packets[0]) <= 7
        assert sub.stats.lost == 0 and sub.stats.malformed == 0
    finally:
        raw.close()
        sub.close()
        pub.close()


def test_v2_short_numbers_extend_across_their_wrap():
    from streamcap.transport import extend_seq, extend_time, pack_envelope2, parse_envelope2

    assert extend_seq(5, None) == 5
    assert extend_seq(0, (1 << 14) - 1) == 1 << 14  # the next one after the wrap
    assert extend_seq(3, 100_000) == 100_000 + 1 + (3 - 100_001) % (1 << 14)
    now = 1_700_000_000.0
    for age in (0.0, 0.05, 3.0, -0.2):  # (a sender clock slightly ahead, too)
        e = parse_envelope2(pack_envelope2(7, now - age, now - age - 0.01, b"\x00"))
        assert abs(extend_time(e.sent_ms_low, now) - (now - age)) < 0.002 and e.capture_age_ms == 10
    wrap = (int(now * 1000) // (1 << 21) + 1) * (1 << 21) / 1000  # a send time just past a wrap
    e = parse_envelope2(pack_envelope2(1, wrap + 0.01, None, b"\x00"))
    assert abs(extend_time(e.sent_ms_low, wrap - 0.02) - (wrap + 0.01)) < 0.002 and e.capture_age_ms is None


def test_v2_envelope_gaps_are_losses_and_far_jumps_are_not():
    from streamcap_codecs.limits import LIVE2_MAX_GAP

    from streamcap.transport import pack_envelope2, parse_message

    sub = Subscriber("tcp://127.0.0.1:9")  # (nothing there: only its counting is used)
    try:
        last = None
        for seq in (1, 2, 5, 6, 6 + 5000):  # 2 lost, then a jump wider than LIVE2_MAX_GAP (a restart)
            msg = [pack_envelope2(seq, time.time(), None, b"\x00")]
            env, payload, version = parse_message(msg, last, time.time())
            assert version == 2 and payload == [b"\x00"]
            sub._count_gap(env.seq, LIVE2_MAX_GAP)
            last = env.seq
        assert sub.stats.lost == 2 and last == 5006
    finally:
        sub.close()


def test_receiver_requests_follow_the_stream_version():
    """Before it has heard anything a receiver asks in the v1 layout (every sender takes it);
    after a v2 message, as v2 Request packets. The sender honours both."""
    from streamcap_codecs.packet import Request, pack

    pub = Publisher("tcp://127.0.0.1:*")
    sub = Subscriber(pub.endpoint)
    try:
        settle(pub, [sub])
        sub.request_keyframe(None)
        pub.send_packet(b"\x00")
        assert sub.recv(1.0).version == 2
        sub.request_keyframe([3, 4])
        raw, t0 = [], time.monotonic()
        while len(raw) < 3 and time.monotonic() - t0 < 2.0:
            try:
                raw.append(pub.router.recv_multipart(flags=zmq.NOBLOCK)[-1])
            except zmq.Again:
                time.sleep(0.01)
        assert raw[0][:1] == b"\x81" and raw[1:] == [pack(Request(3)), pack(Request(4))]
        sub.request_keyframe(None)
        reqs = []
        while time.monotonic() - t0 < 2.0 and not reqs:
            reqs += pub.poll_requests()
            time.sleep(0.01)
        assert reqs == [None]
    finally:
        sub.close()
        pub.close()
