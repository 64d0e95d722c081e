"""ONNX Runtime backend: the default on CPUs, and CUDA when onnxruntime-gpu sees a GPU.

Never imports torch (an import-linter contract checks it).
"""

from __future__ import annotations

import logging

import numpy as np

from ..bundle import Bundle
from ..errors import BackendUnavailable, BundleError
from .base import postprocess, preprocess

log = logging.getLogger(__name__)


class OrtEngine:
    """``infer`` runs the whole batch in one session call."""

    def __init__(self, bundle: Bundle, threads: int = 0, device: str = "cpu") -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - a base dependency
            raise BackendUnavailable("onnxruntime is not installed") from exc
        available = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailable("ONNX Runtime has no CUDA provider here (install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(bundle.onnx_path), opts, providers=providers)
        except Exception as exc:  # ORT raises its own types for a bad model file
            raise BundleError(f"{bundle.onnx_path} is not a loadable ONNX model: {str(exc).splitlines()[0]}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.spec = bundle.spec
        self.name = f"ort-{device}"

    def infer(self, crops: np.ndarray) -> np.ndarray:
        x = preprocess(crops, self.spec)
        (out,) = self.session.run(None, {self.input_name: x})
        return postprocess(out, self.spec)
