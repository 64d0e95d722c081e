"""Build the pseudo-labelled training cache from the teacher's points and the shared clips/photos.

    python trainer/data/build_dataset.py --data ../shared/data --teacher .cache/teacher -o .cache/dataset

One shard per source (``shards/<source>.npz``), written atomically and skipped when present, so
an interrupted build resumes where it stopped. Each sample is a *context crop*: the standard
generator crop (``crop_from_landmarks`` on the label's 68 landmarks) enlarged by ``CONTEXT`` so
training can jitter scale, shift and rotation without running off the image. Whole identities
are held out for validation (``VAL_IDENTITIES``); ``meta.json`` records the split and the
labeller's own error against dlib's 68 points and the human-annotated 5 points of d3dfr.
"""

from __future__ import annotations

import argparse
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
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import estimate_pose
from trainer.data.labeller import DenseLabeller, Registration, register
from trainer.data.teacher_mediapipe import REG_CLIPS

CROP = 256
CONTEXT = 1.25
# Whole people never trained on: three clips and every d3dfr photo (25 people, 5 annotated points).
VAL_IDENTITIES = {"lp_d11", "lp_d19", "lp_s32"}
VAL_PREFIXES = ("d3dfr/",)


def identity_of(source: str) -> str:
    """'videos/lp_d10.mp4' -> 'lp_d10'; 'images/d3dfr/000002.jpg' -> 'd3dfr/000002'."""
    p = Path(source)
    parts = p.with_suffix("").parts[1:]
    return "/".join(parts)


def split_of(identity: str) -> str:
    return "val" if identity in VAL_IDENTITIES or identity.startswith(VAL_PREFIXES) else "train"


class Dlib68:
    """dlib HOG detector + 68-point predictor, used as the independent check of the labels."""

    def __init__(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        assert spec and spec.origin
        models = Path(spec.origin).parent / "models"
        self.det = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.dlib = dlib

    def near(self, bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """68 points of the detected face that best overlaps ``box`` (x0, y0, x1, y1), or None."""
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        k = min(1.0, 640.0 / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=k, fy=k) if k < 1 else rgb
        best, best_iou = None, 0.3
        for r in self.det(small, 0):
            b = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64) / k
            iou = _iou(b, box)
            if iou > best_iou:
                best, best_iou = b, iou
        if best is None:
            return None
        rect = self.dlib.rectangle(*[int(round(v)) for v in best])
        shape = self.sp(rgb, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


def nme(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 2D point error / sqrt(w*h) of the ground-truth box (AFLW2000-3D protocol)."""
    wh = gt[:, :2].max(0) - gt[:, :2].min(0)
    return float(np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1).mean() / np.sqrt(wh[0] * wh[1]))


def read_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = f.to_ndarray(format="bgr24")
            if wanted and i >= max(wanted):
                break
    return out


def d3dfr_five(image_path: Path) -> np.ndarray | None:
    txt = image_path.with_suffix(".txt")
    return np.loadtxt(txt, dtype=np.float32).reshape(5, 2) if txt.is_file() else None


def five_from68(lm: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip, mouth corners from 68 points (d3dfr's 5-point convention)."""
    return np.stack([lm[36:42, :2].mean(0), lm[42:48, :2].mean(0), lm[30, :2], lm[48, :2], lm[54, :2]])


def build_registration(layout: UVLayout, teacher_dir: Path, data: Path, dl: Dlib68) -> Registration:
    pts, marks = [], []
    for clip in REG_CLIPS:
        z = np.load(teacher_dir / f"videos__{clip}.mp4.npz")
        idx = set(range(0, len(z["frames"]), 25))
        for i, img in read_frames(data / "videos" / f"{clip}.mp4", idx).items():
            if not z["valid"][i, 0]:
                continue
            p = z["points"][i, 0]
            box = np.r_[p[:, :2].min(0), p[:, :2].max(0)]
            lm = dl.near(img, box)
            if lm is not None:
                pts.append(p)
                marks.append(lm)
    return register(layout, np.asarray(pts), np.asarray(marks))


def sample_from(img: np.ndarray, verts: np.ndarray, layout: UVLayout) -> tuple[np.ndarray, np.ndarray, object]:
    """Context crop of ``img`` and the label's position map in that crop's pixels."""
    lm = verts[layout.kpt_vertex]
    crop = crop_from_landmarks(lm[:, :2], CROP, expand=CROP_EXPAND * CONTEXT)
    pm = np.zeros((layout.size * layout.size, 3), np.float32)
    pm[layout.face_ind] = crop.to_crop(verts)
    return crop.warp(img), pm.reshape(layout.size, layout.size, 3).astype(np.float16), crop


def build_source(src: str, teacher_file: Path, data: Path, lab: DenseLabeller, dl: Dlib68,
                 stride: int) -> dict[str, np.ndarray] | None:
    layout = lab.layout
    z = np.load(teacher_file)
    path = data / src
    identity = identity_of(src)
    is_video = path.suffix == ".mp4"
    rows = [i for i in range(len(z["frames"])) if z["valid"][i].any() and i % stride == 0]
    if not rows:
        return None
    frames = read_frames(path, {int(z["frames"][i]) for i in rows}) if is_video else {0: cv2.imread(str(path))}
    rec: dict[str, list] = {k: [] for k in ("images", "posmaps", "yaw", "dlib68", "frame", "ref5")}
    for i in rows:
        img = frames.get(int(z["frames"][i]))
        if img is None:
            continue
        slots = np.flatnonzero(z["valid"][i])
        if is_video:  # one person per clip: the largest face
            ext = [np.ptp(z["points"][i, j, :, 0]) for j in slots]
            slots = slots[[int(np.argmax(ext))]]
        for j in slots:
            verts = lab.vertices(z["points"][i, j])
            image, pm, crop = sample_from(img, verts, layout)
            lm = verts[layout.kpt_vertex]
            box = np.r_[lm[:, :2].min(0), lm[:, :2].max(0)]
            d68 = dl.near(img, box)
            ref = d3dfr_five(path) if not is_video else None
            rec["images"].append(image)
            rec["posmaps"].append(pm)
            rec["yaw"].append(estimate_pose(verts, layout).yaw)
            rec["dlib68"].append(crop.to_crop(d68) if d68 is not None else np.full((68, 2), np.nan, np.float32))
            rec["ref5"].append(crop.to_crop(ref) if ref is not None else np.full((5, 2), np.nan, np.float32))
            rec["frame"].append(int(z["frames"][i]))
    n = len(rec["images"])
    if n == 0:
        return None
    kind = "frame" if is_video else "photo"
    return {
        "images": np.stack(rec["images"]), "posmaps": np.stack(rec["posmaps"]),
        "yaw": np.asarray(rec["yaw"], np.float32), "dlib68": np.stack(rec["dlib68"]).astype(np.float32),
        "ref5": np.stack(rec["ref5"]).astype(np.float32), "frame": np.asarray(rec["frame"], np.int64),
        "split": np.array([split_of(identity)] * n), "identity": np.array([identity] * n),
        "kind": np.array([kind] * n), "source": np.array([src] * n),
    }


def labeller_error(shards: list[Path], layout: UVLayout) -> dict:
    """The labels' own error: NME vs dlib's 68 points (all samples dlib found) and vs the human
    5-point annotation of d3dfr, both normalised by the label's landmark box."""
    d68, d5 = [], []
    for sh in shards:
        with np.load(sh) as z:
            lm = z["posmaps"].reshape(len(z["posmaps"]), -1, 3)[:, layout.kpt_flat].astype(np.float32)
            for k in range(len(lm)):
                if np.isfinite(z["dlib68"][k]).all():
                    d68.append(nme(z["dlib68"][k], lm[k]))
                if np.isfinite(z["ref5"][k]).all():
                    wh = np.ptp(lm[k][:, :2], 0)
                    err = np.linalg.norm(five_from68(lm[k]) - z["ref5"][k], axis=1).mean()
                    d5.append(float(err / np.sqrt(wh[0] * wh[1])))
    return {"nme68_label_vs_dlib": float(np.mean(d68)) if d68 else None, "n68": len(d68),
            "nme5_label_vs_d3dfr_annotation": float(np.mean(d5)) if d5 else None, "n5": len(d5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--teacher", type=Path, default=Path(".cache/teacher"))
    ap.add_argument("-o", "--out", type=Path, default=Path(".cache/dataset"))
    ap.add_argument("--stride", type=int, default=1, help="use every N-th video frame")
    args = ap.parse_args(argv)
    layout = default_layout()
    (args.out / "shards").mkdir(parents=True, exist_ok=True)
    dl = Dlib68()
    reg_path = args.out / "registration.npz"
    if not reg_path.exists():
        build_registration(layout, args.teacher, args.data, dl).save(reg_path)
    lab = DenseLabeller(layout, Registration.load(reg_path))
    teacher_files = sorted(args.teacher.glob("*.npz"))
    t0 = time.perf_counter()
    for tf in tqdm(teacher_files, desc="sources", unit="src"):
        src = tf.name[: -len(".npz")].replace("__", "/")
        dst = args.out / "shards" / (tf.name[: -len(".npz")] + ".npz")
        if dst.exists():
            continue
        rec = build_source(src, tf, args.data, lab, dl, args.stride)
        if rec is None:
            tqdm.write(f"{src}: no labelled face, skipped")
            continue
        tmp = dst.with_name(dst.stem + ".tmp.npz")
        np.savez(tmp, **rec)
        tmp.rename(dst)
    shards = sorted((args.out / "shards").glob("*.npz"))
    splits: dict[str, int] = {}
    idents: dict[str, set] = {"train": set(), "val": set()}
    for sh in shards:
        with np.load(sh) as z:
            for s, i in zip(z["split"], z["identity"]):
                splits[str(s)] = splits.get(str(s), 0) + 1
                idents[str(s)].add(str(i))
    meta = {"crop_size": CROP, "context": CONTEXT, "layout_hash": layout.hash, "stride": args.stride,
            "samples": splits, "identities": {k: sorted(v) for k, v in idents.items()},
            "labeller_error": labeller_error(shards, layout), "build_seconds": time.perf_counter() - t0}
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps({k: meta[k] for k in ("samples", "labeller_error")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
