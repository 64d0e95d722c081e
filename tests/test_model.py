"""The shipped model bundle: it loads, runs on ONNX Runtime, and is actually trained.

An untrained generator puts landmarks anywhere; these checks hold the shipped one to the
human 5-point annotation of the held-out d3dfr photos (never trained on).
"""

from __future__ import annotations

import numpy as np
import pytest

from streamcap.bundle import load_bundle
from streamcap.capture import read_image
from streamcap.detect import FaceDetector, LandmarkPredictor
from streamcap.engine import create_engine
from streamcap.reconstruct import Reconstructor


@pytest.fixture(scope="module")
def rec():
    bundle = load_bundle()
    return Reconstructor(bundle, create_engine(bundle, "ort", threads=2))


def test_shipped_bundle_is_complete(rec):
    b = rec.bundle
    assert b.onnx_path.stat().st_size > 100_000
    assert b.manifest["provenance"]["step"] > 1000
    assert b.manifest["metrics"]["val"]["val_nme2d"] < 0.1
    total = sum(p.stat().st_size for p in b.root.iterdir() if p.is_file())
    assert total < 40e6


def _five(lm: np.ndarray) -> np.ndarray:
    return np.stack([lm[36:42, :2].mean(0), lm[42:48, :2].mean(0), lm[30, :2], lm[48, :2], lm[54, :2]])


def test_model_landmarks_match_human_annotation_on_held_out_people(shared_data, rec):
    det, lmk = FaceDetector(), LandmarkPredictor()
    errs = []
    for jpg in sorted((shared_data / "images" / "d3dfr").glob("*.jpg"))[:12]:
        img = read_image(jpg)
        boxes = det.detect(img)
        if not boxes:
            continue
        face = rec.run(img, rec.crops_for([lmk.predict(img, boxes[0])]))[0]
        ref = np.loadtxt(jpg.with_suffix(".txt")).reshape(5, 2)
        wh = np.ptp(face.landmarks[:, :2], 0)
        errs.append(np.linalg.norm(_five(face.landmarks) - ref, axis=1).mean() / np.sqrt(wh[0] * wh[1]))
        assert face.vertices.shape == (43867, 3) and np.isfinite(face.vertices).all()
        assert abs(face.pose.yaw) < 45
    assert len(errs) >= 8
    assert np.mean(errs) < 0.06


def test_batch_of_faces_equals_faces_one_by_one(shared_data, rec):
    img = read_image(shared_data / "images" / "group_t1.jpg")
    det, lmk = FaceDetector(), LandmarkPredictor()
    crops = rec.crops_for([lmk.predict(img, b) for b in det.detect(img)])
    assert len(crops) >= 3
    together = rec.run(img, crops, texture=False)
    alone = [rec.run(img, [c], texture=False)[0] for c in crops]
    for a, b in zip(together, alone):
        assert np.abs(a.vertices - b.vertices).max() < 1e-2
