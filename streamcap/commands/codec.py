"""``streamcap encode VIDEO -o X.scap`` and ``streamcap decode X.scap -o OUT.mp4``.

encode: capture -> track -> generator -> geometry -> face codec -> .scap file. The file is
flushed message by message, so Ctrl-C leaves a valid, decodable prefix (the index is written
on the way out; a reader rebuilds it if even that was cut).
decode: .scap -> face codec decoder -> ModernGL renderer over the background plate -> mp4.
A message the decoder rejects is counted and skipped; decoding goes on with the next one.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import types

import numpy as np

from ..errors import BundleError, CodecError, InputError, InputNotFound
from .common import GracefulStop, check_number, check_writable

log = logging.getLogger(__name__)


def load_codec(bundle):
    from streamcap_codecs.basis import GeometryBasis

    path = bundle.path("codec_basis")
    if path is None:
        raise BundleError(f"bundle {bundle.name} has no codec basis (export it with --codec-basis)")
    return GeometryBasis.load(path, bundle.layout)


def make_encoder(basis, bundle, args, fps: float, repeat_header: bool = False):
    """The v1 face-stream encoder for the codec flags in ``args``."""
    from streamcap_codecs.encoder import FaceStreamEncoder

    return FaceStreamEncoder(basis, bundle.layout, quality=args.quality, kbps=args.kbps,
                             keyframe_every_s=args.keyframe_every, fps=fps, bundle_id=bundle.name,
                             repeat_header=repeat_header)


def open_encode(args: argparse.Namespace):
    """What ``encode`` needs, from its flags, checked before any work: (bundle, codec basis, video
    source, output path, capture -> track -> generator pipeline)."""
    from ..bundle import load_bundle
    from ..capture import VideoSource
    from ..pipeline import FacePipeline
    from ..videowriter import same_file

    check_number("--kbps", args.kbps, 0.0)
    check_number("--keyframe-every", args.keyframe_every, 0.0)
    out = args.output or args.input.with_suffix(".scap")
    if same_file(out, args.input):
        raise InputError("output would overwrite the input")
    check_writable(out, "output")
    bundle = load_bundle(args.bundle)
    basis = load_codec(bundle)
    src = VideoSource(args.input)
    try:
        pipe = FacePipeline.create(bundle, args.backend, args.threads, args.detector, args.landmarks)
    except BaseException:
        src.close()
        raise
    return bundle, basis, src, out, pipe


def encode_loop(out, body, closers) -> tuple[types.SimpleNamespace, int | None]:
    """Run the encode loop ``body(stop, done)`` under a GracefulStop; ``done`` (frames, faces,
    writer) is what it reports. Ctrl-C or SIGTERM: the frames so far stay in ``out``, one line,
    its exit code. ``closers`` run whatever happens. Returns (done, exit code or None to go on)."""
    done = types.SimpleNamespace(frames=0, faces=0, writer=None)
    with GracefulStop() as stop:
        try:
            body(stop, done)
        except KeyboardInterrupt:
            return done, stop.report("streamcap encode", f"{out} holds {done.frames} frames", interrupted=True)
        finally:
            stop.shield()
            for close in closers:
                close()
    if stop.requested:
        return done, stop.report("streamcap encode", f"{out} holds {done.frames} frames")
    return done, None


def run_encode(args: argparse.Namespace) -> int:
    if getattr(args, "format", 1) == 2:
        from .codec2 import run_encode2

        return run_encode2(args)
    from streamcap_codecs.container import ScapWriter
    from tqdm import tqdm

    bundle, basis, src, out, pipe = open_encode(args)
    # the header goes out again before every keyframe: one damaged header record in the file
    # does not make the rest undecodable
    enc = make_encoder(basis, bundle, args, src.fps, repeat_header=True)
    total = args.max_frames or src.frame_count or None
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=f"encode {args.input.name}", disable=not sys.stderr.isatty())

    def body(stop, done) -> None:
        with ScapWriter(out) as w:
            done.writer = w
            for res in pipe.encode(src, enc, w, args.max_frames, stop=stop):
                done.frames += 1
                done.faces += len(res.faces)
                bar.update(1)
                secs = max(res.timestamp, 1e-6)
                bar.set_postfix(faces=len(res.faces), kbps=f"{w.bytes_written * 8 / 1000 / secs:.1f}")

    done, code = encode_loop(out, body, (bar.close, src.close, pipe.close))
    if code is not None:
        return code
    frames, faces = done.frames, done.faces
    secs = frames / src.fps if frames else 0.0
    size = out.stat().st_size
    # per face: its keyframes + deltas over the time it was on screen, averaged over faces
    face_secs = faces / src.fps
    per_face = (enc.stats.keyframe_bytes + enc.stats.delta_bytes) * 8 / 1000 / face_secs if faces else 0.0
    print(f"{args.input} -> {out}: {frames} frames, {faces} faces, {size} bytes, "
          f"{size * 8 / 1000 / max(secs, 1e-6):.1f} kbit/s in all, {per_face:.1f} kbit/s per face "
          f"({frames / (time.perf_counter() - t0):.1f} frames/s)")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from streamcap_codecs.scap2 import file_version

    if not args.input.is_file():
        raise InputNotFound(f"{args.input}: no such file")
    version = file_version(args.input)
    if version == 2:
        from .codec2 import run_decode2

        return run_decode2(args)
    if version != 1:
        raise CodecError(f"{args.input}: .scap container version {version}; this streamcap reads versions 1 and 2")
    from streamcap_codecs.container import ScapReader
    from streamcap_codecs.decoder import FaceStreamDecoder

    from ..bundle import load_bundle, shipped_bundle
    from ..render import FaceRenderer
    from ..videowriter import VideoWriter, check_video_output

    out = check_video_output(args.output or args.input.with_suffix(".mp4"), protect=[args.input])
    reader = ScapReader(args.input)
    hdr = reader.header
    if hdr is None:
        why = f": its first record is damaged ({reader.header_damage})" if reader.header_damage else \
            " (not an encoded face stream?)"
        raise CodecError(f"{args.input}: no readable stream header{why}")
    if reader.header_damage:
        log.warning("%s: the first stream header is damaged (%s); using a repeated one", args.input,
                    reader.header_damage)
    # the bundle a file names is only looked up among the shipped ones (never used as a path)
    bundle = load_bundle(args.bundle if args.bundle is not None else shipped_bundle(hdr.bundle_id))
    basis = load_codec(bundle)
    if hdr.basis_id != basis.id or hdr.layout_hash != bundle.layout.hash:
        raise CodecError(f"{args.input} was coded with another model bundle's codec than {bundle.name}")
    dec = FaceStreamDecoder(basis, bundle.layout)
    w, h = (int(hdr.width), int(hdr.height)) if hdr.width and hdr.height else (640, 480)
    black = np.zeros((h, w, 3), np.uint8)
    written = rejected = 0
    with GracefulStop() as stop, FaceRenderer(w, h, bundle.layout, window=args.show) as renderer, \
            VideoWriter(out, hdr.fps if hdr.fps > 0 else 30.0) as vw:
        def emit(frames) -> bool:
            nonlocal written
            for fr in frames:
                bg = fr.background if fr.background is not None else black
                img = renderer.render(bg, [(f.posmap, f.texture) for f in fr.faces])
                vw.write(img)
                written += 1
                if args.show and not renderer.show(img):
                    return False
            return True

        try:
            for msg in reader.messages():
                if stop.requested:
                    break
                try:
                    frames = dec.feed(msg)
                except CodecError as exc:
                    rejected += 1
                    log.warning("message rejected: %s", exc)
                    continue
                if not emit(frames):
                    break
            if not stop.requested:
                emit(dec.flush())
        except KeyboardInterrupt:
            return stop.report("streamcap decode", f"{out} holds {written} frames", interrupted=True)
        finally:
            stop.shield()
            reader.close()
    if stop.requested:
        return stop.report("streamcap decode", f"{out} holds {written} frames")
    note = f", {rejected} bad messages skipped" if rejected else ""
    if reader.skipped:
        note += f", {reader.skipped} damaged records skipped"
    if reader.truncated:
        note += ", stream was truncated"
    print(f"{args.input} -> {out}: {written} frames{note}")
    return 0
