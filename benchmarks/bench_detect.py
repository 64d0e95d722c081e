"""Detector time per 640x480 frame (YuNet, dlib HOG) and dlib's 68 points per face (same as
``streamcap bench --what detect``). Recall and false positives: ``benchmarks/detectors.py``.

    python benchmarks/bench_detect.py [CLIP] [--frames 150] [--json out.json]
"""

from __future__ import annotations

import sys

from streamcap.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:], "--what", "detect"]))
