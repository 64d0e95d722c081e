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

import numpy as np

from ..errors import BundleError, CodecError, InputError, InputNotFound

log = logging.getLogger(__name__)


def load_codec(bundle):
    from streamcap_codecs.basis import GeometryBasis

    path = bundle.path("codec_basis")
    if path is None:
        raise BundleError(f"bundle {bundle.name} has no codec basis (export it with --codec-basis)")
    return GeometryBasis.load(path, bundle.layout)


def open_encode(args: argparse.Namespace):
    """What ``encode`` needs, from its flags: (bundle, codec basis, video source, output path,
    capture -> track -> generator pipeline)."""
    from ..bundle import load_bundle
    from ..capture import VideoSource
    from ..detect import FaceDetector
    from ..engine import create_engine
    from ..pipeline import FacePipeline
    from ..reconstruct import Reconstructor
    from ..track import FaceTracker

    bundle = load_bundle(args.bundle)
    basis = load_codec(bundle)
    src = VideoSource(args.input)
    out = args.output or args.input.with_suffix(".scap")
    if out.resolve() == args.input.resolve():
        src.close()
        raise InputError("output would overwrite the input")
    rec = Reconstructor(bundle, create_engine(bundle, args.backend, threads=args.threads))
    tracker = FaceTracker(crop_size=bundle.spec.input_size, detector=FaceDetector(args.detector))
    return bundle, basis, src, out, FacePipeline(rec, tracker)


def run_encode(args: argparse.Namespace) -> int:
    if getattr(args, "format", 1) == 2:
        from .codec2 import run_encode2

        return run_encode2(args)
    from streamcap_codecs.container import ScapWriter
    from streamcap_codecs.encoder import FaceStreamEncoder
    from tqdm import tqdm

    bundle, basis, src, out, pipe = open_encode(args)
    enc = FaceStreamEncoder(basis, bundle.layout, quality=args.quality, kbps=args.kbps,
                            keyframe_every_s=args.keyframe_every, fps=src.fps, bundle_id=bundle.name)
    total = args.max_frames or src.frame_count or None
    frames = faces = 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="frame", desc=f"encode {args.input.name}", disable=not sys.stderr.isatty())
    try:
        with ScapWriter(out) as w:
            for res in pipe.run(src):
                if args.max_frames and res.index >= args.max_frames:
                    break
                face_in = [(tid, f.vertices, f.texture) for tid, f in res.faces]
                for m in enc.encode(res.image, face_in, ts=res.timestamp, frame_index=res.index):
                    w.write(m)
                frames += 1
                faces += len(face_in)
                bar.update(1)
                secs = max(res.timestamp, 1e-6)
                bar.set_postfix(faces=len(face_in), kbps=f"{w.bytes_written * 8 / 1000 / secs:.1f}")
    except KeyboardInterrupt:
        print(f"streamcap encode: interrupted after {frames} frames; {out} holds them", file=sys.stderr)
        return 130
    finally:
        bar.close()
        src.close()
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

    from ..bundle import load_bundle
    from ..render import FaceRenderer
    from ..videowriter import VideoWriter

    reader = ScapReader(args.input)
    if reader.header is None:
        raise CodecError(f"{args.input}: no stream header (not an encoded face stream?)")
    hdr = reader.header
    bundle = load_bundle(args.bundle or (hdr.bundle_id or None))
    basis = load_codec(bundle)
    if hdr.basis_id != basis.id or hdr.layout_hash != bundle.layout.hash:
        raise CodecError(f"{args.input} was coded with another model bundle's codec than {bundle.name}")
    out = args.output or args.input.with_suffix(".mp4")
    dec = FaceStreamDecoder(basis, bundle.layout)
    w, h = int(hdr.width), int(hdr.height)
    black = np.zeros((h, w, 3), np.uint8)
    written = rejected = 0
    with FaceRenderer(w, h, bundle.layout, window=args.show) as renderer, VideoWriter(out, hdr.fps) as vw:
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
                try:
                    frames = dec.feed(msg)
                except CodecError as exc:
                    rejected += 1
                    log.warning("message rejected: %s", exc)
                    continue
                if not emit(frames):
                    break
            emit(dec.flush())
        except KeyboardInterrupt:
            print(f"streamcap decode: interrupted; {out} holds {written} frames", file=sys.stderr)
            return 130
    note = f", {rejected} bad messages skipped" if rejected else ""
    if reader.truncated:
        note += ", stream was truncated"
    print(f"{args.input} -> {out}: {written} frames{note}")
    return 0
