"""Quantisers shared by the encoder and the decoder.

Both sides must hold bit-identical state for the closed loop to be drift-free, so every
reconstruction the encoder mirrors (coefficients from integers, pose from integers) is computed
here, once, in float32 / float64 with the same operations on both sides.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamcap.geometry.posmap import Pose, matrix_to_euler

# Pose integers: rotation vector in units of POSE_ROT_STEP radians, translation in
# 1/POSE_T_DIV pixels, natural log of the scale in units of POSE_LOGS_STEP.
POSE_ROT_STEP = 2e-4  # 0.0115 deg: 0.02 px at 100 px from the rotation centre
POSE_T_DIV = 32
POSE_LOGS_STEP = 2e-4
POSE_LEN = 7
POSE_LIMIT = 1 << 30  # any valid pose integer is far inside int32

STEP_MIN = 1e-4
STEP_MAX = 1e4


def quality_to_step(quality: float) -> float:
    """Coefficient quantisation step (canonical units, ~px at a 256 px face) for 1..100.

    50 -> 0.25; every 12.5 quality points halves or doubles it (100 -> 0.016, 1 -> 3.8).
    A coded coefficient errs by at most step/2, about step/3.5 RMS.
    """
    q = float(np.clip(quality, 1, 100))
    return float(0.25 * 2.0 ** ((50.0 - q) / 12.5))


def jpeg_quality(quality: float) -> int:
    """Texture JPEG quality for the codec quality 1..100."""
    return int(np.clip(round(quality), 5, 95))


def quantise_pose(pose: Pose) -> np.ndarray:
    """Pose -> (7,) int32 [rotvec(3), translation(3), log-scale]; see the step constants."""
    rvec, _ = cv2.Rodrigues(np.asarray(pose.rotation, np.float64))
    vals = np.concatenate([
        rvec.ravel() / POSE_ROT_STEP,
        np.asarray(pose.translation, np.float64) * POSE_T_DIV,
        [np.log(max(float(pose.scale), 1e-12)) / POSE_LOGS_STEP],
    ])
    return np.clip(np.rint(vals), -POSE_LIMIT, POSE_LIMIT).astype(np.int32)


def dequantise_pose(q: np.ndarray) -> Pose:
    """(7,) pose integers -> Pose (rotation float32 (3, 3), translation float32 (3,))."""
    q = np.asarray(q, np.int64)
    rvec = q[:3].astype(np.float64) * POSE_ROT_STEP
    rot, _ = cv2.Rodrigues(rvec.reshape(3, 1))
    t = q[3:6].astype(np.float64) / POSE_T_DIV
    scale = float(np.exp(float(q[6]) * POSE_LOGS_STEP))
    yaw, pitch, roll = matrix_to_euler(rot)
    return Pose(rot.astype(np.float32), t.astype(np.float32), scale, yaw, pitch, roll)


def pose_is_sane(q: np.ndarray) -> bool:
    """Whether decoded pose integers give a usable pose (|rotation| <= 2 pi, scale in 1e-6..1e6)."""
    q = np.asarray(q, np.int64)
    return bool(
        q.shape == (POSE_LEN,)
        and np.linalg.norm(q[:3] * POSE_ROT_STEP) <= 2 * np.pi + 1e-3
        and abs(q[6] * POSE_LOGS_STEP) <= np.log(1e6)
    )


def dequantise(q: np.ndarray, step: float) -> np.ndarray:
    """Keyframe integers -> float32 coefficients (the state both sides start from)."""
    return np.asarray(q, np.int64).astype(np.float32) * np.float32(step)


def apply_delta(recon: np.ndarray, dq: np.ndarray, step: float) -> np.ndarray:
    """Closed-loop update: previous reconstruction + integer delta * step, float32."""
    return (recon + np.asarray(dq, np.int64).astype(np.float32) * np.float32(step)).astype(np.float32)


def delta_for(target: np.ndarray, recon: np.ndarray, step: float, limit: int = 1 << 30) -> np.ndarray:
    """Integer delta that brings ``recon`` nearest to ``target`` on the grid ``recon + k * step``."""
    d = np.rint((np.asarray(target, np.float64) - recon) / np.float64(np.float32(step)))
    return np.clip(d, -limit, limit).astype(np.int64)
