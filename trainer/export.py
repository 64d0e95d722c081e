"""Checkpoint -> model bundle (ONNX + manifest + UV layout [+ torch weights]).

    python trainer/export.py runs/light128 -o streamcap/models/light128 [--ckpt best.pt]

The model is rebuilt from the checkpoint alone (its ``cfg``), exported to ONNX (opset 17,
dynamic batch) with the preprocessing spec, layout hash and exporter git SHA in the model's
metadata, and checked against torch on random and real inputs (max abs difference < 1e-3 in
the network's [0, 1] output). The manifest records the run's validation metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamcap.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    MODELS_DIR,
    ModelSpec,
    load_bundle,
    sha256_file,
)
from streamcap.engine.nets import build_generator
from streamcap.geometry.layout import UVLayout

OPSET = 17
TOLERANCE = 1e-3


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("model_name") != "streamcap-generator":
        raise SystemExit(f"{path} is not a streamcap generator checkpoint")
    model = build_generator(**ck["cfg"])
    model.load_state_dict(ck["state_dict"])
    return model.eval(), ck


def export_onnx(model: torch.nn.Module, spec: ModelSpec, path: Path, metadata: dict[str, str]) -> None:
    import onnx

    x = torch.zeros(1, 3, spec.input_size, spec.input_size)
    torch.onnx.export(model, (x,), str(path), input_names=["crop"], output_names=["uv"], opset_version=OPSET,
                      dynamic_axes={"crop": {0: "batch"}, "uv": {0: "batch"}}, dynamo=False)
    m = onnx.load(str(path))
    for k, v in metadata.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def parity(model: torch.nn.Module, onnx_path: Path, spec: ModelSpec, real: np.ndarray | None) -> float:
    """Max |torch - ORT| over random batches (sizes 1 and 3) and the real crops, if any."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = [rng.normal(0, 1, (n, 3, spec.input_size, spec.input_size)).astype(np.float32) for n in (1, 3)]
    if real is not None:
        inputs.append(real)
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            a = model(torch.from_numpy(x)).numpy()
            (b,) = sess.run(None, {"crop": x})
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


def real_crops(data: Path | None, spec: ModelSpec, n: int = 8) -> np.ndarray | None:
    if data is None or not (data / "shards").is_dir():
        return None
    from trainer.data.dataset import PosmapDataset, cache_meta, is_corpus, load_cache, load_corpus

    meta = cache_meta(data)
    try:
        if is_corpus(data):  # label_corpus.py cache: JPEG context crops
            val = load_corpus(data, "val")
            crops = [cv2.imdecode(val["jpeg"][val["offsets"][i]:val["offsets"][i + 1]], cv2.IMREAD_COLOR)
                     for i in range(min(n, len(val["label"])))]
            sub = {"images": np.stack(crops), "posmaps": np.zeros((len(crops), 1, 1, 3), np.float32)}
        else:
            val = load_cache(data, "val")
            sub = {k: v[:n] for k, v in val.items()}
    except FileNotFoundError:
        return None
    ds = PosmapDataset(sub, spec.input_size, meta["context"], train=False, mean=spec.mean, std=spec.std)
    return np.stack([ds[i][0].numpy() for i in range(len(ds))])


def export_bundle(run: Path, out: Path, ckpt: str = "best.pt", data: Path | None = None, name: str | None = None,
                  metrics: dict | None = None, codec_basis: Path | None = None, sources: dict | None = None) -> dict:
    ck_path = run / ckpt if (run / ckpt).is_file() else run / "last.pt"
    model, ck = load_checkpoint(ck_path)
    spec = ModelSpec(**ck["spec"])
    layout_src = MODELS_DIR / "uv_layout_v1.npz"
    layout = UVLayout.load(layout_src)
    out.mkdir(parents=True, exist_ok=True)
    sha = git_sha()
    onnx_path = out / "generator.onnx"
    export_onnx(model, spec, onnx_path, {"streamcap.spec": json.dumps(asdict(spec)),
                                         "streamcap.layout_hash": layout.hash,
                                         "streamcap.layout_version": str(layout.version), "streamcap.git_sha": sha})
    diff = parity(model, onnx_path, spec, real_crops(data, spec))
    if diff > TOLERANCE:
        raise SystemExit(f"ONNX output differs from torch by {diff:.2e} (> {TOLERANCE})")
    state = model.state_dict()
    n_float = sum(v.numel() for v in state.values() if v.is_floating_point())
    if n_float > 2_500_000:  # large nets (prnet) ship fp16 torch weights to keep bundles small
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    torch.save(state, out / "generator.pt")
    shutil.copy(layout_src, out / layout_src.name)
    files = {"onnx": "generator.onnx", "layout": layout_src.name, "torch": "generator.pt"}
    if codec_basis is not None:  # the face codec's PCA basis (trainer/build_codec_basis.py)
        shutil.copy(codec_basis, out / "codec_basis.npz")
        files["codec_basis"] = "codec_basis.npz"
    val = ck.get("val") or {}
    manifest = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "name": name or out.name,
        "model": asdict(spec), "generator": ck["cfg"], "files": files,
        "sha256": {f: sha256_file(out / f) for f in files.values()}, "layout_hash": layout.hash,
        "provenance": {"git_sha": sha, "checkpoint": ck_path.name, "step": int(ck["step"]),
                       "train_cfg": ck.get("train_cfg"), "data": ck.get("data"),
                       "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "onnx_opset": OPSET, "onnx_vs_torch_max_abs": diff,
                       **({"sources": sources} if sources else {})},
        "metrics": {"val": val, **(metrics or {})},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    load_bundle(out)  # the runtime must accept what we wrote
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="training run folder (holds best.pt / last.pt)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="bundle folder to write")
    ap.add_argument("--ckpt", default="best.pt")
    ap.add_argument("--data", type=Path, default=Path(".cache/dataset"), help="cache for the real-input parity check")
    ap.add_argument("--name", default=None)
    ap.add_argument("--metrics", type=Path, default=None, help="JSON of extra measured metrics to record")
    ap.add_argument("--codec-basis", type=Path, default=None, help="codec basis .npz to ship in the bundle")
    ap.add_argument("--sources", type=Path, default=None,
                    help="JSON of the teacher, data and their licences, recorded as the manifest's provenance.sources")
    args = ap.parse_args(argv)
    extra = json.loads(args.metrics.read_text()) if args.metrics else None
    sources = json.loads(args.sources.read_text()) if args.sources else None
    m = export_bundle(args.run, args.out, args.ckpt, args.data, args.name, extra, args.codec_basis, sources)
    size = sum(p.stat().st_size for p in args.out.iterdir() if p.is_file())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB): step {m['provenance']['step']}, "
          f"ONNX vs torch max |diff| {m['provenance']['onnx_vs_torch_max_abs']:.1e}, val {m['metrics']['val']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
