"""Model bundle loader: a corrupt, incomplete or mismatched bundle is refused in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from streamcap.bundle import MODELS_DIR, load_bundle, sha256_file
from streamcap.errors import BundleError


def make_bundle(tmp_path, **manifest_overrides):
    root = tmp_path / "b"
    root.mkdir()
    shutil.copy(MODELS_DIR / "uv_layout_v1.npz", root / "uv_layout_v1.npz")
    (root / "generator.onnx").write_bytes(b"not really onnx, the loader only checks the checksum")
    manifest = {
        "format": "streamcap-bundle", "format_version": 1, "name": "t",
        "model": {"arch": "light", "input_size": 128, "uv_size": 256},
        "files": {"onnx": "generator.onnx", "layout": "uv_layout_v1.npz"},
        "sha256": {n: sha256_file(root / n) for n in ("generator.onnx", "uv_layout_v1.npz")},
    }
    manifest.update(manifest_overrides)
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_valid_bundle_loads(tmp_path):
    b = load_bundle(make_bundle(tmp_path))
    assert b.spec.input_size == 128 and b.layout.n_vertices == 43867
    assert b.onnx_path.name == "generator.onnx"


@pytest.mark.parametrize("override, message", [
    ({"format": "something-else"}, "not a streamcap bundle"),
    ({"format_version": 99}, "not supported"),
    ({"files": {"onnx": "generator.onnx"}}, "must name"),
    ({"layout_hash": "0000"}, "layout_hash"),
    ({"model": {"arch": "light", "input_size": 128, "uv_size": 128}}, "UV maps"),
])
def test_bad_manifests_are_refused(tmp_path, override, message):
    with pytest.raises(BundleError, match=message):
        load_bundle(make_bundle(tmp_path, **override))


def test_corrupt_or_missing_files_are_refused(tmp_path):
    root = make_bundle(tmp_path)
    (root / "generator.onnx").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum"):
        load_bundle(root)
    (root / "generator.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(root)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nowhere")
