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
    gray_p: float = 0.15
    jpeg_p: float = 0.2  # re-compress at quality 15..70


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
        ctx = self.context_size
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
        if r.random() < a.gray_p:
            x = np.repeat(x.mean(-1, keepdims=True), 3, -1)
        if r.random() < a.jpeg_p:
            ok, enc = cv2.imencode(".jpg", np.clip(x, 0, 255).astype(np.uint8),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(r.integers(15, 71))])
            x = cv2.imdecode(enc, cv2.IMREAD_COLOR).astype(np.float32) if ok else x
        if r.random() < a.occlude_p:
            s = self.size
            w, h = (r.uniform(0.15, 0.45, 2) * s).astype(int)
            x0, y0 = r.integers(0, s - w), r.integers(0, s - h)
            x[y0 : y0 + h, x0 : x0 + w] = r.uniform(0, 255, 3)
        return np.clip(x, 0, 255)

    @property
    def context_size(self) -> int:
        return int(self.images.shape[1])

    def context_image(self, idx: int) -> np.ndarray:
        """(C, C, 3) uint8 BGR context crop of sample ``idx``."""
        return self.images[idx]

    def context_posmap(self, idx: int) -> np.ndarray:
        """(U, U, 3) float32 label in context-crop pixels, zero outside the face."""
        return self.posmaps[idx].astype(np.float32)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.transform(idx)
        img = cv2.warpAffine(self.context_image(idx), m, (self.size, self.size), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        pm = self.context_posmap(idx)
        face = np.any(pm != 0, axis=-1)
        k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        out = np.zeros_like(pm)
        out[..., :2] = pm[..., :2] @ m[:, :2].T + m[:, 2]
        ctx = self.context_size
        out[..., 2] = (pm[..., 2] - ctx / 2.0) * k + self.size / 2.0
        out[~face] = 0.0
        x = self.photometric(img, idx) if self.train else img.astype(np.float32)
        x = (x[..., ::-1] - self.mean) / self.std  # BGR -> RGB, normalise
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray((out / self.norm).transpose(2, 0, 1), dtype=np.float32)))


# --- the 3DDFA_V2-labelled corpus (trainer/data/label_corpus.py) ------------------------------


def is_corpus(root: Path) -> bool:
    """True for a cache written by label_corpus.py (JPEG crops + 62-number teacher labels)."""
    return cache_meta(Path(root)).get("label") == "3ddfa_v2"


def load_corpus(root: Path, split: str, seed: int = 0, fused: Path | None = None) -> dict[str, np.ndarray]:
    """All samples of ``split`` from ``root/shards``: one JPEG blob with offsets, labels (N, 62),
    yaw, kind, identity. The held-out split comes in a fixed shuffled order, so validating on
    its first N samples sees every source.

    With ``fused`` (fuse_corpus.py's side-car folder) the labels are the fused ones and
    ``lm_offsets`` (N, 68, 3) holds their landmark offsets. Shards that MediaPipe skips
    (``profile__*``) keep their labels with zero offsets; any other shard needs its side-car."""
    keys = ("label", "yaw", "kind", "identity") + (("lm_offsets",) if fused else ())
    parts: dict[str, list] = {"jpeg": [], "sizes": [], **{k: [] for k in keys}}
    for sh in sorted(p for p in (Path(root) / "shards").glob("*.npz") if not p.name.endswith(".tmp.npz")):
        with np.load(sh) as z:
            keep = np.flatnonzero(z["split"] == split)
            if not len(keep):
                continue
            off = z["offsets"]
            blob = z["jpeg"]
            parts["jpeg"].extend(blob[off[i]:off[i + 1]] for i in keep)
            parts["sizes"].append(off[keep + 1] - off[keep])
            for k in ("label", "yaw", "kind", "identity"):
                parts[k].append(z[k][keep])
            n_rows = len(z["label"])
        if fused:
            label, offs = _fused_rows(Path(fused), sh, n_rows)
            if label is not None:
                parts["label"][-1] = label[keep]
            parts["lm_offsets"].append(offs[keep] if offs is not None else np.zeros((len(keep), 68, 3), np.float32))
    if not parts["label"]:
        raise FileNotFoundError(f"no {split} samples under {Path(root) / 'shards'}")
    n = sum(len(v) for v in parts["label"])
    order = np.random.default_rng([seed, 7]).permutation(n) if split != "train" else np.arange(n)
    sizes = np.concatenate(parts["sizes"])[order]
    jpegs = [parts["jpeg"][i] for i in order]
    out = {k: np.concatenate(parts[k])[order] for k in keys}
    out["offsets"] = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    out["jpeg"] = np.concatenate(jpegs)
    return out


FUSED_SKIP = "profile__"  # synthetic rotated faces: no MediaPipe pass, 3DDFA_V2 labels kept


def _fused_rows(fused: Path, shard: Path, n_rows: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(labels (N, 62), offsets (N, 68, 3)) of ``shard``'s fused side-car; (None, None) for a
    shard without one by design."""
    if shard.name.startswith(FUSED_SKIP):
        return None, None
    car = fused / f"fused__{shard.stem}.npz"
    if not car.is_file():
        raise FileNotFoundError(f"no fused side-car {car} for shard {shard.name} (run trainer/data/fuse_corpus.py)")
    with np.load(car) as z:
        label, offs = z["label"], z["offsets"]
    if len(label) != n_rows:
        raise ValueError(f"{car}: {len(label)} rows for {n_rows} in {shard} (side-car out of date)")
    return label, offs.astype(np.float32)


class CorpusDataset(PosmapDataset):
    """PosmapDataset over the labelled corpus: decodes the JPEG crop and rebuilds the UV position
    map from the teacher's 62 numbers with the UV basis (mean (V, 3), basis (V, 3, 50)).

    Fused labels (``data["lm_offsets"]``, from ``load_corpus(fused=...)``) add their landmark
    offsets spread over the surface: ``spread`` is ``SurfaceSpread``'s (V, 68) operator for the
    same layout, computed once (``spread_operator``)."""

    def __init__(self, data: dict[str, np.ndarray], basis: dict[str, np.ndarray], face_ind: np.ndarray,
                 uv_size: int, context_size: int, input_size: int, context: float, train: bool,
                 spread: np.ndarray | None = None, **kw) -> None:
        super().__init__({"images": None, "posmaps": None}, input_size, context, train, **kw)
        self.jpeg, self.offsets, self.labels = data["jpeg"], data["offsets"], data["label"]
        self.yaw = data["yaw"]
        self.lm_offsets = data.get("lm_offsets")
        if self.lm_offsets is not None:
            if spread is None:
                raise ValueError("fused labels need the spread operator")
            # only the landmarks some row moves (the eyes and lips) take part: half the product
            self.moved = np.flatnonzero(np.any(self.lm_offsets != 0, axis=(0, 2)))
            self.spread = torch.from_numpy(np.ascontiguousarray(np.asarray(spread, np.float32)[:, self.moved]))
        self.umean = basis["mean"].astype(np.float32)
        self.ubasis = basis["basis"].astype(np.float32)
        self.face_ind = np.asarray(face_ind, np.int64)
        self.uv_size = uv_size
        self._ctx = context_size

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def context_size(self) -> int:
        return self._ctx

    def context_image(self, idx: int) -> np.ndarray:
        buf = self.jpeg[self.offsets[idx]:self.offsets[idx + 1]]
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"corpus sample {idx}: JPEG does not decode")
        return img

    def context_posmap(self, idx: int) -> np.ndarray:
        lab = self.labels[idx].astype(np.float32)
        verts = (self.umean + self.ubasis @ lab[12:62]) @ lab[:9].reshape(3, 3).T + lab[9:12]
        if self.lm_offsets is not None:
            off = self.lm_offsets[idx]
            if off.any():  # through torch: one thread in DataLoader workers (numpy's BLAS would fan out)
                verts += (self.spread @ torch.from_numpy(off[self.moved])).numpy()
        pm = np.zeros((self.uv_size * self.uv_size, 3), np.float32)
        pm[self.face_ind] = verts
        return pm.reshape(self.uv_size, self.uv_size, 3)


def spread_operator(mean: np.ndarray, kpt_vertex: np.ndarray) -> np.ndarray:
    """(V, 68) float32: ``label_fusion.SurfaceSpread``'s operator on the UV basis's mean face."""
    from trainer.data.label_fusion import SurfaceSpread

    return SurfaceSpread(mean, kpt_vertex).op


def corpus_datasets(root: Path, input_size: int, face_ind: np.ndarray, uv_size: int, seed: int,
                    fused: Path | None = None, kpt_vertex: np.ndarray | None = None,
                    **kw) -> tuple[CorpusDataset, CorpusDataset, dict]:
    """Training (augmented) and held-out datasets of a label_corpus.py cache; with ``fused``
    (fuse_corpus.py's side-cars) the fused labels, whose offsets need the layout's ``kpt_vertex``."""
    root = Path(root)
    meta = cache_meta(root)
    with np.load(root / "uv_basis.npz") as z:
        basis = {"mean": z["mean"], "basis": z["basis"]}
    common = {"basis": basis, "face_ind": face_ind, "uv_size": uv_size, "context_size": int(meta["crop_size"]),
              "input_size": input_size, "context": float(meta["context"]), **kw}
    if fused:
        if kpt_vertex is None:
            raise ValueError("fused labels need the layout's kpt_vertex")
        common["spread"] = spread_operator(basis["mean"], kpt_vertex)
        meta = {**meta, "fused": str(fused)}
    ds = CorpusDataset(load_corpus(root, "train", fused=fused), train=True, seed=seed, **common)
    vds = CorpusDataset(load_corpus(root, "val", fused=fused), train=False, **common)
    return ds, vds, meta
