"""``streamcap send`` / ``streamcap receive`` / ``streamcap keygen``: the live path over ZeroMQ.

send: camera or video -> track -> generator -> geometry -> face codec -> PUB socket. A camera
(or a ``--realtime`` video) is read by a thread that keeps only the newest frame, so a slow
machine skips frames instead of falling ever further behind; keyframe requests from receivers
are honoured on the next frame.
receive: SUB socket -> decoder -> ModernGL -> window, mp4 or nothing (``--headless``), with a
status line of fps, latency and loss, per face. Messages that do not parse or decode are
counted and skipped; faces whose messages were lost are asked for again (keyframe request).
Both stop cleanly on Ctrl-C or SIGTERM: the loop ends after the current frame, the mp4 is
closed (playable) and the ``--stats`` JSON written; a second signal interrupts at once.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from ..benchmark import stats as summarise
from ..errors import BundleError, CodecError, InputError, TransportTimeout
from .common import GracefulStop, check_number, check_writable, write_json

log = logging.getLogger(__name__)

REQUEST_FACE_S = 0.2  # at most this often: keyframe requests for faces whose messages were lost
REQUEST_ALL_S = 1.0  # at most this often: requests for everything (joining, lost header or background)
STUCK_S = 1.0  # sender alive but nothing rendered for this long: ask for everything again
LATE_S = 0.1  # a frame sent longer ago than this (or two frame intervals), with more queued: not rendered


# ----------------------------------------------------------------------------------- helpers


class Status:
    """Live status: on a terminal one line rewritten at most twice a second; events (sender
    found, stalled...) as their own lines, also when stderr is not a terminal."""

    def __init__(self, prog: str, stream: TextIO | None = None) -> None:
        self.prog = prog
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._dirty = False

    def line(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty and (force or now - self._last > 0.5):
            self._last = now
            self.stream.write("\r" + text[:160].ljust(100))
            self.stream.flush()
            self._dirty = True

    def event(self, text: str) -> None:
        self.done()
        self.stream.write(f"{self.prog}: {text}\n")
        self.stream.flush()

    def done(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False


def run_keygen(args: argparse.Namespace) -> int:
    from ..transport import keygen

    if args.folder.exists() and not args.folder.is_dir():
        raise InputError(f"{args.folder} exists and is not a folder")
    paths = keygen(args.folder)
    print(f"wrote {', '.join(p.name for p in paths)} to {args.folder}: give server.key, client.key and "
          f"client.key_secret to receivers; keep server.key_secret on the sender")
    return 0


# ----------------------------------------------------------------------------------- send


def run_send(args: argparse.Namespace) -> int:
    """Capture -> faces -> codec -> PUB until the source ends, ``--frames`` or a signal."""
    from streamcap_codecs.wire import to_frames

    from ..bundle import load_bundle
    from ..capture import LatestFrame, open_source
    from ..pipeline import FacePipeline
    from ..transport import CurveKeys, Publisher, side_endpoint

    if not args.bind.endswith(":*"):
        side_endpoint(args.bind)  # a malformed endpoint fails now, before the model loads
    if args.frames < 0:
        raise InputError("--frames must be >= 0")
    if args.kbps is not None and not args.kbps > 0:
        raise InputError("--kbps must be positive")
    check_number("--kbps", args.kbps, 0.0)
    check_number("--keyframe-every", args.keyframe_every, 0.0)
    v2 = args.format == 2
    if v2:
        from .codec2 import check_v2_flags

        check_v2_flags(args)
    check_writable(args.stats, "--stats")
    curve = CurveKeys(args.curve_keys) if args.curve_keys else None
    if curve is not None:
        curve.server_secret()  # a missing key fails now, in one line, before anything loads
    # the cheap checks first: a missing camera or video fails before the model loads
    src = open_source(camera=args.camera, video=args.video, loop=args.loop, realtime=args.realtime)
    live = args.camera is not None or args.realtime
    pub = latest = pipe = enc = None
    status = Status("streamcap send")
    frames = sent_bytes = requests = encode_errors = 0
    t0 = time.monotonic()
    stage_ms: deque[float] = deque(maxlen=1000)
    with GracefulStop() as stop:
        try:
            bundle = load_bundle(args.bundle)
            from .codec import load_codec, make_encoder

            basis = load_codec(bundle)
            pipe = FacePipeline.create(bundle, args.backend, args.threads, args.detector, args.landmarks)
            if v2:
                from .codec2 import make_encoder2

                enc = make_encoder2(basis, bundle, args, src.fps, live=True)
            else:
                enc = make_encoder(basis, bundle, args, src.fps)
            pub = Publisher(args.bind, curve=curve)
            status.event(f"sending on {pub.endpoint} (stream v{args.format}; keyframe requests on the next port)")
            if live:
                latest = LatestFrame(src)
                stop.callbacks.append(latest.stop)
            t0 = time.monotonic()
            times: deque[float] = deque(maxlen=30)
            for frame in latest if latest is not None else src:
                if stop.requested:
                    break
                res = pipe.process(frame.index, frame.timestamp, frame.image)
                for ids in pub.poll_requests():
                    requests += 1
                    for fid in [None] if ids is None else ids:
                        enc.request_keyframe(fid)
                faces = res.codec_input()
                try:
                    if v2:  # (the encoder samples each face's texture from the frame itself)
                        out = [e.data for e in enc.encode(res.image, [(tid, v, None) for tid, v, _ in faces])]
                    else:
                        out = [to_frames(m) for m in enc.encode(res.image, faces, ts=res.timestamp,
                                                                frame_index=res.index)]
                except (ValueError, CodecError) as exc:  # one bad frame must not end the stream
                    encode_errors += 1
                    log.warning("frame %d not sent: %s", res.index, exc)
                    out = []
                    if v2:  # the encoder may have moved on for some faces: resynchronise everyone
                        enc.request_keyframe(None)
                for fr in out:
                    if v2:
                        sent_bytes += len(fr)
                        pub.send_packet(fr, capture_ts=frame.wall)
                    else:
                        sent_bytes += sum(len(x) for x in fr)
                        pub.send(fr, capture_ts=frame.wall)
                frames += 1
                stage_ms.append(res.times.detect + res.times.track + res.times.engine)
                times.append(time.monotonic())
                fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
                secs = max(time.monotonic() - t0, 1e-6)
                pub.info = {"fps": round(fps, 1), "faces": len(faces), "frame": res.index}
                skipped = latest.skipped if latest is not None else 0
                status.line(f"frame {res.index}  {fps:5.1f} fps  faces {len(faces)}  "
                            f"{sent_bytes * 8 / 1000 / secs:7.1f} kbit/s  track+model {stage_ms[-1]:5.1f} ms  "
                            f"skipped {skipped}  keyframe requests {requests}")
                if args.frames and frames >= args.frames:
                    break
        finally:
            stop.shield()
            if pub is not None:
                pub.close()
            if pipe is not None:
                pipe.close()
            if v2 and enc is not None:
                enc.close()
            if latest is None or latest.close(2.0):
                src.close()  # (a reader thread still inside the source keeps it: the process is ending)
            status.done()
            secs = max(time.monotonic() - t0, 1e-6)
            skipped = latest.skipped if latest is not None else 0
            if args.stats is not None:
                write_json(args.stats, {
                    "format": args.format, "frames": frames, "skipped": skipped, "bytes": sent_bytes,
                    "wire_bytes": pub.stats.sent_bytes if pub is not None else 0,
                    "stream_kbps": round(sent_bytes * 8 / 1000 / max(frames / src.fps, 1e-6), 3) if frames else None,
                    "seconds": round(secs, 3),
                    "fps": round(frames / secs, 2), "keyframe_requests": requests, "encode_errors": encode_errors,
                    "track_model_ms": summarise(stage_ms, digits=2), "stopped_by": stop.name or None})
    how = f"stopped by {stop.name} after" if stop.requested else "sent"
    print(f"streamcap send: {how} {frames} frames ({frames / secs:.1f} fps, {skipped} skipped to stay live), "
          f"{sent_bytes} bytes, {requests} keyframe requests", file=sys.stderr)
    return stop.exit_code if stop.requested else 0


# ----------------------------------------------------------------------------------- receive


def _window_possible() -> bool:
    """A window needs a display and an OpenCV built with GUI support."""
    from ..render.renderer import _cv2_has_gui

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return _cv2_has_gui()


@dataclass
class FaceStats:
    """Per face id: frames shown, frames shown stale (its message lost), latencies when fresh."""

    shown: int = 0
    stale: int = 0
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=2000))


@dataclass
class ReceiveStats:
    """What ``receive`` measured; written as JSON with ``--stats`` and summarised on stderr."""

    connect: str
    rendered: int = 0
    skipped: int = 0  # decoded but not rendered: the receiver was behind
    bad: int = 0  # messages the codec rejected (malformed, forged, wrong bundle)
    keyframe_requests: int = 0
    frames_before_first: int = 0  # sender frames seen between first hearing it and the first render
    first_heard: float | None = None
    first_frame: float | None = None
    last_frame: float | None = None
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=20000))
    faces: dict[int, FaceStats] = field(default_factory=dict)
    frames: deque = field(default_factory=lambda: deque(maxlen=100000))

    def fps(self) -> float:
        if self.first_frame is None or self.last_frame is None or self.rendered < 2:
            return 0.0
        return (self.rendered - 1) / max(self.last_frame - self.first_frame, 1e-6)

    def face_summary(self) -> str:
        parts = []
        for fid, f in sorted(self.faces.items()):
            lat = np.median(f.latency_ms) if f.latency_ms else float("nan")
            parts.append(f"face {fid}: {lat:.0f} ms, {100 * f.stale / max(f.shown, 1):.0f}% stale")
        return "  ".join(parts)

    def to_json(self, transport: Any, stopped_by: str | None, started: float) -> dict:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - started, 3)

        join = None if self.first_frame is None or self.first_heard is None else self.first_frame - self.first_heard
        return {
            "connect": self.connect, "rendered": self.rendered, "skipped": self.skipped,
            "fps": round(self.fps(), 2),
            "latency_ms": summarise(self.latency_ms, digits=2),
            "faces": {str(fid): {"shown": f.shown, "stale": f.stale, "latency_ms": summarise(f.latency_ms, digits=2)}
                      for fid, f in sorted(self.faces.items())},
            "messages": transport.received, "lost": transport.lost, "lost_by_hook": transport.lost_by_hook,
            "malformed": transport.malformed, "heartbeats": transport.heartbeats, "bad": self.bad,
            "keyframe_requests": self.keyframe_requests, "first_heard_s": rel(self.first_heard),
            "first_frame_s": rel(self.first_frame), "join_s": None if join is None else round(join, 3),
            "join_frames": self.frames_before_first, "stopped_by": stopped_by, "frame_log": list(self.frames),
        }


class ReceiverCodec:
    """The bundle-dependent half of a receiver: a stream v1 and a stream v2 decoder for one
    codec basis (a stream header picks which one is in use)."""

    def __init__(self, basis: Any, layout: Any, name: str) -> None:
        from streamcap_codecs.decoder import FaceStreamDecoder
        from streamcap_codecs.decoder2 import FaceStreamDecoder2
        from streamcap_codecs.limits import MIN_RESTART_S

        self.basis, self.layout, self.name = basis, layout, name
        self.decoder = FaceStreamDecoder(basis, layout, min_restart_s=MIN_RESTART_S)
        # the plate warp (the head's surroundings follow it) is made only for frames shown
        self.decoder2 = FaceStreamDecoder2(basis, layout, warp_plate=False, min_restart_s=MIN_RESTART_S)

    def accepts(self, hdr: Any) -> bool:
        return hdr.basis_id == self.basis.id and hdr.layout_hash == self.layout.hash


class LiveDecoder:
    """The decoding half of the receive loop: each data message, stream v1 (payload frames) or
    v2 (one packet), as the transport tells them apart, -> decoded frames. A stream header
    picks the version and the codec (the one loaded, else a shipped bundle the header names,
    if ``look_up``). A header of another version or bundle is taken only when the stream in use
    has given no frame for MIN_RESTART_S (a sender that restarted in another format has gone
    quiet; forged headers between a live stream's messages change nothing), and messages of the
    version not in use are skipped. A message that does not parse or decode is counted in
    ``bad`` and skipped, never raised."""

    def __init__(self, codec: ReceiverCodec | None, look_up: bool = False, event: Any = None,
                 clock: Any = time.monotonic) -> None:
        self.codec, self.look_up, self._event, self._clock = codec, look_up, event, clock
        self.version: int | None = None  # of the stream being decoded
        self.bad = 0
        self.frame_messages = 0  # frame messages seen (FrameStart / v2 frame packets)
        self.captures: dict[float, float] = {}  # stream ts -> capture time (latency)
        self.warned: set[str] = set()
        self._last_frame: float | None = None  # clock() when the stream in use last gave a frame

    @property
    def decoder(self) -> Any:
        if self.codec is None or self.version is None:
            return None
        return self.codec.decoder2 if self.version == 2 else self.codec.decoder

    @property
    def header(self) -> Any:
        dec = self.decoder
        return None if dec is None else dec.header

    def frame_rate(self) -> float | None:
        """Frame messages per second the header announces (None: no header yet)."""
        h = self.header
        if h is None or not h.fps > 0:
            return None
        return h.fps / getattr(h, "frame_step", 1)

    def feed(self, r: Any) -> list:
        """One ``Received`` -> the frames it completes (often none)."""
        try:
            return self._feed(r)
        except CodecError as exc:
            self.bad += 1
            log.info("message rejected: %s", exc)
            return []

    def _feed(self, r: Any) -> list:
        from streamcap_codecs.messages import FrameStart, StreamHeader
        from streamcap_codecs.packet import KIND_FRAME, KIND_HEADER, unpack
        from streamcap_codecs.wire import from_frames

        if r.version == 2:
            msg = r.frames[0]
            kind = msg[0] & 3 if msg else -1
            hdr = unpack(msg) if kind == KIND_HEADER else None
            self.frame_messages += kind == KIND_FRAME
        else:
            msg = from_frames(r.frames)
            hdr = msg if isinstance(msg, StreamHeader) else None
            self.frame_messages += isinstance(msg, FrameStart)
        if hdr is not None:
            self._take_header(hdr, r.version)
        elif self.version != r.version or self.header is None:
            return []  # mid-stream: nothing decodes before the header and keyframes we asked for
        if r.version == 1:
            if r.capture_ts is not None:
                self._capture(msg.ts, r.capture_ts)
            out = self.codec.decoder.feed(msg)
        else:
            fr = self.codec.decoder2.feed(msg)
            out = [] if fr is None else [fr]
            if fr is not None and r.capture_ts is not None:
                self._capture(fr.ts, r.capture_ts)
        if out:
            self._last_frame = self._clock()
        return out

    def _capture(self, ts: float, cap: float) -> None:
        self.captures[ts] = cap
        if len(self.captures) > 256:
            for k in sorted(self.captures)[:128]:
                del self.captures[k]

    def _take_header(self, hdr: Any, version: int) -> None:
        found = None
        if self.codec is None or not self.codec.accepts(hdr):
            key = f"{hdr.bundle_id}/{hdr.basis_id}"
            found = _shipped_codec(hdr) if self.look_up and key not in self.warned else None
            if found is None:  # not decodable here (or forged): skip, say so once
                if key not in self.warned:
                    self.warned.add(key)
                    if self._event is not None:
                        self._event(f"stream uses bundle {hdr.bundle_id!r} (codec {hdr.basis_id}), "
                                    "which this receiver does not have: skipping its messages")
                raise CodecError(f"stream header names bundle {hdr.bundle_id!r}, not decodable here")
        if found is not None or (self.version is not None and version != self.version):
            from streamcap_codecs.limits import MIN_RESTART_S

            if self._last_frame is not None and self._clock() - self._last_frame < MIN_RESTART_S:
                raise CodecError(f"stream header of version {version}, bundle {hdr.bundle_id!r} while another stream "
                                 "is decoding: ignored")
            self._last_frame = None
        if found is not None:
            self.codec = ReceiverCodec(found[1], found[0].layout, found[0].name)
        self.version = version


def stuck_after(sender_info: dict, fps: float | None = None) -> float:
    """Seconds without a rendered frame after which a live stream counts as stuck: STUCK_S, or
    three of the sender's frame intervals when it runs slower than 3 fps (``fps``: the stream
    header's frame rate, else what the sender's heartbeats say)."""
    fps = fps or sender_info.get("fps")
    if isinstance(fps, (int, float)) and fps > 0:
        return max(STUCK_S, 3.0 / fps)
    return STUCK_S


def _shipped_codec(hdr: Any) -> tuple[Any, Any] | None:
    """(bundle, codec basis) of the shipped bundle a stream header names, if its codec is the
    header's; else None. The name comes from the network: only plain names inside the
    package's models folder are looked up."""
    from ..bundle import load_bundle, shipped_bundle
    from .codec import load_codec

    path = shipped_bundle(hdr.bundle_id)
    if path is None:
        return None
    try:
        bundle = load_bundle(path)
        basis = load_codec(bundle)
    except (BundleError, CodecError, ValueError, OSError):
        return None
    if basis.id != hdr.basis_id or bundle.layout.hash != hdr.layout_hash:
        return None
    return bundle, basis


def _digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def run_receive(args: argparse.Namespace) -> int:
    """SUB -> decoder -> renderer -> window / mp4 / stats until ``--frames``, a signal or a timeout."""
    from ..bundle import load_bundle
    from ..render import FaceRenderer
    from ..transport import CurveKeys, Subscriber, side_endpoint
    from ..videowriter import VideoWriter, check_video_output
    from .codec import load_codec

    side_endpoint(args.connect)  # a malformed endpoint fails now, before the renderer starts
    if args.frames < 0:
        raise InputError("--frames must be >= 0")
    check_number("--timeout", args.timeout, 0.0)
    if not 0.0 <= args.simulate_loss < 1.0:
        raise InputError(f"--simulate-loss must be in [0, 1), got {args.simulate_loss:g}")
    window = not args.headless and _window_possible()
    if not window and args.output is None and not args.headless:
        raise InputError("no display for a window here: give -o OUT.mp4 or --headless")
    if args.output is not None:
        check_video_output(args.output)
    check_writable(args.output, "output")
    check_writable(args.stats, "--stats")
    curve = CurveKeys(args.curve_keys) if args.curve_keys else None
    if curve is not None:
        curve.client_secret(), curve.server_public()  # missing keys: one line now
    # load the codec before connecting, so joining costs only the keyframe round trip
    try:
        bundle = load_bundle(args.bundle)
        basis = load_codec(bundle)
    except BundleError:
        if args.bundle is not None:
            raise
        bundle = basis = None  # no usable default bundle here: use the one the stream names
    status = Status("streamcap receive")
    stats = ReceiveStats(args.connect)
    started = time.monotonic()
    sub = writer = renderer = None
    warned: set[str] = set()
    with GracefulStop() as stop:
        try:
            live = LiveDecoder(None if bundle is None else ReceiverCodec(basis, bundle.layout, bundle.name),
                               look_up=args.bundle is None, event=status.event)
            if bundle is not None:  # ready before the first frame (a stream of another layout makes its own)
                renderer = FaceRenderer(640, 480, bundle.layout, window=window)
            sub = Subscriber(args.connect, curve=curve, drop_probability=args.simulate_loss, seed=0)
            state = ""
            last_all = last_face = started
            last_progress = started
            black = np.zeros((480, 640, 3), np.uint8)  # one plate, re-made only when the size changes
            sub.request_keyframe(None)  # joining: the header, the background and every face's keyframe
            stats.keyframe_requests += 1
            closed = False
            while not (stop.requested or closed or (args.frames and stats.rendered >= args.frames)):
                r = sub.recv(0.2)
                now = time.monotonic()
                if sub.state != state:
                    state = sub.state
                    if state == "live" and stats.first_heard is None:
                        stats.first_heard = now
                        last_all = now  # the request queued at start went out on connecting
                    status.event(f"{state} ({args.connect})" if state != "live" else f"sender live at {args.connect}")
                if sub.handshake_error and sub.handshake_error not in warned:
                    warned.add(sub.handshake_error)
                    status.event(sub.handshake_error)
                if sub.state != "live":
                    silent = now - (sub.heard_at or started)
                    if args.timeout and silent > args.timeout:
                        if stats.rendered == 0:
                            why = f": {sub.handshake_error}" if sub.handshake_error else ""
                            raise TransportTimeout(f"no stream from {args.connect} within {args.timeout:g} s{why}")
                        status.event(f"sender silent for {args.timeout:g} s: stopping")
                        break
                elif now - max(last_progress, last_all) > (stuck_after(sub.sender_info, live.frame_rate())
                                                           if live.header is not None else REQUEST_ALL_S):
                    # alive but nothing decodes (header or keyframes lost, a forged sequence
                    # number...): ask for everything; the header resets the decoder
                    sub.request_keyframe(None)
                    stats.keyframe_requests += 1
                    last_all = now
                if r is None:
                    status.line(f"{sub.state}  ({args.connect})  rendered {stats.rendered}", force=True)
                    continue
                done = live.feed(r)
                stats.bad = live.bad
                if stats.first_frame is None:
                    stats.frames_before_first = live.frame_messages
                dec = live.decoder
                if dec is None:
                    continue
                if writer is None and args.output is not None and dec.header is not None:
                    writer = VideoWriter(args.output, dec.header.fps if dec.header.fps > 0 else 30.0)
                if dec.need_keyframe and now - last_face > REQUEST_FACE_S:
                    sub.request_keyframe(sorted(dec.need_keyframe))
                    stats.keyframe_requests += 1
                    last_face = now
                if dec.header is not None and dec.background is None and now - last_all > REQUEST_ALL_S:
                    sub.request_keyframe(None)  # the background plate was lost
                    stats.keyframe_requests += 1
                    last_all = now
                for fr in done:
                    faces = [f for f in fr.faces if f.vertices.size]  # (v2: a face waiting for its first keyframe)
                    if not faces and fr.need_keyframe and fr.background is None:
                        continue  # nothing to show yet
                    last_progress = now  # decoding: a receiver that is behind is not stuck
                    hdr = dec.header
                    fps = float(hdr.fps) if hdr is not None and hdr.fps > 0 else 30.0
                    # behind (more queued, this frame already old): decode it, show a newer one
                    late = time.time() - r.send_ts > max(LATE_S, 2.0 / fps) and sub.pending()
                    entry: dict[str, Any] = {
                        "i": fr.frame_index, "ts": fr.ts, "complete": fr.complete, "shown": int(not late),
                        "faces": [[f.face_id, int(f.stale), int(f.keyframe)] for f in faces]}
                    if args.stats is not None:
                        entry["geo"] = _digest([f.vertices for f in faces])
                    if late:
                        stats.skipped += 1
                        entry["t"] = round(time.monotonic() - started, 3)
                        stats.frames.append(entry)
                        continue
                    size = (int(hdr.width) or 640, int(hdr.height) or 480) if hdr is not None else (640, 480)
                    if live.version == 2 and fr.background is not None:
                        bg = dec.head_warp(faces)
                    elif fr.background is not None:
                        bg = fr.background
                    else:
                        if black.shape[:2] != (size[1], size[0]):
                            black = np.zeros((size[1], size[0], 3), np.uint8)
                        bg = black
                    if renderer is None or renderer.layout.hash != live.codec.layout.hash:
                        if renderer is not None:
                            renderer.close()
                        renderer = FaceRenderer(640, 480, live.codec.layout, window=window)
                    img = renderer.render(bg, [(f.posmap, f.texture) for f in faces])
                    if window and not renderer.show(img):
                        status.event("window closed")
                        closed = True
                    done_at = time.time()
                    cap = live.captures.get(fr.ts)
                    lat = (done_at - cap) * 1e3 if cap is not None else None
                    if writer is not None:
                        writer.write(img)
                    now = time.monotonic()
                    stats.rendered += 1
                    last_progress = now
                    if stats.first_frame is None:
                        stats.first_frame = now
                        heard = stats.first_heard or started
                        status.event(f"first frame {now - heard:.2f} s after hearing the sender "
                                     f"({stats.frames_before_first} sender frames)")
                    stats.last_frame = now
                    if lat is not None:
                        stats.latency_ms.append(lat)
                    for f in faces:
                        fs = stats.faces.setdefault(f.face_id, FaceStats())
                        fs.shown += 1
                        fs.stale += f.stale
                        if lat is not None and not f.stale:
                            fs.latency_ms.append(lat)
                    entry.update(t=round(now - started, 3), lat=None if lat is None else round(lat, 2))
                    if args.stats is not None:
                        entry["img"] = _digest([img])
                    stats.frames.append(entry)
                    med = np.median(stats.latency_ms) if stats.latency_ms else float("nan")
                    status.line(f"{sub.state}  frame {fr.frame_index}  {stats.fps():5.1f} fps  latency {med:5.0f} ms  "
                                f"lost {sub.stats.lost}  bad {live.bad + sub.stats.malformed}  "
                                f"skipped {stats.skipped}  {stats.face_summary()}")
        finally:
            stop.shield()
            if writer is not None:
                writer.close()
            if renderer is not None:
                renderer.close()
            if sub is not None:
                sub.close()
            status.done()
            if args.stats is not None and sub is not None:
                write_json(args.stats, stats.to_json(sub.stats, stop.name or None, started))
    t = sub.stats
    med = np.median(stats.latency_ms) if stats.latency_ms else float("nan")
    how = f"stopped by {stop.name} after" if stop.requested else "received"
    out = f", {args.output} holds them" if args.output is not None else ""
    print(f"streamcap receive: {how} {stats.rendered} frames ({stats.fps():.1f} fps{out}), median latency "
          f"{med:.1f} ms, {t.lost} messages lost, {stats.bad + t.malformed} bad skipped, "
          f"{stats.keyframe_requests} keyframe requests  {stats.face_summary()}", file=sys.stderr)
    return stop.exit_code if stop.requested else 0
