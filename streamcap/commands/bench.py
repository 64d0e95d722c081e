"""``streamcap bench [CLIP]``: speed per stage on a clip (detector, landmarks, tracker, generator),
then the codec's rate and re-render quality beside H.264 and AV1 (``--what codec``)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..benchmark import bench_detect, bench_engine, clip_frames, format_stats
from ..errors import InputNotFound


def default_clip() -> Path:
    base = Path(os.environ.get("STREAMCAP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    return base / "videos" / "lp_d9.mp4"


def run(args: argparse.Namespace) -> int:
    clip = args.input or default_clip()
    if not clip.is_file():
        raise InputNotFound(f"{clip}: no such clip (give one: streamcap bench CLIP)")
    threads = args.threads or 2
    out: dict = {"clip": str(clip), "threads": threads}
    if args.what in ("detect", "all"):
        frames = clip_frames(clip, args.frames)
        out["detect"] = bench_detect(frames)
        print(format_stats(f"detection on {clip.name}, frames letterboxed to 640x480", out["detect"]))
    if args.what in ("engine", "all"):
        from ..bundle import load_bundle

        bundle = load_bundle(args.bundle)
        backends = ["ort", "torch", "tensorrt"] if args.backend == "auto" else [args.backend]
        out["engine"] = bench_engine(bundle, backends, threads)
        print(format_stats(f"generator {bundle.name} ({bundle.spec.input_size}px), {threads} threads, ms per face",
                           out["engine"]))
    if args.what in ("codec", "all"):
        from ..ratedistortion import RATES
        from ..ratedistortion import run as rate_distortion

        rd_json = args.json.with_name(args.json.stem + "_codec.json") if args.json else None
        rate_distortion([clip], args.frames, list(RATES), rd_json, args.bundle,
                        plots=args.json.parent if args.json else None)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0
