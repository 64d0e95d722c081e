"""Accuracy on AFLW2000-3D-format data: NME of 68 landmarks per yaw bin.

Protocol (as in 3DDFA / PRNet): each image comes with ``pt3d_68`` (3, 68) ground-truth 3D
landmarks in image pixels and ``Pose_Para`` (pitch, yaw, roll in radians, ...). The face is
cropped from the ground-truth landmarks, the error is the mean point distance divided by
sqrt(w * h) of the ground-truth landmark box, reported per |yaw| bin [0, 30), [30, 60),
[60, 90] and as the balanced mean of the three bins. 2D uses x, y; 3D also z, after removing
each set's mean depth (depth has no absolute origin in a single image).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError, InputNotFound

YAW_BINS: tuple[tuple[float, float], ...] = ((0.0, 30.0), (30.0, 60.0), (60.0, 90.01))
BIN_NAMES = ("[0,30)", "[30,60)", "[60,90]")


@dataclass
class AflwSample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    pts3d: np.ndarray  # (68, 3) float32 image pixels, z relative
    yaw_deg: float


def box_norm(gt: np.ndarray) -> float:
    """sqrt(w * h) of the ground-truth landmark box."""
    wh = gt[:, :2].max(0) - gt[:, :2].min(0)
    return float(np.sqrt(max(wh[0] * wh[1], 1e-12)))


def nme2d(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1).mean() / box_norm(gt))


def nme3d(pred: np.ndarray, gt: np.ndarray) -> float:
    p = pred[:, :3] - np.r_[0.0, 0.0, pred[:, 2].mean()]
    g = gt[:, :3] - np.r_[0.0, 0.0, gt[:, 2].mean()]
    return float(np.linalg.norm(p - g, axis=1).mean() / box_norm(gt))


def yaw_bin(yaw_deg: float) -> int:
    a = abs(yaw_deg)
    for i, (lo, hi) in enumerate(YAW_BINS):
        if lo <= a < hi:
            return i
    return len(YAW_BINS) - 1


def load_aflw(folder: Path, limit: int = 0) -> Iterator[AflwSample]:
    """Yield the (jpg, mat) pairs of an AFLW2000-3D-format folder."""
    from .capture import read_image
    from scipy.io import loadmat

    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFound(f"AFLW folder not found: {folder}")
    mats = sorted(folder.glob("*.mat"))
    if not mats:
        raise InputError(f"no .mat files in {folder} (expected AFLW2000-3D format: image.jpg + image.mat)")
    n = 0
    for mat in mats:
        img_path = next((mat.with_suffix(e) for e in (".jpg", ".png", ".jpeg") if mat.with_suffix(e).is_file()), None)
        if img_path is None:
            continue
        try:
            m = loadmat(str(mat))
            pts = np.asarray(m["pt3d_68"], np.float32)
            pose = np.asarray(m["Pose_Para"], np.float64).ravel()
        except Exception as exc:  # scipy raises many types on a bad file
            raise InputError(f"{mat.name}: not an AFLW2000-3D .mat ({exc})") from exc
        if pts.shape != (3, 68) or pose.size < 3:
            raise InputError(f"{mat.name}: pt3d_68 must be (3, 68) and Pose_Para hold pitch, yaw, roll")
        image = read_image(img_path)  # size checked before decoding
        yield AflwSample(mat.stem, image, pts.T.copy(), float(np.rad2deg(pose[1])))
        n += 1
        if limit and n >= limit:
            return


Predictor = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]  # (image, gt68) -> (68, 2|3)


def evaluate(samples: Iterator[AflwSample], predict: Predictor) -> dict:
    """Per-bin and balanced NME for one method. ``predict`` gets the image and the GT landmarks
    (used only to place the crop, as the protocol does) and returns 68 points or None (a miss,
    counted separately and excluded from the means)."""
    errs2: list[list[float]] = [[] for _ in YAW_BINS]
    errs3: list[list[float]] = [[] for _ in YAW_BINS]
    misses = 0
    for s in samples:
        pred = predict(s.image, s.pts3d)
        if pred is None:
            misses += 1
            continue
        b = yaw_bin(s.yaw_deg)
        errs2[b].append(nme2d(pred, s.pts3d))
        if pred.shape[1] == 3:
            errs3[b].append(nme3d(pred, s.pts3d))
    return summarise(errs2, errs3, misses)


def summarise(errs2: list[list[float]], errs3: list[list[float]], misses: int) -> dict:
    def block(errs: list[list[float]]) -> dict:
        per = {name: (float(np.mean(e)) if e else None) for name, e in zip(BIN_NAMES, errs)}
        present = [v for v in per.values() if v is not None]
        return {"bins": per, "counts": {n: len(e) for n, e in zip(BIN_NAMES, errs)},
                "balanced": float(np.mean(present)) if present else None,
                "mean": float(np.mean(sum(errs, []))) if any(errs) else None}

    return {"nme2d": block(errs2), "nme3d": block(errs3) if any(errs3) else None, "misses": misses}


def format_table(results: dict[str, dict]) -> str:
    """A plain-text table: one row per method, NME in % per bin, balanced and overall."""
    bins = "".join(f"{n:>10}" for n in BIN_NAMES)
    head = f"{'method':<12}{'dim':<5}{bins}{'balanced':>10}{'all':>8}{'miss':>6}"
    rows = [head, "-" * len(head)]
    for method, r in results.items():
        for dim in ("nme2d", "nme3d"):
            blk = r.get(dim)
            if not blk:
                continue
            cells = "".join(f"{(v * 100):>9.2f}%" if v is not None else f"{'-':>10}" for v in blk["bins"].values())
            bal = f"{blk['balanced'] * 100:>9.2f}%" if blk["balanced"] is not None else f"{'-':>10}"
            allv = f"{blk['mean'] * 100:>7.2f}%" if blk["mean"] is not None else f"{'-':>8}"
            rows.append(f"{method:<12}{dim[3:]:<5}{cells}{bal}{allv}{r['misses']:>6}")
    counts = next(iter(results.values()))["nme2d"]["counts"] if results else {}
    rows.append("images per bin: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(rows)
