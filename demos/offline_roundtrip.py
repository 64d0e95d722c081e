"""Encode a clip to a face stream, decode it, and write a side-by-side video to look at:
source | streamcap re-render | H.264 at the same bitrate.

    python demos/offline_roundtrip.py ../shared/data/videos/lp_d19.mp4 -o roundtrip.mp4 [--frames 150 --quality 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from streamcap.videowriter import VideoWriter


def frames_of(path: Path, n: int) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="bgr24"))
            if len(out) >= n:
                break
    return out


def h264_at(frames: list[np.ndarray], fps: float, kbps: float, path: Path) -> list[np.ndarray]:
    with VideoWriter(path, fps, codec="libx264", bit_rate=int(kbps * 1000), options={"preset": "medium"}) as w:
        for f in frames:
            w.write(f)
    return frames_of(path, len(frames))


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("-o", "--output", type=Path, default=Path("roundtrip.mp4"))
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--quality", type=int, default=50)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as td:
        scap, re_mp4 = Path(td) / "s.scap", Path(td) / "re.mp4"
        for cmd in (["encode", str(args.clip), "-o", str(scap), "--max-frames", str(args.frames),
                     "--quality", str(args.quality)], ["decode", str(scap), "-o", str(re_mp4)]):
            p = subprocess.run([sys.executable, "-m", "streamcap.cli", *cmd], text=True)
            if p.returncode:
                return p.returncode
        src = frames_of(args.clip, args.frames)
        with av.open(str(args.clip)) as c:
            fps = float(c.streams.video[0].average_rate)
        kbps = scap.stat().st_size * 8 / 1000 / (len(src) / fps)
        ours = frames_of(re_mp4, len(src))
        h264 = h264_at(src, fps, kbps, Path(td) / "h264.mp4")
    with VideoWriter(args.output, fps) as w:
        for s, o, h in zip(src, ours, h264):
            w.write(np.concatenate([label(s, "source"), label(o, f"streamcap {kbps:.0f} kbit/s"),
                                    label(h, f"H.264 {kbps:.0f} kbit/s")], 1))
    print(f"wrote {args.output}: {len(src)} frames, streamcap stream {kbps:.1f} kbit/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
