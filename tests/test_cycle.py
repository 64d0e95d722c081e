"""Cycle-GAN stage: differentiable renderer, critics, one full step, the ``cycle`` command, ablation.

Everything runs on CPU at toy sizes (64 px crops, a strided render mesh) in a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from streamcap.bundle import ModelSpec
from streamcap.engine.nets import build_generator
from trainer.cycle import CycleConfig, CycleModels, UVTables, cycle_step, discriminator_step, preset
from trainer.models.discriminators import (
    LandmarkDiscriminator,
    UVDiscriminator,
    lsgan_d_loss,
    normalize_landmarks,
)
from trainer.render import rasterize, render, sample_image

S = 64  # toy crop size


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


def _mesh() -> tuple[torch.Tensor, torch.Tensor]:
    """A quad (two triangles) with a smaller, nearer triangle over part of it. float64."""
    v = torch.tensor([[1.3, 1.2, 0.0], [10.6, 1.7, 1.0], [1.1, 10.4, 0.5], [10.2, 10.8, 2.0],
                      [4.2, 3.3, 6.0], [9.1, 4.4, 6.5], [5.3, 8.6, 7.0]], dtype=torch.float64)
    tris = torch.tensor([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
    return v[None], tris


def test_rasterizer_keeps_the_nearest_surface():
    v, tris = _mesh()
    frags = rasterize(v, tris, (12, 12))
    assert frags.tri[0, 5, 6] == 2  # inside the near triangle
    assert frags.tri[0, 2, 2] in (0, 1) and frags.tri[0, 11, 11] == -1
    v_far = v.clone()
    v_far[0, 4:, 2] = -5.0  # push the small triangle behind the quad
    assert rasterize(v_far, tris, (12, 12)).tri[0, 5, 6] in (0, 1)


def test_render_gradients_match_finite_differences():
    v, tris = _mesh()
    gen = torch.Generator().manual_seed(0)
    colours = torch.rand(1, 7, 3, generator=gen, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    image = torch.stack([torch.sin(xx / 3), torch.cos(yy / 4), torch.sin((xx + yy) / 5)])[None].double()
    weights = torch.rand(1, 3, 12, 12, generator=gen, dtype=torch.float64)

    def loss(verts: torch.Tensor, textured: bool) -> torch.Tensor:
        attrs = sample_image(image, verts[..., :2]) if textured else colours
        return (render(verts, tris, attrs, (12, 12)).image * weights).sum()

    for textured in (False, True):
        p = v.clone().requires_grad_(True)
        loss(p, textured).backward()
        assert p.grad[..., :2].abs().sum() > 0  # positions receive gradient
        eps = 1e-6
        num = torch.zeros_like(v)
        for i in range(v.shape[1]):
            for k in range(2):
                d = torch.zeros_like(v)
                d[0, i, k] = eps
                num[0, i, k] = (loss(v + d, textured) - loss(v - d, textured)) / (2 * eps)
        torch.testing.assert_close(p.grad[..., :2], num[..., :2], rtol=1e-5, atol=1e-7)


def _toy_maps(n: int, size: int, real: bool) -> torch.Tensor:
    """Smooth ramps (real) or noise (fake) UV-like maps."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    if real:
        base = torch.stack([xx, yy, 0.5 + 0.2 * torch.sin(3 * xx)])[None]
        return (0.3 + 0.4 * base + 0.02 * torch.randn(n, 1, 1, 1)).expand(n, 3, size, size).contiguous()
    return torch.rand(n, 3, size, size)


def _train(d: torch.nn.Module, real_fn, fake_fn, steps: int) -> list[float]:
    opt = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    losses = []
    for _ in range(steps):
        loss = lsgan_d_loss(d(real_fn()), d(fake_fn()))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_d1_learns_to_tell_maps_apart():
    torch.manual_seed(0)  # unseeded, 12 steps sometimes did not halve the loss
    d1 = UVDiscriminator(width=8, condition=False, in_size=32)
    losses = _train(d1, lambda: _toy_maps(4, 64, True), lambda: _toy_maps(4, 64, False), 30)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    # conditional D1 takes the crop as well
    assert UVDiscriminator(8, True, 32)(_toy_maps(2, 64, True), torch.rand(2, 3, S, S)).shape == (2,)


def test_d2_learns_to_tell_landmark_shapes_apart(layout):
    canon = torch.as_tensor(layout.canonical[layout.kpt_vertex])
    d2 = LandmarkDiscriminator(hidden=64)

    def real() -> torch.Tensor:
        return canon[None] * torch.empty(8, 1, 1).uniform_(0.5, 1.5) + torch.randn(8, 68, 3) * 2

    losses = _train(d2, real, lambda: torch.randn(8, 68, 3) * 50, 30)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    # shape only: shifting and scaling a set changes nothing D2 sees
    a = canon[None]
    torch.testing.assert_close(normalize_landmarks(a), normalize_landmarks(a * 3 + 7))


def _toy_batch(layout, n: int = 4, labelled=(True, True, False, False)) -> dict[str, torch.Tensor]:
    c = torch.as_tensor(layout.canonical - layout.canonical.mean(0))
    tgt = torch.zeros(n, 3, layout.size * layout.size)
    for i in range(n):
        v = c * 0.12 + torch.tensor([S / 2 + i, S / 2, S / 2])
        tgt[i][:, torch.as_tensor(layout.face_ind)] = (v / (S * 1.1)).T
    return {"image": torch.rand(n, 3, S, S), "target": tgt.reshape(n, 3, layout.size, layout.size),
            "labelled": torch.tensor(labelled)}


def test_one_full_cycle_step(layout):
    gen = build_generator(arch="light", input_size=S, width=0.5)
    cfg = CycleConfig(input_size=S, mesh_stride=4)
    models = CycleModels(gen, UVDiscriminator(8, True, 64), LandmarkDiscriminator(hidden=64), UVTables(layout, 4))
    batch = _toy_batch(layout)
    keep: dict[str, torch.Tensor] = {}
    losses = cycle_step(batch, models, cfg, keep)
    expected = {"sup", "lmk", "adv_uv", "adv_lmk", "photo", "ssim", "cycle", "cycle_lmk", "cycle_photo", "total"}
    assert expected <= losses.keys()
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    grads = [p.grad for p in gen.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # critics are frozen during the generator step, trainable again after it
    assert all(p.grad is None and p.requires_grad for p in models.d1.parameters())
    d = discriminator_step(batch, models, cfg, keep)
    assert torch.isfinite(d["total"]) and {"d1", "d2"} <= d.keys()
    d["total"].backward()
    assert all(p.grad is not None for p in models.d1.parameters())
    assert any(float(p.grad.abs().sum()) > 0 for p in models.d2.parameters())


def test_unlabelled_frames_train_through_cycle_and_critics_only(layout):
    gen = build_generator(arch="light", input_size=S, width=0.5)
    cfg = preset("render", CycleConfig(input_size=S, mesh_stride=4, cycle_yaw_deg=0.0, cycle_pitch_deg=0.0))
    models = CycleModels(gen, UVDiscriminator(8, True, 64), LandmarkDiscriminator(hidden=64), UVTables(layout, 4))
    batch = _toy_batch(layout, labelled=(False,) * 4)
    batch["target"] = torch.full_like(batch["target"], float("nan"))  # labels must not be read
    losses = cycle_step(batch, models, cfg)
    assert float(losses["sup"]) == 0.0 and float(losses["lmk"]) == 0.0
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    assert sum(float(p.grad.abs().sum()) for p in gen.parameters() if p.grad is not None) > 0
    # the d1 preset renders nothing and needs no D2
    only_d1 = preset("d1", CycleConfig(input_size=S))
    out = cycle_step(_toy_batch(layout), CycleModels(gen, models.d1, None, models.tables), only_d1)
    assert "photo" not in out and "adv_lmk" not in out and "adv_uv" in out


def _cache(root, layout, n_train: int = 6, n_val: int = 10):
    """A tiny dataset cache: the canonical face drifting over noise; the held-out part is one clip."""
    rng = np.random.default_rng(0)
    n = n_train + n_val
    imgs = rng.integers(0, 255, (n, 256, 256, 3), dtype=np.uint8)
    pms = np.zeros((n, 256, 256, 3), np.float16)
    c = layout.canonical - layout.canonical.mean(0)
    for i in range(n):
        pm = np.zeros((256 * 256, 3), np.float32)
        pm[layout.face_ind] = c * 0.6 + np.r_[128 + 3 * np.sin(i / 2), 128 + rng.uniform(-2, 2), 128.0]
        pms[i] = pm.reshape(256, 256, 3)
    (root / "shards").mkdir(parents=True)
    np.savez(root / "shards" / "a.npz", images=imgs, posmaps=pms,
             split=np.array(["train"] * n_train + ["val"] * n_val), yaw=np.zeros(n, np.float32),
             kind=np.array(["frame"] * n), identity=np.array(["t"] * n_train + ["v"] * n_val),
             frame=np.r_[np.arange(n_train), np.arange(n_val)].astype(np.int64))
    (root / "meta.json").write_text(json.dumps({"crop_size": 256, "context": 1.25}))
    return root


def _pretrained(run, seed: int = 0):
    """A 'pretrain' run folder holding a tiny random generator, as pretrain would save it."""
    torch.manual_seed(seed)
    gen_cfg = {"arch": "light", "input_size": S, "width": 0.5}
    spec = ModelSpec(arch="light", input_size=S)
    run.mkdir(parents=True)
    from dataclasses import asdict

    torch.save({"model_name": "streamcap-generator", "cfg": gen_cfg, "spec": asdict(spec),
                "state_dict": build_generator(**gen_cfg).state_dict(), "step": 0}, run / "last.pt")
    return run


def test_cycle_command_trains_checkpoints_resumes_and_loads_for_export(tmp_path, layout):
    from trainer.export import load_checkpoint
    from trainer.train import main

    cache = _cache(tmp_path / "cache", layout)
    init = _pretrained(tmp_path / "pre")
    out = tmp_path / "cyc"
    args = ["cycle", "--init", str(init), "--data", str(cache), "--out", str(out), "--steps", "2", "--batch", "4",
            "--workers", "0", "--threads", "1", "--val-every", "2", "--ckpt-every", "1", "--log-every", "1",
            "--d1-width", "8", "--d1-size", "64", "--d2-hidden", "32", "--mesh-stride", "4", "--w-ssim", "0.5"]
    assert main(args) == 0
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["step"] == 2 and ck["stage"] == "cycle" and ck["d1"] is not None
    assert ck["cycle_cfg"]["w_ssim"] == 0.5 and ck["cycle_cfg"]["mesh_stride"] == 4
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["g_total"]) for r in recs if "g_total" in r)
    assert any("val_nme2d" in r for r in recs)
    main(args + ["--steps", "3", "--resume"])  # the later --steps wins
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 3
    model, ck = load_checkpoint(out / "last.pt")  # the exporter rebuilds it from the checkpoint alone
    assert model(torch.rand(1, 3, S, S)).shape == (1, 3, 256, 256)


def test_supervised_preset_skips_batches_without_labels(tmp_path, layout):
    """Preset 'pretrain' with every sample unlabelled has nothing to learn from: the run goes on."""
    from trainer.train import main

    cache = _cache(tmp_path / "cache", layout)
    init = _pretrained(tmp_path / "pre")
    out = tmp_path / "sup"
    args = ["cycle", "--init", str(init), "--data", str(cache), "--out", str(out), "--preset", "pretrain",
            "--unlabelled-frac", "1.0", "--steps", "2", "--batch", "2", "--workers", "0", "--threads", "1",
            "--val-every", "2", "--log-every", "1"]
    assert main(args) == 0
    assert torch.load(out / "last.pt", weights_only=False)["step"] == 2


def test_ablation_writes_a_table(tmp_path, layout):
    from trainer.ablation import gaussian_smooth, main

    # the jitter measure: a smooth track has (almost) no high-frequency part, an alternating one does
    t = np.linspace(0, 1, 30)[:, None]
    assert np.abs(t - gaussian_smooth(t, 2.0))[6:-6].max() < 1e-9  # away from the ends
    alt = np.where(np.arange(30) % 2, 1.0, -1.0)[:, None]
    assert np.abs(alt - gaussian_smooth(alt, 2.0))[5:-5].mean() > 0.9

    cache = _cache(tmp_path / "cache", layout)
    a, b = _pretrained(tmp_path / "a", 0), _pretrained(tmp_path / "b", 1)
    md, js = tmp_path / "ablation.md", tmp_path / "ablation.json"
    assert main([f"pretrain={a}", f"render={b}", "--data", str(cache), "-o", str(md), "--json", str(js),
                 "--batch", "5", "--profiles", str(cache / "shards")]) == 0
    text = md.read_text()
    assert "| pretrain |" in text and "| render |" in text and "profiled 2D" in text
    rows = json.loads(js.read_text())
    assert rows["render"]["val_n"] == 10 and np.isfinite(rows["render"]["jitter_px"])
    assert np.isfinite(rows["pretrain"]["photo_l1"])
    # as a 'profiled' set the held-out samples (all yaw 0) fall in one bin: the same NME again
    assert rows["render"]["prof_nme2d"] == pytest.approx(rows["render"]["val_nme2d"], rel=1e-5)
    assert rows["render"]["prof_nme2d_[0,30)"] == pytest.approx(rows["render"]["val_nme2d"], rel=1e-5)

    # two seeds per column, paired against the baseline: swapping the runs gives a zero mean
    # difference with a spread, and exactly one of the two seeds lower on every metric it moves
    assert main([f"pretrain={a},{b}", f"render={b},{a}", "--baseline", "pretrain", "--data", str(cache),
                 "-o", str(md), "--json", str(js), "--batch", "5"]) == 0
    rows = json.loads(js.read_text())
    assert rows["render"]["n_seeds"] == 2 and len(rows["render"]["seeds"]) == 2
    d = rows["_paired_minus_pretrain"]["render"]
    assert abs(d["val_nme3d"]) < 1e-9 and d["val_nme3d_sd"] > 0 and d["val_nme3d_lower"] == 1
    assert "Paired by seed" in md.read_text() and " ± " in md.read_text()
    # measurements are kept beside each checkpoint and reused only while the file is unchanged
    memo = a / "last.pt.ablation.json"
    saved = json.loads(memo.read_text())
    saved["result"]["val_nme2d"] = 123.0
    memo.write_text(json.dumps(saved))
    assert main([f"p={a}", "--data", str(cache), "-o", str(md), "--json", str(js), "--batch", "5"]) == 0
    assert json.loads(js.read_text())["p"]["val_nme2d"] == 123.0
    torch.save(torch.load(a / "last.pt", weights_only=False), a / "last.pt")  # a new checkpoint file
    assert main([f"p={a}", "--data", str(cache), "-o", str(md), "--json", str(js), "--batch", "5"]) == 0
    assert json.loads(js.read_text())["p"]["val_nme2d"] < 1


def _average_worker(rank: int, world: int, port: int, q) -> None:
    import os

    from trainer.runloop import average_gradients

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    a.grad = torch.full((3,), float(rank + 1))  # rank 0: 1, rank 1: 2 -> mean 1.5
    if rank == 0:
        b.grad = torch.ones(2, 2) * 4  # rank 1 has none: counts as zeros -> mean 2
    average_gradients([a, b], world)
    q.put((rank, a.grad.tolist(), b.grad.tolist()))
    torch.distributed.destroy_process_group()


def test_average_gradients_across_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_average_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    for _, a, b in got:
        assert a == [1.5] * 3 and b == [[2.0, 2.0], [2.0, 2.0]]


def test_cycle_command_runs_data_parallel_under_torchrun(tmp_path, layout):
    """Two CPU ranks (gloo): the run finishes, rank 0 alone writes, the checkpoint says world 2."""
    import subprocess
    import sys
    from pathlib import Path

    cache = _cache(tmp_path / "cache", layout)
    init = _pretrained(tmp_path / "pre")
    out = tmp_path / "ddp"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(root / "trainer" / "train.py"), "cycle", "--init", str(init), "--data", str(cache), "--out", str(out),
           "--steps", "2", "--batch", "2", "--workers", "0", "--threads", "1", "--val-every", "2", "--log-every", "1",
           "--d1-width", "8", "--d1-size", "64", "--d2-hidden", "32", "--mesh-stride", "4", "--image-every", "1"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    ck = torch.load(out / "last.pt", weights_only=False)
    assert ck["step"] == 2 and ck["world"] == 2
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "g_total" in r] == [1, 2]  # one writer, not two
    assert sum("val_nme2d" in r for r in recs) == 1
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(str(out / "tb"), size_guidance={"images": 0})
    acc.Reload()
    pics = acc.Images("samples/crop|mesh|rerender|novel_view")  # --image-every 1: one grid per step
    assert [p.step for p in pics] == [1, 2] and (pics[0].width, pics[0].height) == (4 * S, 2 * S)


class _FlatFace(torch.nn.Module):
    """A 'generator' whose UV map is a flat sheet over the middle 80% of the crop, facing the camera."""

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        t = (0.1 + 0.8 * torch.linspace(0, 1, 256)) * (size - 1) / scale
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        self.register_buffer("uv", torch.stack([xx, yy, torch.zeros_like(xx)])[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.uv.expand(x.shape[0], -1, -1, -1)


def test_preview_shows_crop_mesh_rerender_and_novel_view(layout):
    from trainer.preview import preview

    cfg = replace(preset("render"), input_size=S, output_scale=1.1, mesh_stride=4, cycle_yaw_deg=60,
                  cycle_pitch_deg=40)
    models = CycleModels(_FlatFace(S, S * 1.1), None, None, UVTables(layout, 4))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")
    x = torch.stack([xx, yy, 0.5 * (xx + yy)])[None].repeat(3, 1, 1, 1)  # smooth ramps
    rng = torch.get_rng_state()
    img = preview(x, models, cfg, mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0), n=2)
    assert torch.equal(rng, torch.get_rng_state())  # training's random stream is untouched
    assert img.shape == (2 * S, 4 * S, 3) and img.dtype == np.uint8
    crop, overlay, rerender, novel = (img[:S, k * S:(k + 1) * S].astype(int) for k in range(4))
    assert np.abs(crop - np.round(x[0].permute(1, 2, 0).numpy() * 255)).max() <= 1
    assert (crop != overlay).any(axis=-1).sum() > 68  # the mesh and the landmarks are drawn
    inner = (slice(24, 40), slice(24, 40))  # the face region of the sheet: the re-render is the crop again
    assert np.abs(rerender[inner] - crop[inner]).mean() < 3
    assert np.abs(rerender[-4:, -4:] - crop[-4:, -4:]).mean() > 100  # outside it (a bright corner): dimmed
    assert np.abs(novel - crop).mean() > 0.5  # the turned view moved something
