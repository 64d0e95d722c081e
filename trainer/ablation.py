"""Ablation of the cycle-GAN stage on the held-out split: one row per training run.

    python trainer/ablation.py pretrain=runs/p_s0,runs/p_s1 render=runs/r_s0,runs/r_s1 \\
        --baseline pretrain --data .cache/dataset -o docs/ablation.md

A column may list one run per seed (comma-separated): it is reported as mean ± sd, and with
``--baseline`` each column is also given minus the baseline paired seed by seed (same seed, same
hidden labels and sample order), with how many seeds came out better. Run folders are read at
``last.pt``: ``best.pt`` was chosen on this same held-out split. Each checkpoint's measurements
are kept beside it (``last.pt.ablation.json``, keyed by the file's mtime and the settings), so a
table that gains a run measures only that run.

Columns, all on the held-out identities of the cache (``split == "val"``):

* **NME 2D / 3D**: the 68 landmarks read from the UV map against the labels', normalised by
  sqrt(w*h) of the label's landmark box (``validate`` in ``train.py``, the AFLW2000-3D measure).
* **photo L1 / 1-SSIM**: the crop read into a texture at the predicted x, y and re-rendered
  (``trainer/render.py``), compared with the crop inside the visible face mask (8-bit levels).
* **jitter**: on held-out clips, mean length (input-crop pixels) of the high-frequency part of
  the landmark track, e - smooth(e) with a temporal Gaussian (sigma in frames). The cache holds
  each frame in its own crop (made from that frame's label), so the track is the prediction
  *relative to the label* (e = prediction - label); crop and head motion cancel, and the labels'
  own jitter is common to every row, so differences between rows are the models'.

Writes the markdown table (and ``--json``); prints it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import ModelSpec, default_layout
from streamcap.evaluate import BIN_NAMES, summarise as bin_summary, yaw_bin
from trainer.cycle import UVTables, landmarks, mesh_vertices
from trainer.data.dataset import PosmapDataset, cache_meta
from trainer.render import render, sample_image, ssim
from trainer.runloop import landmark_errors, load_generator_checkpoint, validate


@dataclass
class HeldOut:
    """Held-out samples with what the jitter measure needs beside images and labels."""

    data: dict[str, np.ndarray]  # images (N, C, C, 3) uint8, posmaps (N, U, U, 3)
    identity: np.ndarray  # (N,) str
    frame: np.ndarray  # (N,) int, -1 for photos
    kind: np.ndarray  # (N,) str


def load_split(folder: Path, fields: dict[str, object], split: str = "val") -> dict[str, np.ndarray]:
    """The ``split`` samples of every shard in ``folder``: images, posmaps and ``fields``
    (name -> value for shards that lack it; None: the shard's stem)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("images", "posmaps", *fields)}
    for sh in sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz")):
        with np.load(sh) as z:
            keep = z["split"] == split
            n = int(keep.sum())
            if not n:
                continue
            for k in parts:
                default = fields.get(k, sh.stem)
                parts[k].append(z[k][keep] if k in z.files else np.full(n, sh.stem if default is None else default))
    if not parts["images"]:
        raise FileNotFoundError(f"no {split} samples under {folder}")
    return {k: np.concatenate(v) for k, v in parts.items()}


def load_heldout(root: Path, split: str = "val") -> HeldOut:
    """The ``split`` samples of a cache, keeping identity, frame and kind (for the jitter)."""
    cat = load_split(root / "shards", {"identity": None, "frame": -1, "kind": "photo"}, split)
    return HeldOut({"images": cat["images"], "posmaps": cat["posmaps"]}, cat["identity"].astype(str),
                   cat["frame"].astype(np.int64), cat["kind"].astype(str))


def gaussian_smooth(track: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth (T, ...) along time with a normalised Gaussian (edges renormalised, no padding bias)."""
    t = track.shape[0]
    r = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    flat = track.reshape(t, -1)
    num = np.zeros_like(flat, dtype=np.float64)
    den = np.zeros((t, 1))
    for off, w in zip(range(-r, r + 1), k):
        lo, hi = max(0, -off), min(t, t - off)
        if hi <= lo:
            continue
        num[lo:hi] += w * flat[lo + off:hi + off]
        den[lo:hi] += w
    return (num / den).reshape(track.shape)


def runs_of_consecutive(frames: np.ndarray) -> list[np.ndarray]:
    """Index runs (into ``frames`` sorted) where consecutive samples are one stride apart."""
    order = np.argsort(frames, kind="stable")
    f = frames[order]
    if len(f) < 2:
        return [order]
    step = np.diff(f)
    stride = step[step > 0].min() if (step > 0).any() else 1
    cuts = np.flatnonzero(step != stride) + 1
    return [seg for seg in np.split(order, cuts) if len(seg)]


def jitter(pred: np.ndarray, label: np.ndarray, held: HeldOut, sigma: float, min_len: int = 8) -> float:
    """Mean px of e - smooth(e), e = (pred - label)[..., :2], over held-out clip frames."""
    vals = []
    is_frame = (held.kind == "frame") & (held.frame >= 0)
    for ident in np.unique(held.identity[is_frame]):
        idx = np.flatnonzero(is_frame & (held.identity == ident))
        for seg in runs_of_consecutive(held.frame[idx]):
            if len(seg) < min_len:
                continue
            e = (pred[idx[seg], :, :2] - label[idx[seg], :, :2]).astype(np.float64)
            vals.append(np.linalg.norm(e - gaussian_smooth(e, sigma), axis=-1).ravel())
    return float(np.concatenate(vals).mean()) if vals else float("nan")


@torch.no_grad()
def measure(model: torch.nn.Module, spec: ModelSpec, held: HeldOut, context: float, device: torch.device,
            limit: int = 0, batch: int = 16, sigma: float = 2.0, mesh_stride: int = 2) -> dict[str, float]:
    """NME (validate), photometric error of the re-render and landmark jitter of one model."""
    layout = default_layout()
    kpt = torch.as_tensor(layout.kpt_flat, device=device)
    ds = PosmapDataset(held.data, spec.input_size, context, train=False, mean=spec.mean, std=spec.std,
                       output_scale=spec.output_scale)
    res = validate(model, ds, kpt, device, limit=limit, batch=batch)
    tables = UVTables(layout, mesh_stride).to(device)
    scale = spec.input_size * spec.output_scale
    n = len(ds) if not limit else min(limit, len(ds))
    model.eval()
    l1_sum, ss_sum, px = 0.0, 0.0, 0.0
    preds, labels = [], []
    for s in range(0, n, batch):
        xs, ys = zip(*(ds[i] for i in range(s, min(n, s + batch))))
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        uv = model(x).float()
        preds.append((landmarks(uv, kpt) * scale).cpu().numpy())
        labels.append((landmarks(y, kpt) * scale).cpu().numpy())
        verts = mesh_vertices(uv, tables, scale)
        r = render(verts, tables.tris, sample_image(x, verts[..., :2]), (x.shape[-2], x.shape[-1]))
        m = r.visible
        # back to 8-bit levels whatever the normalisation (mean 0, std 255 gives x * 255)
        std = torch.as_tensor(spec.std, device=device, dtype=x.dtype).view(1, 3, 1, 1)
        l1_sum += float(((r.image - x).abs() * std * m).sum() / 3)
        comp = m * r.image + (1 - m) * x
        ss_sum += float(((1 - ssim(comp, x)) * m).sum())
        px += float(m.sum())
    model.train()
    pred, label = np.concatenate(preds), np.concatenate(labels)
    sub = HeldOut({}, held.identity[:n], held.frame[:n], held.kind[:n])
    res.update({"photo_l1": l1_sum / max(px, 1.0), "photo_dssim": ss_sum / max(px, 1.0),
                "jitter_px": jitter(pred, label, sub, sigma)})
    return res


def load_profiles(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The held-out samples of a profiled set (``trainer/data/profile.py --split val``) and their yaw."""
    cat = load_split(folder, {"yaw": np.nan})
    return {"images": cat["images"], "posmaps": cat["posmaps"]}, cat["yaw"].astype(np.float64)


@torch.no_grad()
def measure_profiles(model: torch.nn.Module, spec: ModelSpec, data: dict[str, np.ndarray], yaw: np.ndarray,
                     context: float, device: torch.device, batch: int = 16) -> dict[str, float]:
    """NME on the profiled held-out set per |yaw| bin, and the balanced mean of the bins."""
    ds = PosmapDataset(data, spec.input_size, context, train=False, mean=spec.mean, std=spec.std,
                       output_scale=spec.output_scale)
    e2, e3 = landmark_errors(model, ds, torch.as_tensor(default_layout().kpt_flat, device=device), device,
                             batch=batch)
    bins = np.array([yaw_bin(y) for y in yaw])
    res = bin_summary([list(e2[bins == i]) for i in range(3)], [list(e3[bins == i]) for i in range(3)], 0)
    out = {"prof_nme2d": res["nme2d"]["balanced"], "prof_nme3d": res["nme3d"]["balanced"]}
    out.update({f"prof_nme2d_{name}": v for name, v in res["nme2d"]["bins"].items() if v is not None})
    return out


def _measures(row: dict) -> list[str]:
    """The measured values of a row (floats; counts such as val_n are ints)."""
    return [k for k, v in row.items() if isinstance(v, float) and not k.endswith("_sd")]


def summarise(seeds: list[dict[str, float]]) -> dict:
    """Mean (and sample sd, for two or more seeds) of each metric over one column's runs."""
    row: dict = {"n_seeds": len(seeds), "val_n": seeds[0]["val_n"]}
    for k in _measures(seeds[0]):
        v = np.array([r[k] for r in seeds], dtype=np.float64)
        row[k] = float(v.mean())
        row[k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    if len(seeds) > 1:
        row["seeds"] = seeds
    return row


def paired(rows: dict[str, dict], base: str) -> dict[str, dict]:
    """Per metric, run minus ``base`` paired seed by seed (same seed: same hidden labels, same
    sample order), as mean, sd and how many seeds came out lower (better) than the base. Seeds
    pair by position, so list them in the same order; a column with fewer seeds pairs its own."""
    ref = rows[base].get("seeds", [rows[base]])
    out: dict[str, dict] = {}
    for name, row in rows.items():
        runs = row.get("seeds", [row])[:len(ref)]
        if name == base or ("seeds" in row) != ("seeds" in rows[base]):
            continue  # a lone run (e.g. the starting point) has no seed to pair with a seeded column
        d: dict = {"n_seeds": min(len(runs), len(ref))}
        for k in _measures(ref[0]):
            v = np.array([r[k] - b[k] for r, b in zip(runs, ref)], dtype=np.float64)
            d[k] = float(v.mean())
            d[k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            d[k + "_lower"] = int((v < 0).sum())
        out[name] = d
    return out


def _cell(row: dict, key: str, scale: float, fmt: str) -> str:
    text = format(row[key] * scale, fmt)
    return text + " ± " + format(row[key + "_sd"] * scale, fmt.lstrip("+")) if row.get("n_seeds", 1) > 1 else text


_COLUMNS = (("val_nme2d", 100, ".2f", "NME 2D (%)"), ("val_nme3d", 100, ".2f", "NME 3D (%)"),
            ("photo_l1", 1, ".3f", "photo L1 (8-bit)"), ("photo_dssim", 1, ".4f", "1-SSIM"),
            ("jitter_px", 1, ".3f", "jitter (px)"), ("prof_nme2d", 100, ".2f", "profiled 2D, balanced (%)"),
            ("prof_nme3d", 100, ".2f", "profiled 3D, balanced (%)"))


def _columns(row: dict) -> list[tuple[str, float, str, str]]:
    return [c for c in _COLUMNS if c[0] in row]


def table(rows: dict[str, dict]) -> str:
    """Markdown table of the measured rows in the order given (mean ± sd over seeds)."""
    cols = _columns(next(iter(rows.values())))
    head = ("| run | seeds | " + " | ".join(c[3] for c in cols) + " | samples |\n"
            + "| --- " * (len(cols) + 3) + "|\n")
    body = "".join(f"| {name} | {r.get('n_seeds', 1)} | " + " | ".join(_cell(r, *c[:3]) for c in cols)
                   + f" | {r['val_n']} |\n" for name, r in rows.items())
    return head + body


def diff_table(diffs: dict[str, dict], base: str) -> str:
    """Markdown table of the paired differences from ``base`` (negative is better everywhere)."""
    if not diffs:
        return ""
    cols = _columns(next(iter(diffs.values())))
    head = (f"| run minus {base} | seeds | "
            + " | ".join(c[3].replace("(%)", "(pp)") for c in cols) + " |\n" + "| --- " * (len(cols) + 2) + "|\n")
    body = "".join(
        f"| {name} | {d['n_seeds']} | "
        + " | ".join(f"{_cell(d, k, s, '+' + f)} ({d[k + '_lower']}/{d['n_seeds']} lower)" for k, s, f, _ in cols)
        + " |\n" for name, d in diffs.items())
    return head + body


def parse_run(text: str) -> tuple[str, list[Path]]:
    """'label=path[,path...]' (one path per seed) or 'path' (labelled by the folder's name)."""
    name, _, paths = text.rpartition("=")
    runs = [Path(p) for p in paths.split(",") if p]
    return (name or runs[0].name), runs


def checkpoint_of(path: Path, which: str) -> Path:
    """A run folder's ``which``.pt (else last.pt); a file as given. ``last`` is the default
    because best.pt was picked on this same held-out split."""
    if path.is_dir():
        return path / f"{which}.pt" if (path / f"{which}.pt").is_file() else path / "last.pt"
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="label=path[,path...] (one run folder or checkpoint per seed), or path")
    ap.add_argument("--data", type=Path, default=Path(".cache/dataset"))
    ap.add_argument("-o", "--out", type=Path, default=Path("docs/ablation.md"))
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--checkpoint", choices=("last", "best"), default="last",
                    help="which checkpoint of a run folder (best.pt was selected on the held-out split)")
    ap.add_argument("--profiles", type=Path, default=None,
                    help="profiled held-out shards (trainer/data/profile.py --split val): NME per yaw bin")
    ap.add_argument("--baseline", default="", help="label to subtract, seed by seed (a second table)")
    ap.add_argument("--fresh", action="store_true",
                    help="re-measure every checkpoint (default: reuse <ckpt>.ablation.json when the checkpoint "
                         "file and the settings are unchanged)")
    ap.add_argument("--limit", type=int, default=0, help="first N held-out samples only")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sigma", type=float, default=2.0, help="temporal smoothing of the jitter measure (frames)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    held = load_heldout(args.data)
    context = float(cache_meta(args.data)["context"])
    prof = load_profiles(args.profiles) if args.profiles else None
    rows: dict[str, dict] = {}
    for text in args.runs:
        name, paths = parse_run(text)
        seeds = []
        for path in paths:
            ckpt = checkpoint_of(path, args.checkpoint)
            memo = ckpt.with_name(ckpt.name + ".ablation.json")
            key = {"mtime_ns": ckpt.stat().st_mtime_ns, "data": str(args.data.resolve()), "limit": args.limit,
                   "sigma": args.sigma, "profiles": str(args.profiles.resolve()) if args.profiles else None}
            old = json.loads(memo.read_text()) if memo.is_file() and not args.fresh else {}
            if old.get("key") == key:  # this checkpoint, measured the same way before
                seeds.append(old["result"])
            else:
                model, ck = load_generator_checkpoint(ckpt, device)
                spec = ModelSpec(**ck["spec"])
                seeds.append(measure(model, spec, held, context, device, args.limit, args.batch, args.sigma))
                if prof is not None:
                    seeds[-1].update(measure_profiles(model, spec, *prof, context, device, args.batch))
                memo.write_text(json.dumps({"key": key, "result": seeds[-1]}))
            print(f"{name} ({path}): {json.dumps(seeds[-1])}", file=sys.stderr)
        rows[name] = summarise(seeds)
    if args.baseline and args.baseline not in rows:
        raise SystemExit(f"--baseline {args.baseline!r} is not one of the runs' labels")
    md = ("Held-out split of the cache; NME normalised by sqrt(w*h) of the label's landmark box; "
          f"jitter = mean |e - gauss(e, sigma={args.sigma})| in input-crop px, e = prediction - label; "
          + (f"profiled: the held-out samples re-rendered at |yaw| 15..75 degrees, balanced mean of the bins "
             f"{', '.join(BIN_NAMES)}; " if prof is not None else "")
          + "mean ± sd over seeds.\n\n" + table(rows))
    result: dict = dict(rows)
    if args.baseline:
        diffs = paired(rows, args.baseline)
        md += "\nPaired by seed (lower is better in every column):\n\n" + diff_table(diffs, args.baseline)
        result["_paired_minus_" + args.baseline] = diffs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
