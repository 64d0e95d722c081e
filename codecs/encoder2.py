"""Face-stream encoder, wire v2: compact packets, entropy-coded geometry, AV1 texture video and plates.

Per frame packet and per face: the pose and basis coefficients (closed-loop deltas against
what the decoder holds, range-coded by ``geomcode``), and at ``texture_fps`` one picture of the
face's pose-free UV texture coded as low-delay AV1 video, so mouth, eyes, teeth and lighting
change over time. The background plate is an AV1 intra picture, sent at the start and again on
a scene change. The stream header goes out once per session and on request.

Keyframes are not on a clock: a face gets one when it appears, when a receiver asks, when its
delta would cost more than a keyframe (prediction error too large), or when ``max_key_s``
(a safety for files and late joiners; 0 = never) has passed.

Rate control (``kbps``, the whole stream): the texture video runs at a constant bit rate of
``texture_share`` of the target; a plate gets at most ``plate_seconds`` of the target's bits
(its size, 1/2 down to 1/8 of the frame, and its CRF are searched for the best picture
within that); the geometry step moves so that geometry, framing, container bytes the caller
reports (``container``) and the plates (amortised over 10 s) take the rest; and a bucket of
bits filled at ``kbps`` (0.5 s to start, at most 2 s) holds back texture pictures while it is empty,
so keyframes, plates and texture bursts do not push the stream over its target.
``rate_plan`` picks texture size, picture rate and frame step for a target.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import sample_texture, similarity_fit

from . import av1
from .basis import GeometryBasis, check_layout, from_canonical, pose_from_similarity, to_canonical
from .geomcode import SYMBOL_LIMIT, GeometryModel, index_of, step_of
from .packet import FaceSection, FramePacket, Request, StreamHeader2, pack
from .quant import apply_delta, delta_for, dequantise, dequantise_pose, quality_to_step, quantise_pose

FaceInput = tuple[int, np.ndarray, "np.ndarray | None"]  # (face_id, vertices (V, 3), uv texture (S, S, 3))
PLATE_SCALES = (0.5, 0.35, 0.25, 0.18, 0.125)  # plate sizes tried under a byte budget (of the frame's side)
STEP_FPS_LOW = 7.5  # geometry packets/s below 3 kbit/s
PLATE_CRFS = (36, 40, 44, 48, 52, 56, 60, 63)  # AV1 CRFs tried per size (the lowest that fits is kept)


def rate_plan(kbps: float | None, fps: float) -> dict:
    """Texture video side and picture rate and frame step for a whole-stream target (the CLI's
    defaults under ``--kbps`` and the benchmark's ladder): below 3 kbit/s geometry goes out at
    about 7.5 packets/s (the file decoder interpolates between packets), up to 10 kbit/s at
    about 15, above at the source rate."""
    if kbps is None:
        cfg = {"texture_size": 64, "texture_fps": 10.0, "frame_step": 1}
    elif kbps < 3:
        cfg = {"texture_size": 64, "texture_fps": 5.0, "frame_step": max(1, round(fps / STEP_FPS_LOW))}
    elif kbps < 6:
        cfg = {"texture_size": 64, "texture_fps": 7.5, "frame_step": max(1, round(fps / 15))}
    elif kbps < 10:
        cfg = {"texture_size": 64, "texture_fps": 10.0, "frame_step": max(1, round(fps / 15))}
    elif kbps < 15:
        cfg = {"texture_size": 96, "texture_fps": 10.0, "frame_step": 1}
    else:
        cfg = {"texture_size": 128, "texture_fps": 15.0, "frame_step": 1}
    cfg["texture_fps"] = min(cfg["texture_fps"], fps / cfg["frame_step"])
    return cfg


@dataclass
class _Face:
    model: GeometryModel
    pose_q: np.ndarray
    recon: np.ndarray
    key_bytes: int
    video: av1.VideoEncoder | None
    last_key_ts: float


@dataclass
class Stats2:
    """Bytes by kind: geometry (entropy-coded sections), texture (AV1), plate (AV1 intra),
    header (stream headers) and framing (everything else in the packets)."""

    frames: int = 0
    keyframes: int = 0
    geometry: int = 0
    texture: int = 0
    plate: int = 0
    header: int = 0
    framing: int = 0
    per_frame: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.geometry + self.texture + self.plate + self.header + self.framing


@dataclass
class Emitted:
    """One packet to send: bytes, full seq (frame packets) and whether it is a seek point."""

    data: bytes
    seq: int | None
    key: bool = False


class FaceStreamEncoder2:
    """See the module doc. ``frame_step`` > 1 sends every frame_step-th source frame."""

    def __init__(self, basis: GeometryBasis, layout: UVLayout, *, fps: float = 30.0, kbps: float | None = None,
                 quality: float = 50, texture_size: int = 64, texture_fps: float = 10.0,
                 texture_share: float = 0.55, texture_crf: int = 50, frame_step: int = 1,
                 plate_scale: float = 0.5, plate_crf: int = 50, plate_seconds: float = 1.0, max_key_s: float = 10.0,
                 scene_change: float = 25.0, bundle_id: str = "", pose_subsample: int = 4) -> None:
        check_layout(basis, layout, ValueError)
        if not fps > 0:
            raise ValueError("fps must be positive")
        if kbps is not None and not kbps > 0:
            raise ValueError("kbps must be positive")
        if texture_size and (texture_size < av1.MIN_SIDE or texture_size % 2):
            raise ValueError(f"texture_size must be 0 or an even number >= {av1.MIN_SIDE}")
        self.basis, self.layout = basis, layout
        self.fps, self.kbps, self.frame_step = float(fps), kbps, max(1, int(frame_step))
        self.texture_size, self.texture_fps = int(texture_size), float(texture_fps)
        self.texture_share, self.texture_crf = texture_share, texture_crf
        self.plate_scale, self.plate_crf, self.plate_seconds = plate_scale, plate_crf, plate_seconds
        self.max_key_s, self.scene_change = max_key_s, scene_change
        self.bundle_id, self.pose_subsample = bundle_id, max(1, int(pose_subsample))
        self.step_index = index_of(quality_to_step(quality))
        self.stats = Stats2()
        self._faces: dict[int, _Face] = {}
        self._ids: tuple[int, ...] | None = None
        self._seq = 0
        self._n = 0  # source frames seen
        self._size: tuple[int, int] | None = None
        self._header_due = True
        self._all_due = False
        self._requested: set[int] = set()
        self._plate_small: np.ndarray | None = None
        self._tex_slots: dict[int, int] = {}  # face -> texture-rate slot of its last picture
        self._recent: list[tuple[float, int, int]] = []  # (ts, geometry+framing+container bits, plate bits), 10 s
        self._container_bits = 0  # reported by ``container`` since the last frame packet
        self._geom_log2_adj = 0.0
        # whole-stream budget: a bucket of bits filled at kbps (0.5 s to start, at most 2 s);
        # texture pictures wait while it is empty. The first plate (up to plate_seconds) drains it,
        # so any first T seconds stay within kbps x (T + 0.5 s)
        self._tokens = (kbps or 0.0) * 500.0
        self._tex_bits = 0.0  # running size of a texture picture
        tex_mask = cv2.resize(layout.face_mask.astype(np.float32), (max(texture_size, 1),) * 2,
                              interpolation=cv2.INTER_AREA) > 0.01
        self._tex_mask = tex_mask

    # ------------------------------------------------------------------ public
    @property
    def frame_rate(self) -> float:
        """Frame packets per second."""
        return self.fps / self.frame_step

    def texture_kbps(self) -> float | None:
        return None if self.kbps is None else max(0.5, self.kbps * self.texture_share)

    def header(self) -> StreamHeader2:
        w, h = self._size or (0, 0)
        return StreamHeader2(self._seq, self.bundle_id, self.layout.hash, self.basis.id, self.basis.n_components,
                             int(round(self.fps * 1000)), self.frame_step, w, h, self.texture_size)

    def request_keyframe(self, face_id: int | None = None) -> None:
        """Keyframe for ``face_id`` with the next frame packet; None: all faces, plate, header."""
        if face_id is None or face_id < 0:
            self._all_due = self._header_due = True
        else:
            self._requested.add(int(face_id))

    def handle(self, req: Request) -> None:
        self.request_keyframe(req.face_id)

    def encode(self, image: np.ndarray | None, faces: Sequence[FaceInput]) -> list[Emitted]:
        """One source frame -> the packets to send now (none on frames that ``frame_step`` skips)."""
        n = self._n
        self._n += 1
        if n % self.frame_step:
            return []
        if image is not None and self._size is None:
            self._size = (int(image.shape[1]), int(image.shape[0]))
        ts = n / self.fps
        ids = tuple(int(f[0]) for f in faces)
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate face ids in one frame: {ids}")
        out: list[Emitted] = []
        first = self._seq == 0
        if self._header_due:
            hb = pack(self.header())
            out.append(Emitted(hb, None))
            self.stats.header += len(hb)
            self._header_due = False
        plate = b""
        if image is not None and (first or self._all_due or self._scene_changed(image, faces)):
            plate = self._plate(image)
            self._all_due = True  # a new plate is a seek point: every face keys with it
        for fid in [f for f in self._faces if f not in ids]:
            self._drop(fid)
        all_key = self._all_due
        sections = []
        for fid, verts, tex in faces:
            key = all_key or fid not in self._faces or fid in self._requested or (
                self.max_key_s > 0 and ts - self._faces[fid].last_key_ts >= self.max_key_s)
            sections.append(self._face(int(fid), verts, tex, ts, key, image))
        self._requested &= set(ids)
        self._requested -= {s.face_id for s in sections if s.key}
        send_ids = ids if (ids != self._ids or all_key) else None
        self._ids = ids
        pkt = FramePacket(self._seq, sections, send_ids, plate)
        data = pack(pkt)
        out.append(Emitted(data, self._seq, key=all_key))
        self._all_due = False
        self._seq += 1
        geo = sum(len(s.geometry) for s in sections)
        tex_b = sum(len(s.texture) for s in sections)
        self.stats.frames += 1
        self.stats.geometry += geo
        self.stats.texture += tex_b
        self.stats.plate += len(plate)
        self.stats.framing += len(data) - geo - tex_b - len(plate)
        self.stats.per_frame.append(len(data))
        other = sum(len(e.data) for e in out) - len(data)  # stream headers
        self._rate_control(ts, 8 * (len(data) + other - tex_b - len(plate)) + self._container_bits, 8 * len(plate))
        if self.kbps is not None:
            self._tokens -= 8 * sum(len(e.data) for e in out) + self._container_bits
            self._tokens = min(self._tokens + self.kbps * 1000.0 / self.frame_rate, 2 * self.kbps * 1000.0)
        self._container_bits = 0
        return out

    def container(self, nbytes: int) -> None:
        """Bytes a container added around the packets (chunk framing, index): counted against
        ``kbps`` like the packets, so the target holds for the whole file."""
        self._container_bits += 8 * max(0, int(nbytes))

    def close(self) -> None:
        """Release the texture video encoders."""
        for fid in list(self._faces):
            self._drop(fid)

    # ------------------------------------------------------------------ internals
    def _drop(self, fid: int) -> None:
        st = self._faces.pop(fid)
        if st.video is not None:
            st.video.close()
        self._tex_slots.pop(fid, None)

    def _face(self, fid: int, verts: np.ndarray, tex: np.ndarray | None, ts: float, key: bool,
              image: np.ndarray | None) -> FaceSection:
        v = np.asarray(verts, np.float32)
        if v.shape != (self.layout.n_vertices, 3) or not np.isfinite(v).all():
            raise ValueError(f"face {fid}: vertices must be finite ({self.layout.n_vertices}, 3), got {v.shape}")
        k = self.pose_subsample
        scale, rot, t = similarity_fit(self.layout.canonical[::k], v[::k])
        pose_q = quantise_pose(pose_from_similarity(scale, rot, t)).astype(np.int64)
        target = self.basis.encode(to_canonical(v, dequantise_pose(pose_q)))
        st = self._faces.get(fid)
        geom = b""
        if st is not None and not key:
            idx = int(np.clip(self.step_index + round(self._geom_log2_adj * 8), 0, 255))
            d_index = int(np.clip(idx - st.model.step_index, -2, 2))
            step = step_of(st.model.step_index + d_index)
            d = np.clip(delta_for(target, st.recon, step), -SYMBOL_LIMIT, SYMBOL_LIMIT)
            dp = np.clip(pose_q - st.pose_q, -SYMBOL_LIMIT, SYMBOL_LIMIT)
            geom = st.model.encode_delta(d_index, dp, d)
            if len(geom) >= st.key_bytes:  # prediction no longer pays: send a keyframe instead
                key = True
            else:
                st.model.update(d_index, dp, d)
                st.recon = apply_delta(st.recon, d, step)
                st.pose_q = st.pose_q + dp
        if key:
            idx = int(np.clip(self.step_index + round(self._geom_log2_adj * 8), 0, 255))
            step = step_of(idx)
            q = np.clip(delta_for(target, np.zeros_like(target), step), -SYMBOL_LIMIT, SYMBOL_LIMIT)
            model = st.model if st is not None else GeometryModel(self.basis.stdev)
            geom = model.encode_key(idx, pose_q, q)
            model.reset(idx)
            video = st.video if st is not None else None
            if video is None and self.texture_size:
                video = av1.VideoEncoder(self.texture_size, self.texture_size, self.texture_fps,
                                         kbps=self.texture_kbps(), crf=self.texture_crf)
            st = _Face(model, pose_q, dequantise(q, step), len(geom), video, ts)
            self._faces[fid] = st
            self.stats.keyframes += 1
        texture = b""
        if (tex is not None or image is not None) and st.video is not None:
            slot = math.floor(ts * self.texture_fps + 1e-9)
            due = slot != self._tex_slots.get(fid, -1)
            if due and not key and self.kbps is not None and self._tokens < self._tex_bits:
                due = False  # over budget: this picture waits (the face keeps its last one)
            if key or due:
                if image is not None:  # sample at the geometry the decoder will draw it on
                    tex = self._sample(image, st)
                texture = st.video.encode(self._texture(tex), key=key)
                self._tex_slots[fid] = slot
                if not key:
                    self._tex_bits = 0.8 * self._tex_bits + 0.2 * 8 * len(texture)
        return FaceSection(fid, key, geom, texture)

    def _sample(self, image: np.ndarray, st: _Face) -> np.ndarray:
        """The frame's colours at the decoded mesh's UV pixels: rendered on that mesh, the
        texture lands back where it came from, whatever error the geometry carries."""
        verts = from_canonical(self.basis.decode(st.recon), dequantise_pose(st.pose_q))
        s = self.layout.size
        posmap = np.zeros((s * s, 3), np.float32)
        posmap[self.layout.face_ind] = verts
        return sample_texture(image, posmap.reshape(s, s, 3), self.layout)

    def _texture(self, tex: np.ndarray) -> np.ndarray:
        tex = np.asarray(tex)
        if tex.dtype != np.uint8 or tex.ndim != 3 or tex.shape[2] != 3:
            raise ValueError(f"uv texture must be (S, S, 3) uint8, got {tex.shape} {tex.dtype}")
        t = self.texture_size
        small = cv2.resize(tex, (t, t), interpolation=cv2.INTER_AREA)
        if self._tex_mask.any():  # off-face pixels are never drawn: a flat fill costs almost nothing
            small[~self._tex_mask] = small[self._tex_mask].mean(0).astype(np.uint8)
        return small

    def _plate_image(self, image: np.ndarray, scale: float | None = None) -> np.ndarray:
        h, w = image.shape[:2]
        scale = self.plate_scale if scale is None else scale
        sw = max(av1.MIN_SIDE, int(round(w * scale / 2)) * 2)
        sh = max(av1.MIN_SIDE, int(round(h * scale / 2)) * 2)
        return cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)

    def _plate(self, image: np.ndarray) -> bytes:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
        small = self._plate_image(img)
        self._plate_small = cv2.resize(small, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        if self.kbps is None:
            return av1.encode_intra(small, crf=self.plate_crf)
        return self._budget_plate(img, int(self.kbps * 125.0 * self.plate_seconds))

    def _budget_plate(self, img: np.ndarray, budget: int) -> bytes:
        """The plate with the best PSNR (scaled back up the way the decoder does) among the sizes
        of PLATE_SCALES at the lowest CRF of PLATE_CRFS that fits ``budget`` bytes; the smallest
        size at the highest CRF when none fits."""
        h, w = img.shape[:2]
        best: tuple[float, bytes] | None = None
        fallback = b""
        seen = set()
        for scale in PLATE_SCALES:
            small = self._plate_image(img, min(scale, self.plate_scale))
            if small.shape in seen:
                continue
            seen.add(small.shape)
            lo, hi, fit = 0, len(PLATE_CRFS) - 1, None  # CRF -> size falls: binary search the lowest that fits
            while lo <= hi:
                mid = (lo + hi) // 2
                data = av1.encode_intra(small, crf=PLATE_CRFS[mid])
                if len(data) <= budget:
                    fit, hi = data, mid - 1
                else:
                    lo = mid + 1
                    if mid == len(PLATE_CRFS) - 1:
                        fallback = data
            if fit is None:
                continue
            back = cv2.resize(av1.decode_intra(fit), (w, h), interpolation=cv2.INTER_LINEAR)
            mse = float(np.mean((back.astype(np.float32) - img) ** 2))
            if best is None or mse < best[0]:
                best = (mse, fit)
        return best[1] if best is not None else fallback

    def _scene_changed(self, image: np.ndarray, faces: Sequence[FaceInput]) -> bool:
        """Mean absolute difference (grey levels, 32x32 thumbnails, face boxes left out) between
        this frame and the plate above ``scene_change``."""
        if self._plate_small is None or not self.scene_change:
            return False
        thumb = cv2.resize(self._plate_image(image), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        keep = np.ones((32, 32), bool)
        h, w = image.shape[:2]
        for _, verts, _ in faces:
            v = np.asarray(verts)
            x0, y0 = np.floor(v[:, :2].min(0) / (w / 32, h / 32)).astype(int)
            x1, y1 = np.ceil(v[:, :2].max(0) / (w / 32, h / 32)).astype(int)
            keep[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = False
        if keep.sum() < 32:
            return False
        return float(np.abs(thumb - self._plate_small)[keep].mean()) > self.scene_change

    def _rate_control(self, ts: float, bits: int, plate_bits: int) -> None:
        """Move the geometry step so geometry + framing + container meet what the texture video
        and the plates (amortised over 10 s) leave of kbps over the last 10 s."""
        if self.kbps is None:
            return
        self._recent.append((ts, bits, plate_bits))
        while self._recent and ts - self._recent[0][0] > 10.0:
            self._recent.pop(0)
        span = max(ts - self._recent[0][0], 1.0 / self.frame_rate) + 1.0 / self.frame_rate
        have = sum(b for _, b, _ in self._recent) / span / 1000.0
        plates = sum(p for _, _, p in self._recent) / 10.0 / 1000.0
        budget = max(self.kbps - (self.texture_kbps() or 0.0) - plates, 0.1 * self.kbps)
        err = math.log2(max(have, 1e-3) / budget)
        gain = 1.5 / self.frame_rate  # the same correction per second at any packet rate
        self._geom_log2_adj = float(np.clip(self._geom_log2_adj + gain * err, -4.0, 8.0))
