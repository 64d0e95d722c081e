"""Rate-distortion: the face codec beside H.264 (libx264) and AV1 (libsvtav1) on one clip.

    python benchmarks/rate_distortion.py ../shared/data/videos/lp_d19.mp4 --frames 150 \
        [--qualities 20 50 80] [--json docs/results/rate_distortion.json]
    streamcap bench CLIP --what codec          (the same, from the command line)

For every method the same measures, on the same frames:
* kbit/s: bytes actually written (our .scap with headers, plates, textures; the video file's
  packets for H.264/AV1) over the clip's duration;
* landmark distance: dlib's 68 points on the source and on the decoded frame (both placed
  from the source frame's detection), mean distance in px at a 256 px face size;
* PSNR inside the face: over the convex hull of the source frame's 68 landmarks.
H.264 and AV1 run over a bitrate ladder; we report them at the codec's own bitrate (matched
bitrate) and at the bitrate where they reach our landmark distance (interpolated in log-rate).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np

from .benchmark import clip_frames
from .detect import FaceDetector, LandmarkPredictor

LADDER = (6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only


class Judge:
    """Source landmarks and face masks, computed once; scores decoded frames against them."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        det, self.lmk = FaceDetector("hog"), LandmarkPredictor()  # dlib's own box for dlib's 68 points
        self.src = frames
        self.boxes, self.marks, self.masks = [], [], []
        for f in frames:
            b = det.detect(f)
            box = b[0] if b else (self.boxes[-1] if self.boxes else None)
            self.boxes.append(box)
            lm = self.lmk.predict(f, box) if box is not None else None
            self.marks.append(lm)
            m = np.zeros(f.shape[:2], np.uint8)
            if lm is not None:
                cv2.fillConvexPoly(m, cv2.convexHull(lm.astype(np.int32)), 1)
            self.masks.append(m.astype(bool))

    def score(self, decoded: list[np.ndarray]) -> dict[str, float]:
        lds, psnrs = [], []
        for i, (d, s) in enumerate(zip(decoded, self.src)):
            if self.marks[i] is None:
                continue
            lm = self.lmk.predict(d, self.boxes[i])
            wh = np.ptp(self.marks[i], 0)
            lds.append(np.linalg.norm(lm - self.marks[i], axis=1).mean() * 256.0 / np.sqrt(wh[0] * wh[1]))
            m = self.masks[i]
            mse = np.mean((d[m].astype(np.float64) - s[m].astype(np.float64)) ** 2)
            psnrs.append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
        return {"landmark_px256": float(np.mean(lds)), "psnr_face_db": float(np.mean(psnrs)), "frames": len(lds)}


def video_codec(frames: list[np.ndarray], fps: float, codec: str, kbps: float,
                tmp: Path) -> tuple[float, list[np.ndarray]]:
    """Encode at a target bitrate with PyAV, return (actual kbit/s, decoded frames)."""
    path = tmp / f"{codec}_{kbps}.mkv"
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=int(round(fps)))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.bit_rate = int(kbps * 1000)
        s.options = {"preset": "medium"} if codec == "libx264" else {"preset": "8"}
        nbytes = 0
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                nbytes += p.size
                c.mux(p)
        for p in s.encode(None):
            nbytes += p.size
            c.mux(p)
    with av.open(str(path)) as c:
        dec = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    return nbytes * 8 / 1000 / (len(frames) / fps), dec[: len(frames)]


def ours(clip: Path, frames: int, quality: int, tmp: Path, kbps: float | None = None,
         bundle: Path | None = None) -> tuple[dict, list[np.ndarray]]:
    scap, mp4 = tmp / f"q{quality}.scap", tmp / f"q{quality}.mp4"
    cmd = [sys.executable, "-m", "streamcap.cli", "encode", str(clip), "-o", str(scap), "--max-frames", str(frames),
           "--quality", str(quality), "--threads", "2"]
    if kbps:
        cmd += ["--kbps", str(kbps)]
    if bundle:
        cmd += ["--bundle", str(bundle)]
    enc = subprocess.run(cmd, capture_output=True, text=True)
    if enc.returncode:
        raise SystemExit(enc.stderr)
    dec = subprocess.run([sys.executable, "-m", "streamcap.cli", "decode", str(scap), "-o", str(mp4)]
                         + (["--bundle", str(bundle)] if bundle else []), capture_output=True, text=True)
    if dec.returncode:
        raise SystemExit(dec.stderr)
    with av.open(str(mp4)) as c:
        out = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    with av.open(str(clip)) as c:
        fps = float(c.streams.video[0].average_rate)
    return {"kbps": scap.stat().st_size * 8 / 1000 / (frames / fps), "encode_log": enc.stdout.strip()}, out


def at_distance(points: list[dict], target: float) -> float | None:
    """Lowest bitrate (log-interpolated) at which a ladder reaches landmark distance ``target``."""
    pts = sorted(points, key=lambda p: p["kbps"])
    for a, b in zip(pts, pts[1:]):
        if a["landmark_px256"] > target >= b["landmark_px256"]:
            t = (a["landmark_px256"] - target) / (a["landmark_px256"] - b["landmark_px256"])
            return float(np.exp(np.log(a["kbps"]) + t * (np.log(b["kbps"]) - np.log(a["kbps"]))))
    if pts and pts[0]["landmark_px256"] <= target:
        return pts[0]["kbps"]
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--qualities", type=int, nargs="+", default=[20, 50, 80])
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    return run(args.clip, args.frames, args.qualities, args.json, args.bundle)


def run(clip: Path, n_frames: int, qualities: list[int], json_path: Path | None, bundle: Path | None) -> int:
    """Measure and print the table; see the module doc."""
    args = argparse.Namespace(clip=clip, frames=n_frames, qualities=qualities, json=json_path)
    src = clip_frames(args.clip, args.frames, size=None)
    with av.open(str(args.clip)) as c:
        fps = float(c.streams.video[0].average_rate)
    judge = Judge(src)
    res: dict = {"clip": args.clip.name, "frames": len(src), "size": list(src[0].shape[1::-1]), "fps": fps}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        res["streamcap"] = []
        for q in args.qualities:
            info, dec = ours(args.clip, len(src), q, tmp, bundle=bundle)
            res["streamcap"].append({"quality": q, **info, **judge.score(dec)})
        for codec in ("libx264", "libsvtav1"):
            ladder = []
            for k in LADDER:
                actual, dec = video_codec(src, fps, codec, k, tmp)
                ladder.append({"target_kbps": k, "kbps": actual, **judge.score(dec)})
            res[codec] = ladder
    print(f"{args.clip.name}: {len(src)} frames {res['size'][0]}x{res['size'][1]} @ {fps:g} fps")
    print(f"{'method':<22}{'kbit/s':>9}{'lmk px@256':>12}{'PSNR face':>11}")
    for r in res["streamcap"]:
        name = f"streamcap q{r['quality']}"
        print(f"{name:<22}{r['kbps']:>9.1f}{r['landmark_px256']:>12.2f}{r['psnr_face_db']:>10.2f}")
    for codec in ("libx264", "libsvtav1"):
        for r in res[codec]:
            print(f"{codec + ' ' + str(r['target_kbps']) + 'k':<22}{r['kbps']:>9.1f}{r['landmark_px256']:>12.2f}"
                  f"{r['psnr_face_db']:>10.2f}")
    res["matched"] = []
    for r in res["streamcap"]:
        row = {"quality": r["quality"], "kbps": r["kbps"], "landmark_px256": r["landmark_px256"]}
        for codec in ("libx264", "libsvtav1"):
            row[f"{codec}_kbps_for_same_landmarks"] = at_distance(res[codec], r["landmark_px256"])
        res["matched"].append(row)
        print(f"streamcap q{r['quality']}: {r['kbps']:.1f} kbit/s at {r['landmark_px256']:.2f} px; same landmark "
              f"distance needs H.264 {row['libx264_kbps_for_same_landmarks'] or float('nan'):.1f}, "
              f"AV1 {row['libsvtav1_kbps_for_same_landmarks'] or float('nan'):.1f} kbit/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
