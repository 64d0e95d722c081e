"""Real face streams for the hostile-input tests and the fuzz suite: the shipped bundle's codec
basis and UV layout, the real encoder, synthetic faces (codec_synth) so no data set is needed.

``corpus()`` is the seed corpus of the fuzz suite: encoded streams with every message kind
(header, frame starts, keyframes with texture and residual, deltas, background plates, a face
leaving). A new packet format only has to make these helpers produce its streams.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from pathlib import Path

import numpy as np
from codec_synth import deformation_fields, face_sequence, texture
from streamcap_codecs import FaceDelta, FaceStreamEncoder, ScapWriter, to_frames
from streamcap_codecs.basis import GeometryBasis

from streamcap.bundle import load_bundle


@functools.lru_cache(maxsize=1)
def shipped_codec():
    """(bundle, basis) of the shipped bundle."""
    bundle = load_bundle(None, verify=False)
    return bundle, GeometryBasis.load(bundle.path("codec_basis"), bundle.layout)


@functools.lru_cache(maxsize=4)
def real_stream(n: int = 10, size: tuple[int, int] = (160, 120), residual: bool = False,
                seed: int = 0) -> tuple:
    """Messages per frame of an ``n``-frame stream: face 1 throughout, face 2 for the middle
    third (so a FaceGone follows), a background plate and a header on every keyframe."""
    bundle, basis = shipped_codec()
    lay = bundle.layout
    fields = deformation_fields(lay, 3, seed)
    w, h = size
    a = face_sequence(lay, fields, n, seed=seed + 1, centre=(w * 0.35, h * 0.5), size=0.25)
    b = face_sequence(lay, fields, n, seed=seed + 2, centre=(w * 0.7, h * 0.5), size=0.2)
    enc = FaceStreamEncoder(basis, lay, quality=50, texture_size=32, fps=10.0, keyframe_every_s=0.5,
                            bundle_id=bundle.name, residual_grid=8 if residual else 0, repeat_header=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    tex = texture(lay, seed)
    out = []
    for i in range(n):
        faces = [(1, a[i], tex)] + ([(2, b[i], tex)] if n // 3 <= i < 2 * n // 3 else [])
        out.append(tuple(enc.encode(img, faces)))
    return tuple(out)


def flat(per_frame) -> list:
    return [m for msgs in per_frame for m in msgs]


def repeated(per_frame, times: int) -> list:
    """The stream played ``times`` times in a row with seq and frame numbers continued (a long
    stream without encoding one)."""
    msgs = flat(per_frame)
    span, frames = msgs[-1].seq + 1, len(per_frame)
    out = []
    for k in range(times):
        for m in msgs:
            ch = {"seq": m.seq + k * span}
            if isinstance(m, FaceDelta):
                ch["ref_seq"] = m.ref_seq + k * span
            if hasattr(m, "frame_index"):
                ch["frame_index"] = m.frame_index + k * frames
            out.append(dataclasses.replace(m, **ch))
    return out


def write_scap(path: Path, msgs) -> Path:
    with ScapWriter(path) as w:
        w.write_all(list(msgs))
    return path


@functools.lru_cache(maxsize=1)
def corpus() -> tuple[tuple[bytes, ...], ...]:
    """Wire frames of every message of two real streams (the fuzz suite's seeds)."""
    msgs = flat(real_stream()) + flat(real_stream(6, (96, 64), residual=True, seed=3))
    return tuple(tuple(to_frames(m)) for m in msgs)


def forged_heads(size: int, every: int = 64) -> bytes:
    """Junk made of record heads that pass every cheap check (type, frame count, header frame
    length, msgpack map byte, frame lengths that add up) and claim to run to the end of the
    junk: each needs a CRC check, the densest adversarial input for a resync."""
    n = size // every
    buf = bytearray(n * every)
    for i in range(n):
        length = n * every - i * every - 9
        head = struct.pack("<IBBI", length, 1, 2, 3) + b"\x81\xa0\xc0" + struct.pack("<I", length - 12)
        buf[i * every:i * every + len(head)] = head
    return bytes(buf)


@functools.lru_cache(maxsize=2)
def v2_stream(n: int = 12, key_every: int = 0) -> tuple:
    """A real stream v2 (synthetic faces through the v2 encoder, AV1 textures and plates) on a
    small layout: (basis, layout, packets, .scap v2 bytes). ``key_every`` > 0: a keyframe for
    everything (face list, plate) every that many frames, as receivers' requests would bring."""
    import tempfile

    from codec_synth import small_layout, synthetic_basis
    from streamcap_codecs.encoder2 import FaceStreamEncoder2
    from streamcap_codecs.scap2 import ScapWriter2

    from streamcap.bundle import default_layout

    layout = small_layout(default_layout(), 4)
    basis, fields = synthetic_basis(layout, rank=8, k=8)
    faces = face_sequence(layout, fields, n, seed=3, centre=(200, 240), size=1.2)
    enc = FaceStreamEncoder2(basis, layout, fps=30.0, texture_size=64, max_key_s=0)
    tex = texture(layout, 0)
    img = np.full((240, 320, 3), 90, np.uint8)
    packets = []
    for i in range(n):
        if key_every and i and i % key_every == 0:
            enc.request_keyframe(None)
        packets += enc.encode(img, [(5, faces[i], np.roll(tex, i, 1))])
    enc.close()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.scap"
        with ScapWriter2(path, chunk_frames=4) as w:
            for e in packets:
                w.write(e.data, e.seq, e.key)
        data = path.read_bytes()
    return basis, layout, tuple(e.data for e in packets), data
