"""Label the whole corpus with the 3DDFA_V2 teacher into resumable shards.

    python trainer/data/label_corpus.py --data ../shared/data -o .cache/corpus [--only faces/utk]

Every photo of ``faces/`` and ``images/`` and every ``--stride``-th frame of every clip is
labelled twice: as it is and mirrored left-right (the teacher is run on the mirrored image, so
both labels are its own). A sample is the generator's standard crop of the label's 68 points
enlarged by ``CONTEXT`` (256x256, stored as JPEG), and the label is the teacher's fit moved into
that crop's pixels: ``v = A (u + W c) + b`` with 62 numbers (``Fit.as_vector``), z centred on the
face. Training rebuilds the UV position map from them with the precomputed UV basis
(``uv_basis.npz``), so the cache stays small (about 20 KB a sample).

Faces are found by YuNet (``detectors/``) on the image padded by a third of its size (the
``faces/`` photos are tight crops), the largest one kept; clips are tracked the way 3DDFA_V2
tracks video (the next frame's crop from the last landmarks, a new detection when the face
is lost). Held out, whole people: one 25th of each ``faces/`` source by a hash of the file name,
every ``d3dfr`` photo, and the clips in ``VAL_CLIPS`` (from four sources).

One shard per chunk of ``CHUNK`` photos or per clip, written atomically and skipped when
present: an interrupted run resumes where it stopped. A progress bar counts images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamcap.bundle import default_layout
from streamcap.geometry.crop import CROP_EXPAND, crop_from_landmarks
from streamcap.geometry.posmap import estimate_pose
from trainer.data.teacher_3ddfa import Fit, Teacher3DDFA, UVBridge

CROP = 256
CONTEXT = 1.25
CHUNK = 1000
JPEG_QUALITY = 92
VAL_CLIPS = {"lp_d11", "lp_d19", "lp_s32", "lia_vox1", "vr_1", "pexels_wolfgang", "iplap_129"}
VAL_EVERY = 25  # one photo in VAL_EVERY of each faces/ source is held out
NO_FACE_CLIPS = {"feat_no_face"}
# LivePortrait's example photos include animals (dogs, cats, alpacas, a monkey): not faces to learn
ANIMALS = {f"lp_s{k}" for k in (22, 23, 25, 30, 31, 32, 33, 36, 38, 39, 40, 41)}


def identity_of(rel: str) -> str:
    """'videos/lp_d10.mp4' -> 'lp_d10'; 'images/d3dfr/000002.jpg' -> 'd3dfr/000002';
    'faces/utk/utk_00001.jpg' -> 'faces/utk/utk_00001'."""
    p = Path(rel).with_suffix("")
    return "/".join(p.parts[1:]) if p.parts[0] in ("videos", "images") else str(p)


def split_of(rel: str) -> str:
    ident = identity_of(rel)
    if rel.startswith("videos/"):
        return "val" if ident in VAL_CLIPS else "train"
    if ident.startswith("d3dfr/"):
        return "val"
    if rel.startswith("faces/"):
        h = int(hashlib.sha1(Path(rel).name.encode()).hexdigest()[:8], 16)
        return "val" if h % VAL_EVERY == 0 else "train"
    return "train"


class Detector:
    """YuNet through OpenCV, on the image padded by a third of its size; largest face wins."""

    def __init__(self, model: Path, score: float = 0.6) -> None:
        self.det = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score, 0.3, 5000)

    def largest(self, img: np.ndarray) -> np.ndarray | None:
        h, w = img.shape[:2]
        k = min(1.0, 640.0 / max(h, w))
        small = cv2.resize(img, None, fx=k, fy=k, interpolation=cv2.INTER_AREA) if k < 1 else img
        pad = max(small.shape[:2]) // 3
        big = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
        self.det.setInputSize((big.shape[1], big.shape[0]))
        _, faces = self.det.detect(big)
        if faces is None or len(faces) == 0:
            return None
        f = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        x0, y0 = (f[0] - pad) / k, (f[1] - pad) / k
        return np.array([x0, y0, x0 + f[2] / k, y0 + f[3] / k])


class Labeller:
    """Teacher fits -> samples (context-crop JPEG + 62-number label in crop pixels)."""

    def __init__(self, data: Path) -> None:
        self.teacher = Teacher3DDFA(data / "teacher_3ddfa_v2")
        self.layout = default_layout()
        self.bridge = UVBridge.from_files(data / "teacher_3ddfa_v2", self.layout.face_ind, self.layout.size)
        self.mean, self.basis = self.bridge.basis(self.teacher)
        self.detector = Detector(data / "detectors" / "yunet_s_640_640.onnx")

    def sample(self, img: np.ndarray, fit: Fit) -> dict | None:
        lm = self.teacher.landmarks(fit)
        crop = crop_from_landmarks(lm[:, :2], CROP, expand=CROP_EXPAND * CONTEXT)
        if crop.scale > 8 or not np.isfinite(crop.matrix).all():  # a face of a few pixels
            return None
        m2, k = crop.matrix[:, :2], crop.scale
        a = np.vstack([m2 @ fit.A[:2], k * fit.A[2:]])
        b = np.r_[m2 @ fit.b[:2] + crop.matrix[:, 2], k * fit.b[2]]
        verts = (self.mean + self.basis @ fit.coef.astype(np.float32)) @ a.T + b
        b[2] += CROP / 2.0 - float(verts[:, 2].mean())  # z centred on the face surface
        verts[:, 2] += CROP / 2.0 - float(verts[:, 2].mean())
        pose = estimate_pose(verts, self.layout)
        ok, jpg = cv2.imencode(".jpg", crop.warp(img), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return None
        return {"jpeg": jpg.ravel(), "label": Fit(a, b, fit.coef, fit.roi).as_vector(),
                "lm68": crop.to_crop(lm).astype(np.float32), "yaw": float(pose.yaw), "pitch": float(pose.pitch),
                "roll": float(pose.roll), "crop_scale": float(k)}

    def both_ways(self, img: np.ndarray, box: np.ndarray | None, lm: np.ndarray | None = None) -> list[tuple]:
        """(flip, fit, sample) for the image and its mirror."""
        out = []
        w = img.shape[1]
        for flip in (False, True):
            im = img[:, ::-1] if flip else img
            b = None if box is None else (np.array([w - 1 - box[2], box[1], w - 1 - box[0], box[3]]) if flip else box)
            l = None if lm is None else (np.c_[w - 1 - lm[:, 0], lm[:, 1:]] if flip else lm)  # noqa: E741
            fit = self.teacher.fit(np.ascontiguousarray(im), b, l)
            s = self.sample(np.ascontiguousarray(im), fit)
            if s is not None:
                out.append((flip, fit, s))
        return out


def pack(records: list[dict]) -> dict[str, np.ndarray]:
    jpegs = [r.pop("jpeg") for r in records]
    offsets = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
    out = {"jpeg": np.concatenate(jpegs) if jpegs else np.zeros(0, np.uint8), "offsets": offsets}
    for key in records[0]:
        vals = [r[key] for r in records]
        out[key] = np.stack(vals) if isinstance(vals[0], np.ndarray) else np.asarray(vals)
    return out


def label_photos(lab: Labeller, data: Path, rels: list[str], bar: tqdm) -> list[dict]:
    recs = []
    for rel in rels:
        bar.update(1)
        img = cv2.imread(str(data / rel))
        if img is None:
            continue
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        box = lab.detector.largest(img)
        if box is None:
            continue
        for flip, _fit, s in lab.both_ways(img, box):
            recs.append({**s, "flip": flip, "frame": -1, "source": rel, "identity": identity_of(rel),
                         "split": split_of(rel), "kind": "photo"})
    return recs


def label_clip(lab: Labeller, data: Path, rel: str, stride: int, bar: tqdm) -> list[dict]:
    recs, last = [], None
    with av.open(str(data / rel)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % stride:
                continue
            bar.update(1)
            img = frame.to_ndarray(format="bgr24")
            box = lab.detector.largest(img) if last is None else None
            if box is None and last is None:
                continue
            got = lab.both_ways(img, box, last)
            fits = {flip: fit for flip, fit, _ in got}
            if False not in fits:
                last = None
                continue
            lm = lab.teacher.landmarks(fits[False])
            w = np.ptp(lm[:, 0])
            last = lm[:, :2] if w > 8 else None
            for flip, _fit, s in got:
                recs.append({**s, "flip": flip, "frame": i, "source": rel, "identity": identity_of(rel),
                             "split": split_of(rel), "kind": "frame"})
    return recs


def plan(data: Path, only: str | None) -> list[tuple[str, list[str]]]:
    """(shard name, sources) jobs: chunks of photos per faces/ source, images/, one per clip."""
    jobs: list[tuple[str, list[str]]] = []
    for src in sorted(p for p in (data / "faces").iterdir() if p.is_dir()):
        files = sorted(f"faces/{src.name}/{f.name}" for f in src.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        for k in range(0, len(files), CHUNK):
            jobs.append((f"faces_{src.name}_{k // CHUNK:03d}", files[k : k + CHUNK]))
    imgs = sorted(str(p.relative_to(data)) for p in (data / "images").rglob("*")
                  if p.suffix.lower() in (".jpg", ".png") and p.name != "group_t1.jpg" and p.stem not in ANIMALS)
    jobs.append(("images", imgs))
    for clip in sorted((data / "videos").iterdir()):
        if clip.suffix in (".mp4", ".mov") and clip.stem not in NO_FACE_CLIPS:
            jobs.append((f"clip_{clip.stem}", [f"videos/{clip.name}"]))
    if only:
        jobs = [j for j in jobs if any(s.startswith(only) for s in j[1])]
    return jobs


def clip_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].frames or 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("-o", "--out", type=Path, default=Path(".cache/corpus"))
    ap.add_argument("--stride", type=int, default=3, help="label every N-th clip frame")
    ap.add_argument("--only", default=None, help="only sources under this prefix (e.g. faces/utk, videos)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reverse", action="store_true",
                    help="take the jobs last first (a second process beside a forward one shares the work)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    shards = args.out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    lab = Labeller(args.data)
    basis_path = args.out / "uv_basis.npz"
    if not basis_path.exists():
        check = lab.bridge.check(lab.teacher, lab.layout.canonical)
        tmp = args.out / "uv_basis.tmp.npz"
        np.savez(tmp, mean=lab.mean, basis=lab.basis, layout_hash=lab.layout.hash, check=json.dumps(check))
        tmp.rename(basis_path)
    jobs = [j for j in plan(args.data, args.only) if not (shards / f"{j[0]}.npz").exists()]
    jobs = jobs[::-1] if args.reverse else jobs
    total = sum(clip_frames(args.data / s[0]) // args.stride + 1 if s[0].startswith("videos/") else len(s)
                for _, s in jobs)
    t0 = time.perf_counter()
    with tqdm(total=total, desc="labelling", unit="img", smoothing=0.05) as bar:
        for name, sources in jobs:
            if (shards / f"{name}.npz").exists():  # another process took it meanwhile
                continue
            if sources[0].startswith("videos/"):
                recs = label_clip(lab, args.data, sources[0], args.stride, bar)
            else:
                recs = label_photos(lab, args.data, sources, bar)
            if not recs:
                tqdm.write(f"{name}: no face labelled")
                continue
            tmp = shards / f"{name}.tmp.npz"
            np.savez(tmp, **pack(recs))
            tmp.rename(shards / f"{name}.npz")
    summary = summarise(shards)
    summary["seconds"] = time.perf_counter() - t0
    (args.out / "meta.json").write_text(json.dumps({"crop_size": CROP, "context": CONTEXT, "label": "3ddfa_v2",
                                                    "stride": args.stride, **summary}, indent=1))
    print(json.dumps(summary))
    return 0


def summarise(shards: Path) -> dict:
    counts: dict[str, int] = {}
    yaw_bins: dict[str, int] = {}
    for sh in sorted(shards.glob("*.npz")):
        if sh.name.endswith(".tmp.npz"):
            continue
        with np.load(sh) as z:
            for s, y in zip(z["split"], z["yaw"]):
                counts[str(s)] = counts.get(str(s), 0) + 1
                b = "[0,30)" if abs(y) < 30 else "[30,60)" if abs(y) < 60 else "[60,90]"
                yaw_bins[f"{s} {b}"] = yaw_bins.get(f"{s} {b}", 0) + 1
    return {"samples": counts, "yaw_bins": yaw_bins}


if __name__ == "__main__":
    raise SystemExit(main())
