"""Trainer: generators, dataset, loss, a few real optimisation steps, resume, export, engines."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamcap.bundle import load_bundle
from streamcap.engine import create_engine
from streamcap.engine.nets import build_generator
from streamcap.errors import BackendUnavailable, BundleError
from trainer.data.dataset import PosmapDataset
from trainer.export import export_bundle
from trainer.losses import opening_loss, weight_mask_tensor, weighted_position_loss
from trainer.runloop import StepSampler
from trainer.train import PretrainConfig, pretrain, repeat_large_poses


def fake_cache(root, layout, n=12, val=4):
    """A tiny cache in the builder's format: the canonical face at random shifts on noise."""
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (n, 256, 256, 3), dtype=np.uint8)
    pms = np.zeros((n, 256, 256, 3), np.float16)
    c = layout.canonical - layout.canonical.mean(0)
    for i in range(n):
        v = c * 0.6 + np.r_[128 + rng.uniform(-5, 5, 2), 128.0]
        pm = np.zeros((256 * 256, 3), np.float32)
        pm[layout.face_ind] = v
        pms[i] = pm.reshape(256, 256, 3)
        # draw a bright blob where the nose is so the net has something to latch onto
        nose = v[layout.kpt_vertex[30]]
        imgs[i, int(nose[1]) - 10:int(nose[1]) + 10, int(nose[0]) - 10:int(nose[0]) + 10] = 255
    split = np.array(["train"] * (n - val) + ["val"] * val)
    (root / "shards").mkdir(parents=True)
    np.savez(root / "shards" / "a.npz", images=imgs, posmaps=pms, split=split, yaw=np.zeros(n, np.float32),
             kind=np.array(["frame"] * n), identity=np.array(["x"] * n))
    (root / "meta.json").write_text(json.dumps({"crop_size": 256, "context": 1.25}))
    return root


@pytest.mark.parametrize("arch, size", [("light", 128), ("prnet", 256), ("mobile", 160), ("mobile", 128)])
def test_generators_map_crops_to_uv_maps(arch, size):
    net = build_generator(arch, input_size=size).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, size, size))
    assert y.shape == (2, 3, 256, 256)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    n_params = sum(p.numel() for p in net.parameters())
    bounds = {"light": (1e5, 1e6), "mobile": (3e5, 3e6), "prnet": (1e7, 2e7)}[arch]
    assert bounds[0] < n_params < bounds[1]


def test_weighted_loss_ignores_the_neck_and_weights_the_features(layout):
    w = weight_mask_tensor(layout.weight_mask)
    target = torch.zeros(1, 3, 256, 256)
    neck = torch.as_tensor(layout.weight_mask == 0)
    feat = torch.as_tensor(layout.weight_mask == 16)
    face = torch.as_tensor(layout.weight_mask == 4)
    err_neck, err_feat, err_face = target.clone(), target.clone(), target.clone()
    err_neck[:, 0][:, neck] = 1.0
    err_feat[:, 0][:, feat] = 1.0
    err_face[:, 0][:, face] = 1.0
    assert float(weighted_position_loss(err_neck, target, w)) == 0.0
    per_px_feat = float(weighted_position_loss(err_feat, target, w)) / int(feat.sum())
    per_px_face = float(weighted_position_loss(err_face, target, w)) / int(face.sum())
    assert per_px_feat / per_px_face == pytest.approx(4.0, rel=1e-4)


def test_dataset_moves_the_label_with_the_image(tmp_path, layout):
    from trainer.data.dataset import load_cache

    data = load_cache(fake_cache(tmp_path / "c", layout), "train")
    for train in (False, True):
        ds = PosmapDataset(data, 128, 1.25, train=train)
        x, y = ds[0]
        assert x.shape == (3, 128, 128) and y.shape == (3, 256, 256)
        nose = (y.numpy().reshape(3, -1)[:, layout.kpt_flat[30]] * 128 * 1.1)
        img = x.numpy().mean(0)
        if not train:  # no photometric noise: the blob is bright exactly under the nose label
            assert img[int(nose[1]), int(nose[0])] > 0.9


def test_sampler_resumes_the_same_stream():
    full = StepSampler(10, 2, seed=3, start_step=0)
    it = iter(full)
    seq = [next(it) for _ in range(30)]
    later = iter(StepSampler(10, 2, seed=3, start_step=5))
    assert [next(later) for _ in range(20)] == seq[10:30]


def test_opening_loss_sees_a_mouth_that_stays_shut(layout):
    """Moving the lower inner lip down by 2% of the map (the label opens its mouth) costs the
    opening term its full size but the position loss over the face almost nothing."""
    rng = np.random.default_rng(0)
    y = torch.from_numpy(rng.uniform(0.3, 0.7, (1, 3, layout.size, layout.size)).astype(np.float32))
    kpt = torch.as_tensor(layout.kpt_flat)
    opened = y.clone().flatten(2)
    opened[:, 1, kpt[[65, 66, 67]]] += 0.02
    opened = opened.view_as(y)
    assert float(opening_loss(y, y, kpt)) == 0.0
    gap = float(opening_loss(y, opened, kpt))
    assert gap == pytest.approx(0.02 * 3 / (7 * 2), rel=1e-5)  # 3 of 7 pairs move, in y only
    w = weight_mask_tensor(layout.weight_mask)
    assert float(weighted_position_loss(y, opened, w)) < gap / 10


def test_large_poses_are_listed_more_often():
    class Items:
        yaw = np.array([0.0, -50.0, 10.0, 31.0, 29.9])

        def __len__(self):
            return len(self.yaw)

        def __getitem__(self, i):
            return i

    ds = Items()
    assert repeat_large_poses(ds, 1, 30.0) is ds
    rep = repeat_large_poses(ds, 3, 30.0)
    seen = sorted(rep[i] for i in range(len(rep)))
    assert seen == [0, 1, 1, 1, 2, 3, 3, 3, 4]
    assert np.all(np.abs(rep.yaw[5:]) >= 30.0)


def test_pretrain_learns_checkpoints_resumes_and_exports(tmp_path, layout):
    cache = fake_cache(tmp_path / "cache", layout)
    run = tmp_path / "run"
    cfg = PretrainConfig(data=str(cache), out=str(run), steps=30, batch=4, lr=3e-3, warmup=5, workers=0,
                         threads=2, val_every=30, ckpt_every=10, log_every=5)
    res = pretrain(cfg)
    assert np.isfinite(res["val_nme2d"])
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert losses[-1] < losses[0]
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] == 30 and ck["cfg"]["arch"] == "light"
    # resume continues the step count instead of starting over
    cfg.steps, cfg.resume = 35, True
    pretrain(cfg)
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 35

    bundle_dir = tmp_path / "bundle"
    manifest = export_bundle(run, bundle_dir, data=cache)
    assert manifest["provenance"]["onnx_vs_torch_max_abs"] < 1e-3
    bundle = load_bundle(bundle_dir)
    crops = np.random.default_rng(0).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    a = create_engine(bundle, "ort", threads=1).infer(crops)
    b = create_engine(bundle, "torch", threads=1).infer(crops)
    assert a.shape == (3, 256, 256, 3)
    # same weights, two runtimes: parity well under a hundredth of a pixel
    assert np.abs(a - b).max() < 0.01
    assert create_engine(bundle, "auto").name == "ort-cpu"
    with pytest.raises(BackendUnavailable):
        create_engine(bundle, "tensorrt")
    # a corrupted model file is refused before it can run
    (bundle_dir / "generator.onnx").write_bytes(b"\0" * 100)
    with pytest.raises(BundleError):
        load_bundle(bundle_dir)


def test_sigterm_to_the_process_group_saves_a_resumable_checkpoint(tmp_path, layout):
    """`kill -- -PGID` (or a job scheduler) reaches the DataLoader workers too: the run must still
    save last.pt and exit 130, not die in a worker error."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    cache = fake_cache(tmp_path / "cache", layout, n=24, val=4)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(repo / "trainer" / "train.py"), "pretrain", "--data", str(cache), "--out", str(run),
         "--steps", "100000", "--batch", "2", "--workers", "1", "--threads", "1", "--ckpt-every", "100000",
         "--val-every", "100000", "--log-every", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while time.monotonic() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["step"] >= 2


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, shared_data):
    """label_corpus.py on three photos (each also mirrored): (cache folder, the six records)."""
    from trainer.data import label_corpus as lc

    out = tmp_path_factory.mktemp("corpus")
    photos = ["images/lp_s0.jpg", "images/tddfa_emma.jpg", "images/d3dfr/000002.jpg"]
    lab = lc.Labeller(shared_data)
    recs = lc.label_photos(lab, shared_data, photos, type("Bar", (), {"update": lambda self, n: None})())
    (out / "shards").mkdir(parents=True)
    np.savez(out / "shards" / "a.npz", **lc.pack([dict(r) for r in recs]))
    np.savez(out / "uv_basis.npz", mean=lab.mean, basis=lab.basis)
    (out / "meta.json").write_text(json.dumps({"crop_size": lc.CROP, "context": lc.CONTEXT, "label": "3ddfa_v2"}))
    return out, recs


def test_corpus_labels_rebuild_the_teachers_own_landmarks(small_corpus, layout):
    """label_corpus.py end to end on three photos: the UV map the dataset rebuilds from the stored
    62 numbers puts its 68 landmark pixels where the teacher put its landmarks (both come from
    one fit, through two routes: the UV basis and the BFM keypoint rows), on the augmented sample too."""
    from trainer.data.dataset import corpus_datasets, is_corpus

    out, recs = small_corpus
    assert len(recs) == 6 and sorted(r["flip"] for r in recs) == [False, False, False, True, True, True]
    assert is_corpus(out)
    ds, vds, _ = corpus_datasets(out, 160, layout.face_ind, layout.size, seed=0)
    assert len(ds) == 4 and len(vds) == 2  # the d3dfr photo and its mirror are held out
    train_recs = [r for r in recs if r["split"] == "train"]
    for i in range(len(ds)):
        pm = ds.context_posmap(i).reshape(-1, 3)[layout.kpt_flat]
        err = np.linalg.norm(pm[:, :2] - train_recs[i]["lm68"][:, :2], axis=1)
        assert np.median(err) < 1.5, err  # pixels of the 256 context crop
    for d in (ds, vds):
        for i in range(len(d)):
            assert d.context_image(i).shape == (256, 256, 3)
            x, y = d[i]
            assert x.shape == (3, 160, 160) and y.shape == (3, 256, 256)
            lm = y.numpy().reshape(3, -1)[:, layout.kpt_flat].T * 160 * 1.1
            assert (lm[:, :2] > 0).all() and (lm[:, :2] < 160).all()
    # the teacher's fit of the mirrored photo turns the other way
    assert abs(recs[0]["yaw"] + recs[1]["yaw"]) < 5.0


def test_fused_side_cars_reach_the_uv_map(small_corpus, shared_data, layout, tmp_path, capsys):
    """fuse_corpus.py end to end on the three photos, with dlib's 68 points on each stored crop
    standing in for FaceMesh's registered ones: the UV map the dataset rebuilds with ``fused``
    puts its eye and mouth landmark pixels on dlib's points in every region the fusion took
    (the expression alone does not get there), row by row (a row's offsets on another row miss),
    and the augmented target moves with the image."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("dlib")
    from trainer.data import fuse_corpus
    from trainer.data.build_dataset import Dlib68
    from trainer.data.dataset import corpus_datasets
    from trainer.data.label_fusion import REGIONS
    from trainer.data.labeller import Registration

    out, recs = small_corpus
    fused = tmp_path / "fused"
    fused.mkdir()
    dlib = Dlib68()
    points = np.zeros((len(recs), 468, 3), np.float16)
    found = np.zeros(len(recs), bool)
    for i, r in enumerate(recs):
        crop = cv2.imdecode(r["jpeg"], cv2.IMREAD_COLOR)
        d = dlib.near(crop, np.r_[r["lm68"][:, :2].min(0), r["lm68"][:, :2].max(0)])
        if d is not None:
            points[i, :68] = np.c_[d, r["lm68"][:, 2]]
            found[i] = True
    assert found.sum() >= 4
    np.savez(fused / "mp__a.npz", points=points, found=found)
    identity = Registration(np.zeros(468, np.int64), np.arange(68), np.zeros((468, 3), np.float32))
    identity.save(fused / "registration.npz")
    assert fuse_corpus.main([str(out), "-o", str(fused), "--data", str(shared_data)]) == 0
    with np.load(fused / "fused__a.npz") as z:
        regions, offsets = z["regions"], z["offsets"]
    assert regions.any(1).sum() >= 3 and np.abs(offsets).max() > 0.3 and not offsets[~found].any()

    kw = {"seed": 0, "kpt_vertex": layout.kpt_vertex}
    ds, vds, _ = corpus_datasets(out, 160, layout.face_ind, layout.size, fused=fused, **kw)
    names = list(REGIONS)
    checked = expression_only_misses = 0
    for d in (ds, vds):
        for i in range(len(d)):
            k = int(np.argmin([abs(r["yaw"] - d.yaw[i]) for r in recs]))  # this row's record
            used = [REGIONS[n] for j, n in enumerate(names) if regions[k, j]]
            if not used:
                assert not d.lm_offsets[i].any()
                continue
            idx = np.concatenate(used)
            target = points[k, idx, :2].astype(np.float32)
            pm = d.context_posmap(i).reshape(-1, 3)[layout.kpt_flat]
            assert np.abs(pm[idx, :2] - target).max() < 0.3, (i, k)
            lab = d.labels[i]
            expr_only = ((d.umean + d.ubasis @ lab[12:]) @ lab[:9].reshape(3, 3).T + lab[9:12])[layout.kpt_vertex]
            expression_only_misses += np.abs(expr_only[idx, :2] - target).max() > 1.0
            m = d.transform(i)
            _, y = d[i]
            lm = y.numpy().reshape(3, -1)[:, layout.kpt_flat].T * 160 * 1.1
            k_scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
            np.testing.assert_allclose(lm[idx, :2], target @ m[:, :2].T + m[:, 2], atol=0.3 * k_scale)
            checked += 1
    assert checked >= 3 and expression_only_misses >= 1
    # the codec basis is built from the same fused faces the generator learns
    from streamcap_codecs.basis import normalise_pose
    from trainer.build_codec_basis import load_normalised

    shard = out / "shards" / "a.npz"
    with np.load(shard) as z:
        rows = np.flatnonzero(z["split"] == "train")
    got, _ = load_normalised({shard: rows}, layout, fused)
    plain, _ = load_normalised({shard: rows}, layout)
    for j in range(len(ds)):
        want = normalise_pose(ds.context_posmap(j).reshape(-1, 3)[layout.face_ind], layout)[1]
        np.testing.assert_allclose(got[j], want, atol=1e-4 * np.abs(want).max())
    assert np.abs(got - plain).max() > 1e-3 * np.abs(plain).max()
    # no side-car for a shard: a clear error, not the 3DDFA_V2 labels in silence
    (fused / "fused__a.npz").rename(fused / "other.npz")
    with pytest.raises(FileNotFoundError, match="fuse_corpus"):
        corpus_datasets(out, 160, layout.face_ind, layout.size, fused=fused, **kw)
    # and train.py says so in one line, exit 2
    from streamcap.bundle import ModelSpec
    from trainer.train import train_val_datasets

    capsys.readouterr()  # the fusion's progress bar
    with pytest.raises(SystemExit) as exit_:
        train_val_datasets(out, ModelSpec(arch="light", input_size=160), 0, str(fused))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("train: no fused side-car") and "\n" not in err
