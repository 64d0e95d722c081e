"""Model bundles: a folder with the ONNX generator, a JSON manifest and the UV layout table.

The manifest is the single source of the preprocessing spec (input size, normalisation, crop
rule, output scale), so the runtime never hard-codes what a model expects. Every file the
manifest names is checked against its SHA-256 on load, so a truncated copy or a file from
another bundle is refused with one line instead of producing garbage faces.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError
from .geometry.layout import UVLayout

BUNDLE_FORMAT = "streamcap-bundle"
BUNDLE_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_BUNDLE = "light128"


@dataclass(frozen=True)
class ModelSpec:
    """How to feed the generator and read its output."""

    arch: str
    input_size: int
    uv_size: int = 256
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    color: str = "rgb"  # channel order the network was trained on
    output_scale: float = 1.1  # crop-pixel position = output * input_size * output_scale
    crop_expand: float = 1.6
    crop_shift_y: float = -0.06

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        try:
            return cls(**known)
        except TypeError as exc:
            raise BundleError(f"model spec is incomplete: {exc}") from exc


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated model bundle."""

    root: Path
    name: str
    spec: ModelSpec
    layout: UVLayout
    files: dict[str, str]
    manifest: dict[str, Any] = field(repr=False)

    @property
    def onnx_path(self) -> Path:
        return self.root / self.files["onnx"]

    def path(self, key: str) -> Path | None:
        """Path of an optional file the manifest names (e.g. 'codec_basis'), or None."""
        name = self.files.get(key)
        return self.root / name if name else None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_bundle(path: str | Path | None) -> Path:
    """A bundle folder from a user's flag: a path, a shipped bundle's name, or the default."""
    if path is None:
        return MODELS_DIR / DEFAULT_BUNDLE
    p = Path(path)
    if not p.exists() and (MODELS_DIR / p).is_dir():
        return MODELS_DIR / p
    return p


def load_bundle(path: str | Path | None = None, verify: bool = True) -> Bundle:
    """Load and validate a bundle folder; raise BundleError with one clear line if unusable."""
    root = resolve_bundle(path)
    manifest_path = root / "manifest.json"
    if not root.is_dir():
        if path is None:
            raise BundleError(f"no model bundle yet at {root}: train one with trainer/train.py "
                              "and trainer/export.py (see README)")
        raise BundleError(f"model bundle folder not found: {root}")
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a model bundle (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a streamcap bundle manifest")
    if manifest.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{root}: bundle format version {manifest.get('format_version')} "
                          f"is not supported (this runtime reads {BUNDLE_VERSION})")
    files = manifest.get("files") or {}
    if "onnx" not in files or "layout" not in files:
        raise BundleError(f"{manifest_path} must name 'onnx' and 'layout' files")
    digests = manifest.get("sha256") or {}
    for key, name in files.items():
        if not name:
            continue
        fp = root / name
        if not fp.is_file():
            raise BundleError(f"{root}: {key} file {name} is missing")
        if verify and name in digests and sha256_file(fp) != digests[name]:
            raise BundleError(f"{root}: {name} does not match its checksum (corrupt or replaced)")
    spec = ModelSpec.from_dict(manifest.get("model") or {})
    layout = UVLayout.load(root / files["layout"])
    if manifest.get("layout_hash") not in (None, layout.hash):
        raise BundleError(f"{root}: layout table does not match the manifest's layout_hash")
    if layout.size != spec.uv_size:
        raise BundleError(f"{root}: layout is {layout.size}px but the model writes {spec.uv_size}px UV maps")
    return Bundle(root=root, name=str(manifest.get("name", root.name)), spec=spec, layout=layout,
                  files={k: v for k, v in files.items() if v}, manifest=manifest)


def default_layout() -> UVLayout:
    """The layout table shipped beside the bundles (used by tools that need no generator)."""
    return UVLayout.load(MODELS_DIR / "uv_layout_v1.npz")
