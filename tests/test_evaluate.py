"""AFLW2000-3D protocol: the metric on known errors, yaw bins, and a tiny folder the test writes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamcap.errors import InputError, InputNotFound
from streamcap.evaluate import AflwSample, box_norm, evaluate, load_aflw, nme2d, nme3d, yaw_bin

scipy_io = pytest.importorskip("scipy.io")


def square68(side: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, side, (68, 3))
    pts[0, :2], pts[1, :2] = (0, 0), (side, side)  # the box is exactly side x side
    return pts.astype(np.float32)


def test_nme_is_mean_error_over_sqrt_box_area():
    gt = square68(100.0)
    assert box_norm(gt) == pytest.approx(100.0)
    shifted = gt.copy()
    shifted[:, 0] += 5.0  # every point 5 px off: NME 5%
    assert nme2d(shifted, gt) == pytest.approx(0.05)
    # 3D ignores a constant depth offset (no absolute depth in one image) but not a depth error
    deeper = gt.copy()
    deeper[:, 2] += 40.0
    assert nme3d(deeper, gt) == pytest.approx(0.0, abs=1e-6)
    bumped = gt.copy()
    bumped[::2, 2] += 10.0
    bumped[1::2, 2] -= 10.0
    assert nme3d(bumped, gt) == pytest.approx(0.10, rel=1e-5)


def test_yaw_bins():
    assert [yaw_bin(y) for y in (0, -29.9, 30, 59.9, -60, 89, 95)] == [0, 0, 1, 1, 2, 2, 2]


def test_balanced_mean_weights_bins_equally():
    gt = square68()
    samples = [AflwSample("a", np.zeros((8, 8, 3), np.uint8), gt, 10.0)] * 3 + \
              [AflwSample("b", np.zeros((8, 8, 3), np.uint8), gt, 45.0),
               AflwSample("c", np.zeros((8, 8, 3), np.uint8), gt, 80.0)]
    errs = {10.0: 1.0, 45.0: 4.0, 80.0: 7.0}

    def predict(img, g, it=iter(samples)):
        s = next(it)
        p = g.copy()
        p[:, 0] += errs[s.yaw_deg]
        return p

    r = evaluate(iter(samples), predict)
    assert r["nme2d"]["bins"]["[0,30)"] == pytest.approx(0.01)
    assert r["nme2d"]["balanced"] == pytest.approx(0.04)
    assert r["nme2d"]["mean"] == pytest.approx((3 * 0.01 + 0.04 + 0.07) / 5)


def write_aflw(folder, shared_data, n=4):
    """Real photos, 'ground truth' = dlib's own landmarks (z = 0), as AFLW2000-3D .mat files."""
    import cv2

    from streamcap.detect import FaceDetector, LandmarkPredictor

    det, lmk = FaceDetector("hog"), LandmarkPredictor()  # dlib's box, as `eval --methods dlib` uses
    folder.mkdir()
    k = 0
    for jpg in sorted((shared_data / "images" / "d3dfr").glob("*.jpg")):
        img = cv2.imread(str(jpg))
        boxes = det.detect(img)
        if not boxes:
            continue
        lm = lmk.predict(img, boxes[0])
        pt3d = np.vstack([lm.T, np.zeros((1, 68))])
        cv2.imwrite(str(folder / f"img{k}.jpg"), img)
        pose = np.array([[0.0, 0.1 * k, 0, 0, 0, 0, 1]])
        scipy_io.savemat(folder / f"img{k}.mat", {"pt3d_68": pt3d, "Pose_Para": pose})
        k += 1
        if k == n:
            break
    return folder


def test_eval_command_on_a_tiny_aflw_folder(shared_data, tmp_path):
    folder = write_aflw(tmp_path / "aflw", shared_data)
    samples = list(load_aflw(folder))
    assert len(samples) == 4 and samples[0].pts3d.shape == (68, 3)
    out = tmp_path / "r.json"
    p = subprocess.run([sys.executable, "-m", "streamcap.cli", "eval", "--aflw", str(folder), "--methods", "dlib",
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "[0,30)" in p.stdout and "dlib" in p.stdout
    r = json.loads(out.read_text())["dlib"]
    # dlib measured against its own landmarks (JPEG re-encoding aside): near zero
    assert r["nme2d"]["bins"]["[0,30)"] < 0.01 and r["misses"] == 0


def test_bad_aflw_folders(tmp_path):
    with pytest.raises(InputNotFound):
        list(load_aflw(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        list(load_aflw(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.mat").write_bytes(b"garbage")
    (bad / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError):
        list(load_aflw(bad))
