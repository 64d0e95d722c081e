"""Rate-distortion: the face codec (stream format v2) against AV1 and H.264 ladders on held-out clips.

    python benchmarks/codec_rd.py ../shared/data/videos/lp_d19.mp4 [more clips] --frames 300 \
        [--rates 2 3.5 5 8 12 20] [--json docs/results/codec_rd.json] [--plots docs/results]
        [--reuse-anchors OLD.json]   (anchor configurations measured before are taken over)
    streamcap bench CLIP --what codec          (the same for one clip)

Per clip, the generator runs once over the frames; the codec then encodes that geometry and
texture at every rate, writes a real ``.scap`` v2 file, decodes it and renders it. The classic
codecs (libsvtav1 and libx264 through PyAV) run at the clip's resolution and at 1/2 and 1/4 of
it, at the full and at half the frame rate (and at 1/8, AV1 no smaller than 64 px a side, H.264
at half rate only; AV1 also at fixed CRF 63 and 55 at 1/4 and 1/8), and are scaled back up
(bicubic) and repeated to the source frames; the **anchor** at a rate is, for each measure
separately, the best any of those configurations reaches at that rate (log-rate interpolation
inside each configuration's ladder; a configuration whose lowest point is above the rate
does not count).

Every point, on the same source frames:
* kbit/s of the whole file (``.scap`` or .mkv packets) over the clip's duration, and the wire
  rate (packet bytes without the file's chunk framing) beside it for ours;
* PSNR and SSIM over the face (bounding box of the source's dlib-68 hull; PSNR inside the hull)
  and over the whole frame;
* landmark distance: dlib 68 on the source and on the decoded frame (both from the source
  frame's face box), mean px at a 256 px face;
* expression: correlation over time of mouth opening (inner lips) and eye opening (eyelids)
  between source and decoded, and the mouth amplitude ratio std(decoded) / std(source).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .detect import FaceDetector, LandmarkPredictor

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1: errors only
ANCHOR_LADDER = (2, 3, 5, 8, 12, 20)
# AV1 at a fixed CRF, down to its coarsest (63), at 1/4 and 1/8 size (scale, frame-rate divisor):
# below what its rate control reaches at a low target (what a careful user would try at a few kbit/s)
ANCHOR_CRFS = (63, 55)
CRF_CONFIGS = ((4, 2), (8, 2), (8, 1))
# 1/8 size: up to 8 kbit/s (above, larger sizes win), and H.264 only at half frame rate (at full
# rate on pexels_wolfgang it was below every other configuration: 15.6 dB face PSNR at 3.6 kbit/s)
EIGHTH_LADDER = (2, 3, 5, 8)
ANCHOR_CODECS = ("libsvtav1", "libx264")
SCALES = (1, 2, 4, 8)
FPS_DIVS = (1, 2)
RATES = (2.0, 3.5, 5.0, 8.0, 12.0, 20.0)
MEASURES = ("psnr_face_db", "ssim_face", "psnr_frame_db", "ssim_frame", "landmark_px256", "mouth_corr",
            "mouth_amp_ratio", "eye_corr")
LOWER_IS_BETTER = {"landmark_px256"}
# inner lips (dlib 68, 0-based): upper 61 62 63, lower 67 66 65
_MOUTH = ((61, 67), (62, 66), (63, 65))


def mouth_opening(lm: np.ndarray) -> float:
    """Inner-lip gap over the outer eye-corner distance."""
    iod = np.linalg.norm(lm[36] - lm[45])
    return float(np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in _MOUTH]) / max(iod, 1e-6))


def eye_opening(lm: np.ndarray) -> float:
    """Mean eyelid gap over eye width, both eyes."""
    def one(e: int) -> float:
        p = lm[e:e + 6]
        gap = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        return float(gap / (2 * max(np.linalg.norm(p[0] - p[3]), 1e-6)))
    return 0.5 * (one(36) + one(42))


def _corr(a: list[float], b: list[float]) -> float:
    a_, b_ = np.asarray(a), np.asarray(b)
    if len(a_) < 3 or a_.std() < 1e-9 or b_.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a_, b_)[0, 1])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * math.log10(255.0**2 / max(mse, 1e-10))


class Judge:
    """Source landmarks, face boxes and masks, computed once; scores decoded frames against them."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        from skimage.metrics import structural_similarity

        self._ssim = structural_similarity
        det, self.lmk = FaceDetector("hog"), LandmarkPredictor()  # dlib's own box for dlib's 68 points
        self.src = frames
        self.boxes, self.marks, self.masks, self.rects = [], [], [], []
        for f in frames:
            b = det.detect(f)
            box = b[0] if b else (self.boxes[-1] if self.boxes else None)
            self.boxes.append(box)
            lm = self.lmk.predict(f, box) if box is not None else None
            self.marks.append(lm)
            m = np.zeros(f.shape[:2], np.uint8)
            rect = None
            if lm is not None:
                hull = cv2.convexHull(lm.astype(np.int32))
                cv2.fillConvexPoly(m, hull, 1)
                x, y, w, h = cv2.boundingRect(hull)
                rect = (max(x, 0), max(y, 0), w, h)
            self.masks.append(m.astype(bool))
            self.rects.append(rect)
        self.src_gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        self.mouth = [mouth_opening(lm) if lm is not None else None for lm in self.marks]
        self.eyes = [eye_opening(lm) if lm is not None else None for lm in self.marks]

    def score(self, decoded: list[np.ndarray]) -> dict[str, float]:
        if len(decoded) < len(self.src):
            raise ValueError(f"{len(decoded)} decoded frames for {len(self.src)} source frames")
        lds, pf, sf, pw, sw = [], [], [], [], []
        ms, md, es, ed = [], [], [], []
        for i, (d, s) in enumerate(zip(decoded, self.src)):
            g = cv2.cvtColor(d, cv2.COLOR_BGR2GRAY)
            pw.append(_psnr(d, s))
            sw.append(self._ssim(self.src_gray[i], g, data_range=255))
            if self.marks[i] is None:
                continue
            lm = self.lmk.predict(d, self.boxes[i])
            wh = np.ptp(self.marks[i], 0)
            lds.append(np.linalg.norm(lm - self.marks[i], axis=1).mean() * 256.0 / np.sqrt(wh[0] * wh[1]))
            m = self.masks[i]
            pf.append(_psnr(d[m], s[m]))
            x, y, w, h = self.rects[i]
            if w >= 7 and h >= 7:
                sf.append(self._ssim(self.src_gray[i][y:y + h, x:x + w], g[y:y + h, x:x + w], data_range=255))
            ms.append(self.mouth[i])
            md.append(mouth_opening(lm))
            es.append(self.eyes[i])
            ed.append(eye_opening(lm))
        return {
            "psnr_face_db": float(np.mean(pf)), "ssim_face": float(np.mean(sf)),
            "psnr_frame_db": float(np.mean(pw)), "ssim_frame": float(np.mean(sw)),
            "landmark_px256": float(np.mean(lds)),
            "mouth_corr": _corr(ms, md), "mouth_amp_ratio": float(np.std(md) / max(np.std(ms), 1e-9)),
            "eye_corr": _corr(es, ed), "frames": len(lds),
        }


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def video_codec(frames: list[np.ndarray], fps: float, codec: str, kbps: float, scale: int, fps_div: int,
                tmp: Path, crf: int | None = None) -> tuple[float, list[np.ndarray], float]:
    """Encode at a target bitrate, or at a fixed ``crf`` (libsvtav1 only), downscaled by ``scale``,
    every ``fps_div``-th frame; decode, scale back up, repeat to the source frames -> (actual
    kbit/s, frames, encode fps)."""
    path = tmp / f"{codec}_{kbps}_{crf}_{scale}_{fps_div}.mkv"
    h, w = frames[0].shape[:2]
    sw, sh = _even(w / scale), _even(h / scale)
    if codec == "libsvtav1":
        sw, sh = max(sw, 64), max(sh, 64)
    rate = fps / fps_div
    nbytes = 0
    from streamcap_codecs.av1 import ordinary_scheduling  # SVT-AV1 as root goes real-time: undo it

    t0 = time.perf_counter()
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = sw, sh, "yuv420p"
        if crf is None:
            s.bit_rate = int(kbps * 1000)
            s.options = {"preset": "medium"} if codec == "libx264" else {"preset": "8"}
        else:
            s.options = {"preset": "8", "crf": str(crf)}
        src = frames[::fps_div]
        for f in src:
            small = cv2.resize(f, (sw, sh), interpolation=cv2.INTER_AREA) if (sw, sh) != (w, h) else f
            for p in s.encode(av.VideoFrame.from_ndarray(small, format="bgr24")):
                nbytes += p.size
                c.mux(p)
            ordinary_scheduling()
        for p in s.encode(None):
            nbytes += p.size
            c.mux(p)
    ordinary_scheduling()
    enc_fps = len(src) / (time.perf_counter() - t0)
    with av.open(str(path)) as c:
        dec = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    out = []
    for i in range(len(frames)):
        d = dec[min(i // fps_div, len(dec) - 1)]
        out.append(cv2.resize(d, (w, h), interpolation=cv2.INTER_CUBIC) if d.shape[:2] != (h, w) else d)
    return nbytes * 8 / 1000 / (len(frames) / fps), out, enc_fps


def track_clip(clip: Path, n: int, bundle_path: Path | None, threads: int = 2):
    """Run capture -> track -> generator once: (frames, per-frame faces, fps, bundle, seconds)."""
    from .bundle import load_bundle
    from .capture import VideoSource
    from .pipeline import FacePipeline

    bundle = load_bundle(bundle_path)
    pipe = FacePipeline.create(bundle, "auto", threads=threads)  # what ``streamcap encode`` runs by default
    frames, faces = [], []
    t0 = time.perf_counter()
    with VideoSource(clip) as src:
        fps = src.fps
        for res in pipe.run(src):
            if res.index >= n:
                break
            frames.append(res.image)
            faces.append([(tid, f.vertices, f.texture) for tid, f in res.faces])
    return frames, faces, fps, bundle, time.perf_counter() - t0


def render_scap(path: Path, basis, layout, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Decode a .scap v2 file and render it over its plate -> exactly ``n`` frames of ``size``
    (h, w), one per source frame (repeated where the stream skipped frames, padded at the end)."""
    from .commands.codec2 import decode_file
    from .render import FaceRenderer

    h, w = size
    out: list[np.ndarray] = []
    with FaceRenderer(w, h, layout) as r:
        def emit(fr, repeats: int) -> None:
            bg = fr.background if fr.background is not None else np.zeros((h, w, 3), np.uint8)
            img = r.render(bg, [(f.posmap, f.texture) for f in fr.faces if f.posmap.size])
            out.extend([img] * repeats)
        decode_file(path, basis, layout, emit)
    return (out + [out[-1]] * n)[:n]


def streamcap_point(frames, faces, fps, bundle, kbps: float, tmp: Path) -> tuple[dict, list[np.ndarray]]:
    """Encode the cached geometry/texture at ``kbps`` to a .scap v2 file, decode and render it."""
    from streamcap_codecs.encoder2 import FaceStreamEncoder2, rate_plan
    from streamcap_codecs.scap2 import ScapWriter2

    from .commands.codec import load_codec

    basis = load_codec(bundle)
    cfg = rate_plan(kbps, fps)
    path = tmp / f"streamcap_{kbps}.scap"
    enc = FaceStreamEncoder2(basis, bundle.layout, fps=fps, kbps=kbps, bundle_id=bundle.name, **cfg)
    t0 = time.perf_counter()
    with ScapWriter2(path, chunk_frames=max(1, round(2 * fps / cfg["frame_step"]))) as w:
        for img, fc in zip(frames, faces):
            for e in enc.encode(img, fc):
                enc.container(w.write(e.data, e.seq, e.key))
    enc.close()
    enc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = render_scap(path, basis, bundle.layout, len(frames), frames[0].shape[:2])
    dec_s = time.perf_counter() - t0
    secs = len(frames) / fps
    st = enc.stats
    info = {"target_kbps": kbps, "kbps": path.stat().st_size * 8 / 1000 / secs, "wire_kbps": st.total * 8 / 1000 / secs,
            **cfg, "bits_kbps": {k: getattr(st, k) * 8 / 1000 / secs for k in
                                 ("geometry", "texture", "plate", "header", "framing")},
            "container_kbps": w.overhead_bytes * 8 / 1000 / secs, "keyframes": st.keyframes,
            "max_10s_kbps": _max_window(st.per_frame, fps / cfg["frame_step"]),
            "codec_encode_fps": len(frames) / enc_s, "decode_render_fps": len(frames) / dec_s}
    return info, out


def _max_window(sizes: list[int], rate: float, window_s: float = 10.0) -> float:
    """Highest kbit/s over any window of ``window_s`` (the whole clip if shorter)."""
    n = max(1, min(len(sizes), int(round(window_s * rate))))
    c = np.concatenate([[0], np.cumsum(sizes)])
    return float((c[n:] - c[:-n]).max() * 8 / 1000 / (n / rate))


def best_anchor(configs: dict[str, list[dict]], rate: float, measure: str) -> tuple[float | None, str | None]:
    """Best value of ``measure`` any anchor configuration reaches at ``rate`` (see module doc)."""
    best, who = None, None
    lower = measure in LOWER_IS_BETTER
    for name, pts in configs.items():
        pts = sorted(pts, key=lambda p: p["kbps"])
        if not pts or pts[0]["kbps"] > rate:
            continue
        val = pts[-1][measure]
        for a, b in zip(pts, pts[1:]):
            if a["kbps"] <= rate <= b["kbps"]:
                t = (math.log(rate) - math.log(a["kbps"])) / max(math.log(b["kbps"]) - math.log(a["kbps"]), 1e-9)
                val = a[measure] + t * (b[measure] - a[measure])
                break
        if best is None or (val < best if lower else val > best):
            best, who = val, name
    return best, who


def run_clip(clip: Path, n_frames: int, rates: list[float], bundle: Path | None, tmp: Path,
             log=print, anchors: dict | None = None, only_reused: bool = False) -> dict:
    frames, faces, fps, bndl, track_s = track_clip(clip, n_frames, bundle)
    log(f"{clip.name}: {len(frames)} frames {frames[0].shape[1]}x{frames[0].shape[0]} @ {fps:g} fps, "
        f"tracked+reconstructed in {track_s:.0f}s ({len(frames) / track_s:.1f} frames/s)")
    judge = Judge(frames)
    res: dict = {"clip": clip.name, "frames": len(frames), "size": list(frames[0].shape[1::-1]), "fps": fps,
                 "bundle": bndl.name, "pipeline_fps": len(frames) / track_s, "streamcap": [], "anchors": {}}
    for k in rates:
        info, dec = streamcap_point(frames, faces, fps, bndl, k, tmp)
        res["streamcap"].append({**info, **judge.score(dec)})
        log(f"  streamcap {k:g}k: " + _fmt(res["streamcap"][-1]))
    for codec in ANCHOR_CODECS:
        for scale in SCALES:
            for div in FPS_DIVS:
                name = f"{codec} 1/{scale} {'full' if div == 1 else 'half'} fps"
                if anchors and name in anchors:  # measured before on the same frames (--reuse-anchors)
                    res["anchors"][name] = anchors[name]
                    continue
                if only_reused:
                    continue
                if scale == 8 and codec == "libx264" and div == 1:
                    continue
                pts = []
                for k in ANCHOR_LADDER if scale < 8 else EIGHTH_LADDER:
                    actual, dec, efps = video_codec(frames, fps, codec, k, scale, div, tmp)
                    pts.append({"target_kbps": k, "kbps": actual, "encode_fps": efps, **judge.score(dec)})
                res["anchors"][name] = pts
                log(f"  {name}: " + "; ".join(f"{p['kbps']:.1f}k {p['psnr_face_db']:.1f}dB "
                                                f"{p['landmark_px256']:.2f}px" for p in pts))
    for scale, div in CRF_CONFIGS:
        name = f"libsvtav1 1/{scale} {'full' if div == 1 else 'half'} fps CRF"
        if anchors and name in anchors:
            res["anchors"][name] = anchors[name]
            continue
        if only_reused:
            continue
        pts = []
        for crf in ANCHOR_CRFS:
            actual, dec, efps = video_codec(frames, fps, "libsvtav1", 0, scale, div, tmp, crf=crf)
            pts.append({"crf": crf, "kbps": actual, "encode_fps": efps, **judge.score(dec)})
        res["anchors"][name] = pts
        log(f"  {name}: " + "; ".join(f"CRF {p['crf']} {p['kbps']:.1f}k {p['psnr_face_db']:.1f}dB "
                                        f"{p['landmark_px256']:.2f}px" for p in pts))
    res["comparison"] = []
    for p in res["streamcap"]:
        row: dict = {"kbps": p["kbps"]}
        for m in MEASURES:
            val, who = best_anchor(res["anchors"], p["kbps"], m)
            row[m] = {"streamcap": p[m], "anchor": val, "anchor_config": who}
        res["comparison"].append(row)
    return res


def _fmt(p: dict) -> str:
    return (f"{p['kbps']:.2f} kbit/s (wire {p['wire_kbps']:.2f}), face {p['psnr_face_db']:.2f} dB / "
            f"SSIM {p['ssim_face']:.3f}, frame {p['psnr_frame_db']:.2f} dB, lmk {p['landmark_px256']:.2f} px, "
            f"mouth r {p['mouth_corr']:.2f} amp {p['mouth_amp_ratio']:.2f}, eyes r {p['eye_corr']:.2f}")


def table(results: list[dict]) -> str:
    """Markdown table: each streamcap point beside the best anchor at its rate."""
    lines = ["| clip | kbit/s | face PSNR ours / anchor | landmark px ours / anchor | mouth r ours / anchor | "
             "face SSIM ours / anchor | mouth amp ours / anchor |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for row in r["comparison"]:
            def cell(m: str, f: str) -> str:
                a = row[m]["anchor"]
                return f"{row[m]['streamcap']:{f}} / " + ("—" if a is None else f"{a:{f}}")
            lines.append(f"| {r['clip']} | {row['kbps']:.1f} | {cell('psnr_face_db', '.2f')} | "
                         f"{cell('landmark_px256', '.2f')} | {cell('mouth_corr', '.2f')} | "
                         f"{cell('ssim_face', '.3f')} | {cell('mouth_amp_ratio', '.2f')} |")
    return "\n".join(lines)


def bits_table(results: list[dict]) -> str:
    """Markdown: each streamcap point's kbit/s by kind, its worst 10 s window and its speeds."""
    lines = ["| clip | target | file kbit/s | wire | geometry | texture video | plate | header | framing | "
             "container | max 10 s window | keyframes | texture T / fps / frame step | codec encode fps | "
             "decode+render fps |", "|---|" * 15 + ""]
    lines[1] = "|" + "---|" * 15
    for r in results:
        for p in r["streamcap"]:
            b = p["bits_kbps"]
            lines.append(f"| {r['clip']} | {p['target_kbps']:g} | {p['kbps']:.2f} | {p['wire_kbps']:.2f} | "
                         f"{b['geometry']:.2f} | {b['texture']:.2f} | {b['plate']:.2f} | {b['header']:.2f} | "
                         f"{b['framing']:.2f} | {p['container_kbps']:.2f} | {p['max_10s_kbps']:.2f} | "
                         f"{p['keyframes']} | {p['texture_size']} / {p['texture_fps']:g} / {p['frame_step']} | "
                         f"{p['codec_encode_fps']:.0f} | {p['decode_render_fps']:.0f} |")
    return "\n".join(lines)


def plot(res: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, m, label in zip(axes, ("psnr_face_db", "landmark_px256", "mouth_corr", "ssim_face"),
                            ("face PSNR (dB)", "landmark distance (px @ 256)", "mouth-opening correlation",
                             "face SSIM")):
        for name, pts in res["anchors"].items():
            pts = sorted(pts, key=lambda p: p["kbps"])
            style = "-" if "svtav1" in name else "--"
            ax.plot([p["kbps"] for p in pts], [p[m] for p in pts], style, lw=0.8, alpha=0.5, label=name)
        sc = res["streamcap"]
        ax.plot([p["kbps"] for p in sc], [p[m] for p in sc], "k-o", lw=2, label="streamcap v2")
        ax.set_xscale("log")
        ax.set_xlim(1.5, 40)
        ax.set_xticks([2, 3, 5, 8, 12, 20, 32])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if m == "landmark_px256":
            ax.set_ylim(0, 12)
        if m == "mouth_corr":
            ax.set_ylim(-0.2, 1.0)
        ax.set_xlabel("kbit/s (whole file)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{res['clip']}: {res['frames']} frames {res['size'][0]}x{res['size'][1]} @ {res['fps']:.3g} fps")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def run(clips: list[Path], n_frames: int, rates: list[float], json_path: Path | None, bundle: Path | None,
        plots: Path | None = None, reuse: Path | None = None, only_reused: bool = False) -> list[dict]:
    results = []
    old = {r["clip"]: r for r in json.loads(reuse.read_text())} if reuse else {}
    with tempfile.TemporaryDirectory() as td:
        for clip in clips:
            prev = old.get(clip.name)
            if prev is not None and prev["frames"] != min(n_frames, prev["frames"]):
                prev = None
            res = run_clip(clip, n_frames, rates, bundle, Path(td), anchors=prev["anchors"] if prev else None,
                           only_reused=only_reused)
            results.append(res)
            if plots is not None:
                print(f"  plot: {plot(res, plots / f'codec_rd_{clip.stem}.png')}")
            if json_path:
                json_path.parent.mkdir(parents=True, exist_ok=True)
                json_path.write_text(json.dumps(results, indent=1))
    print(table(results))
    print(bits_table(results))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", type=Path, nargs="+")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rates", "--targets", type=float, nargs="+", default=list(RATES),
                    help="streamcap whole-stream targets, kbit/s")
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plots", type=Path, default=None, help="folder for one PNG per clip")
    ap.add_argument("--reuse-anchors", type=Path, default=None,
                    help="take the AV1/H.264 configurations this JSON has for the same clips and frame count "
                         "(the others are measured)")
    ap.add_argument("--only-reused-anchors", action="store_true",
                    help="measure no anchor configuration that --reuse-anchors lacks (streamcap points only)")
    args = ap.parse_args(argv)
    run(args.clips, args.frames, args.rates, args.json, args.bundle, args.plots, args.reuse_anchors,
        args.only_reused_anchors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
