"""Geometry basis: PCA fit, encode/decode, save/load validation, pose normalisation, and the
trainer's build_codec_basis on a tiny cache written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from codec_synth import deformation_fields, small_layout, synthetic_basis
from streamcap_codecs import GeometryBasis, fit_basis, from_canonical, normalise_pose, to_canonical

from streamcap.errors import BundleError
from streamcap.geometry.posmap import euler_to_matrix
from trainer.build_codec_basis import build, main


@pytest.fixture(scope="module")
def small(layout):
    return small_layout(layout, 4)


def test_fit_recovers_a_low_rank_set(small):
    rng = np.random.default_rng(0)
    fields = deformation_fields(small, 5, seed=3)
    x = small.canonical + np.tensordot(rng.normal(0, 1, (40, 5)), fields, 1)
    basis = fit_basis(x.astype(np.float32), 5, layout_hash=small.hash)
    assert basis.components.shape == (5, small.n_vertices * 3) and basis.components.dtype == np.float32
    np.testing.assert_allclose(basis.components @ basis.components.T, np.eye(5), atol=1e-5)
    assert np.all(np.diff(basis.stdev) <= 0) and basis.stdev[-1] > 0
    for face in x[:5]:
        c = basis.encode(face)
        assert c.shape == (5,) and c.dtype == np.float32
        np.testing.assert_allclose(basis.decode(c), face, atol=2e-3)
    # coefficient units: a unit coefficient moves the vertices by 1 canonical unit RMS
    d = basis.decode(np.eye(5, dtype=np.float32)[0]) - basis.mean
    assert np.sqrt((d**2).sum(1).mean()) == pytest.approx(1.0, rel=1e-4)
    # fewer components: error grows, truncate agrees with a refit's span
    assert np.abs(basis.truncate(2).decode(basis.truncate(2).encode(x[0])) - x[0]).max() > 0.1
    with pytest.raises(ValueError):
        fit_basis(x[:4].astype(np.float32), 5)


def test_save_load_and_validation(small, layout, tmp_path):
    basis, _ = synthetic_basis(small, rank=4, k=4, n=20)
    for dtype in ("float32", "float16"):
        p = tmp_path / f"b_{dtype}.npz"
        basis.save(p, dtype=dtype)
        again = GeometryBasis.load(p, small)
        assert again.n_components == 4 and again.layout_hash == small.hash
        np.testing.assert_allclose(again.components, basis.components, atol=1e-3 if dtype == "float16" else 0)
        assert again.id == GeometryBasis.load(p).id  # the id names the stored data
    assert GeometryBasis.load(tmp_path / "b_float32.npz").id == basis.id
    with pytest.raises(BundleError, match="layout"):
        GeometryBasis.load(tmp_path / "b_float32.npz", layout)  # built for the small layout
    with pytest.raises(BundleError, match="not found"):
        GeometryBasis.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BundleError, match="corrupt"):
        GeometryBasis.load(tmp_path / "junk.npz")
    with np.load(tmp_path / "b_float32.npz") as z:
        d = {k: z[k] for k in z.files}
    np.savez(tmp_path / "v2.npz", **{**d, "version": np.int32(2)})
    with pytest.raises(BundleError, match="version"):
        GeometryBasis.load(tmp_path / "v2.npz")
    np.savez(tmp_path / "shape.npz", **{**d, "stdev": d["stdev"][:2]})
    with pytest.raises(BundleError):
        GeometryBasis.load(tmp_path / "shape.npz")
    np.savez(tmp_path / "nan.npz", **{**d, "mean": d["mean"] * np.nan})
    with pytest.raises(BundleError, match="NaN"):
        GeometryBasis.load(tmp_path / "nan.npz")


def test_pose_normalisation_round_trip(layout):
    rot = euler_to_matrix(25.0, -10.0, 5.0)
    v = (1.7 * layout.canonical @ rot.T + np.array([300.0, 200.0, -40.0])).astype(np.float32)
    pose, canon = normalise_pose(v, layout)
    assert pose.yaw == pytest.approx(25.0, abs=1e-3) and pose.scale == pytest.approx(1.7, rel=1e-5)
    np.testing.assert_allclose(canon, layout.canonical, atol=1e-3)
    np.testing.assert_allclose(from_canonical(canon, pose), v, atol=1e-3)
    np.testing.assert_allclose(to_canonical(from_canonical(canon, pose), pose), canon, atol=1e-3)


def _write_cache(root, layout, n_train=7, n_val=3, seed=0):
    """Shards like trainer/data/build_dataset.py writes: crop-pixel posmaps, z offset by +128."""
    rng = np.random.default_rng(seed)
    fields = deformation_fields(layout, 3, seed=seed)
    c = layout.canonical - layout.canonical.mean(0)
    shards = {"a": ["train"] * 4 + ["val"] * 1, "b": ["train"] * (n_train - 4) + ["val"] * (n_val - 1)}
    (root / "shards").mkdir(parents=True)
    for name, split in shards.items():
        pms = np.zeros((len(split), 256, 256, 3), np.float16)
        for i in range(len(split)):
            face = c + np.tensordot(rng.normal(0, 1, 3), fields, 1)
            rot = euler_to_matrix(*rng.uniform(-25, 25, 3))
            v = rng.uniform(0.6, 0.8) * face @ rot.T + np.array([128.0, 128.0, 128.0])
            flat = np.zeros((256 * 256, 3), np.float32)
            flat[layout.face_ind] = v
            pms[i] = flat.reshape(256, 256, 3)
        np.savez(root / "shards" / f"{name}.npz", posmaps=pms, split=np.array(split),
                 images=np.zeros((len(split), 4, 4, 3), np.uint8))
    np.savez(root / "registration.npz", other=np.zeros(3))  # not a shard: skipped


def test_build_codec_basis_on_a_tiny_cache(layout, tmp_path):
    _write_cache(tmp_path / "cache", layout)
    out = tmp_path / "bundle" / "codec_basis.npz"
    rep = build(tmp_path / "cache", out, k=4, report_k=(1, 2, 4, 16), layout=layout)
    basis = GeometryBasis.load(out, layout)
    assert basis.n_components == 4 and basis.id == rep["basis_id"]
    assert rep["n_train"] == 7 and rep["n_val"] == 3
    ks = [r["k"] for r in rep["val"]]
    assert ks == [1, 2, 4]  # 16 needs more faces than the tiny cache has
    err = [r["mean_error_px"] for r in rep["val"]]
    ev = [r["explained_variance"] for r in rep["val"]]
    assert err[0] > err[1] > err[2] and ev[0] < ev[1] < ev[2] <= 1.0
    assert ev[2] > 0.95 and err[2] < 0.5  # three deformation fields: K=4 explains the val faces
    assert json.loads(out.with_suffix(".json").read_text())["basis_id"] == basis.id


def test_build_codec_basis_cli(layout, tmp_path, capsys):
    _write_cache(tmp_path / "cache", layout, seed=1)
    out = tmp_path / "cb.npz"
    assert main(["--data", str(tmp_path / "cache"), "-o", str(out), "-k", "3", "--report-k", "3",
                 "--dtype", "float32"]) == 0
    assert "explained" in capsys.readouterr().out
    assert GeometryBasis.load(out, layout).n_components == 3
    with pytest.raises(SystemExit):
        main(["--data", str(tmp_path / "nothing"), "-o", str(out)])


def test_encode_many_and_the_subsampled_projection(layout):
    """Several faces in one pass equal one at a time; the fit from every 4th vertex equals the
    orthogonal projection for faces in the basis's span, and nearly so for faces off it."""
    fields = deformation_fields(layout, 6, seed=5)
    rng = np.random.default_rng(1)
    x = (layout.canonical + np.tensordot(rng.normal(0, 1, (30, 6)), fields, 1)).astype(np.float32)
    basis = fit_basis(x, 6, layout_hash=layout.hash)
    faces = x[:3]
    one_by_one = np.stack([basis.encode(f) for f in faces])
    np.testing.assert_allclose(basis.encode_many(faces), one_by_one, atol=1e-4)
    np.testing.assert_allclose(basis.encode_many(faces, step=4), one_by_one, atol=1e-3)
    idx = basis.projector(4)[0]
    assert len(idx) == len(range(0, layout.n_vertices, 4))
    np.testing.assert_allclose(basis.encode_many(faces[:, idx], step=4), one_by_one, atol=1e-3)
    noisy = faces + rng.normal(0, 0.05, faces.shape).astype(np.float32)  # off the span
    diff = np.abs(basis.encode_many(noisy, step=4) - np.stack([basis.encode(f) for f in noisy]))
    assert 0 < diff.max() < 0.05  # not exact, but a fifth of the step at quality 50 (0.25)
    # too few vertices per component for a fit: falls back to the full projection
    tiny = small_layout(layout, 16)
    tb = fit_basis((tiny.canonical + rng.normal(0, 1, (20, *tiny.canonical.shape))).astype(np.float32), 6)
    assert len(tb.projector(1000)[0]) == tiny.n_vertices
