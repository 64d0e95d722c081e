"""``streamcap encode`` / ``decode`` for stream format v2 (compact packets, AV1 texture video).

encode: capture -> track -> generator -> geometry + UV texture -> encoder v2 -> ``.scap`` v2.
The writer emits whole chunks of about a second, so Ctrl-C or a crash loses at most the last
chunk. decode: ``.scap`` v2 -> decoder v2 -> renderer (mesh with the frame's texture over the
plate) -> video, one output frame per source frame (a frame the stream skipped with
``--frame-step`` repeats the previous one).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from ..errors import CodecError, InputError
from .common import GracefulStop, check_number

log = logging.getLogger(__name__)


def bits_line(stats, frames: int, fps: float, container_bytes: int) -> str:
    """'kind kbit/s' breakdown of an encoder's Stats2 over ``frames`` source frames."""
    secs = max(frames / fps, 1e-6)
    parts = [f"{k} {getattr(stats, k) * 8 / 1000 / secs:.2f}" for k in ("geometry", "texture", "plate", "header",
                                                                       "framing")]
    parts.append(f"container {container_bytes * 8 / 1000 / secs:.2f}")
    return "kbit/s by kind: " + ", ".join(parts)


def check_v2_flags(args: argparse.Namespace) -> None:
    """The v2 flags of ``encode`` / ``send``, checked before anything loads (InputError)."""
    from streamcap_codecs.av1 import MIN_SIDE
    from streamcap_codecs.limits import MAX_TEXTURE_SIDE

    if args.texture_fps is not None:
        check_number("--texture-fps", args.texture_fps, 0.01, 1000.0)
    t = args.texture_size
    if t and (t < MIN_SIDE or t % 2 or t > MAX_TEXTURE_SIDE):
        raise InputError(f"--texture-size must be 0 or an even number in [{MIN_SIDE}, {MAX_TEXTURE_SIDE}], got {t}")
    if args.frame_step is not None and not 1 <= args.frame_step <= 255:
        raise InputError(f"--frame-step must be in [1, 255], got {args.frame_step}")


def make_encoder2(basis, bundle, args: argparse.Namespace, fps: float, live: bool = False):
    """The v2 face-stream encoder for the codec flags in ``args``. A file gets a keyframe at
    least every 10 s (seek points); a live stream none on a clock: receivers ask for one when
    they join or lose packets."""
    from streamcap_codecs.encoder2 import FaceStreamEncoder2, rate_plan

    plan = rate_plan(args.kbps, fps)  # texture size and rate, frame step: what the flags leave open
    for k in plan:
        if getattr(args, k, None) is not None:
            plan[k] = getattr(args, k)
    return FaceStreamEncoder2(basis, bundle.layout, fps=fps, kbps=args.kbps, quality=args.quality,
                              bundle_id=bundle.name, max_key_s=0.0 if live else 10.0, **plan)


def run_encode2(args: argparse.Namespace) -> int:
    from streamcap_codecs.scap2 import ScapWriter2
    from tqdm import tqdm

    from .codec import encode_loop, open_encode

    check_v2_flags(args)
    bundle, basis, src, out, pipe = open_encode(args)
    enc = make_encoder2(basis, bundle, args, src.fps)
    total = args.max_frames or src.frame_count or None
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=f"encode {args.input.name}", disable=not sys.stderr.isatty())

    def body(stop, done) -> None:
        with ScapWriter2(out, chunk_frames=max(1, round(2 * src.fps / enc.frame_step))) as w:
            done.writer = w
            for res in pipe.run(src):
                if stop.requested or (args.max_frames and res.index >= args.max_frames):
                    break
                face_in = [(tid, f.vertices, f.texture) for tid, f in res.faces]
                for e in enc.encode(res.image, face_in):
                    enc.container(w.write(e.data, e.seq, e.key))
                done.frames += 1
                bar.update(1)

    done, code = encode_loop(out, body, (bar.close, src.close, enc.close, pipe.close))
    if code is not None:
        return code
    frames, w = done.frames, done.writer
    secs = max(frames / src.fps, 1e-6)
    size = out.stat().st_size
    print(f"{args.input} -> {out}: {frames} frames, {size} bytes, {size * 8 / 1000 / secs:.2f} kbit/s "
          f"({frames / (time.perf_counter() - t0):.1f} frames/s); "
          + bits_line(enc.stats, frames, src.fps, w.overhead_bytes))
    return 0


def between(a, b, t: float):
    """Frame ``a`` moved a fraction ``t`` of the way to frame ``b``: each face both show (neither
    stale) gets linearly interpolated vertices and position map; texture, plate and the rest are
    ``a``'s."""
    from dataclasses import replace

    nxt = {f.face_id: f for f in b.faces if not f.stale}
    faces = []
    for f in a.faces:
        g = nxt.get(f.face_id)
        if g is not None and not f.stale and f.vertices.shape == g.vertices.shape and f.posmap.shape == g.posmap.shape:
            f = replace(f, vertices=f.vertices + np.float32(t) * (g.vertices - f.vertices),
                        posmap=f.posmap + np.float32(t) * (g.posmap - f.posmap), keyframe=False)
        faces.append(f)
    return replace(a, faces=faces)


def decode_file(path, basis, layout, on_frame, bundle_name: str | None = None,
                interpolate: bool = True) -> tuple[int, int, bool]:
    """Decode a v2 file, calling ``on_frame(frame, repeats)`` per decoded frame (``repeats``:
    how many source frames it stands for). With ``interpolate``, the source frames a stream
    skipped (``--frame-step``) get the geometry interpolated between the packets around them,
    one call each. Returns (frames, rejected packets, truncated)."""
    from streamcap_codecs.decoder2 import FaceStreamDecoder2
    from streamcap_codecs.scap2 import ScapReader2

    dec = FaceStreamDecoder2(basis, layout)
    rejected = n = 0
    with ScapReader2(path) as reader:
        prev = None
        for seq, pkt in reader.packets():
            try:
                fr = dec.feed(pkt, seq)
            except CodecError as exc:
                rejected += 1
                log.warning("packet rejected: %s", exc)
                continue
            if fr is None:
                continue
            if prev is not None:
                gap = max(1, fr.frame_index - prev.frame_index)
                if interpolate and 1 < gap <= 2 * dec.header.frame_step and not fr.gap:
                    for j in range(gap):
                        on_frame(between(prev, fr, j / gap) if j else prev, 1)
                else:
                    on_frame(prev, gap)
                n += 1
            prev = fr
        if prev is not None:
            on_frame(prev, dec.header.frame_step if dec.header else 1)
            n += 1
        return n, rejected, reader.truncated


def run_decode2(args: argparse.Namespace) -> int:
    from streamcap_codecs.packet import StreamHeader2, unpack
    from streamcap_codecs.scap2 import ScapReader2

    from ..bundle import load_bundle, shipped_bundle
    from ..render import FaceRenderer
    from ..videowriter import VideoWriter, check_video_output
    from .codec import load_codec

    out = check_video_output(args.output or args.input.with_suffix(".mp4"), protect=[args.input])
    hdr = None
    with ScapReader2(args.input) as reader:
        for _, pkt in reader.packets():
            if pkt[0] & 3 == 1:
                p = unpack(pkt)
                if isinstance(p, StreamHeader2):
                    hdr = p
                    break
    if hdr is None:
        raise CodecError(f"{args.input}: no stream header (not an encoded face stream?)")
    # the bundle a file names is only looked up among the shipped ones (never used as a path)
    bundle = load_bundle(args.bundle if args.bundle is not None else shipped_bundle(hdr.bundle_id))
    basis = load_codec(bundle)
    if hdr.basis_id != basis.id or hdr.layout_hash != bundle.layout.hash:
        raise CodecError(f"{args.input} was coded with another model bundle's codec than {bundle.name}")
    w, h = int(hdr.width), int(hdr.height)
    black = np.zeros((h, w, 3), np.uint8)
    written = 0
    with GracefulStop() as stop, FaceRenderer(w, h, bundle.layout, window=args.show) as renderer, \
            VideoWriter(out, hdr.fps) as vw:
        def emit(fr, repeats: int) -> None:
            nonlocal written
            if stop.requested:
                raise KeyboardInterrupt
            bg = fr.background if fr.background is not None else black
            img = renderer.render(bg, [(f.posmap, f.texture) for f in fr.faces if f.posmap.size])
            for _ in range(repeats):
                vw.write(img)
                written += 1
            if args.show:
                renderer.show(img)

        try:
            _, rejected, truncated = decode_file(args.input, basis, bundle.layout, emit)
        except KeyboardInterrupt:
            stop.shield()
            return stop.report("streamcap decode", f"{out} holds {written} frames")
    note = f", {rejected} bad packets skipped" if rejected else ""
    if truncated:
        note += ", stream was truncated"
    print(f"{args.input} -> {out}: {written} frames{note}")
    return 0
