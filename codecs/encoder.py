"""Stateful face-stream encoder: keyframes, closed-loop deltas, faces coming and going, rate control.

Per face, a **keyframe** (quantised pose + basis coefficients + JPEG UV texture, optional
residual) goes out when the face appears, on the keyframe schedule (all faces at once, with a
background plate, so a file reader can seek there) and when a receiver asks; otherwise a
**delta** carries the change of the pose integers and coefficient integers. Deltas are computed
against the reconstruction the decoder will hold (``quant.apply_delta``), not against the
previous input, so quantisation error never accumulates however long the stream runs.

Rate control (``kbps``): each face has its own coefficient step, moved in log2 space so that
its delta bits plus its amortised keyframe bits meet the target. Texture quality follows
``quality`` and is not rate controlled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import SimilarityFit

from .basis import GeometryBasis, check_layout, pose_from_similarity, to_canonical
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
from .quant import (
    STEP_MAX,
    STEP_MIN,
    apply_delta,
    delta_for,
    dequantise,
    dequantise_pose,
    jpeg_quality,
    quality_to_step,
    quantise_pose,
)
from .residual import pool_residual, quantise_residual, residual_vertices
from .wire import message_size

log = logging.getLogger(__name__)

# (face_id, vertices (V, 3), texture (S, S, 3) | None | a callable returning one, called only for a keyframe)
FaceInput = tuple[int, np.ndarray, "np.ndarray | Callable[[], np.ndarray | None] | None"]


@dataclass
class _FaceState:
    """What the encoder knows the decoder holds for one face (plus rate-control memory)."""

    last_seq: int
    pose_q: np.ndarray  # (7,) int64
    recon: np.ndarray  # (K,) float32, bit-identical to the decoder's
    residual: np.ndarray | None  # (V, 3) float32 decoded residual, or None
    log2_step: float
    delta_bits_ema: float | None = None
    key_bits: float | None = None


@dataclass
class EncoderStats:
    """Bytes on the wire (msgpack header + payloads, no transport framing) by message type."""

    frames: int = 0
    keyframes: int = 0
    deltas: int = 0
    keyframe_bytes: int = 0
    delta_bytes: int = 0
    background_bytes: int = 0
    other_bytes: int = 0  # stream headers, frame markers, FaceGone
    face_bytes: dict[int, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.keyframe_bytes + self.delta_bytes + self.background_bytes + self.other_bytes


class FaceStreamEncoder:
    """Turns per-frame faces into codec messages (see module doc).

    ``quality`` 1..100 sets the initial coefficient step and the JPEG qualities; ``kbps`` (per
    face, keyframes included) turns on rate control. ``texture_size`` is the side of the texture
    JPEG. ``residual_grid`` > 0 adds a (G, G, 3) residual map to keyframes. ``repeat_header``
    sends the StreamHeader again before every scheduled keyframe (files: a reader can start
    after a damaged first header). ``pose_subsample`` and ``project_subsample``: every how many
    vertices the pose fit and (without residual) the coefficient fit read
    (``GeometryBasis.projector``); the decoder does not depend on either.
    """

    def __init__(self, basis: GeometryBasis, layout: UVLayout, quality: float = 50, kbps: float | None = None,
                 keyframe_every_s: float = 5.0, texture_size: int = 128, *, fps: float = 30.0,
                 bundle_id: str = "", background: bool = True, background_scale: float = 0.5,
                 background_quality: int | None = None, residual_grid: int = 0, residual_step: float = 0.25,
                 pose_subsample: int = 4, project_subsample: int = 4, repeat_header: bool = False) -> None:
        check_layout(basis, layout, ValueError)
        if kbps is not None and not kbps > 0:
            raise ValueError("kbps must be positive")
        if not fps > 0:
            raise ValueError("fps must be positive")
        if residual_grid and layout.size % residual_grid:
            raise ValueError(f"residual_grid must divide the UV size {layout.size}")
        self.basis, self.layout = basis, layout
        self.quality = float(quality)
        self.kbps = kbps
        self.keyframe_every_s = keyframe_every_s
        self.texture_size = int(texture_size)
        self.fps = float(fps)
        self.bundle_id = bundle_id
        self.background = background
        self.background_scale = background_scale
        self.background_quality = background_quality or max(10, int(quality) // 2)
        self.residual_grid = residual_grid
        self.residual_step = residual_step
        self.pose_subsample = max(1, int(pose_subsample))
        self.repeat_header = repeat_header
        self.project_subsample = max(1, int(project_subsample))
        self._pose_fit = SimilarityFit(layout.canonical[:: self.pose_subsample])
        self.stats = EncoderStats()
        self._faces: dict[int, _FaceState] = {}
        self._seq = 0
        self._frame_size: tuple[int, int] | None = None
        self._header_due = True
        self._next_full_ts: float | None = None
        self._full_requested = False
        self._requested: set[int] = set()
        self._frame_index = 0
        self._tex_mask = self._texture_mask()

    # ------------------------------------------------------------------------------ public

    def header(self) -> StreamHeader:
        """The stream header for this encoder (sent first, and again on a request for all)."""
        w, h = self._frame_size or (0, 0)
        return StreamHeader(seq=0, ts=0.0, bundle_id=self.bundle_id, layout_hash=self.layout.hash,
                            basis_id=self.basis.id, n_components=self.basis.n_components, fps=self.fps,
                            width=w, height=h)

    def request_keyframe(self, face_id: int | None = None) -> None:
        """Send a keyframe of ``face_id`` on the next frame; None: every face, the background
        and the stream header (what a receiver that joined late needs)."""
        if face_id is None or face_id == ALL_FACES:
            self._full_requested = True
        else:
            self._requested.add(int(face_id))

    def handle_request(self, req: KeyframeRequest) -> None:
        """Act on a receiver's KeyframeRequest."""
        self.request_keyframe(None if req.face_id == ALL_FACES else req.face_id)

    def face_step(self, face_id: int) -> float:
        """Current coefficient quantisation step of a face (rate control moves it)."""
        return float(np.float32(2.0 ** self._faces[face_id].log2_step))

    def encode(self, image: np.ndarray | None, faces: Sequence[FaceInput], ts: float | None = None,
               frame_index: int | None = None) -> list[Message]:
        """Encode one video frame -> messages in send order.

        ``image`` (H, W, 3) uint8 BGR (for background plates; None: no background), ``faces``
        [(face_id, vertices (V, 3) image space, uv_texture (S, S, 3) uint8 BGR or None)]; the
        texture may be a callable that returns it, so it is computed only for keyframes.
        ``ts`` seconds (default frame_index / fps), ``frame_index`` (default: a counter).
        """
        index = self._frame_index if frame_index is None else int(frame_index)
        self._frame_index = index + 1
        ts = index / self.fps if ts is None else float(ts)
        ts = round(ts * 1e6) / 1e6  # what the wire carries (integer microseconds)
        ids = [int(f[0]) for f in faces]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate face ids in one frame: {ids}")
        if image is not None and self._frame_size is None:
            self._frame_size = (int(image.shape[1]), int(image.shape[0]))

        full = self._full_requested or self._next_full_ts is None or (
            self.keyframe_every_s > 0 and ts >= self._next_full_ts)
        if full:
            self._next_full_ts = ts + self.keyframe_every_s
            self._header_due = self._header_due or self._full_requested or self.repeat_header
        self._full_requested = False

        out: list[Message] = []
        if self._header_due:
            hdr = self.header()
            hdr.seq, hdr.ts = self._next_seq(), ts
            out.append(hdr)
            self._count_other(hdr)
            self._header_due = False

        gone = [fid for fid in self._faces if fid not in ids]
        send_bg = full and self.background and image is not None
        start = FrameStart(seq=self._next_seq(), ts=ts, frame_index=index, face_ids=tuple(ids),
                           n_messages=int(send_bg) + len(gone) + len(ids))
        out.append(start)
        self._count_other(start)
        if send_bg:
            assert image is not None
            bg = self._background(image, ts)
            out.append(bg)
            self.stats.background_bytes += message_size(bg)
        for fid in gone:
            del self._faces[fid]
            msg_gone = FaceGone(seq=self._next_seq(), ts=ts, face_id=fid)
            out.append(msg_gone)
            self._count_other(msg_gone)
        prepared = [(int(fid), *self._pose(int(fid), verts), tex) for fid, verts, tex in faces]
        targets: dict[int, np.ndarray] = {}
        if not self.residual_grid and prepared:
            # no residual: the faces' coefficients come from one pass over the (subsampled) basis
            idx = self.basis.projector(self.project_subsample)[0]
            canon = np.stack([to_canonical(v[idx], dequantise_pose(q)) for _, q, v, _ in prepared])
            coeffs = self.basis.encode_many(canon, self.project_subsample)
            targets = {p[0]: c for p, c in zip(prepared, coeffs)}
        for fid, pose_q, v, tex in prepared:
            key = full or fid not in self._faces or fid in self._requested
            self._requested.discard(fid)
            out.append(self._encode_face(fid, pose_q, v, tex, ts, key, targets.get(fid)))
        self._requested &= set(ids)  # a request for a face that is gone lapses
        self.stats.frames += 1
        return out

    # ------------------------------------------------------------------------------ internals

    def _next_seq(self) -> int:
        s = self._seq
        self._seq += 1
        return s

    def _count_other(self, msg: Message) -> None:
        self.stats.other_bytes += message_size(msg)

    def _initial_log2_step(self) -> float:
        return math.log2(quality_to_step(self.quality))

    def _step_of(self, st: _FaceState) -> float:
        return float(np.float32(2.0 ** st.log2_step))

    def _pose(self, fid: int, verts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image-space vertices -> (quantised pose (7,) int64, the vertices as float32 (V, 3)).
        Vertices are normalised with the pose the decoder will use (``dequantise_pose``), so the
        coefficients absorb its rounding."""
        v = np.asarray(verts, np.float32)
        if v.shape != (self.layout.n_vertices, 3) or not np.isfinite(v).all():
            raise ValueError(f"face {fid}: vertices must be finite ({self.layout.n_vertices}, 3), got {v.shape}")
        scale, rot, t = self._pose_fit.fit(v[:: self.pose_subsample])
        return quantise_pose(pose_from_similarity(scale, rot, t)).astype(np.int64), v

    def _encode_face(self, fid: int, pose_q: np.ndarray, v: np.ndarray, tex, ts: float, key: bool,
                     target: np.ndarray | None = None) -> Message:
        """One face's message; ``target``: its basis coefficients when already computed (no residual)."""
        canon = to_canonical(v, dequantise_pose(pose_q)) if target is None else None
        st = self._faces.get(fid)
        seq = self._next_seq()
        if key:
            log2_step = st.log2_step if st is not None else self._initial_log2_step()
            step = float(np.float32(2.0 ** log2_step))
            residual_q, residual = None, None
            if self.residual_grid:
                fit = self.basis.decode(self.basis.encode(canon))
                cells = pool_residual(canon - fit, self.layout, self.residual_grid)
                residual_q = quantise_residual(cells, self.residual_step)
                residual = residual_vertices(residual_q, self.residual_step, self.layout)
            if target is None:
                target = self.basis.encode(canon if residual is None else canon - residual)
            q = delta_for(target, np.zeros_like(target), step)
            jpeg, side = self._texture_jpeg(tex)
            msg: Message = FaceKeyframe(seq=seq, ts=ts, face_id=fid, pose_q=pose_q.astype(np.int32),
                                        coeffs_q=q.astype(np.int32), step=step, texture_jpeg=jpeg,
                                        texture_size=side, residual_q=residual_q,
                                        residual_step=self.residual_step if residual_q is not None else 0.0)
            new = _FaceState(last_seq=seq, pose_q=pose_q, recon=dequantise(q, step), residual=residual,
                             log2_step=log2_step)
            if st is not None:
                new.delta_bits_ema, new.key_bits = st.delta_bits_ema, st.key_bits
            self._faces[fid] = st = new
            bits = 8 * message_size(msg)
            self.stats.keyframes += 1
            self.stats.keyframe_bytes += bits // 8
            st.key_bits = bits if st.key_bits is None else 0.5 * (st.key_bits + bits)
        else:
            assert st is not None
            step = self._step_of(st)
            if target is None:
                target = self.basis.encode(canon if st.residual is None else canon - st.residual)
            d = delta_for(target, st.recon, step)
            msg = FaceDelta(seq=seq, ts=ts, face_id=fid, ref_seq=st.last_seq,
                            pose_dq=(pose_q - st.pose_q).astype(np.int32), coeff_dq=d.astype(np.int32),
                            step=step)
            st.recon = apply_delta(st.recon, d, step)
            st.pose_q = pose_q
            st.last_seq = seq
            bits = 8 * message_size(msg)
            self.stats.deltas += 1
            self.stats.delta_bytes += bits // 8
            st.delta_bits_ema = bits if st.delta_bits_ema is None else 0.9 * st.delta_bits_ema + 0.1 * bits
            self._rate_control(st)
        self.stats.face_bytes[fid] = self.stats.face_bytes.get(fid, 0) + bits // 8
        return msg

    def _rate_control(self, st: _FaceState) -> None:
        """Move the face's log2 step toward the delta budget left after amortised keyframes."""
        if self.kbps is None or st.delta_bits_ema is None:
            return
        target = self.kbps * 1000.0 / self.fps  # bits per frame
        period = self.keyframe_every_s * self.fps if self.keyframe_every_s > 0 else math.inf
        key_share = (st.key_bits or 0.0) / period
        budget = max(target - key_share, 0.1 * target)
        err = math.log2(max(st.delta_bits_ema, 1.0) / budget)
        st.log2_step = float(np.clip(st.log2_step + 0.1 * err, math.log2(STEP_MIN * 10), math.log2(STEP_MAX / 10)))

    def _texture_mask(self) -> np.ndarray:
        """(T, T) bool: texture pixels that cover face surface at the JPEG size."""
        m = self.layout.face_mask.astype(np.float32)
        t = self.texture_size
        if t <= 0:
            return np.zeros((0, 0), bool)
        return cv2.resize(m, (t, t), interpolation=cv2.INTER_AREA) > 0.01

    def _texture_jpeg(self, tex) -> tuple[bytes, int]:
        if callable(tex) and self.texture_size > 0:
            tex = tex()
        if tex is None or self.texture_size <= 0:
            return b"", 0
        tex = np.asarray(tex)
        if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] != 3:
            raise ValueError(f"uv texture must be (S, S, 3) uint8, got {tex.shape} {tex.dtype}")
        t = self.texture_size
        small = cv2.resize(tex, (t, t), interpolation=cv2.INTER_AREA)
        if self._tex_mask.any():
            # off-face pixels are never drawn: a flat fill costs the JPEG almost nothing
            small[~self._tex_mask] = small[self._tex_mask].mean(0).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality(self.quality)])
        if not ok:
            raise ValueError("JPEG encoding of the texture failed")
        return buf.tobytes(), t

    def _background(self, image: np.ndarray, ts: float) -> BackgroundKeyframe:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        h, w = img.shape[:2]
        sw, sh = max(1, round(w * self.background_scale)), max(1, round(h * self.background_scale))
        small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w, h) else img
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, int(self.background_quality)])
        if not ok:
            raise ValueError("JPEG encoding of the background failed")
        return BackgroundKeyframe(seq=self._next_seq(), ts=ts, jpeg=buf.tobytes(), width=sw, height=sh)
