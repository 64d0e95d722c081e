"""ZeroMQ transport: PUB/SUB fan-out of stream messages, a keyframe-request side channel,
heartbeats and optional CurveZMQ encryption.

Two message layouts share the sockets (FORMAT.md §12):

* stream v1: ``[envelope, *payload frames]``; the envelope is a small msgpack map
  ``{"v": 1, "k": "d" | "h", "s": seq, "t": send time, "c": capture time}``. Heartbeats are
  always this envelope alone (kind "h"), whatever the stream's version.
* stream v2: one part, ``0xD2 · varint seq mod 2^14 · varint send ms mod 2^21 · varint
  capture age ms + 1 (0: none) · packet`` (a 4-9 byte envelope, 7-8 in practice, before the
  v2 packet). The receiver extends the short numbers from the last sequence number and its
  own clock.

The envelope lets receivers measure latency and tell "waiting for sender" from "sender alive,
no faces" (heartbeats; a v2 sender sends them only while it sends nothing else). A slow
receiver never stalls the sender: PUB drops silently at each receiver's high-water mark (the
sender cannot see it), the receiver counts the gap in the envelope sequence numbers as lost
messages, its decoder sees the gap in the codec's sequence numbers and asks for a keyframe on
the side channel (ROUTER on the sender, DEALER on the receiver, the PUB port + 1): a msgpack
``{"ids": ...}`` map (v1) or a v2 ``Request`` packet; a sender takes both.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq
from streamcap_codecs.limits import (
    MAX_FACE_ID,
    MAX_FACES,
    MAX_MESSAGE_PART,
    MAX_REQUEST_BYTES,
    MAX_SEQ,
    MAX_SEQ_JUMP,
    LIVE2_MAX_GAP,
    LIVE2_SEQ_MOD,
    LIVE2_TIME_MOD,
    REQUEST_ALL_MAX_S,
    REQUEST_ALL_MIN_S,
    REQUEST_FACE_MAX_S,
    REQUEST_FACE_MIN_S,
)

from streamcap_codecs.packet import KIND_REQUEST, Reader, Request, pack, put_varint, unpack

from .errors import CodecError, InputError, StreamcapError

log = logging.getLogger(__name__)
ENVELOPE_VERSION = 1
HEARTBEAT_S = 0.5
STALLED_S = 2.0
MAX_ENVELOPE_BYTES = 1024
LIVE2 = 0xD2  # first byte of a stream v2 message (a v1 envelope is a msgpack map: 0x80-0x8F)
RECONNECT_MIN_S = 0.5  # a dropped connection is re-made at most this often
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


def side_endpoint(endpoint: str) -> str:
    """The keyframe-request endpoint beside a PUB endpoint: same host, port + 1."""
    m = re.fullmatch(r"(tcp://[^:]+|tcp://\[[^\]]+\]):(\d+)", endpoint)
    if not m:
        raise InputError(f"endpoint must look like tcp://HOST:PORT, got {endpoint!r}")
    port = int(m.group(2))
    if not 1 <= port <= 65534:  # the side channel needs port + 1 too
        raise InputError(f"port {port} in {endpoint!r} is outside 1..65534")
    return f"{m.group(1)}:{port + 1}"


@dataclass(frozen=True)
class Envelope:
    """A validated envelope: kind "d" (data) or "h" (heartbeat), sequence number, send time,
    capture time (data, optional) and the sender's info map (heartbeat)."""

    kind: str
    seq: int
    sent: float
    capture: float | None
    info: dict


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) < 1e12


def parse_envelope(buf: bytes) -> Envelope:
    """Check every envelope field's type and range; ValueError on anything else."""
    if not 1 <= len(buf) <= MAX_ENVELOPE_BYTES:
        raise ValueError(f"envelope of {len(buf)} bytes")
    try:
        env = msgpack.unpackb(buf, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0,
                              max_str_len=MAX_ENVELOPE_BYTES, max_array_len=64, max_map_len=16)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"envelope is not msgpack: {exc}") from exc
    if not isinstance(env, dict) or set(env) - {"v", "k", "s", "t", "c", "i"}:
        raise ValueError("envelope is not a map of known keys")
    v, kind, seq = env.get("v"), env.get("k"), env.get("s")
    if type(v) is not int or v != ENVELOPE_VERSION or kind not in ("d", "h"):
        raise ValueError("envelope version or kind")
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise ValueError(f"envelope sequence number {seq!r}")
    if not _finite(env.get("t")) or ("c" in env and not _finite(env["c"])):
        raise ValueError("envelope times must be finite numbers")
    info = env.get("i", {})
    if not isinstance(info, dict):
        raise ValueError("envelope info must be a map")
    cap = env.get("c")
    return Envelope(kind, seq, float(env["t"]), None if cap is None else float(cap), info)


@dataclass(frozen=True)
class Envelope2:
    """The short numbers of a v2 envelope, before the receiver extends them."""

    seq_low: int
    sent_ms_low: int
    capture_age_ms: int | None
    packet: bytes


def pack_envelope2(seq: int, sent: float, capture: float | None, packet: bytes) -> bytes:
    """One v2 live message: the short envelope, then the packet."""
    out = bytearray([LIVE2])
    put_varint(out, seq % LIVE2_SEQ_MOD)
    put_varint(out, int(sent * 1000) % LIVE2_TIME_MOD)
    age = 0 if capture is None else 1 + min(max(int(round((sent - capture) * 1000)), 0), LIVE2_TIME_MOD - 2)
    put_varint(out, age)
    return bytes(out) + packet


def parse_envelope2(buf: bytes) -> Envelope2:
    """A v2 live message -> its envelope and packet bytes; ValueError if the envelope is
    malformed (the packet itself is the decoder's to check)."""
    if not 2 <= len(buf) <= MAX_MESSAGE_PART or buf[0] != LIVE2:
        raise ValueError(f"not a v2 live message ({len(buf)} bytes)")
    r = Reader(buf, "live envelope")
    try:
        r.byte()
        seq = r.varint(LIVE2_SEQ_MOD - 1, "seq")
        sent = r.varint(LIVE2_TIME_MOD - 1, "send time")
        age = r.varint(LIVE2_TIME_MOD - 1, "capture age")
    except CodecError as exc:
        raise ValueError(str(exc)) from exc
    if not r.left:
        raise ValueError("v2 live message without a packet")
    return Envelope2(seq, sent, None if age == 0 else age - 1, bytes(r.data[r.pos:]))


def extend_seq(low: int, last: int | None) -> int:
    """The full envelope sequence number: the smallest one above ``last`` with these low bits."""
    if last is None:
        return low
    nxt = last + 1
    return nxt + (low - nxt) % LIVE2_SEQ_MOD


def extend_time(low_ms: int, now: float) -> float:
    """The send time (s) nearest ``now`` whose ms modulo 2^21 is ``low_ms``."""
    now_ms = int(now * 1000)
    half = LIVE2_TIME_MOD // 2
    return (now_ms + (low_ms - now_ms + half) % LIVE2_TIME_MOD - half) / 1000.0


def parse_message(parts: list[bytes], last_seq: int | None, now: float) -> tuple[Envelope, list[bytes], int]:
    """One received ZeroMQ message -> (envelope, payload, stream version): a v2 message (one
    part, first byte 0xD2) gives its packet as the one payload frame, its short numbers
    extended from ``last_seq`` (the last envelope sequence number) and ``now`` (time.time());
    anything else is a v1 envelope and payload frames. ValueError on a malformed envelope."""
    if len(parts) == 1 and parts[0][:1] == bytes([LIVE2]):
        e2 = parse_envelope2(parts[0])
        sent = extend_time(e2.sent_ms_low, now)
        cap = None if e2.capture_age_ms is None else sent - e2.capture_age_ms / 1000.0
        return Envelope("d", extend_seq(e2.seq_low, last_seq), sent, cap, {}), [e2.packet], 2
    if not parts:
        raise ValueError("empty message")
    return parse_envelope(parts[0]), list(parts[1:]), 1


def parse_any_request(buf: bytes) -> list[int] | None:
    """A keyframe request in either layout: a v2 ``Request`` packet (first byte 2) or the v1
    msgpack map. ValueError if malformed."""
    if buf[:1] == bytes([KIND_REQUEST]):
        if len(buf) > MAX_REQUEST_BYTES:
            raise ValueError(f"request of {len(buf)} bytes")
        try:
            req = unpack(buf)
        except CodecError as exc:
            raise ValueError(str(exc)) from exc
        if not isinstance(req, Request):  # (cannot happen: the kind is the first byte's)
            raise ValueError("not a request packet")
        return None if req.face_id < 0 else [req.face_id]
    return parse_request(buf)


def parse_request(buf: bytes) -> list[int] | None:
    """A keyframe request ``{"ids": [face id, ...] | None}`` (None: everything); ValueError if
    it is malformed, too big or names more than MAX_FACES faces."""
    if not 1 <= len(buf) <= MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(buf)} bytes")
    try:
        req = msgpack.unpackb(buf, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0,
                              max_str_len=16, max_array_len=MAX_FACES, max_map_len=1)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"request is not msgpack: {exc}") from exc
    if not isinstance(req, dict) or set(req) != {"ids"}:
        raise ValueError("request must be {'ids': ...}")
    ids = req["ids"]
    if ids is None:
        return None
    if not (isinstance(ids, list) and all(type(i) is int and 0 <= i <= MAX_FACE_ID for i in ids)):
        raise ValueError("request ids must be face ids")
    return ids


class _Backoff:
    """When a kind of request may be honoured again: ``base`` seconds after the last time, the
    interval doubling (up to ``cap``) while requests keep coming as soon as allowed, back to
    ``base`` after a calm spell of twice the interval."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.interval, self.last = base, cap, base, -math.inf

    def ready(self, now: float) -> bool:
        return now - self.last >= self.interval

    def fire(self, now: float) -> None:
        busy = now - self.last < 2 * self.interval
        self.interval = min(self.interval * 2, self.cap) if busy else self.base
        self.last = now


class RequestLimiter:
    """Coalesces keyframe requests: "everything" at most once per ``all_s`` and each face at
    most once per ``face_s``, backing off to ``all_cap_s`` / ``face_cap_s`` while requests keep
    coming (a flood). A request that comes sooner waits (it is not lost), so a flood costs at
    most one refresh per capped interval."""

    def __init__(self, all_s: float = REQUEST_ALL_MIN_S, face_s: float = REQUEST_FACE_MIN_S,
                 all_cap_s: float = REQUEST_ALL_MAX_S, face_cap_s: float = REQUEST_FACE_MAX_S) -> None:
        self.face_s, self.face_cap_s = face_s, face_cap_s
        self._all = _Backoff(all_s, all_cap_s)
        self._faces: dict[int, _Backoff] = {}
        self._want_all = False
        self._want: set[int] = set()
        self.deferred = 0

    def add(self, ids: list[int] | None) -> None:
        if ids is None:
            self.deferred += self._want_all
            self._want_all = True
        else:
            self.deferred += len(self._want & set(ids))
            self._want.update(ids)

    def due(self, now: float) -> list[list[int] | None]:
        """Requests to honour now: ``None`` for everything and/or one list of face ids."""
        out: list[list[int] | None] = []
        if self._want_all and self._all.ready(now):
            self._want_all = False
            self._all.fire(now)
            out.append(None)
        faces = []
        for f in sorted(self._want):
            b = self._faces.setdefault(f, _Backoff(self.face_s, self.face_cap_s))
            if b.ready(now):
                b.fire(now)
                faces.append(f)
        if faces:
            self._want.difference_update(faces)
            out.append(faces)
        if len(self._faces) > 4 * MAX_FACES:  # forget faces not asked for in a while
            self._faces = {f: b for f, b in self._faces.items() if now - b.last < 2 * self.face_cap_s}
        return out


@dataclass
class CurveKeys:
    """Key pairs written by ``keygen``: the sender's (server) and the authorised receivers'."""

    folder: Path

    def _load(self, name: str, secret: bool) -> tuple[bytes, bytes | None]:
        import zmq.auth

        path = self.folder / (f"{name}.key_secret" if secret else f"{name}.key")
        if not path.is_file():
            raise StreamcapError(f"CurveZMQ key {path} is missing (run 'streamcap keygen {self.folder}')")
        try:
            return zmq.auth.load_certificate(str(path))
        except (ValueError, OSError) as exc:
            raise StreamcapError(f"CurveZMQ key {path} is unreadable: {exc}") from exc

    def server_secret(self) -> tuple[bytes, bytes]:
        pub, sec = self._load("server", True)
        assert sec is not None
        return pub, sec

    def server_public(self) -> bytes:
        return self._load("server", False)[0]

    def client_secret(self) -> tuple[bytes, bytes]:
        pub, sec = self._load("client", True)
        if sec is None:
            raise StreamcapError(f"{self.folder / 'client.key_secret'} holds no secret key")
        return pub, sec

    def authorised(self) -> Path:
        """Folder of public keys the sender accepts (every client*.key beside the server's)."""
        return self.folder


def keygen(folder: str | Path) -> list[Path]:
    """Write server and client key pairs (secret files mode 0600) into ``folder``."""
    import zmq.auth

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("server", "client"):
        pub, sec = zmq.auth.create_certificates(str(folder), name)
        Path(sec).chmod(0o600)
        out += [Path(pub), Path(sec)]
    return out


@dataclass
class TransportStats:
    """Message counters of one side (sender: sent, dropped, requests; receiver: the rest)."""

    sent: int = 0
    sent_bytes: int = 0  # data messages' bytes, envelopes included (not ZeroMQ's own framing)
    dropped: int = 0  # the send would have blocked (PUB itself drops silently at its high-water mark)
    received: int = 0  # data messages handed to the application
    malformed: int = 0  # envelopes (or requests) that did not parse: skipped
    heartbeats: int = 0
    lost: int = 0  # envelope sequence gaps (sender drops, network) plus the loss hook's drops
    lost_by_hook: int = 0
    requests: int = 0
    reconnects: int = 0  # connections to the sender re-made after it was dropped


class Publisher:
    """Sender side: ``send(frames)``, ``poll_requests()``, automatic heartbeats."""

    def __init__(self, bind: str = "tcp://*:5555", curve: CurveKeys | None = None, sndhwm: int = 200,
                 ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.pub = self.ctx.socket(zmq.PUB)
        self.router = self.ctx.socket(zmq.ROUTER)
        self._auth = None
        for s in (self.pub, self.router):
            s.setsockopt(zmq.LINGER, 200)
        self.pub.setsockopt(zmq.SNDHWM, sndhwm)
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)  # subscribers send only subscriptions
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        if curve is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self._auth = ThreadAuthenticator(self.ctx)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(curve.authorised()))
            pub_key, sec_key = curve.server_secret()
            for s in (self.pub, self.router):
                s.curve_secretkey, s.curve_publickey, s.curve_server = sec_key, pub_key, True
        try:
            self._bind(bind)
        except zmq.ZMQError as exc:
            self.close()
            raise StreamcapError(f"cannot bind {bind}: {exc}") from exc
        self.seq = 0
        self.stats = TransportStats()
        self._last_hb = 0.0
        self._last_v2 = -math.inf  # when the last v2 message went out (v2 needs no heartbeat then)
        self.info: dict = {}
        self.limiter = RequestLimiter()

    def _bind(self, bind: str) -> None:
        if bind.endswith(":*"):  # random ports for tests: PUB anywhere, side channel at port + 1
            host = bind[:-2]
            for _ in range(50):
                port = self.pub.bind_to_random_port(host)
                try:
                    self.router.bind(f"{host}:{port + 1}")
                    break
                except zmq.ZMQError:
                    self.pub.unbind(self.pub.getsockopt(zmq.LAST_ENDPOINT).decode())
            else:
                raise zmq.ZMQError(msg="no free port pair")
        else:
            self.pub.bind(bind)
            self.router.bind(side_endpoint(bind))
        self.endpoint = self.pub.getsockopt(zmq.LAST_ENDPOINT).decode()

    def _envelope(self, kind: str, capture_ts: float | None, extra: dict | None = None) -> bytes:
        self.seq += 1
        env = {"v": ENVELOPE_VERSION, "k": kind, "s": self.seq, "t": time.time()}
        if capture_ts is not None:
            env["c"] = capture_ts
        if extra:
            env.update(extra)
        return msgpack.packb(env)

    def send(self, frames: list[bytes], capture_ts: float | None = None) -> bool:
        """Queue one message; False if the high-water mark dropped it (never blocks)."""
        self.heartbeat()
        try:
            msg = [self._envelope("d", capture_ts), *frames]
            self.pub.send_multipart(msg, flags=zmq.NOBLOCK, copy=False)
            self.stats.sent += 1
            self.stats.sent_bytes += sum(len(m) for m in msg)
            return True
        except zmq.Again:
            self.stats.dropped += 1
            return False

    def send_packet(self, packet: bytes, capture_ts: float | None = None) -> bool:
        """Queue one stream v2 packet as one message (short envelope, FORMAT.md §12); False if
        the high-water mark dropped it (never blocks)."""
        self.heartbeat()
        self.seq += 1
        msg = pack_envelope2(self.seq, time.time(), capture_ts, packet)
        try:
            self.pub.send(msg, flags=zmq.NOBLOCK, copy=False)
            self.stats.sent += 1
            self.stats.sent_bytes += len(msg)
            self._last_v2 = time.monotonic()
            return True
        except zmq.Again:
            self.stats.dropped += 1
            return False

    def heartbeat(self, force: bool = False) -> None:
        """Tell receivers the sender is alive (rate-limited to one per HEARTBEAT_S; none while
        v2 messages flow, which tell it themselves)."""
        now = time.monotonic()
        if not force and now - max(self._last_hb, self._last_v2) < HEARTBEAT_S:
            return
        self._last_hb = now
        try:
            self.pub.send_multipart([self._envelope("h", None, {"i": self.info})], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass

    def poll_requests(self) -> list[list[int] | None]:
        """Keyframe requests to honour now: each a list of face ids, or None for all. Requests
        are validated (``parse_request``) and rate-limited (``RequestLimiter``)."""
        while True:
            try:
                parts = self.router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                self.limiter.add(parse_any_request(parts[-1]))
                self.stats.requests += 1
            except ValueError:
                self.stats.malformed += 1
        return self.limiter.due(time.monotonic())

    def close(self) -> None:
        for s in (self.pub, self.router):
            s.close(linger=200)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None


@dataclass
class Received:
    """One data message: v1 payload frames, or (``version`` 2) the one v2 packet."""

    frames: list[bytes]
    seq: int
    send_ts: float
    capture_ts: float | None
    version: int = 1


@dataclass
class Subscriber:
    """Receiver side: ``recv(timeout_s)`` -> Received or None, ``request_keyframe(ids)``."""

    connect: str = "tcp://127.0.0.1:5555"
    curve: CurveKeys | None = None
    rcvhwm: int = 1000
    drop_probability: float = 0.0  # test hook: lose this fraction of data messages on receipt
    seed: int = 0
    stats: TransportStats = field(default_factory=TransportStats)

    def __post_init__(self) -> None:
        self.ctx = zmq.Context.instance()
        self.sub = self.ctx.socket(zmq.SUB)
        self.dealer = self.ctx.socket(zmq.DEALER)
        for s in (self.sub, self.dealer):
            s.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, self.rcvhwm)
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_PART)  # a bigger part drops the connection...
        self.dealer.setsockopt(zmq.MAXMSGSIZE, MAX_REQUEST_BYTES)
        # ... which libzmq does not re-make after a protocol error: the monitor sees it (and
        # handshake failures, e.g. CurveZMQ keys the sender refuses) and we reconnect
        self._monitor = self.sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                                    | _HANDSHAKE_FAILED)
        if not 0.0 <= self.drop_probability < 1.0:
            self.close()
            raise InputError(f"loss probability must be in [0, 1), got {self.drop_probability}")
        try:
            if self.curve is not None:
                cpub, csec = self.curve.client_secret()
                spub = self.curve.server_public()
                for s in (self.sub, self.dealer):
                    s.curve_secretkey, s.curve_publickey, s.curve_serverkey = csec, cpub, spub
            self.sub.setsockopt(zmq.SUBSCRIBE, b"")
            side = side_endpoint(self.connect)
            self.sub.connect(self.connect)
            self.dealer.connect(side)
        except zmq.ZMQError as exc:
            self.close()
            raise StreamcapError(f"cannot connect to {self.connect}: {exc}") from exc
        except StreamcapError:
            self.close()
            raise
        self._rng = random.Random(self.seed)
        self._last_heard: float | None = None
        self._last_env_seq: int | None = None
        self._last_reconnect = -math.inf
        self.sender_info: dict = {}
        self.handshake_error: str | None = None  # why the last connection attempt was refused
        self.version: int | None = None  # stream version of the last data message (requests follow it)

    @property
    def heard_at(self) -> float | None:
        """``time.monotonic()`` of the last envelope from the sender (None: never heard)."""
        return self._last_heard

    @property
    def state(self) -> str:
        if self._last_heard is None:
            return "waiting for sender"
        return "live" if time.monotonic() - self._last_heard < STALLED_S else "stalled"

    def recv(self, timeout_s: float = 1.0) -> Received | None:
        """The next data message, or None when ``timeout_s`` passes without one. Heartbeats and
        malformed messages are consumed and counted, never returned or raised."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._watch_connection()
            left = deadline - time.monotonic()
            if left <= 0 or not self.sub.poll(min(int(left * 1000) + 1, 200)):
                if time.monotonic() >= deadline:
                    return None
                continue
            parts = self.sub.recv_multipart()
            try:
                env, payload, version = parse_message(parts, self._last_env_seq, time.time())
            except ValueError:
                self.stats.malformed += 1
                continue
            self._last_heard = time.monotonic()
            self._count_gap(env.seq, LIVE2_MAX_GAP if version == 2 else MAX_SEQ_JUMP)
            if env.kind == "h":
                self.stats.heartbeats += 1
                self.sender_info = env.info
                continue
            if self.drop_probability and self._rng.random() < self.drop_probability:
                self.stats.lost_by_hook += 1
                self.stats.lost += 1
                continue
            self.stats.received += 1
            self.version = version
            return Received(payload, env.seq, env.sent, env.capture, version)

    def _watch_connection(self) -> None:
        """Act on connection events: re-make a dropped connection (rate-limited), name a
        refused handshake."""
        from zmq.utils.monitor import recv_monitor_message

        while self._monitor.poll(0):
            ev = recv_monitor_message(self._monitor)
            kind = ev["event"]
            if kind & _HANDSHAKE_FAILED:
                reason = self._handshake_reason(kind)
                if reason != self.handshake_error:
                    log.info("%s", reason)
                self.handshake_error = reason
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_error = None
            elif kind == zmq.EVENT_DISCONNECTED and self.handshake_error is None:
                now = time.monotonic()
                if now - self._last_reconnect >= RECONNECT_MIN_S:
                    self._last_reconnect = now
                    self.stats.reconnects += 1
                    try:
                        self.sub.disconnect(self.connect)
                    except zmq.ZMQError:
                        pass
                    self.sub.connect(self.connect)

    def _handshake_reason(self, kind: int) -> str:
        if self.curve is None:
            return (f"handshake with {self.connect} failed: the sender may require CurveZMQ "
                    "(--curve-keys)")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return f"CurveZMQ handshake with {self.connect} failed: the sender refused this receiver's key"
        return (f"CurveZMQ handshake with {self.connect} failed: server.key is not the sender's key, "
                "or the sender does not use CurveZMQ")

    def pending(self) -> bool:
        """True when a message is already waiting (the caller is behind the stream)."""
        return bool(self.sub.poll(0))

    def _count_gap(self, seq: int, max_jump: int = MAX_SEQ_JUMP) -> None:
        """Count envelopes that never arrived; a sequence that goes back is a restarted sender,
        and one that jumps further than ``max_jump`` a discontinuity (forged or foreign), not a
        loss."""
        last = self._last_env_seq
        if last is not None and last + 1 < seq <= last + 1 + max_jump:
            self.stats.lost += seq - last - 1
        self._last_env_seq = seq

    def request_keyframe(self, face_ids: list[int] | None = None) -> None:
        """Ask the sender for keyframes of ``face_ids`` (None: header, background and every
        face): as v2 ``Request`` packets once a v2 stream was heard, else as the v1 map (which
        every sender takes, so a receiver that has heard nothing yet can still join)."""
        if self.version == 2:
            msgs = [pack(Request(-1))] if face_ids is None else [pack(Request(f)) for f in face_ids[:MAX_FACES]]
        else:
            msgs = [msgpack.packb({"ids": face_ids})]
        for m in msgs:
            try:
                self.dealer.send(m, flags=zmq.NOBLOCK)
            except zmq.Again:
                pass

    def close(self) -> None:
        self.sub.disable_monitor()
        self._monitor.close(0)
        self.sub.close(0)
        self.dealer.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
