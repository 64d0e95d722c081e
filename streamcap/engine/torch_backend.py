"""PyTorch backend, for debugging and parity checks: the generator rebuilt from the bundle's
manifest and its ``generator.pt`` weights (a state dict the exporter writes beside the ONNX)."""

from __future__ import annotations

import numpy as np

from ..bundle import Bundle
from ..errors import BackendUnavailable, BundleError
from .base import postprocess, preprocess


class TorchEngine:
    def __init__(self, bundle: Bundle, threads: int = 0, device: str = "cpu") -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable("torch is not installed (pip install 'streamcap-face[train]')") from exc
        from .nets import build_generator

        weights = bundle.path("torch")
        if weights is None:
            raise BackendUnavailable(f"bundle {bundle.name} ships no torch weights (generator.pt)")
        if threads:
            torch.set_num_threads(threads)
        cfg = dict(bundle.manifest.get("generator") or {"arch": bundle.spec.arch, "input_size": bundle.spec.input_size})
        self.model = build_generator(**cfg)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            self.model.load_state_dict({k: v.float() for k, v in state.items()})
        except Exception as exc:
            raise BundleError(f"{weights} does not hold weights for this generator: {exc}") from exc
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.torch = torch
        self.spec = bundle.spec
        self.name = f"torch-{device}"

    def infer(self, crops: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(preprocess(crops, self.spec)).to(self.device)
        with self.torch.inference_mode():
            out = self.model(x).float().cpu().numpy()
        return postprocess(out, self.spec)
