"""Stateful face-stream decoder: per-face state, frame assembly, gap detection, recovery.

Every face message is checked against the decoder's state before it changes anything: a delta
whose ``ref_seq`` is not the last message this decoder applied for that face (a message was
lost), or a delta for a face it does not know, is dropped and the face is listed in
``need_keyframe`` (a value the receiver turns into KeyframeRequest messages). Until the
keyframe comes, frames carry the face's last good state marked ``stale``. A message that is
malformed or inconsistent raises ``CodecError`` and leaves the state as it was, so decoding
goes on with the next good message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from streamcap.errors import CodecError
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import Pose

from .basis import GeometryBasis, check_layout, from_canonical
from .messages import (
    ALL_FACES,
    BackgroundKeyframe,
    FaceDelta,
    FaceGone,
    FaceKeyframe,
    FrameStart,
    KeyframeRequest,
    Message,
    StreamHeader,
)
from .limits import MAX_SEQ_JUMP
from .quant import apply_delta, dequantise, dequantise_pose, pose_is_sane
from .residual import residual_vertices
from .wire import from_frames

log = logging.getLogger(__name__)


@dataclass
class DecodedFace:
    """One face of a decoded frame. ``vertices`` (V, 3) and ``posmap`` (S, S, 3, zero off-face)
    are float32 image space; ``texture`` (S, S, 3) uint8 BGR from the last keyframe (None if it
    had none; the same array until the next keyframe: treat as read-only). ``stale``: this
    frame's message for the face was lost, this is its last state."""

    face_id: int
    vertices: np.ndarray
    posmap: np.ndarray
    texture: np.ndarray | None
    pose: Pose
    keyframe: bool
    stale: bool = False


@dataclass
class DecodedFrame:
    """A frame as the decoder could rebuild it.

    ``frame_index`` is -1 when the frame's FrameStart was lost. ``background`` (H, W, 3) uint8
    is the latest plate (shared between frames: read-only). ``need_keyframe`` lists faces waiting for a
    keyframe; ``gap`` says
    messages were lost or rejected since the previous frame; ``complete`` that every message
    the FrameStart announced arrived and decoded.
    """

    frame_index: int
    ts: float
    seq: int
    faces: list[DecodedFace]
    background: np.ndarray | None
    need_keyframe: tuple[int, ...]
    gap: bool
    complete: bool


@dataclass
class _Face:
    seq: int
    pose_q: np.ndarray  # (7,) int64
    recon: np.ndarray  # (K,) float32
    residual: np.ndarray | None
    texture: np.ndarray | None
    last: DecodedFace


@dataclass
class _Open:
    """A frame being assembled."""

    start: FrameStart | None
    seq: int
    ts: float
    decoded: dict[int, DecodedFace] = field(default_factory=dict)
    received: int = 0
    gap: bool = False

    @property
    def end_seq(self) -> int | None:
        return None if self.start is None else self.start.seq + self.start.n_messages


class ResetGate:
    """At most one stream reset per ``min_s`` seconds (0: no limit): ``check()`` raises
    CodecError for a reset that comes sooner, else records it."""

    def __init__(self, min_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_s, self._clock = min_s, clock
        self._last: float | None = None

    def check(self) -> None:
        now = self._clock()
        if self.min_s > 0 and self._last is not None and now - self._last < self.min_s:
            raise CodecError(f"stream reset {now - self._last:.2f} s after the last one ignored "
                             f"(at most one per {self.min_s:g} s)")
        self._last = now


class FaceStreamDecoder:
    """Consumes messages (``feed``) or byte frames (``feed_frames``), returns finished frames."""

    def __init__(self, basis: GeometryBasis, layout: UVLayout, posmaps: bool = True, *,
                 min_restart_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        """``min_restart_s`` > 0: a StreamHeader that would reset the state (sender restart or
        new stream parameters) sooner than this after the last reset is rejected, so forged
        headers cannot keep a live receiver from ever rendering (FORMAT.md §11)."""
        check_layout(basis, layout, ValueError)
        self.min_restart_s = min_restart_s
        self._resets = ResetGate(min_restart_s, clock)
        self.basis, self.layout = basis, layout
        self.posmaps = posmaps
        self.header: StreamHeader | None = None
        self.background: np.ndarray | None = None
        self.need_keyframe: set[int] = set()
        self.rejected = 0
        self._faces: dict[int, _Face] = {}
        self._open: _Open | None = None
        self._last_seq: int | None = None
        self._pending_gap = False
        self._request_seq = 0
        self._want_all = False
        self._ready: list[DecodedFrame] = []

    # ------------------------------------------------------------------------------ public

    def reset(self) -> None:
        """Forget every face and the frame being assembled (e.g. after a seek)."""
        self._faces.clear()
        self._open = None
        self._last_seq = None
        self._pending_gap = False
        self.need_keyframe.clear()

    def feed_frames(self, frames: Sequence[bytes]) -> list[DecodedFrame]:
        """Parse and decode one message; CodecError if it is bad (state stays as it was)."""
        try:
            msg = from_frames(frames)
        except CodecError:
            self.rejected += 1
            raise
        return self.feed(msg)

    def feed(self, msg: Message) -> list[DecodedFrame]:
        """Apply one message; returns the frames finished since the last call (usually none or
        one; a frame finished by a message that raised comes out with the next call)."""
        if isinstance(msg, StreamHeader):
            try:
                self._on_header(msg)
            except CodecError:
                self.rejected += 1
                raise
            return self._take()
        if isinstance(msg, KeyframeRequest):
            return self._take()  # travels the other way; nothing to decode
        if self._last_seq is not None and self._last_seq - MAX_SEQ_JUMP < msg.seq <= self._last_seq:
            log.debug("dropping old or repeated message seq %d", msg.seq)
            return self._take()
        if self._last_seq is not None and abs(msg.seq - self._last_seq) > MAX_SEQ_JUMP:
            # not a gap but a discontinuity (a forged or foreign seq): decode on from here, so
            # one bad number cannot make every later message look like a duplicate
            log.info("sequence jumps from %d to %d", self._last_seq, msg.seq)
        try:
            commit = self._prepare(msg)  # a CodecError here leaves every state as it was
        except CodecError:
            self.rejected += 1
            raise
        if self.header is None:
            self._want_all = True
        gap = self._last_seq is not None and msg.seq != self._last_seq + 1
        self._last_seq = msg.seq
        if isinstance(msg, FrameStart):
            if self._open is not None:
                self._finish()
            self._open = _Open(start=msg, seq=msg.seq, ts=msg.ts, gap=gap or self._pending_gap)
            self._pending_gap = False
            for fid in [f for f in self._faces if f not in msg.face_ids]:
                self._drop(fid)  # its FaceGone was lost
            if msg.n_messages == 0:
                self._finish()
            return self._take()
        cur = self._open
        if cur is not None and (cur.end_seq is None or msg.seq <= cur.end_seq):
            cur.gap = cur.gap or gap
        else:  # this frame's FrameStart was lost: collect into a frame of unknown index
            if cur is not None:
                self._finish()
            self._open = cur = _Open(start=None, seq=msg.seq, ts=msg.ts, gap=True)
        commit(cur)
        cur.received += 1
        if cur.end_seq is not None and msg.seq == cur.end_seq:
            self._finish()
        return self._take()

    def flush(self) -> list[DecodedFrame]:
        """Finish the frame being assembled (end of stream) and return what is ready."""
        if self._open is not None:
            self._finish()
        return self._take()

    def keyframe_requests(self, ts: float = 0.0) -> list[KeyframeRequest]:
        """Requests to send upstream now: one per face waiting for a keyframe, or one for all
        faces when no stream header has been seen yet (a late join)."""
        ids = [ALL_FACES] if (self._want_all and self.header is None) else sorted(self.need_keyframe)
        out = []
        for fid in ids:
            out.append(KeyframeRequest(seq=self._request_seq, ts=ts, face_id=fid))
            self._request_seq += 1
        return out

    # ------------------------------------------------------------------------------ internals

    def _take(self) -> list[DecodedFrame]:
        out, self._ready = self._ready, []
        return out

    def _on_header(self, h: StreamHeader) -> None:
        if h.layout_hash != self.layout.hash:
            raise CodecError(f"stream uses UV layout {h.layout_hash}, this decoder has {self.layout.hash}")
        if h.basis_id != self.basis.id or h.n_components != self.basis.n_components:
            raise CodecError(f"stream uses codec basis {h.basis_id} (K={h.n_components}), this decoder "
                             f"has {self.basis.id} (K={self.basis.n_components})")
        restart = self._last_seq is not None and h.seq <= self._last_seq
        changed = self.header is not None and (h.width, h.height, h.bundle_id) != (
            self.header.width, self.header.height, self.header.bundle_id)
        if restart or changed:
            self._resets.check()
            if self._open is not None:
                self._finish()
            self.reset()
            self.background = None
        self.header = h
        self._want_all = False
        if self._last_seq is not None and h.seq > self._last_seq + 1:
            self._pending_gap = True
        self._last_seq = h.seq

    def _prepare(self, msg: Message) -> Callable[[_Open], None]:
        """Validate ``msg`` and compute its effect without changing anything; the returned
        function applies it to the decoder and the frame being assembled."""
        if isinstance(msg, FaceKeyframe):
            face, state = self._keyframe(msg)

            def commit(cur: _Open) -> None:
                self._faces[msg.face_id] = state
                self.need_keyframe.discard(msg.face_id)
                cur.decoded[msg.face_id] = face
            return commit
        if isinstance(msg, FaceDelta):
            res = self._delta(msg)

            def commit(cur: _Open) -> None:
                if res is None:  # reference lost: wait for a keyframe
                    self.need_keyframe.add(msg.face_id)
                    cur.gap = True
                    return
                face, pose_q, recon = res
                st = self._faces[msg.face_id]
                st.seq, st.pose_q, st.recon, st.last = msg.seq, pose_q, recon, face
                cur.decoded[msg.face_id] = face
            return commit
        if isinstance(msg, BackgroundKeyframe):
            img = self._background(msg)

            def commit(cur: _Open) -> None:
                self.background = img
            return commit
        if isinstance(msg, FaceGone):
            return lambda cur: self._drop(msg.face_id)
        if isinstance(msg, FrameStart):
            return lambda cur: None
        raise CodecError(f"unexpected message {type(msg).__name__}")

    def _drop(self, fid: int) -> None:
        self._faces.pop(fid, None)
        self.need_keyframe.discard(fid)

    def _keyframe(self, m: FaceKeyframe) -> tuple[DecodedFace, _Face]:
        k = self.basis.n_components
        if m.coeffs_q.shape != (k,):
            raise CodecError(f"keyframe of face {m.face_id} has {m.coeffs_q.shape} coefficients, basis K={k}")
        pose_q = np.asarray(m.pose_q, np.int64)
        if not pose_is_sane(pose_q):
            raise CodecError(f"keyframe of face {m.face_id} has an impossible pose")
        recon = dequantise(m.coeffs_q, m.step)
        residual = None
        if m.residual_q is not None:
            residual = residual_vertices(m.residual_q, m.residual_step, self.layout)
        prev = self._faces.get(m.face_id)
        texture = self._texture(m) if m.texture_jpeg else (prev.texture if prev else None)
        face = self._make_face(m.face_id, pose_q, recon, residual, texture, keyframe=True)
        return face, _Face(m.seq, pose_q, recon, residual, texture, face)

    def _delta(self, m: FaceDelta) -> tuple[DecodedFace, np.ndarray, np.ndarray] | None:
        k = self.basis.n_components
        if m.coeff_dq.shape != (k,):
            raise CodecError(f"delta of face {m.face_id} has {m.coeff_dq.shape} coefficients, basis K={k}")
        st = self._faces.get(m.face_id)
        if st is None or st.seq != m.ref_seq:
            why = "unknown face" if st is None else f"refers to {m.ref_seq}, last applied {st.seq}"
            log.info("face %d needs a keyframe (%s)", m.face_id, why)
            return None
        pose_q = st.pose_q + np.asarray(m.pose_dq, np.int64)
        if not pose_is_sane(pose_q):
            raise CodecError(f"delta of face {m.face_id} gives an impossible pose")
        recon = apply_delta(st.recon, m.coeff_dq, m.step)
        if not np.isfinite(recon).all() or np.abs(recon).max(initial=0) > 1e7:
            raise CodecError(f"delta of face {m.face_id} gives out-of-range coefficients")
        face = self._make_face(m.face_id, pose_q, recon, st.residual, st.texture, keyframe=False)
        return face, pose_q, recon

    def _make_face(self, fid: int, pose_q: np.ndarray, recon: np.ndarray, residual: np.ndarray | None,
                   texture: np.ndarray | None, keyframe: bool) -> DecodedFace:
        pose = dequantise_pose(pose_q)
        canon = self.basis.decode(recon)
        if residual is not None:
            canon = canon + residual
        verts = from_canonical(canon, pose)
        s = self.layout.size
        posmap = np.zeros((s * s, 3), np.float32)
        if self.posmaps:
            posmap[self.layout.face_ind] = verts
        return DecodedFace(fid, verts, posmap.reshape(s, s, 3), texture, pose, keyframe)

    def _texture(self, m: FaceKeyframe) -> np.ndarray:
        img = _imdecode(m.texture_jpeg)
        if img is None or img.shape != (m.texture_size, m.texture_size, 3):
            raise CodecError(f"texture JPEG of face {m.face_id} does not decode")
        s = self.layout.size
        return cv2.resize(img, (s, s), interpolation=cv2.INTER_LINEAR) if m.texture_size != s else img

    def _background(self, m: BackgroundKeyframe) -> np.ndarray:
        img = _imdecode(m.jpeg)
        if img is None or img.shape != (m.height, m.width, 3):
            raise CodecError("background JPEG does not decode")
        if self.header is not None and self.header.width > 0 and self.header.height > 0:
            size = (self.header.width, self.header.height)
            if (img.shape[1], img.shape[0]) != size:
                img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        return img

    def _finish(self) -> None:
        cur = self._open
        assert cur is not None
        self._open = None
        faces: list[DecodedFace] = []
        if cur.start is not None:
            for fid in cur.start.face_ids:
                if fid in cur.decoded:
                    faces.append(cur.decoded[fid])
                else:  # its message was lost or rejected: the next delta cannot apply
                    self.need_keyframe.add(fid)
                    if fid in self._faces:
                        faces.append(replace(self._faces[fid].last, stale=True))
            complete = (not cur.gap and cur.received == cur.start.n_messages)
            index = cur.start.frame_index
        else:
            faces = list(cur.decoded.values())
            complete, index = False, -1
        self._ready.append(DecodedFrame(
            frame_index=index, ts=cur.ts, seq=cur.seq, faces=faces, background=self.background,
            need_keyframe=tuple(sorted(self.need_keyframe)), gap=cur.gap, complete=complete))


def _imdecode(data: bytes) -> np.ndarray | None:
    """JPEG bytes -> (H, W, 3) uint8 BGR, or None when OpenCV cannot decode them."""
    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
