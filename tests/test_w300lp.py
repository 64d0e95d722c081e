"""300W-LP loader on a tiny set written by the test: known pose and 3DMM in, matching UV labels out."""

from __future__ import annotations

import numpy as np
import pytest

scipy_io = pytest.importorskip("scipy.io")
cv2 = pytest.importorskip("cv2")

from streamcap.geometry.posmap import estimate_pose
from trainer.data.w300lp import build_shard


def write_tiny_300wlp(tmp_path, layout, yaw_deg: float):
    sub = np.arange(0, layout.n_vertices, 7)
    canon = layout.canonical[sub].astype(np.float64)
    canon = canon - canon.mean(0)
    model_frame = canon * np.array([1.0, -1.0, 1.0])  # 3DMMs are y-up
    rows, cols = np.divmod(layout.face_ind[sub], layout.size)
    uv = np.stack([cols, rows], 1) / (layout.size - 1)
    rng = np.random.default_rng(0)
    n3 = model_frame.size
    scipy_io.savemat(tmp_path / "bfm.mat", {
        "mu_shape": model_frame.reshape(-1, 1), "w_shape": rng.normal(0, 1e-3, (n3, 2)),
        "mu_exp": np.zeros((n3, 1)), "w_exp": rng.normal(0, 1e-3, (n3, 1)), "uv": uv})
    root = tmp_path / "300W_LP" / "AFW"
    root.mkdir(parents=True)
    img = rng.integers(0, 255, (450, 450, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "AFW_1_0.jpg"), img)
    pose = np.array([[0.0, np.deg2rad(yaw_deg), 0.0, 225.0, 225.0, 0.0, 0.9]])
    scipy_io.savemat(root / "AFW_1_0.mat", {"Pose_Para": pose, "Shape_Para": np.zeros((2, 1)),
                                            "Exp_Para": np.zeros((1, 1))})
    return tmp_path / "300W_LP", tmp_path / "bfm.mat"


@pytest.mark.parametrize("yaw", [0.0, 40.0, -70.0])
def test_300wlp_labels_carry_the_pose(tmp_path, layout, yaw):
    root, model = write_tiny_300wlp(tmp_path, layout, yaw)
    out = tmp_path / "shards" / "w300lp.npz"
    assert build_shard(root, model, out) == 1
    with np.load(out) as z:
        pm = z["posmaps"][0].astype(np.float32)
        assert z["images"].shape == (1, 256, 256, 3)
        assert z["yaw"][0] == pytest.approx(yaw, abs=1e-4)
    verts = pm.reshape(-1, 3)[layout.face_ind]
    assert np.isfinite(verts).all()
    pose = estimate_pose(verts, layout)
    assert pose.yaw == pytest.approx(yaw, abs=1.5)
    assert abs(pose.pitch) < 1.5 and abs(pose.roll) < 1.5
    # the face sits inside the context crop
    assert (verts[:, :2] > 0).all() and (verts[:, :2] < 256).all()
