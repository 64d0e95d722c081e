"""Entropy coding of the per-face geometry integers (pose + basis coefficients) with range coding.

The integers are coded with ``constriction``'s range coder under a quantised Laplace model
per symbol (FORMAT.md §9.1). Scales are adaptive and mirrored: after each applied delta both
sides move every symbol's scale toward the magnitude just seen, so they hold identical models
as long as they apply the same packets; a keyframe resets them. A lost packet breaks the
mirror, which the receiver already handles by asking for a keyframe.

Symbols of a keyframe: step index, 7 pose integers, K coefficient integers. Of a delta: step
index change, 7 pose deltas, K coefficient deltas. Coefficient step = 2 ** ((index - 128) / 8).
"""

from __future__ import annotations

import constriction
import numpy as np

from streamcap.errors import CodecError

from .quant import POSE_LEN

SYMBOL_LIMIT = 1 << 20
STEP_INDEX_MAX = 255
_MODEL = constriction.stream.model.QuantizedLaplace(-SYMBOL_LIMIT, SYMBOL_LIMIT)
_KEY_POSE_SCALE = 4000.0
_DELTA_POSE_SCALE0 = 30.0
_ADAPT = 0.15  # weight of the newest magnitude in the running scale
_SCALE_MIN, _SCALE_MAX = 0.12, 1e5


def step_of(index: int) -> float:
    """Coefficient step of a step index (float32 value both sides use)."""
    return float(np.float32(2.0 ** ((int(index) - 128) / 8.0)))


def index_of(step: float) -> int:
    """Nearest step index to a step."""
    return int(np.clip(round(128 + 8 * np.log2(max(step, 1e-30))), 0, STEP_INDEX_MAX))


def _encode(symbols: np.ndarray, scales: np.ndarray) -> bytes:
    """Range-code; words go out big-endian with trailing zero bytes dropped (the decoder pads
    zeros back). The coder's final state (last two words) only has to name some point of its
    final interval, so the encoder picks the point with the most trailing zero bytes that still
    decodes to the same symbols (checked by decoding), which saves 4 to 7 bytes a packet."""
    sym = symbols.astype(np.int32)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(sym, _MODEL, np.zeros(len(sym)), scales.astype(np.float64))
    full = enc.get_compressed().astype(">u4").tobytes()
    best = full.rstrip(b"\0")
    if len(full) < 8:
        return best
    head, x = full[:-8], int.from_bytes(full[-8:], "big")
    for z in range(64, 0, -8):
        m = 1 << z
        for c in ((x // m) * m, -(-x // m) * m):
            if c >= 1 << 64:
                continue
            cand = (head + c.to_bytes(8, "big")).rstrip(b"\0")
            if len(cand) < len(best) and _try_decode(cand, len(sym), scales, sym):
                return cand
    return best


def _words(data: bytes) -> np.ndarray:
    return np.frombuffer(data + b"\0" * (-len(data) % 4), ">u4").astype(np.uint32)


def _try_decode(data: bytes, n: int, scales: np.ndarray, want: np.ndarray) -> bool:
    try:
        out = constriction.stream.queue.RangeDecoder(_words(data)).decode(_MODEL, np.zeros(n), scales)
    except Exception:  # any failure means this candidate is not usable
        return False
    return bool(np.array_equal(out, want))


def _decode(data: bytes, n: int, scales: np.ndarray, what: str) -> np.ndarray:
    if not data:
        raise CodecError(f"{what}: empty geometry")
    try:
        dec = constriction.stream.queue.RangeDecoder(_words(data))
        out = dec.decode(_MODEL, np.zeros(n), scales.astype(np.float64))
    except Exception as exc:  # constriction raises its own types on exhausted / invalid data
        raise CodecError(f"{what}: geometry does not decode ({exc})") from exc
    return np.asarray(out, np.int64)


class GeometryModel:
    """Mirrored adaptive scales for one face. ``stdev`` (K,) is the basis' coefficient spread."""

    def __init__(self, stdev: np.ndarray) -> None:
        self.stdev = np.asarray(stdev, np.float64)
        self.k = len(self.stdev)
        self.step_index = 128
        self.scales = self._initial(self.step_index)

    def _initial(self, step_index: int) -> np.ndarray:
        st = step_of(step_index)
        return np.concatenate([[0.2], np.full(POSE_LEN, _DELTA_POSE_SCALE0),
                               np.clip(0.1 * self.stdev / st, _SCALE_MIN, _SCALE_MAX)])

    def _key_scales(self, step_index: int) -> np.ndarray:
        st = step_of(step_index)
        return np.concatenate([[64.0], np.full(POSE_LEN, _KEY_POSE_SCALE),
                               np.clip(self.stdev / st, _SCALE_MIN, _SCALE_MAX)])

    def copy(self) -> GeometryModel:
        m = GeometryModel.__new__(GeometryModel)
        m.stdev, m.k, m.step_index, m.scales = self.stdev, self.k, self.step_index, self.scales.copy()
        return m

    # ----------------------------------------------------------------- keyframes
    def encode_key(self, step_index: int, pose: np.ndarray, coeffs: np.ndarray) -> bytes:
        sym = np.concatenate([[step_index - 128], pose, coeffs]).astype(np.int64)
        return _encode(np.clip(sym, -SYMBOL_LIMIT, SYMBOL_LIMIT), self._key_scales(step_index))

    def decode_key(self, data: bytes) -> tuple[int, np.ndarray, np.ndarray]:
        """-> (step index, pose (7,), coeffs (K,)); the keyframe's scales depend on its own
        step index, which is the first symbol, so it is decoded on its own first."""
        first = _decode(data, 1, np.array([64.0]), "keyframe")
        idx = int(first[0]) + 128
        if not 0 <= idx <= STEP_INDEX_MAX:
            raise CodecError(f"keyframe: step index {idx} out of range")
        sym = _decode(data, 1 + POSE_LEN + self.k, self._key_scales(idx), "keyframe")
        if int(sym[0]) + 128 != idx:
            raise CodecError("keyframe: inconsistent step index")
        return idx, sym[1:1 + POSE_LEN], sym[1 + POSE_LEN:]

    def reset(self, step_index: int) -> None:
        self.step_index = step_index
        self.scales = self._initial(step_index)

    # ----------------------------------------------------------------- deltas
    def encode_delta(self, d_index: int, d_pose: np.ndarray, d_coeffs: np.ndarray) -> bytes:
        sym = np.concatenate([[d_index], d_pose, d_coeffs]).astype(np.int64)
        if np.abs(sym).max(initial=0) > SYMBOL_LIMIT:
            raise ValueError("delta symbol out of range (clip before coding)")
        return _encode(sym, self._delta_scales(d_index))

    def decode_delta(self, data: bytes) -> tuple[int, np.ndarray, np.ndarray]:
        first = _decode(data, 1, self.scales[:1], "delta")
        d_index = int(first[0])
        if not 0 <= self.step_index + d_index <= STEP_INDEX_MAX:
            raise CodecError("delta: step index out of range")
        sym = _decode(data, 1 + POSE_LEN + self.k, self._delta_scales(d_index), "delta")
        if int(sym[0]) != d_index:
            raise CodecError("delta: inconsistent step change")
        return d_index, sym[1:1 + POSE_LEN], sym[1 + POSE_LEN:]

    def _delta_scales(self, d_index: int) -> np.ndarray:
        s = self.scales.copy()
        if d_index:  # coefficient deltas are counted in steps: rescale to the new step
            s[1 + POSE_LEN:] = np.clip(s[1 + POSE_LEN:] * 2.0 ** (-d_index / 8.0), _SCALE_MIN, _SCALE_MAX)
        return s

    def update(self, d_index: int, d_pose: np.ndarray, d_coeffs: np.ndarray) -> None:
        """Apply a delta's effect on the model (both sides, after the delta is applied)."""
        s = self._delta_scales(d_index)
        mag = np.abs(np.concatenate([[d_index], d_pose, d_coeffs]).astype(np.float64))
        self.scales = np.clip((1 - _ADAPT) * s + _ADAPT * mag, _SCALE_MIN, _SCALE_MAX)
        self.step_index += d_index
