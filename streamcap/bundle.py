"""Model bundles: a folder with the ONNX generator, a JSON manifest and the UV layout table.

The manifest is the single source of the preprocessing spec (input size, normalisation, crop
rule, output scale), so the runtime never hard-codes what a model expects. Every file the
manifest names is checked against its SHA-256 on load, so a truncated copy or a file from
another bundle is refused with one line instead of producing garbage faces.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleError
from .geometry.layout import UVLayout

BUNDLE_FORMAT = "streamcap-bundle"
BUNDLE_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_BUNDLE = "mobile160"
BUNDLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")  # a shipped bundle's folder name
MAX_MANIFEST_BYTES = 1 << 20


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
        """Build from the manifest's ``model`` map, checking every value against ``_SPEC``."""
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key, value in known.items():
            known[key] = _checked(key, value)
        try:
            return cls(**known)
        except TypeError as exc:
            raise BundleError(f"model spec is incomplete: {exc}") from exc


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# the manifest's "model" map: key -> (check, what a valid value is)
_SPEC: dict[str, tuple[Any, str]] = {
    "arch": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a short string"),
    "input_size": (lambda v: type(v) is int and 16 <= v <= 1024, "an integer 16..1024"),
    "uv_size": (lambda v: type(v) is int and 16 <= v <= 1024, "an integer 16..1024"),
    "mean": (lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v),
             "three finite numbers"),
    "std": (lambda v: isinstance(v, list) and len(v) == 3 and all(_number(x) and x > 0 for x in v),
            "three finite numbers > 0"),
    "color": (lambda v: v in ("rgb", "bgr"), "'rgb' or 'bgr'"),
    "output_scale": (lambda v: _number(v) and 0 < v <= 100, "a number in (0, 100]"),
    "crop_expand": (lambda v: _number(v) and 0.1 <= v <= 10, "a number in [0.1, 10]"),
    "crop_shift_y": (lambda v: _number(v) and -1 <= v <= 1, "a number in [-1, 1]"),
}


def _checked(key: str, value: Any) -> Any:
    check, what = _SPEC[key]
    if not check(value):
        raise BundleError(f"manifest model.{key} must be {what}, got {value!r:.60}")
    return tuple(float(x) for x in value) if isinstance(value, list) else value


def _check_manifest(manifest: Any, path: Path) -> None:
    """The manifest's top-level shape (the model map is checked by ``ModelSpec.from_dict``)."""
    def str_map(v: Any) -> bool:
        return isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items())

    checks = {"files": str_map, "sha256": str_map, "model": lambda v: isinstance(v, dict),
              "name": lambda v: isinstance(v, str) and len(v) <= 128,
              "layout_hash": lambda v: isinstance(v, str)}
    for key, ok in checks.items():
        if manifest.get(key) is not None and not ok(manifest[key]):
            raise BundleError(f"{path}: manifest field '{key}' has the wrong type")
    for name in (manifest.get("files") or {}).values():
        p = Path(name)
        if name and (p.is_absolute() or ".." in p.parts):
            raise BundleError(f"{path}: file {name!r} is outside the bundle folder")


def shipped_bundle(name: str) -> Path | None:
    """The folder of the shipped bundle called ``name`` (a stream names its bundle: that name
    comes from a file or the network, so only a plain name inside the package's models folder
    is ever looked up), or None."""
    if not isinstance(name, str) or not BUNDLE_NAME.fullmatch(name):
        return None
    path = MODELS_DIR / name
    return path if (path / "manifest.json").is_file() else None


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
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{manifest_path} is larger than {MAX_MANIFEST_BYTES} bytes")
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BundleError(f"{manifest_path} is nested too deeply") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} is not a streamcap bundle manifest")
    _check_manifest(manifest, manifest_path)
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
