"""Speed yardstick: ``streamcap encode`` per stage beside MediaPipe FaceMesh, same frames, same run.

    python benchmarks/speed_vs_mediapipe.py [CLIP] [--frames 300] [--threads 2] \
        [--mediapipe-python .venv-label/bin/python] [--json docs/results/profile.json]

The same as ``streamcap bench [CLIP] --what profile``: the clip (default: the shipped
``examples/talking_lp_d3.mp4``, one face, 512x512) and three copies of it side by side go
through the real encode path (decode thread, detection a frame late, tracking from the
generator's landmarks, crop, generator, geometry, face codec, .scap write); per stage p50 / p99
ms per frame and end-to-end fps. MediaPipe runs in its own venv (it would replace the runtime's
OpenCV) through ``benchmarks/bench_mediapipe.py`` on the same clips.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:], "--what", "profile"]))
