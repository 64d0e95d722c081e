"""UV geometry core: layout table, crop transforms, pose recovery, landmarks, texture, export."""

from __future__ import annotations

import numpy as np
import pytest

from streamcap.errors import BundleError
from streamcap.geometry.crop import CropTransform, crop_from_landmarks
from streamcap.geometry.export import read_obj_counts, write_obj, write_ply
from streamcap.geometry.layout import REGION_WEIGHTS, UVLayout
from streamcap.geometry.posmap import (
    estimate_pose,
    euler_to_matrix,
    landmarks68,
    matrix_to_euler,
    sample_texture,
    vertex_normals,
    vertices,
)


def synthetic_posmap(layout: UVLayout, yaw: float, pitch: float, roll: float, scale: float = 1.2,
                     shift=(320.0, 240.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Canonical face posed by a known similarity, scattered into an image-space UV map."""
    rot = euler_to_matrix(yaw, pitch, roll)
    c = layout.canonical - layout.canonical.mean(0)
    v = scale * c @ rot.T + np.asarray(shift)
    pm = np.zeros((layout.size * layout.size, 3), np.float32)
    pm[layout.face_ind] = v
    return pm.reshape(layout.size, layout.size, 3), rot


def test_layout_tables_are_consistent(layout):
    assert layout.size == 256 and layout.n_vertices == 43867
    assert layout.face_mask.sum() == layout.n_vertices
    assert layout.triangles.min() >= 0 and layout.triangles.max() < layout.n_vertices
    # every landmark pixel is face surface and lands on a vertex
    assert (layout.kpt_vertex >= 0).all()
    # all four loss regions exist and the weights are the 16:4:3:0 of the pretraining loss
    w = layout.weight_mask
    assert sorted(np.unique(w).tolist()) == sorted(REGION_WEIGHTS)
    assert (w[~layout.face_mask] == 0).all()
    # eyes-nose-mouth carry the most weight; the landmark pixels are in it
    assert (w.ravel()[layout.kpt_flat] == 16).all()


def test_triangles_face_the_camera_on_the_canonical_face(layout):
    n = vertex_normals(layout.canonical, layout.triangles)
    assert (n[:, 2] > 0).mean() > 0.9


def test_layout_roundtrip_and_corruption(layout, tmp_path):
    p = tmp_path / "l.npz"
    layout.save(p)
    again = UVLayout.load(p)
    assert again.hash == layout.hash
    bad = tmp_path / "bad.npz"
    bad.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(BundleError):
        UVLayout.load(bad)
    with pytest.raises(BundleError):
        UVLayout.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("angles", [(0, 0, 0), (35, -10, 5), (-60, 15, -20), (80, 0, 10)])
def test_pose_recovered_from_synthetic_posmap(layout, angles):
    pm, rot = synthetic_posmap(layout, *angles)
    pose = estimate_pose(vertices(pm, layout), layout)
    got = euler_to_matrix(pose.yaw, pose.pitch, pose.roll)
    err = np.rad2deg(np.arccos(np.clip((np.trace(got.T @ rot) - 1) / 2, -1, 1)))
    assert err < 1.0
    assert np.allclose([pose.yaw, pose.pitch, pose.roll], angles, atol=1.0)
    assert pose.scale == pytest.approx(1.2, rel=1e-3)


def test_euler_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.uniform([-89, -80, -170], [89, 80, 170])
        assert np.allclose(matrix_to_euler(euler_to_matrix(*a)), a, atol=1e-6)


def test_landmarks_follow_the_pose(layout):
    pm, rot = synthetic_posmap(layout, 0, 0, 0)
    lm = landmarks68(pm, layout)
    assert lm.shape == (68, 3)
    # image axes: chin (8) below the nose tip (30), eyes above the nose, left jaw left of right jaw
    assert lm[8, 1] > lm[30, 1] > lm[36:48, 1].mean()
    assert lm[0, 0] < lm[16, 0]
    # nose tip is the point nearest the camera
    assert lm[30, 2] == pytest.approx(lm[:, 2].max(), abs=5)


def test_crop_roundtrip():
    crop = CropTransform.from_box((300.0, 200.0), 180.0, 256, angle_deg=17.0)
    pts = np.random.default_rng(1).uniform(100, 400, (50, 3)).astype(np.float32)
    assert np.allclose(crop.to_image(crop.to_crop(pts)), pts, atol=1e-3)
    assert crop.scale == pytest.approx(256 / 180.0)
    # the box centre lands on the crop centre
    assert np.allclose(crop.to_crop(np.array([[300.0, 200.0]])), [[128, 128]], atol=1e-4)


def test_crop_from_landmarks_covers_the_face(layout):
    pm, _ = synthetic_posmap(layout, 0, 0, 0)
    lm = landmarks68(pm, layout)
    crop = crop_from_landmarks(lm, 256)
    inside = crop.to_crop(lm[:, :2])
    assert (inside > 0).all() and (inside < 256).all()


def test_texture_sampling_reads_the_frame_at_the_surface(layout):
    pm, _ = synthetic_posmap(layout, 0, 0, 0)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, :320] = (255, 0, 0)  # left half blue (BGR)
    frame[:, 320:] = (0, 0, 255)  # right half red
    tex = sample_texture(frame, pm, layout)
    v = vertices(pm, layout)
    colours = tex.reshape(-1, 3)[layout.face_ind]
    left = v[:, 0] < 315
    right = v[:, 0] > 325
    assert (colours[left][:, 0] > 200).mean() > 0.99
    assert (colours[right][:, 2] > 200).mean() > 0.99
    # off-face pixels take border colours (no black seams under bilinear filtering)
    off = tex[~layout.face_mask]
    assert (off.max(1) > 100).all()


def test_obj_and_ply_export_reimport(layout, tmp_path):
    pm, _ = synthetic_posmap(layout, 20, 0, 0)
    v = vertices(pm, layout)
    tex = np.full((256, 256, 3), 128, np.uint8)
    obj = write_obj(tmp_path / "face.obj", v, layout.triangles, layout.uv_coords, tex, image_height=480)
    assert read_obj_counts(obj) == (layout.n_vertices, len(layout.triangles))
    assert (tmp_path / "face.png").is_file() and (tmp_path / "face.mtl").is_file()
    ply = write_ply(tmp_path / "face.ply", v, layout.triangles, image_height=480)
    head = ply.read_bytes()[:400].decode("ascii", "replace")
    assert f"element vertex {layout.n_vertices}" in head and f"element face {len(layout.triangles)}" in head
    body = ply.read_bytes()
    n = layout.n_vertices
    assert len(body) == body.index(b"end_header\n") + 11 + n * 12 + len(layout.triangles) * 13
