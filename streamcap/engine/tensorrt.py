"""TensorRT backend for NVIDIA GPUs: an FP16 engine built from the bundle's ONNX on first use.

The serialized plan is specific to a GPU model and a TensorRT version, so it is built on the
target machine and cached per (GPU name, TensorRT version) next to the bundle (or under
``~/.cache/streamcap`` if the bundle folder is read-only), with a timing cache to make rebuilds
fast. The cache file starts with a length-prefixed JSON header carrying the preprocessing spec
and the ONNX file's SHA-256; a header that does not match the bundle means "rebuild", never
"run a stale engine". Device buffers are torch CUDA tensors.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..bundle import Bundle, sha256_file
from ..errors import BackendUnavailable
from .base import postprocess, preprocess

log = logging.getLogger(__name__)
MAGIC = b"SCTRT1\0\0"
MAX_BATCH = 16


def _cache_dir(bundle: Bundle) -> Path:
    d = bundle.root / "engines"
    try:
        d.mkdir(exist_ok=True)
        probe = d / ".w"
        probe.touch()
        probe.unlink()
        return d
    except OSError:
        d = Path.home() / ".cache" / "streamcap" / bundle.name
        d.mkdir(parents=True, exist_ok=True)
        return d


def write_plan(path: Path, header: dict, plan: bytes) -> None:
    head = json.dumps(header, sort_keys=True).encode()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(MAGIC + struct.pack("<I", len(head)) + head + plan)
    tmp.replace(path)


def read_plan(path: Path) -> tuple[dict, bytes] | None:
    """(header, plan) of a cached engine file, or None if absent or malformed."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) < 12 or raw[:8] != MAGIC:
        return None
    (n,) = struct.unpack("<I", raw[8:12])
    try:
        header = json.loads(raw[12 : 12 + n])
    except ValueError:
        return None
    return header, raw[12 + n :]


class TensorRTEngine:
    def __init__(self, bundle: Bundle, threads: int = 0, device: str = "cuda") -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendUnavailable("TensorRT is not installed (pip install 'streamcap-face[tensorrt]')") from exc
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailable("the TensorRT backend needs torch with CUDA for device buffers") from exc
        if not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs an NVIDIA GPU and none is visible")
        self.trt, self.torch = trt, torch
        self.spec = bundle.spec
        self.logger = trt.Logger(trt.Logger.WARNING)
        gpu = torch.cuda.get_device_name(0).replace(" ", "_")
        header = {"spec": asdict(bundle.spec), "onnx_sha256": sha256_file(bundle.onnx_path),
                  "gpu": gpu, "tensorrt": trt.__version__, "max_batch": MAX_BATCH, "precision": "fp16"}
        cache = _cache_dir(bundle)
        plan_path = cache / f"{gpu}_trt{trt.__version__}.plan"
        cached = read_plan(plan_path)
        if cached and cached[0] == header:
            plan = cached[1]
        else:
            log.warning("building a TensorRT engine for %s (once per GPU; takes a minute)", gpu)
            plan = self._build(bundle, cache / "timing.cache")
            write_plan(plan_path, header, plan)
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendUnavailable(f"TensorRT could not load {plan_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = torch.cuda.Stream()
        self.name = "tensorrt-fp16"

    def _build(self, bundle: Bundle, timing_path: Path) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(bundle.onnx_path.read_bytes()):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailable(f"TensorRT cannot parse {bundle.onnx_path.name}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
        config.set_timing_cache(timing, ignore_mismatch=False)
        s = self.spec.input_size
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, 3, s, s), (4, 3, s, s), (MAX_BATCH, 3, s, s))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailable("TensorRT failed to build an engine (see its log above)")
        timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(plan)

    def infer(self, crops: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = preprocess(crops, self.spec)
        outs = []
        for s in range(0, len(x), MAX_BATCH):
            xb = torch.from_numpy(x[s : s + MAX_BATCH]).cuda()
            self.context.set_input_shape(self.input, tuple(xb.shape))
            y = torch.empty(tuple(self.context.get_tensor_shape(self.output)), dtype=torch.float32, device="cuda")
            self.context.set_tensor_address(self.input, xb.data_ptr())
            self.context.set_tensor_address(self.output, y.data_ptr())
            self.context.execute_async_v3(self.stream.cuda_stream)
            self.stream.synchronize()
            outs.append(y.cpu().numpy())
        return postprocess(np.concatenate(outs), self.spec)
