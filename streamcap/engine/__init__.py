"""Inference engines: one interface (``Engine.infer``), one module per backend.

``create_engine(bundle, "auto")`` tries TensorRT, then ONNX Runtime on CUDA, then ONNX Runtime
on the CPU, logging one line for each backend that cannot load here. Heavy imports (torch,
tensorrt) happen inside the backend modules only when chosen.
"""

from __future__ import annotations

import logging

from ..bundle import Bundle
from ..errors import BackendUnavailable
from .base import Engine

log = logging.getLogger(__name__)
BACKENDS = ("auto", "ort", "tensorrt", "torch")


def _make(kind: str, bundle: Bundle, threads: int) -> Engine:
    if kind == "ort":
        from .ort import OrtEngine

        return OrtEngine(bundle, threads, "cpu")
    if kind == "ort-cuda":
        from .ort import OrtEngine

        return OrtEngine(bundle, threads, "cuda")
    if kind == "tensorrt":
        from .tensorrt import TensorRTEngine

        return TensorRTEngine(bundle, threads)
    if kind == "torch":
        from .torch_backend import TorchEngine

        return TorchEngine(bundle, threads)
    raise BackendUnavailable(f"unknown backend {kind!r} (choose from {', '.join(BACKENDS)})")


def create_engine(bundle: Bundle, backend: str = "auto", threads: int = 0) -> Engine:
    """The requested backend, or under ``auto`` the fastest one that loads here."""
    if backend != "auto":
        return _make(backend, bundle, threads)
    for kind in ("tensorrt", "ort-cuda", "ort"):
        try:
            engine = _make(kind, bundle, threads)
            log.info("engine: %s", engine.name)
            return engine
        except BackendUnavailable as exc:
            log.info("backend %s unavailable: %s", kind, exc)
    raise BackendUnavailable("no inference backend could load")


__all__ = ["BACKENDS", "Engine", "create_engine"]
