"""A capture take: per tracked face, per frame, pose + landmarks + basis coefficients + ARKit-named
expressions, written as CSV and JSON lines while capturing and as a glTF animation at the end.

``Take.add_frame`` turns one frame's reconstructed faces (``FaceResult`` from the pipeline, keyed
by track id) into ``FaceSample`` rows. Each face's files get one row per frame of the take,
also before the face appeared and while it is lost: those rows are gaps (empty CSV cells,
JSON ``null``), never zeros. Rows are flushed every frame, so an interrupted take keeps every
frame it saw; ``close`` writes each face's .glb (atomically) and ``take.json``.

Smoothing (on by default) is a causal One-Euro filter per face over the head rotation
(quaternion), translation, scale, basis coefficients and canonical-frame landmarks; the
expressions are computed from the smoothed landmarks. A face that comes back after a gap
starts its filters afresh.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .expressions import NAMES, ExpressionSolver
from .geometry.gltf import TakeAnimation, write_take_glb
from .geometry.layout import UVLayout
from .track import OneEuroFilter

log = logging.getLogger(__name__)

# One-Euro settings per quantity: values are divided by ``unit`` first, so one (min_cutoff,
# beta) pair fits all (unit ~ the smallest change that matters).
_EURO_UNITS = {"quat": 0.005, "trans": 1.0, "scale": 0.005, "coeffs": 0.05, "landmarks": 0.5}
EURO_MIN_CUTOFF, EURO_BETA = 1.0, 0.02


@dataclass
class FaceSample:
    """One face in one frame, after smoothing. Image axes (x right, y down, z toward the camera,
    pixels); the pose maps the canonical face to the image: v = scale * rotation @ c + translation."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)
    scale: float
    landmarks: np.ndarray  # (68, 3) image space
    coeffs: np.ndarray  # (K,) codec basis coefficients
    expressions: dict[str, float]
    canonical_width: float = 1.0  # x extent of the canonical face (canonical units)
    head_position: np.ndarray = field(default_factory=lambda: np.zeros(3))  # image position of the face centre

    @property
    def euler(self) -> tuple[float, float, float]:
        from .geometry.posmap import matrix_to_euler

        return matrix_to_euler(self.rotation)

    @property
    def quaternion(self) -> np.ndarray:
        """(4,) x, y, z, w of ``rotation`` (image axes)."""
        from scipy.spatial.transform import Rotation

        return Rotation.from_matrix(np.asarray(self.rotation, np.float64)).as_quat()


class _Euro:
    def __init__(self, unit: float) -> None:
        self.unit = unit
        self.f = OneEuroFilter(EURO_MIN_CUTOFF, EURO_BETA)

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        return self.f(np.asarray(x, np.float64) / self.unit, t).astype(np.float64) * self.unit


class _FaceSmoother:
    def __init__(self) -> None:
        self.f = {k: _Euro(u) for k, u in _EURO_UNITS.items()}
        self.last_q: np.ndarray | None = None

    def __call__(self, rot, trans, scale, coeffs, lm, t):
        from scipy.spatial.transform import Rotation

        q = Rotation.from_matrix(rot).as_quat()
        if self.last_q is not None and np.dot(q, self.last_q) < 0:
            q = -q
        q = self.f["quat"](q, t)
        q /= np.linalg.norm(q)
        self.last_q = q
        return (Rotation.from_quat(q).as_matrix(), self.f["trans"](trans, t), float(self.f["scale"](scale, t)),
                self.f["coeffs"](coeffs, t), self.f["landmarks"](lm, t))


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def csv_header(k: int) -> list[str]:
    cols = ["frame", "timestamp", "tracked", "yaw", "pitch", "roll", "qx", "qy", "qz", "qw", "tx", "ty", "tz", "scale"]
    cols += [f"lm{i}_{a}" for i in range(68) for a in "xyz"]
    cols += list(NAMES)
    cols += [f"c{i}" for i in range(k)]
    return cols


class _FaceFiles:
    """One face's CSV + JSONL (rows appended and flushed per frame) and its animation arrays."""

    def __init__(self, folder: Path, face_id: int, k: int, solver: ExpressionSolver) -> None:
        self.id = face_id
        self.csv_path, self.jsonl_path = folder / f"face{face_id}.csv", folder / f"face{face_id}.jsonl"
        self.glb_path = folder / f"face{face_id}.glb"
        self._csv_fh = open(self.csv_path, "w", newline="")
        self._jsonl_fh = open(self.jsonl_path, "w")
        self._csv = csv.writer(self._csv_fh)
        header = csv_header(k)
        self._csv.writerow(header)
        self.ncols = len(header)
        self.solver = solver
        self.smoother: _FaceSmoother | None = None
        self.tracked_prev = False
        self.tracked: list[bool] = []
        self.coeffs: list[np.ndarray] = []
        self.rot: list[np.ndarray] = []
        self.trans: list[np.ndarray] = []
        self.scale: list[float] = []
        self.texture: np.ndarray | None = None
        self.texture_score = np.inf

    def gap(self, index: int, ts: float) -> None:
        self._csv.writerow([index, _fmt(ts), 0] + [""] * (self.ncols - 3))
        self._jsonl_fh.write(json.dumps({"frame": index, "timestamp": round(ts, 6), "tracked": False, "pose": None,
                                         "landmarks68": None, "expressions": None, "coefficients": None}) + "\n")
        self.tracked.append(False)
        self.tracked_prev = False

    def row(self, index: int, ts: float, s: FaceSample) -> None:
        yaw, pitch, roll = s.euler
        q = s.quaternion
        self._csv.writerow([index, _fmt(ts), 1] + [_fmt(v) for v in (yaw, pitch, roll, *q, *s.translation, s.scale)]
                           + [_fmt(v) for v in s.landmarks.ravel()]
                           + [_fmt(s.expressions[n]) for n in NAMES] + [_fmt(v) for v in s.coeffs])
        self._jsonl_fh.write(json.dumps({
            "frame": index, "timestamp": round(ts, 6), "tracked": True,
            "pose": {"yaw": round(yaw, 4), "pitch": round(pitch, 4), "roll": round(roll, 4),
                     "quaternion_xyzw": np.round(q, 6).tolist(), "translation": np.round(s.translation, 3).tolist(),
                     "scale": round(float(s.scale), 6)},
            "landmarks68": np.round(s.landmarks, 2).tolist(),
            "expressions": {n: round(s.expressions[n], 4) for n in NAMES},
            "coefficients": np.round(s.coeffs, 5).tolist()}) + "\n")
        self.tracked.append(True)
        self.tracked_prev = True
        self.coeffs.append(np.asarray(s.coeffs, np.float32))
        self.rot.append(np.asarray(s.rotation, np.float64))
        self.trans.append(np.asarray(s.translation, np.float64))
        self.scale.append(float(s.scale))

    def flush(self) -> None:
        self._csv_fh.flush()
        self._jsonl_fh.flush()

    def close(self) -> None:
        self._csv_fh.close()
        self._jsonl_fh.close()


class Take:
    """Writes a take into ``folder`` (see module doc). ``basis`` is the bundle's codec
    ``GeometryBasis`` (its coefficients are the morph weights); ``n_targets`` limits the glTF
    morph targets to the first N components (0: all)."""

    def __init__(self, folder: Path, basis, layout: UVLayout, image_size: tuple[int, int], *,
                 smooth: bool = True, n_targets: int = 0, meta: dict | None = None) -> None:
        from streamcap_codecs.basis import to_canonical

        self._to_canonical = to_canonical
        self.folder = Path(folder)
        self.basis, self.layout = basis, layout
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.smooth, self.n_targets = smooth, n_targets
        self.meta = dict(meta or {})
        self.timestamps: list[float] = []
        self.faces: dict[int, _FaceFiles] = {}
        self._kpt = layout.kpt_vertex
        canon = layout.canonical.astype(np.float64)
        self._canon_lm = canon[self._kpt]
        self._canon_centre = (canon.min(0) + canon.max(0)) / 2
        self._canon_width = float(np.ptp(canon[:, 0]))

    def _face(self, face_id: int) -> _FaceFiles:
        ff = self.faces.get(face_id)
        if ff is None:
            ff = _FaceFiles(self.folder, face_id, self.basis.n_components, ExpressionSolver(self._canon_lm))
            for i, ts in enumerate(self.timestamps[:-1]):  # rows before it appeared are gaps
                ff.gap(i, ts)
            self.faces[face_id] = ff
        return ff

    def sample(self, ff: _FaceFiles, face, t: float) -> FaceSample:
        """One FaceResult -> a (smoothed) FaceSample for face ``ff``."""
        pose = face.pose
        canon = self._to_canonical(face.vertices, pose)
        coeffs = self.basis.encode(canon).astype(np.float64)
        lm = canon[self._kpt].astype(np.float64)
        rot = np.asarray(pose.rotation, np.float64)
        trans, scale = np.asarray(pose.translation, np.float64), float(pose.scale)
        if self.smooth:
            if ff.smoother is None or not ff.tracked_prev:
                ff.smoother = _FaceSmoother()
            rot, trans, scale, coeffs, lm = ff.smoother(rot, trans, scale, coeffs, lm, t)
        expr = ff.solver.update(lm)
        lm_img = scale * lm @ rot.T + trans
        centre = scale * rot @ self._canon_centre + trans
        return FaceSample(rot, trans, scale, lm_img.astype(np.float32), coeffs.astype(np.float32), expr,
                          self._canon_width, centre)

    def add_frame(self, index: int, timestamp: float, faces, image: np.ndarray | None = None
                  ) -> dict[int, FaceSample]:
        """``faces``: [(track id, FaceResult)] of frame ``index``. Returns the samples by id."""
        self.timestamps.append(float(timestamp))
        row = len(self.timestamps) - 1
        out: dict[int, FaceSample] = {}
        for fid, face in faces:
            ff = self._face(int(fid))
            s = self.sample(ff, face, timestamp)
            ff.row(row, timestamp, s)
            out[int(fid)] = s
            # the texture for the glTF: the most frontal view of the take with eyes open, mouth shut
            e = s.expressions
            score = abs(face.pose.yaw) + abs(face.pose.pitch) + 20 * (e["eyeBlinkLeft"] + e["eyeBlinkRight"]
                                                                      + e["jawOpen"])
            if face.texture is not None and score < ff.texture_score:
                ff.texture, ff.texture_score = face.texture.copy(), score
        for fid, ff in self.faces.items():
            if fid not in out:
                ff.gap(row, timestamp)
            ff.flush()
        return out

    def close(self, interrupted: bool = False) -> dict:
        """Close the row files, write each face's .glb and ``take.json``; returns the summary."""
        faces = []
        times = np.asarray(self.timestamps, np.float64)
        for fid, ff in sorted(self.faces.items()):
            ff.close()
            tracked = np.asarray(ff.tracked, bool)
            entry = {"id": fid, "tracked_frames": int(tracked.sum()), "first_frame": int(np.argmax(tracked)),
                     "csv": ff.csv_path.name, "jsonl": ff.jsonl_path.name, "glb": None}
            if tracked.any():
                anim = TakeAnimation(times[: len(tracked)], tracked, np.stack(ff.coeffs), np.stack(ff.rot),
                                     np.stack(ff.trans), np.asarray(ff.scale))
                write_take_glb(ff.glb_path, anim, self.basis, self.layout, ff.texture, self.image_size,
                               self.n_targets, name=f"face{fid}")
                entry["glb"] = ff.glb_path.name
            faces.append(entry)
        summary = {**self.meta, "frames": len(self.timestamps), "image_size": list(self.image_size),
                   "smoothing": "one-euro" if self.smooth else None, "expressions": list(NAMES),
                   "basis_id": self.basis.id, "basis_components": self.basis.n_components,
                   "interrupted": interrupted, "faces": faces}
        write_manifest(self.folder, summary)
        return summary


def write_manifest(folder: Path, data: dict) -> Path:
    """``take.json`` in ``folder``, written atomically."""
    import os

    path = Path(folder) / "take.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return path
