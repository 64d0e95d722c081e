"""Training samples from the dataset cache, with on-the-fly augmentation.

Each cached sample is a 256x256 *context crop* (the generator's standard crop enlarged by
``context``) and its UV position map in that crop's pixels (z offset by half the crop). A
sample for the network is a random similarity of the standard crop (scale, rotation, shift)
resampled to the model input, the label moved by the same transform, then photometric noise
(colour, blur, noise, occluders) on the image only. Validation uses the standard crop as is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class AugmentConfig:
    scale: tuple[float, float] = (0.85, 1.15)
    rotate_deg: float = 30.0
    shift: float = 0.08  # of the crop side
    color: float = 0.25
    blur_p: float = 0.2
    noise_p: float = 0.2
    occlude_p: float = 0.3


def load_cache(root: Path, split: str, kinds: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """All samples of ``split`` from ``root/shards/*.npz`` as arrays (images uint8, posmaps f16)."""
    parts: dict[str, list[np.ndarray]] = {"images": [], "posmaps": [], "yaw": [], "kind": []}
    shards = sorted(p for p in (root / "shards").glob("*.npz") if not p.name.endswith(".tmp.npz"))
    for sh in shards:
        with np.load(sh) as z:
            keep = z["split"] == split
            if kinds is not None:
                keep &= np.isin(z["kind"], kinds)
            if not keep.any():
                continue
            for k in parts:
                parts[k].append(z[k][keep])
    if not parts["images"]:
        raise FileNotFoundError(f"no {split} samples under {root / 'shards'}")
    return {k: np.concatenate(v) for k, v in parts.items()}


def cache_meta(root: Path) -> dict:
    p = root / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {"crop_size": 256, "context": 1.25}


def _similarity(center: float, side: float, out: int, scale: float, angle: float, shift: np.ndarray) -> np.ndarray:
    """(2, 3) map from context-crop pixels to an ``out`` x ``out`` crop of side ``side/scale``."""
    k = out * scale / side
    a = np.deg2rad(angle)
    rot = k * np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    c = np.array([center, center]) + shift
    t = np.array([out / 2.0, out / 2.0]) - rot @ c
    return np.concatenate([rot, t[:, None]], 1)


class PosmapDataset(Dataset):
    """Yields (image (3, S, S) normalised, target (3, U, U) = posmap / (S * output_scale))."""

    def __init__(self, data: dict[str, np.ndarray], input_size: int, context: float, train: bool,
                 mean: tuple[float, ...] = (0.0, 0.0, 0.0), std: tuple[float, ...] = (255.0, 255.0, 255.0),
                 output_scale: float = 1.1, aug: AugmentConfig | None = None, seed: int = 0) -> None:
        self.images = data["images"]
        self.posmaps = data["posmaps"]
        self.size = input_size
        self.context = context
        self.train = train
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.norm = input_size * output_scale
        self.aug = aug or AugmentConfig()
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, idx: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, idx])

    def transform(self, idx: int) -> np.ndarray:
        ctx = self.images.shape[1]
        side = ctx / self.context
        if not self.train:
            return _similarity(ctx / 2.0, side, self.size, 1.0, 0.0, np.zeros(2))
        r = self._rng(idx)
        a = self.aug
        return _similarity(ctx / 2.0, side, self.size, r.uniform(*a.scale), r.uniform(-a.rotate_deg, a.rotate_deg),
                           r.uniform(-a.shift, a.shift, 2) * side)

    def photometric(self, img: np.ndarray, idx: int) -> np.ndarray:
        r = self._rng(idx + 1_000_003)
        a = self.aug
        x = img.astype(np.float32)
        x = x * r.uniform(1 - a.color, 1 + a.color, 3) + r.uniform(-25, 25)
        if r.random() < a.blur_p:
            x = cv2.GaussianBlur(x, (0, 0), r.uniform(0.5, 1.8))
        if r.random() < a.noise_p:
            x = x + r.normal(0, r.uniform(2, 10), x.shape)
        if r.random() < a.occlude_p:
            s = self.size
            w, h = (r.uniform(0.15, 0.45, 2) * s).astype(int)
            x0, y0 = r.integers(0, s - w), r.integers(0, s - h)
            x[y0 : y0 + h, x0 : x0 + w] = r.uniform(0, 255, 3)
        return np.clip(x, 0, 255)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.transform(idx)
        img = cv2.warpAffine(self.images[idx], m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        pm = self.posmaps[idx].astype(np.float32)
        face = np.any(pm != 0, axis=-1)
        k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        out = np.zeros_like(pm)
        out[..., :2] = pm[..., :2] @ m[:, :2].T + m[:, 2]
        ctx = self.images.shape[1]
        out[..., 2] = (pm[..., 2] - ctx / 2.0) * k + self.size / 2.0
        out[~face] = 0.0
        x = self.photometric(img, idx) if self.train else img.astype(np.float32)
        x = (x[..., ::-1] - self.mean) / self.std  # BGR -> RGB, normalise
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray((out / self.norm).transpose(2, 0, 1), dtype=np.float32)))
