"""Build the face codec's geometry basis: PCA of pose-normalised training faces.

    python trainer/build_codec_basis.py --data .cache/dataset -o codec_basis.npz [-k 64]

Reads the dataset cache's shards (``*.npz`` under ``--data`` holding ``posmaps`` (N, 256, 256, 3)
float16 in crop pixels and ``split`` (N,) 'train' / 'val'), takes the face vertices of each UV
map, removes the similarity pose against the layout's canonical face (so the basis spends no
components on head motion, which the codec sends as a pose), and fits K components on a random
subset of the 'train' faces. On the held-out 'val' faces it reports, for each K of
``--report-k``, the explained variance and the reconstruction error in canonical units and in
crop pixels, and writes that report beside the basis as JSON. The basis file goes into a model
bundle under the manifest key ``codec_basis``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap_codecs.basis import GeometryBasis, fit_basis, normalise_pose

from streamcap.bundle import default_layout
from streamcap.geometry.layout import UVLayout

log = logging.getLogger("build_codec_basis")
REPORT_K = (16, 32, 64, 128)


def find_shards(data: Path) -> list[Path]:
    """Every ``.npz`` under ``data`` that holds ``split`` and either ``posmaps`` or the corpus's
    teacher ``label`` (others are skipped)."""
    out = []
    for p in sorted(Path(data).rglob("*.npz")):
        if p.name.endswith(".tmp.npz"):
            continue
        try:
            with np.load(p, allow_pickle=False) as z:
                if "split" in z.files and ("posmaps" in z.files or "label" in z.files):
                    out.append(p)
        except (OSError, ValueError):
            log.warning("skipping unreadable %s", p)
    return out


def choose(shards: list[Path], split: str, limit: int, rng: np.random.Generator) -> dict[Path, np.ndarray]:
    """A random subset (at most ``limit``) of the ``split`` samples: shard -> sorted row indices."""
    rows = []
    for si, p in enumerate(shards):
        with np.load(p, allow_pickle=False) as z:
            idx = np.flatnonzero(np.asarray(z["split"]).astype(str) == split)
        rows.extend((si, int(i)) for i in idx)
    if len(rows) > limit:
        rows = [rows[i] for i in np.sort(rng.choice(len(rows), limit, replace=False))]
    picked: dict[Path, list[int]] = {}
    for si, i in rows:
        picked.setdefault(shards[si], []).append(i)
    return {p: np.asarray(v) for p, v in picked.items()}


def corpus_basis(shard: Path) -> dict | None:
    """The UV basis of the label_corpus.py cache a shard belongs to (``<cache>/uv_basis.npz``)."""
    for folder in (shard.parent, shard.parent.parent):
        if (folder / "uv_basis.npz").is_file():
            with np.load(folder / "uv_basis.npz") as z:
                return {"mean": z["mean"], "basis": z["basis"]}
    return None


def load_normalised(picked: dict[Path, np.ndarray], layout: UVLayout,
                    fused: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pose-normalised vertices (n, V, 3) float32 and each face's pose scale (n,) (canonical
    units -> crop pixels). Corpus shards give their faces through the teacher's labels, or with
    ``fused`` (fuse_corpus.py's side-cars) through the fused labels and their landmark offsets,
    exactly as the generator's training targets are built."""
    from trainer.data.dataset import _fused_rows, spread_operator

    n = sum(len(v) for v in picked.values())
    verts = np.empty((n, layout.n_vertices, 3), np.float32)
    scales = np.empty(n, np.float32)
    spread: dict[Path, np.ndarray] = {}  # per corpus folder
    k = 0
    for p, rows in picked.items():
        with np.load(p, allow_pickle=False) as z:
            pms = z["posmaps"] if "posmaps" in z.files else None
            labels = z["label"] if pms is None else None
        ub = corpus_basis(p) if pms is None else None
        offs = None
        if pms is None and fused is not None:
            f_label, offs = _fused_rows(Path(fused), p, len(labels))
            labels = labels if f_label is None else f_label
            if offs is not None and p.parent not in spread:
                spread[p.parent] = spread_operator(ub["mean"], layout.kpt_vertex)
        for i in rows:
            if pms is not None:
                v = pms[i].reshape(-1, 3)[layout.face_ind].astype(np.float32)
            else:
                lab = labels[i]
                v = (ub["mean"] + ub["basis"] @ lab[12:62]) @ lab[:9].reshape(3, 3).T + lab[9:12]
                if offs is not None:
                    v = v + spread[p.parent] @ offs[i]
            pose, canon = normalise_pose(v, layout)
            verts[k], scales[k] = canon, pose.scale
            k += 1
    return verts, scales


def evaluate(basis: GeometryBasis, verts: np.ndarray, scales: np.ndarray, ks: list[int],
             chunk: int = 64) -> list[dict[str, float]]:
    """Per K: explained variance of the held-out faces, RMS vertex error (canonical units) and
    mean vertex error in crop pixels, from the first K components."""
    ks = [k for k in ks if k <= basis.n_components]
    n = len(verts)
    sq = {k: 0.0 for k in ks}
    px = {k: 0.0 for k in ks}
    total = 0.0
    for s in range(0, n, chunk):
        x = (verts[s:s + chunk] - basis.mean).reshape(-1, basis.mean.size)
        coef = x @ basis.components.T  # (b, Kmax) in raw units
        total += float((x.astype(np.float64) ** 2).sum())
        for k in ks:
            r = (x - coef[:, :k] @ basis.components[:k]).reshape(len(x), -1, 3)
            d = np.linalg.norm(r, axis=2)  # (b, V)
            sq[k] += float((d.astype(np.float64) ** 2).sum())
            px[k] += float((d.mean(1) * scales[s:s + chunk]).sum())
    out = []
    for k in ks:
        out.append({"k": k, "explained_variance": 1.0 - sq[k] / max(total, 1e-30),
                    "rms_error_canonical": float(np.sqrt(sq[k] / (n * basis.n_vertices))),
                    "mean_error_px": px[k] / n})
    return out


def build(data: Path, out: Path, k: int = 64, report_k: tuple[int, ...] = REPORT_K, max_train: int = 1500,
          max_val: int = 300, seed: int = 0, layout: UVLayout | None = None,
          dtype: str = "float16", fused: Path | None = None) -> dict:
    """Fit, evaluate and save; returns the report (also written to ``out`` with .json)."""
    layout = layout or default_layout()
    shards = find_shards(data)
    if not shards:
        raise SystemExit(f"no dataset shards (npz with posmaps and split) under {data}")
    rng = np.random.default_rng(seed)
    t0 = time.time()
    train, _ = load_normalised(choose(shards, "train", max_train, rng), layout, fused)
    if len(train) < 2:
        raise SystemExit(f"only {len(train)} 'train' faces under {data}")
    val, val_scale = load_normalised(choose(shards, "val", max_val, rng), layout, fused)
    log.info("loaded %d train / %d val faces in %.1fs", len(train), len(val), time.time() - t0)
    k_fit = min(max([k, *report_k]), len(train) - 1)
    if k > k_fit:
        raise SystemExit(f"k={k} needs more than {len(train)} training faces")
    t0 = time.time()
    full = fit_basis(train, k_fit, max_samples=len(train), seed=seed, layout_hash=layout.hash)
    log.info("fitted %d components in %.1fs", k_fit, time.time() - t0)
    basis = full.truncate(k)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    basis.save(out, dtype=dtype)
    saved = GeometryBasis.load(out, layout)
    report = {
        "basis": str(out), "basis_id": saved.id, "k": k, "layout_hash": layout.hash,
        "n_train": len(train), "n_val": len(val), "dtype": dtype, "bytes": out.stat().st_size,
        "labels": "fused" if fused else "as stored",
        "val": evaluate(full, val, val_scale, sorted(set(report_k) | {k})) if len(val) else [],
        "train_stdev_first": [float(s) for s in saved.stdev[:8]],
    }
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path(".cache/dataset"), help="dataset cache folder")
    ap.add_argument("-o", "--out", type=Path, default=Path("codec_basis.npz"), help="basis file to write")
    ap.add_argument("-k", type=int, default=64, help="components to keep (default 64)")
    ap.add_argument("--report-k", type=int, nargs="+", default=list(REPORT_K), help="K values to evaluate")
    ap.add_argument("--max-train", type=int, default=1500, help="training faces used for PCA")
    ap.add_argument("--max-val", type=int, default=300, help="held-out faces used for the report")
    ap.add_argument("--fused", type=Path, default=None,
                    help="fuse_corpus.py's side-car folder: build from the fused labels (corpus caches)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="stored components")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rep = build(args.data, args.out, args.k, tuple(args.report_k), args.max_train, args.max_val, args.seed,
                dtype=args.dtype, fused=args.fused)
    print(f"basis {rep['basis']} id {rep['basis_id']} K={rep['k']} ({rep['bytes'] / 1e6:.1f} MB) "
          f"from {rep['n_train']} train faces; held-out {rep['n_val']} faces:")
    print(f"{'K':>5} {'explained':>10} {'rms (canon)':>12} {'mean px':>8}")
    for r in rep["val"]:
        print(f"{r['k']:>5} {r['explained_variance']:>10.4f} {r['rms_error_canonical']:>12.3f} "
              f"{r['mean_error_px']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
