"""The engine interface every backend implements, and the numpy pre/post-processing they share.

An engine takes a batch of face crops and returns crop-pixel UV position maps; the bundle's
``ModelSpec`` says how to normalise the input and scale the output, so backends never
hard-code what a model expects.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..bundle import ModelSpec


@runtime_checkable
class Engine(Protocol):
    name: str
    spec: ModelSpec

    def infer(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 BGR crops -> (N, U, U, 3) float32 position maps in crop pixels."""
        ...


def preprocess(crops: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, S, S, 3) uint8 BGR -> (N, 3, S, S) float32 normalised in the spec's channel order."""
    if crops.ndim == 3:
        crops = crops[None]
    if crops.shape[1:3] != (spec.input_size, spec.input_size):
        raise ValueError(f"crops are {crops.shape[1:3]}, the model wants {spec.input_size}x{spec.input_size}")
    x = crops.astype(np.float32)
    if spec.color == "rgb":
        x = x[..., ::-1]
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def postprocess(out: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, 3, U, U) network output in [0, 1] -> (N, U, U, 3) crop-pixel position maps. The result
    keeps the network's channel-first memory order (a transposed view, scaled in one pass): the
    runtime reads only the face pixels of it, so a full reordering copy would be wasted."""
    return np.asarray(out, np.float32).transpose(0, 2, 3, 1) * np.float32(spec.input_size * spec.output_scale)
