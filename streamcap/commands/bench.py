"""``streamcap bench [CLIP]``: speed per stage on a clip (detectors, generator per backend), the
encode profile (per-stage p50 / p99 and end-to-end fps for one face and for three faces side by
side, beside MediaPipe FaceMesh on the same frames), then the codec's rate and re-render quality
beside H.264 and AV1 (``--what codec``)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ..benchmark import (
    bench_detect,
    bench_engine,
    clip_frames,
    format_profile,
    format_stats,
    mediapipe_facemesh,
    profile_encode,
    side_by_side,
)
from ..errors import InputNotFound

REPO = Path(__file__).resolve().parents[2]


def default_clip() -> Path:
    """The example clip shipped with the project (one face, 512x512, 30 fps)."""
    return REPO / "examples" / "talking_lp_d3.mp4"


def run(args: argparse.Namespace) -> int:
    clip = args.input or default_clip()
    if not clip.is_file():
        raise InputNotFound(f"{clip}: no such clip (give one: streamcap bench CLIP)")
    threads = args.threads or 2
    out: dict = {"clip": str(clip), "threads": threads}
    bundle = None
    if args.what != "detect":
        from ..bundle import load_bundle

        bundle = load_bundle(args.bundle)
    if args.what in ("detect", "all"):
        frames = clip_frames(clip, args.frames)
        out["detect"] = bench_detect(frames)
        print(format_stats(f"detection on {clip.name}, frames letterboxed to 640x480", out["detect"]))
    if args.what in ("engine", "all"):
        backends = ["ort", "torch", "tensorrt"] if args.backend == "auto" else [args.backend]
        out["engine"] = bench_engine(bundle, backends, threads)
        print(format_stats(f"generator {bundle.name} ({bundle.spec.input_size}px), {threads} threads, ms per face",
                           out["engine"]))
    if args.what in ("profile", "all"):
        with tempfile.TemporaryDirectory() as tmp:
            clips = {"1 face": clip, "3 faces": side_by_side(clip, Path(tmp) / f"{clip.stem}_x3.mp4")}
            runs, mp = {}, {}
            for name, c in clips.items():
                runs[name] = profile_encode(bundle, c, args.frames, args.threads, args.backend, args.detector,
                                            args.landmarks)
                mp[name] = mediapipe_facemesh(c, args.frames, 1 if name == "1 face" else 3, args.mediapipe_python)
        out["profile"] = {"runs": runs, "mediapipe": mp}
        sizes = ", ".join(f"{n}: {r['size'][0]}x{r['size'][1]}, {r['faces_per_frame']:.2f} faces/frame"
                          for n, r in runs.items())
        print(f"streamcap encode on {clip.name} ({sizes}), {bundle.name} ({bundle.spec.input_size}px), "
              f"{args.detector} + {args.landmarks} landmarks, {runs['1 face']['threads']} inference thread(s), "
              f"{args.frames} frames")
        print(format_profile(runs, mp))
    if args.what in ("codec", "all"):
        from ..ratedistortion import RATES
        from ..ratedistortion import run as rate_distortion

        rd_json = args.json.with_name(args.json.stem + "_codec.json") if args.json else None
        rate_distortion([clip], args.frames, list(RATES), rd_json, args.bundle,
                        plots=args.json.parent if args.json else None)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0
