"""ARKit-named expression coefficients (0..1) from a face's 68 landmarks in 3D.

The input is the 68 landmarks in the **canonical frame** (the face's own frame: the head pose
undone, so turning the head changes nothing; x toward the face's left, y down, z forward).
Every measure is a distance ratio divided by the inter-ocular distance (IOD, between the eye
centres), so it does not depend on the face's size either.

Each coefficient compares a measure with that face's **rest value**: what the measure is when
the face is relaxed. People differ (a long chin, wide lips), so the rest value is learnt per
face from the frames seen so far (causal, so it also works live): a low percentile for
measures whose rest is their minimum (jaw opening) and the median for the others (eyes are
open, brows and mouth corners at rest most of the time). Until ``warmup`` frames have been
seen, the canonical face's own value is the rest. ``full`` is the change (in IODs, or as a
fraction for the eyes) that counts as 1.0; values are clipped to 0..1.

Names follow Apple ARKit's ``ARFaceAnchor.BlendShapeLocation``: ``Left`` is the face's own
left (the right side of a frontal face in the image).
"""

from __future__ import annotations

from collections import deque

import numpy as np

NAMES: tuple[str, ...] = (
    "jawOpen", "jawLeft", "jawRight", "mouthClose", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel",
    "mouthPucker", "eyeBlinkLeft", "eyeBlinkRight", "eyeWideLeft", "eyeWideRight", "browInnerUp",
    "browDownLeft", "browDownRight", "browOuterUpLeft", "browOuterUpRight",
)

# iBUG 68-point indices; "R"/"L" are the face's own right/left
_EYE_R, _EYE_L = np.arange(36, 42), np.arange(42, 48)
_BROW_R, _BROW_L = np.arange(17, 22), np.arange(22, 27)
_CHIN, _NOSE_ROOT = 8, 27
_CORNER_R, _CORNER_L = 48, 54
_UPPER_LIP = [50, 51, 52]
_INNER_TOP, _INNER_BOTTOM = [61, 62, 63], [67, 66, 65]

# measure -> (rest percentile, full-scale change). Measures are in IODs except the eye
# openness ratios (EAR), whose full scale is a fraction of the rest value.
_MEASURES: dict[str, tuple[float, float]] = {
    "jaw": (5.0, 0.45),  # nose root to chin: grows when the jaw drops
    "jaw_x": (50.0, 0.12),  # chin sideways from the nose root
    "gap": (5.0, 0.45),  # inner-lip opening
    "width": (50.0, 0.15),  # mouth corner to corner
    "smile_r": (50.0, 0.10), "smile_l": (50.0, 0.10),  # corner height above the upper lip + half-width
    "ear_r": (50.0, 0.75), "ear_l": (50.0, 0.75),  # eye aspect ratio (lid gap / eye width)
    "brow_inner": (50.0, 0.10),  # inner brow ends above the inner eye corners
    "brow_r": (50.0, 0.08), "brow_l": (50.0, 0.08),  # mean brow height above the eye
    "brow_outer_r": (50.0, 0.10), "brow_outer_l": (50.0, 0.10),
}


def _d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def measures(lm: np.ndarray) -> dict[str, float]:
    """Raw, size-free measures of one face's (68, 3) canonical-frame landmarks (see module doc)."""
    p = np.asarray(lm, np.float64)
    eye_r, eye_l = p[_EYE_R].mean(0), p[_EYE_L].mean(0)
    iod = max(float(_d(eye_r, eye_l)), 1e-6)

    def ear(eye: np.ndarray) -> float:
        e = p[eye]
        return float((_d(e[1], e[5]) + _d(e[2], e[4])) / (2 * max(float(_d(e[0], e[3])), 1e-6)))

    mid_x = p[_UPPER_LIP, 0].mean()
    lip_y = p[_UPPER_LIP, 1].mean()
    half_r, half_l = (mid_x - p[_CORNER_R, 0]) / iod, (p[_CORNER_L, 0] - mid_x) / iod
    up_r, up_l = (lip_y - p[_CORNER_R, 1]) / iod, (lip_y - p[_CORNER_L, 1]) / iod
    # brow heights: y grows downward, so "above" is eye y minus brow y
    return {
        "jaw": float(_d(p[_NOSE_ROOT], p[_CHIN])) / iod,
        "jaw_x": float(p[_CHIN, 0] - p[_NOSE_ROOT, 0]) / iod,
        "gap": float(_d(p[_INNER_TOP], p[_INNER_BOTTOM]).mean()) / iod,
        "width": float(_d(p[_CORNER_R], p[_CORNER_L])) / iod,
        "smile_r": float(up_r + half_r), "smile_l": float(up_l + half_l),
        "ear_r": ear(_EYE_R), "ear_l": ear(_EYE_L),
        "brow_inner": float((p[39, 1] - p[21, 1]) + (p[42, 1] - p[22, 1])) / (2 * iod),
        "brow_r": float(eye_r[1] - p[_BROW_R, 1].mean()) / iod,
        "brow_l": float(eye_l[1] - p[_BROW_L, 1].mean()) / iod,
        "brow_outer_r": float(p[36, 1] - p[17, 1]) / iod,
        "brow_outer_l": float(p[45, 1] - p[26, 1]) / iod,
    }


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


class ExpressionSolver:
    """Per-face state: ``update(landmarks)`` -> one value per name in ``NAMES``, each in 0..1.

    ``canonical_landmarks`` (68, 3) gives the rest values used before ``warmup`` frames; the
    rest values then follow this face's own history (the last ``history`` frames).
    """

    def __init__(self, canonical_landmarks: np.ndarray, warmup: int = 15, history: int = 900,
                 adaptive: bool = True) -> None:
        self.prior = measures(canonical_landmarks)
        self.warmup, self.adaptive = warmup, adaptive
        self._hist: dict[str, deque[float]] = {k: deque(maxlen=history) for k in _MEASURES}

    def rest(self, key: str) -> float:
        h = self._hist[key]
        if not self.adaptive or len(h) < self.warmup:
            return self.prior[key]
        return float(np.percentile(np.fromiter(h, float, len(h)), _MEASURES[key][0]))

    def update(self, landmarks: np.ndarray) -> dict[str, float]:
        m = measures(landmarks)
        for k, v in m.items():
            self._hist[k].append(v)

        def rise(key: str) -> float:  # how far above rest, in full-scale units (may be negative)
            return (m[key] - self.rest(key)) / _MEASURES[key][1]

        def fall_ratio(key: str) -> float:  # eye openness: fraction of the rest value lost
            r = max(self.rest(key), 1e-6)
            return (r - m[key]) / (r * _MEASURES[key][1])

        jaw, gap = rise("jaw"), rise("gap")
        narrow = _clip(-rise("width"))
        open_ = _clip(gap * 3)  # lips apart by a third of the jaw's full scale
        side = rise("jaw_x")
        return {
            "jawOpen": _clip(jaw),
            "jawLeft": _clip(side), "jawRight": _clip(-side),
            "mouthClose": _clip(jaw - gap),
            "mouthSmileLeft": _clip(rise("smile_l")), "mouthSmileRight": _clip(rise("smile_r")),
            "mouthFunnel": _clip(narrow * open_), "mouthPucker": _clip(narrow * (1 - open_)),
            "eyeBlinkLeft": _clip(fall_ratio("ear_l")), "eyeBlinkRight": _clip(fall_ratio("ear_r")),
            "eyeWideLeft": _clip(-fall_ratio("ear_l") * 3), "eyeWideRight": _clip(-fall_ratio("ear_r") * 3),
            "browInnerUp": _clip(rise("brow_inner")),
            "browDownLeft": _clip(-rise("brow_l")), "browDownRight": _clip(-rise("brow_r")),
            "browOuterUpLeft": _clip(rise("brow_outer_l")), "browOuterUpRight": _clip(rise("brow_outer_r")),
        }
