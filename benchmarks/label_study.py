"""Which labels to train on: 3DDFA_V2, MediaPipe FaceMesh, averaged 3DDFA_V2, or a fusion.

Two stages, because MediaPipe lives in its own venv (it pulls opencv-contrib-python):

    .venv-label/bin/python benchmarks/label_study.py mediapipe --data ../shared/data -o .cache/label_study
    .venv/bin/python benchmarks/label_study.py measure --data ../shared/data -o .cache/label_study \\
        --json docs/results/label_study.json

Candidates, each giving 68 points per face:
* ``3ddfa``: 3DDFA_V2 as ``trainer/data/label_corpus.py`` labels (YuNet box on the image padded by a
  third, two passes; on clips the next crop from the last landmarks);
* ``mediapipe``: the project's old labels: MediaPipe FaceMesh (static on photos, tracking on clips)
  densified onto the UV layout by ``trainer/data/labeller.py`` (registration on the same five
  training clips as ``build_dataset.py``), its 68 landmark vertices;
* ``3ddfa_tta``: 3DDFA_V2 averaged over 7 crop jitters of the second pass on the image and its
  mirror, refitted to 62 parameters (``label_fusion.TTA``);
* ``mediapipe_raw``: MediaPipe's own points nearest dlib's 68 (the registration's ``teacher68``),
  not densified: what MediaPipe itself sees, not a label;
* ``fusion`` / ``fusion_tta``: 3DDFA_V2 (or its average) with the 10 expression coefficients
  re-solved to meet MediaPipe's raw eye and lip points where MediaPipe agrees
  (``label_fusion.fuse_expression``);
* ``fusion_points``: 3DDFA_V2's 68 points with the agreeing eye and lip regions replaced by
  MediaPipe's raw points (``label_fusion.hybrid68``);
* ``fusion_dense``: the dense label ``label_fusion.Fuser`` makes (``fusion_tta`` plus the eye and
  lip residual spread over the surface), read where the generator reads it: the UV layout's 68
  landmark pixels.

References: the human 5-point annotation of ``images/d3dfr`` (NME = mean distance / sqrt(w*h) of
the candidate's own 68-point box, as ``build_dataset.py`` measures the labels); dlib's 68 points
(HOG + shape predictor) on near-frontal photos (|yaw| < 30 by 3DDFA_V2, where dlib finds the
face; NME normalised by dlib's box, per region too); mouth and eye opening over time on clips
from seven sources against dlib's: Pearson correlation and amplitude ratio std(label) /
std(dlib). Mouth opening = mean of the three inner-lip gaps (61-67, 62-66, 63-65) / the outer
eye-corner distance (36-45); eye opening = mean over both eyes of the two lid gaps / the eye's
width (the eye aspect ratio). Only faces that every candidate and dlib labelled are compared.

``corpus`` re-measures the fused side-cars of the whole corpus (``trainer/data/fuse_corpus.py``)
the same way, on the stored crops: ``label_study.py corpus --corpus DIR --fused DIR --json FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only fight the trainer
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data.teacher_mediapipe import REG_CLIPS  # noqa: E402  (numpy and cv2 only: both venvs)

CLIPS = ("lia_vox1", "vr_1", "pexels_wolfgang", "lp_d19", "iplap_129", "r3d_may", "dagan_driving")
MAX_FRAMES = 150
TUNE_CLIP = "lp_d10"  # a training clip, for the fusion's one constant (never a measured clip)
REG_EVERY = 25
FACES_PER_SOURCE = 60
PAD = 3  # photos are padded by 1/PAD of their size on every side before detection
REGION_68 = {"contour": np.arange(0, 17), "brows": np.arange(17, 27), "nose": np.arange(27, 36),
             "eyes": np.arange(36, 48), "mouth": np.arange(48, 68)}


def photo_list(data: Path) -> list[str]:
    """images/ (no group photo), images/d3dfr, and every k-th photo of each faces/ source."""
    out = sorted(str(p.relative_to(data)) for p in (data / "images").rglob("*")
                 if p.suffix.lower() in (".jpg", ".png") and p.name != "group_t1.jpg")
    for src in sorted(p for p in (data / "faces").iterdir() if p.is_dir()):
        files = sorted(f for f in src.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        step = max(1, len(files) // FACES_PER_SOURCE)
        out += [str(f.relative_to(data)) for f in files[::step][:FACES_PER_SOURCE]]
    return out


def read_photo(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grayscale files come back as 3 equal channels
    if img is None:
        return None
    pad = max(img.shape[:2]) // PAD
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT)


def clip_frames(path: Path, limit: int):
    cap = cv2.VideoCapture(str(path))
    i = 0
    while i < limit:
        ok, bgr = cap.read()
        if not ok:
            break
        yield i, bgr
        i += 1
    cap.release()


# --- stage 1: MediaPipe (own venv) -------------------------------------------------------------


def stage_mediapipe(data: Path, out: Path) -> None:
    from trainer.data.teacher_mediapipe import _mesh, _pack, _points

    out.mkdir(parents=True, exist_ok=True)
    dst = out / "mp_photos.npz"
    if not dst.exists():
        names, faces = photo_list(data), []
        with _mesh(static=True, max_faces=4) as mesh:
            for rel in names:
                img = read_photo(data / rel)
                faces.append([] if img is None else
                             _points(mesh.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB)), img.shape[1], img.shape[0]))
        rec = _pack(list(range(len(names))), faces, 0, 0)
        np.savez_compressed(dst, names=np.array(names), **rec)
        print(f"photos: {len(names)}, a face in {int(rec['valid'].any(1).sum())}", flush=True)
    for clip in CLIPS + REG_CLIPS + (TUNE_CLIP + "_track",):
        dst = out / f"mp_{clip}.npz"
        if dst.exists():
            continue
        reg = clip in REG_CLIPS
        frames, faces = [], []
        with _mesh(static=reg, max_faces=2) as mesh:  # registration frames are 25 apart: static
            video = data / "videos" / f"{clip.removesuffix('_track')}.mp4"
            for i, bgr in clip_frames(video, 10**9 if reg else MAX_FRAMES):
                if reg and i % REG_EVERY:
                    continue
                frames.append(i)
                faces.append(_points(mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), bgr.shape[1], bgr.shape[0]))
        np.savez_compressed(dst, **_pack(frames, faces, 0, 0))
        print(f"{clip}: {len(frames)} frames", flush=True)


# --- stage 2: the measurements -----------------------------------------------------------------


def mouth_open(lm: np.ndarray) -> float:
    gap = np.linalg.norm(lm[[61, 62, 63], :2] - lm[[67, 66, 65], :2], axis=1).mean()
    return float(gap / np.linalg.norm(lm[36, :2] - lm[45, :2]))


def eye_open(lm: np.ndarray) -> float:
    out = []
    for a, b, c, d, e, f in ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47)):
        lids = np.linalg.norm(lm[[b, c], :2] - lm[[f, e], :2], axis=1).mean()
        out.append(lids / np.linalg.norm(lm[a, :2] - lm[d, :2]))
    return float(np.mean(out))


def box_of(lm: np.ndarray) -> np.ndarray:
    return np.r_[lm[:, :2].min(0), lm[:, :2].max(0)]


def pick_face(points: np.ndarray, valid: np.ndarray, box: np.ndarray) -> int | None:
    """Slot of the MediaPipe face whose points' centre is inside ``box``, nearest its centre."""
    best, dist = None, np.inf
    c = (box[:2] + box[2:]) / 2.0
    for j in np.flatnonzero(valid):
        m = points[j, :, :2].mean(0)
        if (m >= box[:2]).all() and (m <= box[2:]).all() and np.linalg.norm(m - c) < dist:
            best, dist = int(j), float(np.linalg.norm(m - c))
    return best


def abs_yaw(fit) -> float:
    r = fit.A / np.linalg.norm(fit.A, axis=1, keepdims=True)
    return float(np.degrees(np.arcsin(min(1.0, abs(r[2, 0])))))


class Candidates:
    def __init__(self, data: Path, out: Path, prior: float) -> None:
        from streamcap.bundle import default_layout
        from trainer.data.build_dataset import Dlib68
        from trainer.data.label_corpus import Detector
        from trainer.data.fuse_corpus import study_registration
        from trainer.data.labeller import DenseLabeller
        from trainer.data.label_fusion import Fuser
        from trainer.data.teacher_3ddfa import Teacher3DDFA, UVBridge

        self.teacher = Teacher3DDFA(data / "teacher_3ddfa_v2", threads=1)
        self.det = Detector(data / "detectors" / "yunet_s_640_640.onnx")
        self.dlib = Dlib68()
        self.layout = default_layout()
        self.prior = prior
        self.reg, self.n_reg = study_registration(data, out, self.layout, self.dlib)
        self.dense = DenseLabeller(self.layout, self.reg)
        mean, basis = UVBridge.from_files(data / "teacher_3ddfa_v2", self.layout.face_ind,
                                          self.layout.size).basis(self.teacher)
        self.fuser = Fuser(self.teacher, mean, basis, self.layout.kpt_vertex, prior)
        self.tta = self.fuser.tta

    def mediapipe68(self, points: np.ndarray) -> np.ndarray:
        return self.dense.vertices(points)[self.layout.kpt_vertex]

    def all_of(self, img: np.ndarray, fit, fit_tta, mp: np.ndarray | None) -> dict[str, np.ndarray]:
        from trainer.data.label_fusion import fuse_expression, hybrid68

        t = self.teacher
        out = {"3ddfa": t.landmarks(fit), "3ddfa_tta": t.landmarks(fit_tta)}
        if mp is not None:
            out["mediapipe"] = self.mediapipe68(mp)
            raw = mp[self.reg.teacher68]  # MediaPipe's own points nearest dlib's 68 (registration)
            out["mediapipe_raw"] = raw
            f1, used1 = fuse_expression(t, fit, raw, self.prior)
            f2, used2 = fuse_expression(t, fit_tta, raw, self.prior)
            out["fusion"], out["fusion_tta"] = t.landmarks(f1), t.landmarks(f2)
            out["fusion_points"] = hybrid68(out["3ddfa"], raw)[0]
            fused, offsets, _ = self.fuser.fuse(fit_tta, raw)  # the dense label, read at the layout's 68
            out["fusion_dense"] = self.fuser.posmap(fused, offsets)[self.layout.kpt_vertex]
            out["_used"] = np.array([len(used1)])
        return out


NAMES = ("3ddfa", "mediapipe", "mediapipe_raw", "3ddfa_tta", "fusion", "fusion_tta", "fusion_points", "fusion_dense")


def measure_photos(c: Candidates, data: Path, out: Path) -> dict:
    from trainer.data.build_dataset import d3dfr_five, five_from68

    z = np.load(out / "mp_photos.npz")
    names = [str(n) for n in z["names"]]
    five = {n: [] for n in NAMES}
    d68 = {n: {r: [] for r in ("all", *REGION_68)} for n in NAMES}
    mouth = {n: [] for n in (*NAMES, "dlib")}
    eyes = {n: [] for n in (*NAMES, "dlib")}
    cover = {"photos": len(names), "3ddfa": 0, "mediapipe": 0, "dlib_frontal": 0, "fusion_regions": 0}
    for k, rel in enumerate(names):
        img = read_photo(data / rel)
        if img is None:
            continue
        box = c.det.largest(img)
        if box is None:
            continue
        fit = c.teacher.fit(img, box)
        lm = c.teacher.landmarks(fit)
        cover["3ddfa"] += 1
        slot = pick_face(z["points"][k], z["valid"][k], box_of(lm))
        cover["mediapipe"] += slot is not None
        if slot is None:
            continue
        labs = c.all_of(img, fit, c.tta.around(img, fit), z["points"][k, slot])
        cover["fusion_regions"] += int(labs.pop("_used")[0])
        ref5 = d3dfr_five(data / rel)
        if ref5 is not None:
            pad = max(cv2.imread(str(data / rel)).shape[:2]) // PAD
            for n in NAMES:
                wh = np.ptp(labs[n][:, :2], 0)
                err = np.linalg.norm(five_from68(labs[n]) - (ref5 + pad), axis=1).mean()
                five[n].append(float(err / np.sqrt(wh[0] * wh[1])))
        if abs_yaw(fit) >= 30:
            continue
        ref = c.dlib.near(img, box_of(lm))
        if ref is None:
            continue
        cover["dlib_frontal"] += 1
        add_nme68(d68, labs, ref)
        for n in NAMES:
            mouth[n].append(mouth_open(labs[n]))
            eyes[n].append(eye_open(labs[n]))
        mouth["dlib"].append(mouth_open(ref))
        eyes["dlib"].append(eye_open(ref))
        if k % 50 == 0:
            print(f"  photo {k}/{len(names)}", flush=True)
    res = {"coverage": cover,
           "d3dfr_nme5": {n: float(np.mean(v)) for n, v in five.items()}, "n_d3dfr": len(five["3ddfa"]),
           "dlib_nme68": {n: {r: float(np.mean(v)) for r, v in d.items()} for n, d in d68.items()},
           "n_dlib": len(d68["3ddfa"]["all"]),
           "photo_mouth": opening_stats(mouth), "photo_eyes": opening_stats(eyes)}
    return res


def add_nme68(d68: dict[str, dict[str, list]], labs: dict[str, np.ndarray], ref: np.ndarray) -> None:
    """Append each candidate's 68-point NME vs dlib's ``ref`` (by dlib's box), overall and per region."""
    norm = float(np.sqrt(np.prod(np.ptp(ref, 0))))
    for n, per in d68.items():
        e = np.linalg.norm(labs[n][:, :2] - ref, axis=1) / norm
        per["all"].append(float(e.mean()))
        for r, idx in REGION_68.items():
            per[r].append(float(e[idx].mean()))


def opening_stats(series: dict[str, list[float]]) -> dict[str, dict]:
    ref = np.asarray(series["dlib"])
    out = {}
    for n, v in series.items():
        if n == "dlib":
            continue
        v = np.asarray(v)
        out[n] = {"corr": float(np.corrcoef(v, ref)[0, 1]), "amp": float(v.std() / ref.std()),
                  "bias": float((v - ref).mean())}
    return out


def measure_clip(c: Candidates, data: Path, out: Path, clip: str) -> dict:
    z = np.load(out / f"mp_{clip}.npz")
    row = {int(f): k for k, f in enumerate(z["frames"])}
    mouth = {n: [] for n in (*NAMES, "dlib")}
    eyes = {n: [] for n in (*NAMES, "dlib")}
    nme = {n: [] for n in NAMES}
    last = None
    n_frames = used = 0
    for i, bgr in clip_frames(data / "videos" / f"{clip.removesuffix('_track')}.mp4", MAX_FRAMES):
        n_frames += 1
        box = c.det.largest(bgr) if last is None else None
        if box is None and last is None:
            continue
        fit = c.teacher.fit(bgr, box, last)
        lm = c.teacher.landmarks(fit)
        last = lm[:, :2] if np.ptp(lm[:, 0]) > 8 else None
        k = row.get(i)
        slot = None if k is None else pick_face(z["points"][k], z["valid"][k], box_of(lm))
        ref = c.dlib.near(bgr, box_of(lm))
        if slot is None or ref is None:
            continue
        labs = c.all_of(bgr, fit, c.tta.around(bgr, fit), z["points"][k, slot])
        used += int(labs.pop("_used")[0])
        norm = float(np.sqrt(np.prod(np.ptp(ref, 0))))
        for n in NAMES:
            mouth[n].append(mouth_open(labs[n]))
            eyes[n].append(eye_open(labs[n]))
            nme[n].append(float(np.linalg.norm(labs[n][:, :2] - ref, axis=1).mean() / norm))
        mouth["dlib"].append(mouth_open(ref))
        eyes["dlib"].append(eye_open(ref))
    return {"frames": n_frames, "compared": len(mouth["dlib"]), "fusion_regions": used,
            "mouth": opening_stats(mouth), "eyes": opening_stats(eyes),
            "dlib_nme68": {n: float(np.mean(v)) for n, v in nme.items()},
            "dlib_std": {"mouth": float(np.std(mouth["dlib"])), "eyes": float(np.std(eyes["dlib"]))}}


def stage_tune(data: Path, out: Path, priors: tuple[float, ...]) -> dict:
    """Fusion's ridge on the training clip TUNE_CLIP: openings vs dlib for each prior."""
    from trainer.data.label_fusion import fuse_expression

    c = Candidates(data, out, priors[0])
    z = np.load(out / f"mp_{TUNE_CLIP}_track.npz")
    series = {p: {"mouth": [], "eyes": []} for p in ("dlib", "3ddfa", *priors)}
    last = None
    for i, bgr in clip_frames(data / "videos" / f"{TUNE_CLIP}.mp4", MAX_FRAMES):
        box = c.det.largest(bgr) if last is None else None
        if box is None and last is None:
            continue
        fit = c.teacher.fit(bgr, box, last)
        lm = c.teacher.landmarks(fit)
        last = lm[:, :2]
        slot = pick_face(z["points"][i], z["valid"][i], box_of(lm))
        ref = c.dlib.near(bgr, box_of(lm))
        if slot is None or ref is None:
            continue
        raw = z["points"][i, slot][c.reg.teacher68]
        labs = {"dlib": ref, "3ddfa": lm}
        for p in priors:
            labs[p] = c.teacher.landmarks(fuse_expression(c.teacher, fit, raw, p)[0])
        for k, v in labs.items():
            series[k]["mouth"].append(mouth_open(v))
            series[k]["eyes"].append(eye_open(v))
    res = {}
    for what in ("mouth", "eyes"):
        st = opening_stats({str(k): v[what] for k, v in series.items()})
        res[what] = st
        print(what, {k: f"corr {v['corr']:.3f} amp {v['amp']:.2f}" for k, v in st.items()})
    return res


def table(res: dict) -> str:
    """Markdown: the summary per candidate, then mouth and eye opening per clip."""
    ph, clips = res["photos"], res["clips"]
    names = [n for n in NAMES if n in ph["d3dfr_nme5"]]

    def over_clips(key: str, n: str, m: str) -> float:  # the median: one noisy clip can swing a mean
        return float(np.median([clips[k][key][n][m] for k in clips]))

    lines = ["| candidate | d3dfr 5-pt NME | photos: 68-pt NME vs dlib (eyes / mouth / contour) | "
             "clips: 68-pt NME vs dlib | mouth corr / amp (clip median) | eye corr / amp (clip median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n in names:
        d = ph["dlib_nme68"][n]
        clip_nme = float(np.mean([clips[k]["dlib_nme68"][n] for k in clips]))
        lines.append(
            f"| {n} | {ph['d3dfr_nme5'][n] * 100:.2f}% | {d['all'] * 100:.2f}% ({d['eyes'] * 100:.2f} / "
            f"{d['mouth'] * 100:.2f} / {d['contour'] * 100:.2f}) | {clip_nme * 100:.2f}% | "
            f"{over_clips('mouth', n, 'corr'):.2f} / {over_clips('mouth', n, 'amp'):.2f} | "
            f"{over_clips('eyes', n, 'corr'):.2f} / {over_clips('eyes', n, 'amp'):.2f} |")
    for what in ("mouth", "eyes"):
        lines += ["", f"{what} opening per clip, corr / amp vs dlib (dlib's std in brackets):", "",
                  "| clip (frames) | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        for k, c in clips.items():
            cells = [f"{c[what][n]['corr']:.2f} / {c[what][n]['amp']:.2f}" for n in names]
            lines.append(f"| {k} ({c['compared']}, {c['dlib_std'][what]:.3f}) | " + " | ".join(cells) + " |")
        ph_key = "photo_mouth" if what == "mouth" else "photo_eyes"
        cells = [f"{ph[ph_key][n]['corr']:.2f} / {ph[ph_key][n]['amp']:.2f}" for n in names]
        lines.append(f"| across photos ({ph['n_dlib']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_measure(data: Path, out: Path, prior: float, js: Path | None, clips: tuple[str, ...]) -> None:
    t0 = time.perf_counter()
    c = Candidates(data, out, prior)
    print(f"registration on {c.n_reg} frames", flush=True)
    res = {"prior": prior, "registration_frames": c.n_reg, "clips": {}}
    for clip in clips:
        res["clips"][clip] = measure_clip(c, data, out, clip)
        print(clip, json.dumps({k: res["clips"][clip][k] for k in ("compared", "mouth", "eyes")}), flush=True)
    res["photos"] = measure_photos(c, data, out)
    res["seconds"] = time.perf_counter() - t0
    print(table(res))
    if js:
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps(res, indent=1))


# --- the fused corpus side-cars, re-measured (trainer/data/fuse_corpus.py) ---------------------


def stage_corpus(corpus: Path, fused: Path, js: Path | None, max_photos: int) -> dict:
    """The corpus's stored labels against dlib on the stored crops (unmirrored rows): mouth and
    eye opening over the study's clips (all their labelled frames, stride 3, and the first 150
    frames alone) and 68-point NME on held-out near-frontal photos. Candidates: ``3ddfa`` (the
    teacher's 68 points as stored), ``fusion`` (the fused 62 numbers alone, at the layout's 68),
    ``fusion_dense`` (plus the spread offsets: what training reads) and ``mediapipe_raw``."""
    from streamcap.bundle import default_layout
    from trainer.data.build_dataset import Dlib68
    from trainer.data.dataset import spread_operator

    layout, dlib = default_layout(), Dlib68()
    k = layout.kpt_vertex
    with np.load(corpus / "uv_basis.npz") as z:
        mean, basis = z["mean"], z["basis"]
    spread = spread_operator(mean, k)[k]  # (68, 68): offsets -> the layout's landmark vertices
    names = ("3ddfa", "fusion", "fusion_dense", "mediapipe_raw")

    def rows(shard: str, split: str | None):
        with np.load(corpus / "shards" / f"{shard}.npz") as z, np.load(fused / f"fused__{shard}.npz") as f:
            blob, off = z["jpeg"], z["offsets"]
            keep = (~z["flip"]) & f["found"]
            if split:
                keep &= z["split"] == split
            for i in np.flatnonzero(keep):
                lab = f["label"][i]
                v = (mean[k] + basis[k] @ lab[12:]) @ lab[:9].reshape(3, 3).T + lab[9:12]
                labs = {"3ddfa": z["lm68"][i], "fusion": v, "fusion_dense": v + spread @ f["offsets"][i],
                        "mediapipe_raw": f["mp68"][i]}
                crop = cv2.imdecode(blob[off[i]:off[i + 1]], cv2.IMREAD_COLOR)
                ref = dlib.near(crop, box_of(z["lm68"][i]))
                if ref is not None:
                    yield int(z["frame"][i]), float(z["yaw"][i]), labs, ref

    res: dict = {"clips": {}, "clips_first150": {}}
    for clip in CLIPS:
        series = []
        for frame, _, labs, ref in rows(f"clip_{clip}", None):
            series.append((frame, {n: (mouth_open(labs[n]), eye_open(labs[n])) for n in names},
                           (mouth_open(ref), eye_open(ref))))
        for key, sel in (("clips", series), ("clips_first150", [s for s in series if s[0] < MAX_FRAMES])):
            out = {"compared": len(sel)}
            for w, what in enumerate(("mouth", "eyes")):
                st = {n: [s[1][n][w] for s in sel] for n in names}
                st["dlib"] = [s[2][w] for s in sel]
                out[what] = opening_stats(st)
            res[key][clip] = out
        print(clip, len(series), {n: round(res["clips"][clip]["mouth"][n]["corr"], 2) for n in names}, flush=True)
    d68 = {n: {r: [] for r in ("all", *REGION_68)} for n in names}
    for shard in sorted(p.stem for p in (corpus / "shards").glob("faces_*.npz")):
        for _, yaw, labs, ref in rows(shard, "val"):
            if abs(yaw) >= 30 or len(d68["3ddfa"]["all"]) >= max_photos:
                continue
            add_nme68(d68, labs, ref)
    res["photos"] = {"n": len(d68["3ddfa"]["all"]),
                     "dlib_nme68": {n: {r: float(np.mean(v)) for r, v in d.items()} for n, d in d68.items()}}
    for key in ("clips", "clips_first150"):
        for what in ("mouth", "eyes"):
            med = {n: [float(np.median([c[what][n][m] for c in res[key].values()])) for m in ("corr", "amp")]
                   for n in names}
            res[f"{key}_median_{what}"] = med
            print(key, what, "corr / amp (median):", {n: f"{v[0]:.2f} / {v[1]:.2f}" for n, v in med.items()})
    print(f"photos ({res['photos']['n']}): 68-pt NME vs dlib",
          {n: f"{v['all'] * 100:.2f}% (eyes {v['eyes'] * 100:.2f} / mouth {v['mouth'] * 100:.2f})"
           for n, v in res["photos"]["dlib_nme68"].items()})
    if js:
        js.parent.mkdir(parents=True, exist_ok=True)
        js.write_text(json.dumps(res, indent=1))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=("mediapipe", "tune", "measure", "report", "corpus"))
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("-o", "--out", type=Path, default=Path(".cache/label_study"))
    ap.add_argument("--prior", type=float, default=1e-2, help="fusion's ridge toward 3DDFA_V2's expression")
    ap.add_argument("--clips", default=",".join(CLIPS))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--corpus", type=Path, default=Path("/work/cache/corpus"), help="corpus stage: the labelled corpus")
    ap.add_argument("--fused", type=Path, default=Path("/work/cache/corpus_fused"), help="corpus stage: side-cars")
    ap.add_argument("--max-photos", type=int, default=600)
    args = ap.parse_args(argv)
    if args.stage == "corpus":
        stage_corpus(args.corpus, args.fused, args.json, args.max_photos)
        return 0
    if args.stage == "mediapipe":
        stage_mediapipe(args.data, args.out)
        return 0
    if args.stage == "report":  # the tables again from --json
        print(table(json.loads(args.json.read_text())))
        return 0
    import torch

    torch.set_num_threads(1)
    if args.stage == "tune":
        stage_tune(args.data, args.out, (1e-4, 1e-3, 1e-2, 1e-1))
    else:
        stage_measure(args.data, args.out, args.prior, args.json, tuple(args.clips.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
