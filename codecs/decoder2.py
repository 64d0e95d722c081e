"""Face-stream decoder, wire v2 (see ``encoder2`` and FORMAT.md §9).

``feed(packet, seq=None)`` takes one packet (``seq``: the full sequence number when the
container knows it, as ``.scap`` v2 does; live packets carry it modulo 32) and returns the
decoded frame, if the packet was a frame. A packet that does not parse or does not decode
raises ``CodecError`` and leaves the geometry state as it was. A gap in the sequence, a face
whose section cannot apply, or a texture picture that does not decode puts the face in
``need_keyframe``; it shows its last state (``stale``) until a keyframe arrives.
``requests()`` gives the Request packets to send upstream.

``min_restart_s`` > 0 (a live receiver): a stream header that would reset the state (the
sender restarted, or new frame size / bundle / texture size / frame step) is refused with
``CodecError`` if it comes sooner than that after the last reset, so forged headers cannot keep
a receiver from decoding.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from streamcap.errors import CodecError
from streamcap.geometry.layout import UVLayout

from . import av1
from .basis import GeometryBasis, check_layout, from_canonical
from .decoder import DecodedFace, DecodedFrame, ResetGate
from .geomcode import GeometryModel, step_of
from .packet import SEQ_MOD, Request, StreamHeader2, pack, unpack
from .quant import apply_delta, dequantise, dequantise_pose, pose_is_sane

log = logging.getLogger(__name__)


@dataclass
class _Face:
    model: GeometryModel
    pose_q: np.ndarray
    recon: np.ndarray
    last: DecodedFace
    video: av1.VideoDecoder
    texture: np.ndarray | None
    texture_ok: bool


class FaceStreamDecoder2:
    def __init__(self, basis: GeometryBasis, layout: UVLayout, posmaps: bool = True, warp_plate: bool = True,
                 min_restart_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        check_layout(basis, layout, ValueError)
        self._resets = ResetGate(min_restart_s, clock)
        self.basis, self.layout, self.posmaps = basis, layout, posmaps
        self.warp_plate = warp_plate
        self._plate_xy: dict[int, np.ndarray] = {}  # face -> its vertices (x, y) when the plate was taken
        self.header: StreamHeader2 | None = None
        self.background: np.ndarray | None = None
        self.need_keyframe: set[int] = set()
        self.rejected = 0
        self._faces: dict[int, _Face] = {}
        self._ids: tuple[int, ...] | None = None
        self._last_seq: int | None = None
        self._want_all = True

    def feed(self, data: bytes, seq: int | None = None) -> DecodedFrame | None:
        try:
            return self._feed(data, seq)
        except CodecError:
            self.rejected += 1
            raise

    def requests(self) -> list[bytes]:
        """Request packets for the sender: everything when no header or face list is known,
        else one per face waiting for a keyframe."""
        if self._want_all or self.header is None:
            return [pack(Request(-1))]
        return [pack(Request(f)) for f in sorted(self.need_keyframe)]

    # ------------------------------------------------------------------ internals
    def _feed(self, data: bytes, seq: int | None) -> DecodedFrame | None:
        pkt = unpack(data, self._ids)
        if isinstance(pkt, Request):
            return None
        if isinstance(pkt, StreamHeader2):
            self._on_header(pkt)
            return None
        if self.header is None:
            self._want_all = True
            raise CodecError("frame packet before any stream header")
        full = self._full_seq(pkt.seq, seq)
        gap = self._last_seq is not None and full != self._last_seq + 1
        if self._last_seq is not None and full <= self._last_seq:
            log.debug("old or repeated packet %d", full)
            return None
        if gap:  # every delta now refers to a state we may not have
            for fid in self._faces:
                self.need_keyframe.add(fid)
        plate = self._plate(pkt.plate) if pkt.plate else None
        ids = pkt.face_ids if pkt.face_ids is not None else self._ids
        assert ids is not None
        decoded: dict[int, tuple[DecodedFace, _Face | None]] = {}
        for sec in pkt.sections:
            decoded[sec.face_id] = self._section(sec.face_id, sec.key, sec.geometry)
        # commit: nothing above changed any state
        self._last_seq = full
        if gap:  # texture pictures were lost too: each face's video waits for a key picture
            for st in self._faces.values():
                st.texture_ok = False
        self._ids = ids
        if plate is not None:
            self.background = plate
            self._plate_xy.clear()
        for fid in [f for f in self._faces if f not in ids]:
            self._faces.pop(fid)
            self.need_keyframe.discard(fid)
        faces = []
        for sec in pkt.sections:
            face, state = decoded[sec.face_id]
            if state is not None:
                self._faces[sec.face_id] = state
                self.need_keyframe.discard(sec.face_id)
            st = self._faces.get(sec.face_id)
            if st is None:
                continue
            if sec.texture:
                self._texture(sec.face_id, st, sec.texture, sec.key)
            face = replace(face, texture=st.texture)
            if state is None and sec.face_id in self.need_keyframe:
                face = replace(st.last, stale=True)
            else:
                st.last = face
            faces.append(face)
        if plate is not None:
            self._plate_xy = {f.face_id: f.vertices[::16, :2].copy() for f in faces if not f.stale}
        hdr = self.header
        index = full * hdr.frame_step
        return DecodedFrame(frame_index=index, ts=index / hdr.fps, seq=full, faces=faces,
                            background=self.head_warp(faces) if self.warp_plate else self.background,
                            need_keyframe=tuple(sorted(self.need_keyframe)),
                            gap=gap, complete=not gap and not self.need_keyframe)

    def head_warp(self, faces: list[DecodedFace]) -> np.ndarray | None:
        """The plate with the region around each face (hair, ears, neck) moved as one piece
        with the face: a 2D similarity from the face's vertices when the plate was taken to
        its vertices now, blended in through a feathered ellipse around the face (faded in as
        the head moves from 2% to 6% of its width away from where it was). The rest of
        the plate stays put. A new array per frame (the plate itself is not changed).
        With ``warp_plate=False`` frames carry the plate as it is, and a caller that shows only
        some of them (a live receiver that is behind) calls this for those, right after their
        packet."""
        bg = self.background
        if bg is None or not self._plate_xy:
            return bg
        out = None
        h, w = bg.shape[:2]
        for f in faces:
            ref = self._plate_xy.get(f.face_id)
            if ref is None or f.stale or not f.vertices.size:
                continue
            cur = f.vertices[::16, :2]
            m, _ = cv2.estimateAffinePartial2D(ref.astype(np.float32), cur.astype(np.float32), method=cv2.LMEDS)
            if m is None:
                continue
            (x0, y0), (x1, y1) = cur.min(0), cur.max(0)
            fw, fh = max(x1 - x0, 2.0), max(y1 - y0, 2.0)
            # how far the head moved since the plate, in face widths: below ~2% it is the
            # geometry's own jitter, which would only shake the plate; the warp fades in above
            moved = float(np.abs(ref @ m[:, :2].T + m[:, 2] - ref).max()) / fw
            weight = float(np.clip((moved - 0.02) / 0.04, 0.0, 1.0))
            if weight == 0.0:
                continue
            mask = np.zeros((h, w), np.float32)
            cv2.ellipse(mask, (int((x0 + x1) / 2), int(y0 + 0.45 * fh)), (int(0.95 * fw), int(1.15 * fh)), 0, 0, 360,
                        1.0, -1)
            k = int(0.25 * fw) * 2 + 1
            mask = cv2.GaussianBlur(mask, (k, k), 0)[..., None] * weight
            warped = cv2.warpAffine(bg, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            base = bg if out is None else out
            out = (base * (1 - mask) + warped * mask).astype(np.uint8)
        return bg if out is None else out

    def _full_seq(self, low: int, seq: int | None) -> int:
        if seq is not None:
            if seq % SEQ_MOD != low:
                raise CodecError(f"packet seq {low} does not match the container's {seq}")
            return seq
        base = (self._last_seq + 1) if self._last_seq is not None else self.header.next_seq  # type: ignore[union-attr]
        return base + ((low - base) % SEQ_MOD)

    def _on_header(self, h: StreamHeader2) -> None:
        if h.layout_hash != self.layout.hash:
            raise CodecError(f"stream uses UV layout {h.layout_hash}, this decoder has {self.layout.hash}")
        if h.basis_id != self.basis.id or h.n_components != self.basis.n_components:
            raise CodecError(f"stream uses codec basis {h.basis_id} (K={h.n_components}), this decoder has "
                             f"{self.basis.id} (K={self.basis.n_components})")
        old = self.header
        changed = old is not None and (old.width, old.height, old.bundle_id, old.texture_size, old.frame_step) != (
            h.width, h.height, h.bundle_id, h.texture_size, h.frame_step)
        restart = self._last_seq is not None and h.next_seq <= self._last_seq  # the sender restarted
        if changed or restart:
            self._resets.check()
        if changed:
            self._faces.clear()
            self.background = None
        if restart:
            self._faces.clear()
            self._ids = None
        self._last_seq = h.next_seq - 1 if h.next_seq > 0 else None
        self.header = h
        self._want_all = False

    def _section(self, fid: int, key: bool, geom: bytes) -> tuple[DecodedFace, _Face | None]:
        """Decode one face's geometry without changing any state -> (face, the face's new state,
        or None when the section cannot apply and the face waits for a keyframe)."""
        st = self._faces.get(fid)
        if key:
            model = GeometryModel(self.basis.stdev)
            idx, pose, coeffs = model.decode_key(geom)
            if not pose_is_sane(pose):
                raise CodecError(f"keyframe of face {fid} has an impossible pose")
            model.reset(idx)
            recon = dequantise(coeffs, step_of(idx))
            face = self._make_face(fid, pose, recon, True)
            video = st.video if st is not None else av1.VideoDecoder()
            tex = st.texture if st is not None else None
            return face, _Face(model, pose, recon, face, video, tex, False)
        if st is None or fid in self.need_keyframe:
            self.need_keyframe.add(fid)
            if st is None:
                return DecodedFace(fid, np.zeros((0, 3), np.float32), np.zeros((0, 0, 3), np.float32), None,
                                   dequantise_pose(np.zeros(7)), False, True), None
            return replace(st.last, stale=True), None
        model = st.model.copy()
        d_index, dp, dc = model.decode_delta(geom)
        pose = st.pose_q + dp
        if not pose_is_sane(pose):
            raise CodecError(f"delta of face {fid} gives an impossible pose")
        recon = apply_delta(st.recon, dc, step_of(model.step_index + d_index))
        if not np.isfinite(recon).all() or np.abs(recon).max(initial=0) > 1e7:
            raise CodecError(f"delta of face {fid} gives out-of-range coefficients")
        model.update(d_index, dp, dc)
        face = self._make_face(fid, pose, recon, False)
        return face, _Face(model, pose, recon, face, st.video, st.texture, st.texture_ok)

    def _texture(self, fid: int, st: _Face, data: bytes, key: bool) -> None:
        t = self.header.texture_size if self.header else 0
        if key:
            st.video.reset()
            st.texture_ok = True
        if not st.texture_ok:
            return  # waiting for a key picture
        try:
            st.texture = st.video.decode(data, (t, t))
        except CodecError as exc:
            log.info("face %d: texture picture does not decode (%s); waiting for a keyframe", fid, exc)
            st.texture_ok = False
            self.need_keyframe.add(fid)

    def _plate(self, data: bytes) -> np.ndarray:
        img = av1.decode_intra(data)
        h = self.header
        if h is not None and h.width > 0 and h.height > 0 and (img.shape[1], img.shape[0]) != (h.width, h.height):
            img = cv2.resize(img, (h.width, h.height), interpolation=cv2.INTER_LINEAR)
        return img

    def _make_face(self, fid: int, pose_q: np.ndarray, recon: np.ndarray, keyframe: bool) -> DecodedFace:
        pose = dequantise_pose(pose_q)
        verts = from_canonical(self.basis.decode(recon), pose)
        s = self.layout.size
        posmap = np.zeros((s * s, 3), np.float32)
        if self.posmaps:
            posmap[self.layout.face_ind] = verts
        return DecodedFace(fid, verts, posmap.reshape(s, s, 3), None, pose, keyframe)
