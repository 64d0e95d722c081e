"""The ``streamcap`` command line: one argparse front, handlers import their modules lazily.

Every handler returns an exit code; library errors (``StreamcapError``) become one line on
stderr and exit code 2, Ctrl-C exits 130 after the handler flushed what it had written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .errors import StreamcapError

# The runtime's numpy products are small (a few ms of work at most) and sit between stages that
# have threads of their own (decode, detection, ONNX Runtime). A multi-threaded BLAS there only
# waits for a second core: benchmarks/threads.py, on the 2-core machine under load, measured the
# codec's coefficient fit at 0.14 ms with one OpenBLAS thread and 16 ms with its default (0.13 ms
# in the one round the other core was free). Set before numpy loads; the environment wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

Handler = Callable[[argparse.Namespace], int]
BACKENDS = ("auto", "ort", "tensorrt", "torch")


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default: the shipped one)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="inference backend (default: auto)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for inference (0: 1 for video, whose other stages have threads of their own; "
                   "the library default for photos)")
    p.add_argument("--detector", choices=("yunet", "hog", "mmod"), default="yunet",
                   help="face detector (default: yunet; hog and mmod are dlib's)")
    p.add_argument("--landmarks", choices=("generator", "dlib"), default="generator",
                   help="what follows a face between detections: the generator's own 68 points (default) "
                   "or dlib's 68-point predictor on every frame")


def _add_codec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kbps", type=float, default=None, help="target stream rate per face in kbit/s")
    p.add_argument("--quality", type=int, default=50, help="1 (smallest) .. 100 (best), when --kbps is not set")
    p.add_argument("--keyframe-every", type=float, default=5.0,
                   help="format 1: seconds between keyframes (format 2 sends them when needed: a new face, a "
                        "receiver's request, a scene change, a delta dearer than a keyframe)")


def _add_v2_flags(p: argparse.ArgumentParser, old: str) -> None:
    p.add_argument("--format", type=int, choices=(1, 2), default=2,
                   help="stream format: 2 (default: compact packets, AV1 texture video; --kbps is the whole "
                        f"stream) or 1 (the old msgpack/JPEG format, {old})")
    p.add_argument("--texture-size", type=int, default=None,
                   help="v2: side of the UV texture video (0: none; default 64, or by --kbps)")
    p.add_argument("--texture-fps", type=float, default=None,
                   help="v2: texture pictures per second (default 10, or by --kbps)")
    p.add_argument("--frame-step", type=int, default=None,
                   help="v2: code every N-th frame, the decoder interpolates (default 1, or by --kbps: "
                        "about 15 packets/s below 10 kbit/s, 7.5 below 3)")


def build_parser(handlers: dict[str, Handler] | None = None) -> argparse.ArgumentParser:
    h = handlers or default_handlers()
    ap = argparse.ArgumentParser(prog="streamcap",
                                 description="Real-time face capture, 3D reconstruction and compression.")
    ap.add_argument("--version", action="version", version=f"streamcap {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    ap.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("send", help="capture a camera or video, encode every face and publish over ZeroMQ")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", type=int, help="camera index (OpenCV)")
    src.add_argument("--video", type=Path, help="video file")
    p.add_argument("--loop", action="store_true", help="loop the video")
    p.add_argument("--realtime", action="store_true", help="pace the video at its own frame rate")
    p.add_argument("--bind", default="tcp://*:5555", help="PUB endpoint (keyframe requests on port+1)")
    p.add_argument("--curve-keys", type=Path, default=None, help="folder from 'streamcap keygen' for CurveZMQ")
    p.add_argument("--frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    p.add_argument("--stats", type=Path, default=None, help="write frame rate, bytes and requests as JSON on exit")
    _add_model_flags(p)
    _add_codec_flags(p)
    _add_v2_flags(p, "for receivers from before stream v2")
    p.set_defaults(func=h["send"])

    p = sub.add_parser("receive", help="subscribe to a sender, decode and re-render the faces")
    p.add_argument("--connect", default="tcp://127.0.0.1:5555", help="sender's PUB endpoint")
    p.add_argument("--frames", type=int, default=0, help="stop after N rendered frames (0: until Ctrl-C)")
    p.add_argument("-o", "--output", type=Path, default=None, help="write the re-rendered video here")
    p.add_argument("--headless", action="store_true",
                   help="no window even with a display: decode and render offscreen for -o and the stats")
    p.add_argument("--curve-keys", type=Path, default=None, help="folder from 'streamcap keygen' for CurveZMQ")
    p.add_argument("--timeout", type=float, default=0.0, help="give up after N seconds without a sender (0: wait)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the shipped one, else the one "
                   "the stream names)")
    p.add_argument("--stats", type=Path, default=None, help="write latency, loss and a per-frame log as JSON on exit")
    p.add_argument("--simulate-loss", type=float, default=0.0, metavar="P",
                   help="drop this fraction of incoming messages (to try loss recovery; default 0)")
    p.set_defaults(func=h["receive"])

    p = sub.add_parser("encode", help="encode a video file offline into a compact .scap stream")
    p.add_argument("input", type=Path, help="video file")
    p.add_argument("-o", "--output", type=Path, default=None, help="stream file (default: INPUT.scap)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: all)")
    _add_model_flags(p)
    _add_codec_flags(p)
    _add_v2_flags(p, "for older readers")
    p.set_defaults(func=h["encode"])

    p = sub.add_parser("decode", help="decode a .scap stream and re-render it to video")
    p.add_argument("input", type=Path, help=".scap stream file")
    p.add_argument("-o", "--output", type=Path, default=None, help="output video (default: INPUT.mp4)")
    p.add_argument("--show", action="store_true", help="also show a window (needs a display)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle (default: the one the stream names)")
    p.set_defaults(func=h["decode"])

    p = sub.add_parser("reconstruct", help="reconstruct every face of images in 3D (.obj + texture, overlay)")
    p.add_argument("inputs", type=Path, nargs="+", help="image files")
    p.add_argument("-o", "--output", type=Path, default=Path("out"), help="output folder (default: out/)")
    p.add_argument("--format", choices=("obj", "ply"), default="obj", help="mesh format (default: obj)")
    _add_model_flags(p)
    p.set_defaults(func=h["reconstruct"])

    p = sub.add_parser("capture", help="face capture for animation: a video or camera to per-face CSV, JSONL "
                       "and glTF (pose, landmarks, ARKit-named expressions), optionally live over OSC")
    p.add_argument("input", type=Path, nargs="?", default=None, help="video file (or --camera N)")
    p.add_argument("--camera", type=int, default=None, help="camera index (OpenCV) instead of a file")
    p.add_argument("-o", "--output", type=Path, default=Path("take"), help="take folder (default: take/)")
    p.add_argument("--no-smooth", action="store_true", help="turn off the One-Euro smoothing of the outputs")
    p.add_argument("--osc", default=None, metavar="HOST:PORT",
                   help="also send every frame live as VMC-protocol OSC (avatar apps listen on 39539)")
    p.add_argument("--morph-targets", type=int, default=0, metavar="N",
                   help="glTF morph targets: the first N basis components (default 0: all)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    _add_model_flags(p)
    p.set_defaults(func=h["capture"])

    p = sub.add_parser("bench", help="measure speed, stream rate and quality on a clip")
    p.add_argument("input", type=Path, nargs="?", default=None,
                   help="video clip with one face (default: examples/talking_lp_d3.mp4)")
    p.add_argument("--frames", type=int, default=150, help="frames to process")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--what", choices=("detect", "engine", "profile", "codec", "all"), default="all",
                   help="which stages (profile: the encode pipeline per stage, 1 and 3 faces)")
    p.add_argument("--mediapipe-python", type=Path, default=Path(".venv-label/bin/python"),
                   help="python of a venv with mediapipe, for the FaceMesh column of the profile")
    _add_model_flags(p)
    p.set_defaults(func=h["bench"])

    p = sub.add_parser("eval", help="accuracy: 2D/3D NME on AFLW2000-3D-format data, per yaw bin")
    p.add_argument("--aflw", type=Path, required=True, help="folder of jpg + mat (pt3d_68) pairs")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most N images (0: all)")
    p.add_argument("--methods", default="model,dlib", help="comma list of: model, dlib (default: both)")
    _add_model_flags(p)
    p.set_defaults(func=h["eval"])

    p = sub.add_parser("keygen", help="write CurveZMQ key pairs for a sender and a receiver")
    p.add_argument("folder", type=Path, help="where to write the keys")
    p.set_defaults(func=h["keygen"])
    return ap


def default_handlers() -> dict[str, Handler]:
    """Map each command to its handler; implementations import heavy modules only when run."""

    def lazy(module: str, func: str = "run") -> Handler:
        def handler(args: argparse.Namespace) -> int:
            import importlib

            return getattr(importlib.import_module(f"streamcap.commands.{module}"), func)(args)

        return handler

    return {
        "send": lazy("live", "run_send"),
        "receive": lazy("live", "run_receive"),
        "encode": lazy("codec", "run_encode"),
        "decode": lazy("codec", "run_decode"),
        "reconstruct": lazy("reconstruct"),
        "capture": lazy("capture"),
        "bench": lazy("bench"),
        "eval": lazy("evaluate"),
        "keygen": lazy("live", "run_keygen"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import cv2

    # OpenCV's own threads for the same reason as BLAS's above: its work here is small (crops,
    # resizes) or runs in a worker thread beside inference (detection), where a second OpenCV
    # thread competes with inference; YuNet alone was no slower on one (benchmarks/threads.py).
    cv2.setNumThreads(1)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except StreamcapError as exc:
        print(f"streamcap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"streamcap {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if args.debug:
            raise
        print(f"streamcap {args.command}: internal error: {type(exc).__name__}: {exc} (rerun with --debug)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
