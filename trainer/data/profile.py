"""Face profiling: synthesise large-pose training samples from near-frontal labelled ones.

The clips are almost all frontal (|yaw| < 6 degrees for 90% of frames) and the teacher fails on
profiles, so, like 300W-LP, we rotate each labelled face in 3D and re-render it: every UV
vertex is moved by the rotation, splatted into the new view with a z-buffer (the frontmost
surface wins) and coloured from where it was in the source image. Vertices hidden in the source
view keep their nearest visible colour. The old face is blurred out of the background so the
network cannot read the pose from a ghost.

    python trainer/data/profile.py --cache .cache/dataset [--per-sample 1] [--seed 0]

writes ``shards/profile__<source>.npz`` beside the originals (train split; resumable). With
``--split val -o DIR`` it profiles the held-out people into a separate folder for evaluation.
On a ``label_corpus.py`` cache (``--cache .cache/corpus --fraction 0.3``) it profiles that share
of the samples and writes the new labels as 62 numbers again (``profile_corpus_shard``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamcap.bundle import default_layout
from streamcap.geometry.crop import CROP_EXPAND, crop_from_landmarks
from streamcap.geometry.layout import UVLayout
from streamcap.geometry.posmap import estimate_pose, euler_to_matrix

CONTEXT = 1.25


def _splat(xy: np.ndarray, z: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffered point splat: per pixel the index of the frontmost point (-1 if none)."""
    ix = np.round(xy).astype(np.int64)
    ok = (ix[:, 0] >= 0) & (ix[:, 0] < size) & (ix[:, 1] >= 0) & (ix[:, 1] < size)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(z[idx])]  # far to near: the nearest is written last and wins
    owner = np.full(size * size, -1, np.int64)
    owner[ix[order, 1] * size + ix[order, 0]] = order
    zbuf = np.full(size * size, -np.inf)
    zbuf[owner >= 0] = z[owner[owner >= 0]]
    return owner.reshape(size, size), zbuf.reshape(size, size)


def _fill(values: np.ndarray, known: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill unknown pixels inside ``region`` by normalised convolution of the known ones.
    Returns the filled values and the mask of pixels that now hold a value."""
    v = values.astype(np.float32) * known[..., None]
    w = known.astype(np.float32)
    out = values.astype(np.float32).copy()
    for k in (3, 5, 9, 17, 33):
        num = cv2.blur(v, (k, k))
        den = cv2.blur(w, (k, k))[..., None]
        todo = region & ~known & (den[..., 0] > 1e-3)
        out[todo] = num[todo] / den[todo]
        known = known | todo
        v = out * known[..., None]
        w = known.astype(np.float32)
    return out, known


def profile_sample(image: np.ndarray, posmap: np.ndarray, layout: UVLayout, yaw: float, pitch: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the labelled face of a context crop and re-render it into a new context crop.

    image: (C, C, 3) uint8; posmap: (S, S, 3) crop pixels with z offset by C/2.
    Returns the new (image, posmap) in the same conventions.
    """
    size = image.shape[0]
    verts = posmap.reshape(-1, 3)[layout.face_ind].astype(np.float64)
    verts[:, 2] -= size / 2.0
    width = np.ptp(verts[:, 0])
    # rotate about a point inside the head, about half a face width behind the surface
    pivot = verts.mean(0) - np.array([0.0, 0.0, 0.5 * width])
    rot = euler_to_matrix(yaw, pitch, 0.0)
    moved = (verts - pivot) @ rot.T + pivot
    moved[:, :2] += verts[:, :2].mean(0) - moved[:, :2].mean(0)

    # source visibility: a vertex is seen in the source if it is the frontmost at its pixel
    own_src, zsrc = _splat(verts[:, :2], verts[:, 2], size)
    ix = np.clip(np.round(verts[:, :2]).astype(np.int64), 0, size - 1)
    seen = verts[:, 2] >= zsrc[ix[:, 1], ix[:, 0]] - 0.02 * width

    owner, _ = _splat(moved[:, :2], moved[:, 2], size)
    covered = owner >= 0
    hull = np.zeros((size, size), np.uint8)
    pts = np.round(moved[:, :2]).astype(np.int32)
    cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
    hull = hull.astype(bool)
    src_xy = np.zeros((size, size, 2), np.float32)
    src_xy[covered] = verts[owner[covered], :2]
    good = covered & seen[np.maximum(owner, 0)]
    src_xy, filled = _fill(src_xy, good, hull)
    face = cv2.remap(image, src_xy[..., 0], src_xy[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)

    # background: the old face inpainted away, then the new face composited with a soft edge
    old = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(old, cv2.convexHull(np.round(verts[:, :2]).astype(np.int32)), 255)
    old = cv2.dilate(old, np.ones((7, 7), np.uint8))
    bg = cv2.inpaint(image, old, 5, cv2.INPAINT_TELEA).astype(np.float32)
    a_new = cv2.GaussianBlur(filled.astype(np.float32), (0, 0), 1.0)[..., None]
    out = np.clip(bg * (1 - a_new) + face * a_new, 0, 255).astype(np.uint8)

    # re-frame: a new context crop around the rotated face's landmarks
    lm = moved[layout.kpt_vertex]
    crop = crop_from_landmarks(lm[:, :2], size, expand=CROP_EXPAND * CONTEXT)
    pm = np.zeros((layout.size * layout.size, 3), np.float32)
    pm[layout.face_ind] = crop.to_crop(moved.astype(np.float32))
    jitter = 1.0 + 0.02 * rng.standard_normal(3)  # tiny colour shift so twins differ
    img2 = np.clip(crop.warp(out) * jitter, 0, 255).astype(np.uint8)
    return img2, pm.reshape(layout.size, layout.size, 3).astype(np.float16)


def profile_shard(path: Path, layout: UVLayout, per_sample: int, rng: np.random.Generator,
                  split: str = "train") -> dict | None:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    chosen = np.flatnonzero(data["split"] == split)
    if chosen.size == 0:
        return None
    imgs, pms, yaws, idx = [], [], [], []
    for i in chosen:
        for _ in range(per_sample):
            target = rng.choice([-1.0, 1.0]) * rng.uniform(15.0, 75.0)
            dyaw = float(np.clip(target - data["yaw"][i], -80.0, 80.0))
            img, pm = profile_sample(data["images"][i], data["posmaps"][i], layout, dyaw,
                                     float(rng.uniform(-10, 10)), rng)
            verts = pm.reshape(-1, 3)[layout.face_ind].astype(np.float32)
            imgs.append(img)
            pms.append(pm)
            yaws.append(estimate_pose(verts, layout).yaw)
            idx.append(i)
    n = len(imgs)
    idx_a = np.asarray(idx)
    return {
        "images": np.stack(imgs), "posmaps": np.stack(pms), "yaw": np.asarray(yaws, np.float32),
        "dlib68": np.full((n, 68, 2), np.nan, np.float32), "ref5": np.full((n, 5, 2), np.nan, np.float32),
        "frame": data["frame"][idx_a], "split": data["split"][idx_a], "identity": data["identity"][idx_a],
        "kind": np.array(["profile"] * n), "source": data["source"][idx_a],
    }


def profile_corpus_shard(path: Path, layout: UVLayout, basis: dict, fraction: float, rng: np.random.Generator,
                         split: str = "train") -> dict | None:
    """Profile a ``fraction`` of one label_corpus.py shard. The rotation and re-framing are a 3D
    affine map of the crop, so each new label is again the teacher's 62 numbers (its A and b
    composed with that map, recovered exactly by least squares from the moved vertices)."""
    from trainer.data.label_corpus import pack

    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    chosen = np.flatnonzero((data["split"] == split) & (np.abs(data["yaw"]) < 45))
    chosen = chosen[rng.random(len(chosen)) < fraction]
    if chosen.size == 0:
        return None
    recs = []
    for i in chosen:
        lab = data["label"][i].astype(np.float64)
        a, b = lab[:9].reshape(3, 3), lab[9:12]
        verts = (basis["mean"] + basis["basis"] @ lab[12:62].astype(np.float32)).astype(np.float64) @ a.T + b
        pm = np.zeros((layout.size * layout.size, 3), np.float32)
        pm[layout.face_ind] = verts
        image = cv2.imdecode(data["jpeg"][data["offsets"][i]:data["offsets"][i + 1]], cv2.IMREAD_COLOR)
        target = rng.choice([-1.0, 1.0]) * rng.uniform(15.0, 75.0)
        dyaw = float(np.clip(target - data["yaw"][i], -80.0, 80.0))
        img, pm2 = profile_sample(image, pm.reshape(layout.size, layout.size, 3), layout, dyaw,
                                  float(rng.uniform(-10, 10)), rng)
        moved = pm2.reshape(-1, 3)[layout.face_ind].astype(np.float64)
        t, *_ = np.linalg.lstsq(np.c_[verts, np.ones(len(verts))], moved, rcond=None)  # (4, 3)
        a2, b2 = t[:3].T @ a, t[:3].T @ b + t[3]
        new = (basis["mean"] + basis["basis"] @ lab[12:62].astype(np.float32)).astype(np.float64) @ a2.T + b2
        pose = estimate_pose(new.astype(np.float32), layout)
        ok, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            continue
        recs.append({"jpeg": jpg.ravel(), "label": np.concatenate([a2.ravel(), b2, lab[12:62]]).astype(np.float32),
                     "lm68": new[layout.kpt_vertex].astype(np.float32), "yaw": float(pose.yaw),
                     "pitch": float(pose.pitch), "roll": float(pose.roll), "crop_scale": data["crop_scale"][i],
                     "flip": data["flip"][i], "frame": data["frame"][i], "source": data["source"][i],
                     "identity": data["identity"][i], "split": data["split"][i], "kind": "profile"})
    return pack(recs) if recs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(".cache/dataset"))
    ap.add_argument("--per-sample", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("train", "val"), default="train",
                    help="which split to profile (val profiles are for evaluation only)")
    ap.add_argument("-o", "--out", type=Path, default=None,
                    help="shard folder to write (default: the cache's own shards/)")
    ap.add_argument("--fraction", type=float, default=0.3,
                    help="label_corpus.py caches: the share of samples (|yaw| < 45) to profile")
    args = ap.parse_args(argv)
    out_dir = args.out or args.cache / "shards"
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = default_layout()
    corpus = (args.cache / "uv_basis.npz").is_file()
    if corpus:
        with np.load(args.cache / "uv_basis.npz") as z:
            basis = {"mean": z["mean"], "basis": z["basis"]}
    shards = [p for p in sorted((args.cache / "shards").glob("*.npz"))
              if not p.name.startswith("profile__") and not p.name.endswith(".tmp.npz")]
    for sh in tqdm(shards, desc="profiling", unit="shard"):
        dst = out_dir / ("profile__" + sh.name)
        if dst.exists():
            continue
        rng = np.random.default_rng([args.seed, len(sh.name), sum(sh.name.encode())])
        rec = (profile_corpus_shard(sh, layout, basis, args.fraction, rng, args.split) if corpus
               else profile_shard(sh, layout, args.per_sample, rng, args.split))
        if rec is None:
            continue
        tmp = dst.with_name(dst.stem + ".tmp.npz")
        np.savez(tmp, **rec)
        tmp.rename(dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
