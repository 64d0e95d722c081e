"""How well ``streamcap capture`` follows faces on clips held out from training.

For each clip (first ``--frames`` frames), the capture path runs as ``streamcap capture`` does
(tracker -> generator -> geometry -> ``Take``), once with the One-Euro smoothing and once
without; independently, dlib finds the face in every frame (HOG detector + 68-point predictor,
no tracking) and the same expression formulas (``streamcap.expressions``) are applied to
dlib's 2D points, aligned to the canonical face by a 2D similarity. Then:

- **correlation over time** (Pearson, frames where both have the face) of ``jawOpen``,
  ``eyeBlinkLeft`` and ``eyeBlinkRight`` with dlib's, and of the raw measures behind them
  (jaw opening, inner-lip gap, eye aspect ratio per eye), which are not clipped at 0;
- **head-pose jitter on a still stretch**: the one-second window in which dlib's landmarks move
  least (mean frame-to-frame displacement / inter-ocular distance); jitter is the absolute
  frame-to-frame change of yaw, pitch and roll there, in degrees, p50/p99, pooled over clips.

Held out: the shipped light128 bundle validated on lp_d11, lp_d19, lp_s32 and never saw the
lia_vox*, vr_*, iplap, dagan, r3d and pexels clips.

    python benchmarks/capture_accuracy.py --frames 300 --json docs/results/capture_accuracy.json \\
        --md docs/results/capture_accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import load_bundle  # noqa: E402
from streamcap.capture import VideoSource  # noqa: E402
from streamcap.commands.codec import load_codec  # noqa: E402
from streamcap.detect import FaceDetector, LandmarkPredictor  # noqa: E402
from streamcap.engine import create_engine  # noqa: E402
from streamcap.expressions import ExpressionSolver, measures  # noqa: E402
from streamcap.pipeline import FacePipeline  # noqa: E402
from streamcap.reconstruct import Reconstructor  # noqa: E402
from streamcap.take import Take  # noqa: E402
from streamcap.track import FaceTracker  # noqa: E402

HELD_OUT = ("lp_d11", "lp_d19", "lp_s32", "lia_vox1", "lia_vox2", "lia_obama", "vr_1", "vr_2", "vr_3", "vr_5",
            "iplap_129", "dagan_driving", "r3d_may", "pexels_wolfgang")
COEFFS = ("jawOpen", "eyeBlinkLeft", "eyeBlinkRight")
RAW = {"jaw": "jaw opening (nose root-chin / IOD)", "gap": "inner-lip gap / IOD",
       "ear_l": "eye aspect ratio, left", "ear_r": "eye aspect ratio, right"}


def data_dir() -> Path:
    import os

    env = os.environ.get("STREAMCAP_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def clip_path(name: str) -> Path:
    d = data_dir() / "videos"
    for ext in (".mp4", ".mov"):
        if (d / (name + ext)).is_file():
            return d / (name + ext)
    raise SystemExit(f"clip {name} not found in {d}")


def align2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2D similarity taking ``src`` (N, 2) onto ``dst`` (N, 2), applied to ``src``."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, d, vt = np.linalg.svd(b.T @ a)
    s = np.ones(2)
    if np.linalg.det(u @ vt) < 0:
        s[1] = -1
    rot = u @ np.diag(s) @ vt
    scale = (d * s).sum() / (a**2).sum()
    return (a @ rot.T) * scale + md


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 10 or np.std(x[ok]) < 1e-9 or np.std(y[ok]) < 1e-9:
        return None
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def run_clip(name: str, frames: int, bundle, basis, engine, canon_lm: np.ndarray) -> dict:
    src = VideoSource(clip_path(name))
    rec = Reconstructor(bundle, engine)
    pipe = FacePipeline(rec, FaceTracker(rec.canonical68, detector=FaceDetector()))
    detector, predictor = FaceDetector("hog"), LandmarkPredictor()
    canon2 = canon_lm.copy()
    canon2[:, 2] = 0
    dlib_solver = ExpressionSolver(canon2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        takes = {s: Take(Path(tmp) / str(s), basis, bundle.layout, (src.width, src.height), smooth=s)
                 for s in (True, False)}
        for t in takes.values():
            t.folder.mkdir()
        for frame in src:
            if frame.index >= frames:
                break
            res = pipe.process(frame.index, frame.timestamp, frame.image)
            row: dict = {"t": frame.timestamp}
            for smooth, take in takes.items():
                samples = take.add_frame(res.index, res.timestamp, res.faces)
                if samples:
                    s = max(samples.values(), key=lambda x: x.scale)  # the largest face
                    key = "smooth" if smooth else "raw"
                    row[key] = {"euler": s.euler, "expr": {k: s.expressions[k] for k in COEFFS},
                                "meas": measures(take_landmarks_canonical(s))}
            boxes = detector.detect(frame.image)
            if boxes:
                pts = predictor.predict(frame.image, boxes[0])
                lm = np.zeros((68, 3))
                lm[:, :2] = align2d(pts.astype(np.float64), canon_lm[:, :2])
                row["dlib"] = {"expr": {k: v for k, v in dlib_solver.update(lm).items() if k in COEFFS},
                               "meas": measures(lm), "pts": pts}
            rows.append(row)
        for t in takes.values():
            t.close()
    src.close()
    return analyse(name, rows, src.fps)


def take_landmarks_canonical(s) -> np.ndarray:
    """A sample's image-space landmarks back in the canonical frame (its pose undone)."""
    return ((np.asarray(s.landmarks, np.float64) - s.translation) @ s.rotation) / s.scale


def series(rows: list[dict], src: str, part: str, key: str) -> np.ndarray:
    return np.array([r[src][part][key] if src in r else np.nan for r in rows], np.float64)


def still_window(rows: list[dict], fps: float) -> tuple[int, int] | None:
    """Start and end of the one-second window where dlib's landmarks move least."""
    n = len(rows)
    motion = np.full(n, np.nan)
    for i in range(1, n):
        a, b = rows[i - 1].get("dlib"), rows[i].get("dlib")
        if a is not None and b is not None:
            iod = np.linalg.norm(b["pts"][36:42].mean(0) - b["pts"][42:48].mean(0))
            motion[i] = np.linalg.norm(b["pts"] - a["pts"], axis=1).mean() / iod
    w = max(5, int(round(fps)))
    best, where = np.inf, None
    for s in range(1, n - w + 1):
        m = motion[s: s + w]
        if np.isfinite(m).all() and all("raw" in rows[j] for j in range(s - 1, s + w)) and m.mean() < best:
            best, where = m.mean(), (s - 1, s + w)
    return where


def analyse(name: str, rows: list[dict], fps: float) -> dict:
    out: dict = {"clip": name, "frames": len(rows), "fps": round(fps, 2),
                 "tracked": int(sum("raw" in r for r in rows)), "dlib_found": int(sum("dlib" in r for r in rows))}
    for mode in ("smooth", "raw"):
        out[f"corr_{mode}"] = {
            **{k: pearson(series(rows, mode, "expr", k), series(rows, "dlib", "expr", k)) for k in COEFFS},
            **{k: pearson(series(rows, mode, "meas", k), series(rows, "dlib", "meas", k)) for k in RAW}}
    win = still_window(rows, fps)
    if win is not None:
        a, b = win
        out["still_window_s"] = [round(rows[a]["t"], 2), round(rows[b - 1]["t"], 2)]
        for mode in ("smooth", "raw"):
            eul = np.array([rows[i][mode]["euler"] for i in range(a, b)])
            out[f"jitter_{mode}"] = np.abs(np.diff(eul, axis=0)).tolist()
    return out


def summarise(results: list[dict]) -> dict:
    summary: dict = {}
    for mode in ("smooth", "raw"):
        corr = {}
        for k in (*COEFFS, *RAW):
            vals = [r[f"corr_{mode}"][k] for r in results if r[f"corr_{mode}"][k] is not None]
            corr[k] = {"median": round(float(np.median(vals)), 3) if vals else None,
                       "mean": round(float(np.mean(vals)), 3) if vals else None, "clips": len(vals)}
        jit = np.concatenate([np.asarray(r[f"jitter_{mode}"]).ravel() for r in results if f"jitter_{mode}" in r])
        summary[mode] = {"correlation": corr, "jitter_deg": {
            "p50": round(float(np.percentile(jit, 50)), 3), "p99": round(float(np.percentile(jit, 99)), 3),
            "n": int(jit.size)}}
    return summary


def fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def markdown(results: list[dict], summary: dict, args) -> str:
    lines = ["# Capture accuracy on held-out clips", "",
             f"`python benchmarks/capture_accuracy.py --frames {args.frames}` (bundle {args.bundle or 'light128'}, "
             f"first {args.frames} frames of each clip). Pearson correlation over time with the same quantity "
             "measured from dlib's 68 points (HOG + shape predictor on every frame, no tracking); jitter is "
             "|frame-to-frame change| of yaw, pitch and roll on each clip's stillest second (by dlib's landmarks).",
             "", "| clip | frames | tracked | jawOpen | eyeBlinkL | eyeBlinkR | jaw | lip gap | EAR L | EAR R | "
             "jitter p50/p99 ° (smoothed) | (raw) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        c = r["corr_smooth"]
        j = {m: np.asarray(r.get(f"jitter_{m}", [[np.nan]])).ravel() for m in ("smooth", "raw")}
        jt = {m: f"{np.percentile(j[m], 50):.2f} / {np.percentile(j[m], 99):.2f}" for m in j}
        lines.append(f"| {r['clip']} | {r['frames']} | {r['tracked']} | {fmt(c['jawOpen'])} | "
                     f"{fmt(c['eyeBlinkLeft'])} | {fmt(c['eyeBlinkRight'])} | {fmt(c['jaw'])} | {fmt(c['gap'])} | "
                     f"{fmt(c['ear_l'])} | {fmt(c['ear_r'])} | {jt['smooth']} | {jt['raw']} |")
    lines += ["", "| | jawOpen | eyeBlinkL | eyeBlinkR | jaw | lip gap | EAR L | EAR R | jitter p50 ° | p99 ° |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("smooth", "raw"):
        s = summary[mode]
        c = s["correlation"]
        lines.append(f"| median over clips, {'One-Euro' if mode == 'smooth' else '--no-smooth'} | "
                     + " | ".join(fmt(c[k]["median"]) for k in (*COEFFS, *RAW))
                     + f" | {s['jitter_deg']['p50']:.2f} | {s['jitter_deg']['p99']:.2f} |")
    lines += ["", "– : undefined (one side constant over the clip, e.g. no blink reaches the coefficient's range).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default=",".join(HELD_OUT), help="comma list of clip names in shared/data/videos")
    ap.add_argument("--frames", type=int, default=300, help="first N frames of each clip")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    basis = load_codec(bundle)
    engine = create_engine(bundle, "ort", threads=args.threads)
    canon_lm = bundle.layout.canonical[bundle.layout.kpt_vertex].astype(np.float64)
    results = []
    t0 = time.perf_counter()
    for name in args.clips.split(","):
        r = run_clip(name, args.frames, bundle, basis, engine, canon_lm)
        results.append(r)
        c = r["corr_smooth"]
        print(f"{name}: {r['tracked']}/{r['frames']} tracked, jawOpen r={fmt(c['jawOpen'])}, "
              f"blink L/R r={fmt(c['eyeBlinkLeft'])}/{fmt(c['eyeBlinkRight'])}, EAR L/R r={fmt(c['ear_l'])}/"
              f"{fmt(c['ear_r'])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    summary = summarise(results)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"bundle": bundle.name, "frames_per_clip": args.frames, "summary": summary,
                                         "clips": results}, indent=1))
    if args.md:
        args.md.write_text(markdown(results, summary, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
