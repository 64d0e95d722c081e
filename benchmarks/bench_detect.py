"""Detector + landmark + tracker time per 640x480 frame (same as ``streamcap bench --what detect``).

    python benchmarks/bench_detect.py [CLIP] [--frames 150] [--json out.json]
"""

from __future__ import annotations

import sys

from streamcap.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:], "--what", "detect"]))
