"""How the v2 texture video's size, picture rate and quality trade against the result (issue 14).

    python benchmarks/codec_texture_sweep.py ../shared/data/videos/iplap_129.mp4 --frames 150

The generator runs once; the codec then encodes the same geometry without rate control
(coefficient quality 20, i.e. coarse geometry) with the texture video at each (side, pictures
per second, AV1 CRF) of the sweep, and each decoded, rendered clip is scored like the
rate-distortion benchmark (streamcap/ratedistortion.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


from streamcap import ratedistortion as rd

SWEEP = [  # (texture side, texture pictures per second, AV1 CRF, frame step)
    (64, 5, 45, 2), (64, 10, 50, 1), (64, 10, 58, 1), (64, 15, 50, 1), (64, 30, 30, 1),
    (96, 7.5, 52, 2), (128, 10, 50, 1), (128, 30, 30, 1),
]


def run(clip: Path, frames_n: int, quality: float = 20) -> list[dict]:
    from streamcap_codecs.encoder2 import FaceStreamEncoder2
    from streamcap_codecs.scap2 import ScapWriter2

    from streamcap.commands.codec import load_codec

    frames, faces, fps, bundle, _ = rd.track_clip(clip, frames_n, None)
    judge = rd.Judge(frames)
    basis = load_codec(bundle)
    out = []
    with tempfile.TemporaryDirectory() as td:
        for side, tfps, crf, step in SWEEP:
            path = Path(td) / "s.scap"
            enc = FaceStreamEncoder2(basis, bundle.layout, fps=fps, quality=quality, texture_size=side,
                                     texture_fps=min(tfps, fps / step), texture_crf=crf, frame_step=step)
            t0 = time.perf_counter()
            with ScapWriter2(path) as wr:
                for img, fc in zip(frames, faces):
                    for e in enc.encode(img, fc):
                        wr.write(e.data, e.seq, e.key)
            enc.close()
            enc_fps = len(frames) / (time.perf_counter() - t0)
            dec = rd.render_scap(path, basis, bundle.layout, len(frames), frames[0].shape[:2])
            secs = len(frames) / fps
            row = {"texture_size": side, "texture_fps": tfps, "crf": crf, "frame_step": step,
                   "kbps": path.stat().st_size * 8 / 1000 / secs,
                   "texture_kbps": enc.stats.texture * 8 / 1000 / secs,
                   "geometry_kbps": enc.stats.geometry * 8 / 1000 / secs, "encode_fps": enc_fps,
                   **judge.score(dec)}
            out.append(row)
            print(f"T={side:3d} {tfps:4g} pic/s crf {crf}: {row['kbps']:6.2f} kbit/s "
                  f"(texture {row['texture_kbps']:.2f},"
                  f" geometry {row['geometry_kbps']:.2f}), face {row['psnr_face_db']:.2f} dB / SSIM "
                  f"{row['ssim_face']:.3f}, lmk {row['landmark_px256']:.2f} px, mouth r {row['mouth_corr']:.2f} "
                  f"amp {row['mouth_amp_ratio']:.2f}, eyes r {row['eye_corr']:.2f}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = run(args.clip, args.frames)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
