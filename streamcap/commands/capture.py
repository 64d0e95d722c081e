"""``streamcap capture INPUT -o take/`` (or ``--camera N``): face capture for animation.

capture -> track -> generator -> geometry -> per-face take files (see ``streamcap.take``):
``face<ID>.csv`` / ``.jsonl`` written frame by frame, ``face<ID>.glb`` and ``take.json`` at the
end; ``--osc HOST:PORT`` also sends every frame live in the VMC protocol (``streamcap.osc``).
Ctrl-C or SIGTERM ends the take after the current frame and still writes the .glb files and
``take.json``, so an interrupted take is complete up to where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from ..errors import InputError, NoFaceFound

log = logging.getLogger(__name__)


def _prepare_folder(folder) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".streamcap-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write the take to {folder}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bundle import load_bundle
    from ..capture import LatestFrame, open_source
    from ..osc import VmcSender, parse_hostport
    from ..pipeline import FacePipeline
    from ..take import Take, write_manifest
    from .codec import load_codec
    from .common import GracefulStop

    if (args.input is None) == (args.camera is None):
        raise InputError("give a video file or --camera N")
    if args.max_frames < 0 or args.morph_targets < 0:
        raise InputError("--max-frames and --morph-targets must be >= 0")
    osc_to = parse_hostport(args.osc) if args.osc else None
    # the cheap checks first: a bad source or output folder fails before the model loads
    src = open_source(camera=args.camera, video=args.input)
    name = f"camera {args.camera}" if args.camera is not None else str(args.input)
    try:
        _prepare_folder(args.output)
        sender = VmcSender(*osc_to) if osc_to else None
        bundle = load_bundle(args.bundle)
        basis = load_codec(bundle)
        pipe = FacePipeline.create(bundle, args.backend, args.threads, args.detector, args.landmarks)
    except BaseException:
        src.close()
        raise
    size = (src.width, src.height)
    meta = {"input": name, "fps": src.fps, "bundle": bundle.name}
    write_manifest(args.output, {**meta, "frames": 0, "faces": [], "complete": False})
    take = Take(args.output, basis, bundle.layout, size, smooth=not args.no_smooth, n_targets=args.morph_targets,
                meta=meta)
    live = args.camera is not None
    latest = LatestFrame(src) if live else None
    total = args.max_frames or (None if live else src.frame_count or None)
    bar = tqdm(total=total, unit="frame", desc=f"capture {name}", disable=not sys.stderr.isatty())
    frames = 0
    t0 = time.perf_counter()
    with GracefulStop() as stop:
        if latest is not None:
            stop.callbacks.append(latest.stop)
        try:
            for frame in latest if latest is not None else src:
                if stop.requested:
                    break
                res = pipe.process(frame.index, frame.timestamp, frame.image)
                samples = take.add_frame(res.index, res.timestamp, res.faces)
                if sender is not None:
                    first = min(samples) if samples else None
                    sender.send(res.timestamp, samples.get(first) if first is not None else None, size)
                frames += 1
                bar.update(1)
                bar.set_postfix(faces=len(samples))
                if args.max_frames and frames >= args.max_frames:
                    break
        finally:
            stop.shield()  # from here on a signal never cuts the writing of the outputs short
            bar.close()
            pipe.close()
            if latest is None or latest.close(2.0):
                src.close()
            if sender is not None:
                sender.close()
            summary = take.close(interrupted=stop.requested)
    secs = time.perf_counter() - t0
    faces = summary["faces"]
    if not faces:
        raise NoFaceFound(f"no face in any of the {frames} frames of {name}; "
                          f"{args.output}/take.json describes the empty take")
    ids = ", ".join(f"face{f['id']} ({f['tracked_frames']} frames)" for f in faces)
    how = f"stopped by {stop.name} after" if stop.requested else "captured"
    osc = f", {sender.sent} OSC bundles to {args.osc}" if sender is not None else ""
    print(f"{name} -> {args.output}: {how} {frames} frames ({frames / max(secs, 1e-6):.1f} frames/s), "
          f"{ids}{osc}")
    return stop.exit_code if stop.requested else 0
