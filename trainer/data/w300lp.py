"""300W-LP loader: image + .mat (Pose_Para, Shape_Para, Exp_Para) + a user's 3DMM -> UV labels.

300W-LP and the Basel Face Model cannot be shipped or downloaded here; users who have them
point this loader at both and get shards in the same format as ``build_dataset.py``:

    python trainer/data/w300lp.py --root 300W_LP --model BFM_UV.mat -o .cache/dataset [--limit N]

The 3DMM file is a .mat (or .npz) with ``mu_shape`` (3N,), ``w_shape`` (3N, Ks), ``mu_exp``
(3N,), ``w_exp`` (3N, Ke) and ``uv`` (N, 2): each model vertex's texture coordinate in [0, 1]
(u right, v down) in the shipped UV layout. Pose_Para is (pitch, yaw, roll, tx, ty, tz, scale)
as 3DDFA/300W-LP define it: v = scale * Rz Ry Rx (model vertex) + t in a y-up frame, then
y is flipped into the image.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from streamcap.bundle import default_layout
from streamcap.geometry.layout import UVLayout


@dataclass
class Morphable:
    mu_shape: np.ndarray
    w_shape: np.ndarray
    mu_exp: np.ndarray
    w_exp: np.ndarray
    uv: np.ndarray  # (N, 2)

    @classmethod
    def load(cls, path: Path) -> Morphable:
        if path.suffix == ".npz":
            with np.load(path) as z:
                d = {k: z[k] for k in z.files}
        else:
            from scipy.io import loadmat

            d = loadmat(str(path))
        need = ("mu_shape", "w_shape", "mu_exp", "w_exp", "uv")
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"{path}: 3DMM file lacks {missing}")
        return cls(*(np.asarray(d[k], np.float64) for k in need))

    def vertices(self, shape: np.ndarray, exp: np.ndarray) -> np.ndarray:
        """(N, 3) model-frame vertices (y up) for the given coefficients."""
        n_s, n_e = self.w_shape.shape[1], self.w_exp.shape[1]
        v = (self.mu_shape.ravel() + self.w_shape @ shape.ravel()[:n_s]
             + self.mu_exp.ravel() + self.w_exp @ exp.ravel()[:n_e])
        return v.reshape(-1, 3)


def rotation_3ddfa(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """Rz(roll) @ Ry(yaw) @ Rx(pitch), radians, in the y-up model frame."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def image_vertices(model: Morphable, pose: np.ndarray, shape: np.ndarray, exp: np.ndarray,
                   height: int) -> np.ndarray:
    """(N, 3) image-space vertices: x right, y down, z toward the camera (mean depth removed)."""
    p = pose.ravel()
    v = p[6] * model.vertices(shape, exp) @ rotation_3ddfa(p[0], p[1], p[2]).T + p[3:6]
    v[:, 1] = height - v[:, 1]
    v[:, 2] -= v[:, 2].mean()
    return v.astype(np.float32)


def uv_position_map(model: Morphable, verts: np.ndarray, layout: UVLayout) -> np.ndarray:
    """Interpolate the model's vertices onto every face pixel of the layout -> (S, S, 3)."""
    s = layout.size
    uv_px = model.uv * (s - 1)
    rows, cols = np.divmod(layout.face_ind, s)
    q = np.stack([cols, rows], 1).astype(np.float64)
    lin = LinearNDInterpolator(uv_px, verts)(q)
    bad = ~np.isfinite(lin).all(1)
    if bad.any():  # face pixels outside the model's UV hull take the nearest vertex
        lin[bad] = NearestNDInterpolator(uv_px, verts)(q[bad])
    pm = np.zeros((s * s, 3), np.float32)
    pm[layout.face_ind] = lin
    return pm.reshape(s, s, 3)


def iter_300wlp(root: Path, limit: int = 0):
    """Yield (image path, mat path) pairs under a 300W-LP folder tree."""
    n = 0
    for mat in sorted(root.rglob("*.mat")):
        img = mat.with_suffix(".jpg")
        if img.is_file():
            yield img, mat
            n += 1
            if limit and n >= limit:
                return


def build_shard(root: Path, model_path: Path, out: Path, limit: int = 0, split: str = "train") -> int:
    """Label every (jpg, mat) pair and write one shard like build_dataset's; returns the count."""
    from scipy.io import loadmat

    from trainer.data.build_dataset import sample_from

    layout = default_layout()
    model = Morphable.load(model_path)
    rec: dict[str, list] = {k: [] for k in ("images", "posmaps", "yaw", "identity", "source")}
    for img_path, mat_path in iter_300wlp(root, limit):
        m = loadmat(str(mat_path))
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        if image is None:
            continue
        verts = image_vertices(model, m["Pose_Para"], m["Shape_Para"], m["Exp_Para"], image.shape[0])
        pm_img = uv_position_map(model, verts, layout)
        crop_img, pm, _ = sample_from(image, pm_img.reshape(-1, 3)[layout.face_ind], layout)
        rec["images"].append(crop_img)
        rec["posmaps"].append(pm)
        rec["yaw"].append(float(np.rad2deg(np.ravel(m["Pose_Para"])[1])))
        rec["identity"].append(img_path.stem.rsplit("_", 1)[0])
        rec["source"].append(str(img_path.relative_to(root)))
    n = len(rec["images"])
    if n == 0:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, images=np.stack(rec["images"]), posmaps=np.stack(rec["posmaps"]),
             yaw=np.asarray(rec["yaw"], np.float32), dlib68=np.full((n, 68, 2), np.nan, np.float32),
             ref5=np.full((n, 5, 2), np.nan, np.float32), frame=np.zeros(n, np.int64),
             split=np.array([split] * n), identity=np.array(rec["identity"]), kind=np.array(["300wlp"] * n),
             source=np.array(rec["source"]))
    tmp.rename(out)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, required=True, help="300W-LP folder (jpg + mat pairs)")
    ap.add_argument("--model", type=Path, required=True, help="3DMM .mat/.npz with mu/w shape+exp and uv")
    ap.add_argument("-o", "--out", type=Path, default=Path(".cache/dataset"))
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    n = build_shard(args.root, args.model, args.out / "shards" / "w300lp.npz", args.limit)
    print(f"{n} samples written")
    return 0 if n else 2


if __name__ == "__main__":
    raise SystemExit(main())
