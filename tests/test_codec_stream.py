"""Face stream encoder -> wire -> decoder on synthetic sequences: accuracy, no drift over 300
frames, faces coming and going, rate control, loss -> keyframe request -> recovery, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from codec_synth import face_sequence, synthetic_basis, texture
from streamcap_codecs import (
    ALL_FACES,
    FaceDelta,
    FaceGone,
    FaceKeyframe,
    FaceStreamDecoder,
    FaceStreamEncoder,
    FrameStart,
    KeyframeRequest,
    StreamHeader,
    from_frames,
    to_frames,
)
from streamcap_codecs.quant import quality_to_step

from streamcap.errors import CodecError

N = 300
FPS = 30.0


@pytest.fixture(scope="module")
def synth(small):
    basis, fields = synthetic_basis(small, rank=8, k=8)
    a = face_sequence(small, fields, N, seed=11, centre=(200, 240), size=1.2)
    b = face_sequence(small, fields, N, seed=12, centre=(450, 220), size=0.9)
    return basis, a, b


def _err(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-vertex 3D distance in px."""
    return float(np.linalg.norm(pred - truth, axis=1).mean())


def _wire(msgs):
    """Every message goes through bytes, as on a socket."""
    return [from_frames(to_frames(m)) for m in msgs]


def _present(i: int) -> list[int]:
    """Face 1 for frames 0..239, face 2 from frame 60 on."""
    return ([1] if i < 240 else []) + ([2] if i >= 60 else [])


def _run(basis, lay, seqs, quality=50, kbps=None, n=N, **kw):
    enc = FaceStreamEncoder(basis, lay, quality=quality, kbps=kbps, texture_size=32, fps=FPS, **kw)
    dec = FaceStreamDecoder(basis, lay)
    img = np.full((480, 640, 3), 80, np.uint8)
    tex = texture(lay)
    frames, sent = [], []
    for i in range(n):
        faces = [(fid, seqs[fid][i], tex) for fid in _present(i)]
        msgs = enc.encode(img, faces)
        sent.append(msgs)
        for m in _wire(msgs):
            frames.extend(dec.feed(m))
    return enc, dec, frames, sent


def test_two_faces_300_frames_bounded_error_and_no_drift(synth, small):
    basis, a, b = synth
    enc, _, frames, sent = _run(basis, small, {1: a, 2: b})
    assert [f.frame_index for f in frames] == list(range(N))
    errs: dict[int, list[float]] = {1: [], 2: []}
    for f in frames:
        assert f.complete and not f.gap and f.need_keyframe == ()
        assert [d.face_id for d in f.faces] == _present(f.frame_index)
        for d in f.faces:
            truth = {1: a, 2: b}[d.face_id][f.frame_index]
            errs[d.face_id].append(_err(d.vertices, truth))
            assert d.posmap.shape == (small.size, small.size, 3)
            assert np.array_equal(d.posmap.reshape(-1, 3)[small.face_ind], d.vertices)
            assert d.texture is not None and d.texture.shape == (small.size, small.size, 3)
            assert not d.stale
    for fid, e in errs.items():
        e = np.asarray(e)
        assert e.max() < 1.0, (fid, e.max())
        # closed loop: the last 60 frames are no worse than the first 60 (no drift)
        assert e[-60:].mean() < 1.5 * e[:60].mean() + 0.05, (fid, e[:60].mean(), e[-60:].mean())
    kinds = [type(m) for msgs in sent for m in msgs]
    assert kinds[0] is StreamHeader and kinds.count(StreamHeader) == 1
    assert kinds.count(FrameStart) == N
    assert kinds.count(FaceGone) == 1
    # face 1: t=0, 5, and face 2 appears at frame 60 (t=2) then t=5
    keys = [(i, m.face_id) for i, msgs in enumerate(sent) for m in msgs if isinstance(m, FaceKeyframe)]
    assert keys == [(0, 1), (60, 2), (150, 1), (150, 2)]
    assert enc.stats.deltas == sum(len(_present(i)) for i in range(N)) - len(keys)


def test_decoded_state_matches_encoder_state_exactly(synth, small):
    """The encoder's mirror of the decoder's coefficients is bit-identical (why nothing drifts)."""
    basis, a, _ = synth
    enc = FaceStreamEncoder(basis, small, quality=30, texture_size=0, fps=FPS)
    dec = FaceStreamDecoder(basis, small)
    for i in range(40):
        for m in _wire(enc.encode(None, [(1, a[i], None)])):
            dec.feed(m)
        assert np.array_equal(enc._faces[1].recon, dec._faces[1].recon)
        assert np.array_equal(enc._faces[1].pose_q, dec._faces[1].pose_q)


def test_quality_trades_bytes_for_error(synth, small):
    basis, a, _ = synth
    res = {}
    for q in (10, 50, 90):
        enc, _, frames, _ = _run(basis, small, {1: a, 2: a}, quality=q, n=90)
        e = np.mean([_err(d.vertices, a[f.frame_index]) for f in frames for d in f.faces if d.face_id == 1])
        res[q] = (enc.stats.delta_bytes / enc.stats.deltas, e)
    assert res[10][1] > res[50][1] > res[90][1]
    assert res[10][0] < res[50][0] < res[90][0]
    assert quality_to_step(50) == 0.25


@pytest.fixture(scope="module")
def synth32(small):
    """32 components: enough geometry bits for the rate controller to work with."""
    basis, fields = synthetic_basis(small, rank=32, k=32, n=80)
    return basis, face_sequence(small, fields, N, seed=13, centre=(200, 240), size=1.2)


@pytest.mark.parametrize("kbps", [20.0, 28.0])
def test_rate_control_lands_near_target(synth32, small, kbps):
    basis, a = synth32
    enc = FaceStreamEncoder(basis, small, quality=50, kbps=kbps, texture_size=32, fps=FPS)
    tex = texture(small)
    n, settle = 450, 150  # 15 s; measure the last two 5 s keyframe periods
    start_bytes = 0
    for i in range(n):
        if i == settle:
            start_bytes = enc.stats.face_bytes[1]
        enc.encode(None, [(1, a[i % N], tex)])
    rate = (enc.stats.face_bytes[1] - start_bytes) * 8 / ((n - settle) / FPS) / 1000
    assert abs(rate - kbps) < 0.15 * kbps, rate


def test_rate_control_moves_the_step_both_ways(synth32, small):
    basis, a = synth32
    lo = FaceStreamEncoder(basis, small, quality=90, kbps=17.0, texture_size=0, fps=FPS)
    hi = FaceStreamEncoder(basis, small, quality=10, kbps=30.0, texture_size=0, fps=FPS)
    for i in range(150):
        lo.encode(None, [(1, a[i], None)])
        hi.encode(None, [(1, a[i], None)])
    assert lo.face_step(1) > quality_to_step(90) * 4
    assert hi.face_step(1) < quality_to_step(10) / 4


def test_lost_delta_gives_keyframe_request_then_recovery(synth, small):
    basis, a, b = synth
    enc = FaceStreamEncoder(basis, small, quality=50, texture_size=32, fps=FPS, keyframe_every_s=0)
    dec = FaceStreamDecoder(basis, small)
    tex = texture(small)
    out = []
    requested_at = None
    for i in range(40):
        msgs = enc.encode(None, [(1, a[i], tex), (2, b[i], tex)])
        if i == 10:  # the network drops face 1's delta
            msgs = [m for m in msgs if not (isinstance(m, FaceDelta) and m.face_id == 1)]
        got = []
        for m in _wire(msgs):
            got.extend(dec.feed(m))
        out.extend(got)
        for req in dec.keyframe_requests(ts=i / FPS):
            requested_at = requested_at or i
            enc.handle_request(from_frames(to_frames(req)))
    by_index = {f.frame_index: f for f in out}
    lost = by_index[10]
    assert lost.gap and not lost.complete and lost.need_keyframe == (1,)
    face1 = next(d for d in lost.faces if d.face_id == 1)
    assert face1.stale  # last good state, shown until the keyframe
    assert np.array_equal(face1.vertices, next(d for d in by_index[9].faces if d.face_id == 1).vertices)
    # face 2 is untouched by face 1's loss
    assert not next(d for d in lost.faces if d.face_id == 2).stale
    assert requested_at == 10
    rec = by_index[11]
    f1 = next(d for d in rec.faces if d.face_id == 1)
    assert f1.keyframe and not f1.stale and rec.need_keyframe == () and rec.complete
    for i in range(11, 40):
        f = by_index[i]
        assert f.complete
        for d in f.faces:
            assert _err(d.vertices, {1: a, 2: b}[d.face_id][i]) < 1.0


def test_lost_keyframe_and_lost_frame_start_are_detected(synth, small):
    basis, a, _ = synth
    enc = FaceStreamEncoder(basis, small, quality=50, texture_size=0, fps=FPS, keyframe_every_s=0)
    dec = FaceStreamDecoder(basis, small)
    frames = []
    for i in range(6):
        msgs = enc.encode(None, [(1, a[i], None)])
        if i == 0:
            msgs = [m for m in msgs if not isinstance(m, FaceKeyframe)]
        if i == 3:
            msgs = [m for m in msgs if not isinstance(m, FrameStart)]
        for m in msgs:
            frames.extend(dec.feed(m))
    frames.extend(dec.flush())
    assert frames[0].need_keyframe == (1,) and frames[0].faces == []
    assert all(1 in f.need_keyframe for f in frames)
    orphan = [f for f in frames if f.frame_index == -1]
    assert len(orphan) == 1 and orphan[0].gap
    assert [r.face_id for r in dec.keyframe_requests()] == [1]


def test_bad_messages_raise_and_decoding_goes_on(synth, small):
    basis, a, _ = synth
    enc = FaceStreamEncoder(basis, small, quality=50, texture_size=32, fps=FPS, keyframe_every_s=0)
    dec = FaceStreamDecoder(basis, small)
    tex = texture(small)
    frames, errors = [], 0
    for i in range(20):
        for m in enc.encode(None, [(1, a[i], tex)]):
            wire = to_frames(m)
            if i == 5 and isinstance(m, FaceDelta):
                bad = [wire[0][:-3]] + wire[1:]  # truncated header
                with pytest.raises(CodecError):
                    dec.feed_frames(bad)
                errors += 1
                forged = FaceDelta(seq=m.seq + 1000, ts=m.ts, face_id=1, ref_seq=m.ref_seq,
                                   pose_dq=m.pose_dq, coeff_dq=np.zeros(3, np.int32), step=m.step)
                with pytest.raises(CodecError):  # wrong K for this basis
                    dec.feed(forged)
                errors += 1
            frames.extend(dec.feed_frames(wire))
    assert errors == 2 and dec.rejected == 2
    assert [f.frame_index for f in frames] == list(range(20))
    assert all(f.complete for f in frames)


def test_wrong_header_is_refused(synth, small, layout):
    basis, _, _ = synth
    dec = FaceStreamDecoder(basis, small)
    good = FaceStreamEncoder(basis, small).header()
    for change in ({"basis_id": "ffffffffffffffff"}, {"layout_hash": layout.hash}, {"n_components": 9}):
        h = StreamHeader(**{**good.__dict__, **change})
        with pytest.raises(CodecError):
            dec.feed(h)
    assert dec.header is None
    dec.feed(good)
    assert dec.header == good


def test_late_join_asks_for_everything(synth, small):
    basis, a, _ = synth
    enc = FaceStreamEncoder(basis, small, quality=50, texture_size=32, fps=FPS, keyframe_every_s=0)
    dec = FaceStreamDecoder(basis, small)
    tex = texture(small)
    for i in range(5):
        enc.encode(None, [(1, a[i], tex)])  # nobody listening yet
    for m in enc.encode(None, [(1, a[5], tex)]):
        dec.feed(m)
    reqs = dec.keyframe_requests()
    assert [r.face_id for r in reqs] == [ALL_FACES] and isinstance(reqs[0], KeyframeRequest)
    enc.handle_request(reqs[0])
    msgs = enc.encode(None, [(1, a[6], tex)])
    assert isinstance(msgs[0], StreamHeader) and any(isinstance(m, FaceKeyframe) for m in msgs)
    frames = [f for m in msgs for f in dec.feed(m)]
    assert frames[-1].faces[0].keyframe and _err(frames[-1].faces[0].vertices, a[6]) < 1.0
    assert dec.keyframe_requests() == []


def test_real_layout_few_frames_with_background(layout):
    basis, fields = synthetic_basis(layout, rank=6, k=6, n=20)
    seq = face_sequence(layout, fields, 8, seed=3, centre=(320, 240), size=1.0)
    enc = FaceStreamEncoder(basis, layout, quality=60, texture_size=64, fps=FPS)
    dec = FaceStreamDecoder(basis, layout)
    img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    tex = texture(layout)
    frames = []
    for i in range(8):
        for m in _wire(enc.encode(img, [(4, seq[i], tex)])):
            frames.extend(dec.feed(m))
    assert len(frames) == 8
    for f in frames:
        assert f.background is not None and f.background.shape == img.shape
        (d,) = f.faces
        assert d.vertices.shape == (layout.n_vertices, 3) and d.vertices.dtype == np.float32
        assert _err(d.vertices, seq[f.frame_index]) < 1.0
        assert d.texture.shape == (256, 256, 3)
        # the decoded texture is the sent one, up to JPEG and resampling loss, on the face
        diff = np.abs(d.texture.astype(int) - tex.astype(int))[layout.face_mask]
        assert np.median(diff) < 20


def test_residual_carries_what_the_basis_misses(small):
    basis, fields = synthetic_basis(small, rank=8, k=4)  # 4 components for 8 fields: a big residual
    seq = face_sequence(small, fields, 10, seed=5, size=1.0)
    errs = {}
    for grid in (0, 16):
        enc = FaceStreamEncoder(basis, small, quality=80, texture_size=0, fps=FPS, residual_grid=grid,
                                residual_step=0.05)
        dec = FaceStreamDecoder(basis, small)
        out = [f for m in _wire(enc.encode(None, [(1, seq[0], None)])) for f in dec.feed(m)]
        errs[grid] = _err(out[0].faces[0].vertices, seq[0])
    assert errs[16] < 0.6 * errs[0], errs


def test_encoder_rejects_bad_input(synth, small):
    basis, a, _ = synth
    enc = FaceStreamEncoder(basis, small)
    with pytest.raises(ValueError):
        enc.encode(None, [(1, a[0][:-1], None)])
    with pytest.raises(ValueError):
        enc.encode(None, [(1, a[0], None), (1, a[0], None)])
    bad = a[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        enc.encode(None, [(1, bad, None)])
