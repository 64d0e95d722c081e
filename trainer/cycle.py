"""The cycle-GAN stage: one generator step and one discriminator step, as pure functions.

The generator G1 (``streamcap.engine.nets``) maps a crop x to a UV position map P = G1(x) in
[0, 1] (crop pixels / (S * output_scale)). On top of the supervised loss of the pretrain stage,
this stage adds critics and self-supervision that also work on frames without labels:

* **D1** judges UV maps (masked to the face, optionally paired with the crop): real = labels.
* **Landmark path**: the 68 3D landmarks read at the layout's keypoint UV pixels are compared
  with the labels' and judged by **D2** (shape only).
* **Render cycle**: the crop is sampled into a per-vertex texture at the predicted x, y, the
  mesh is rendered back to the image plane with a z-buffer (``trainer/render.py``) and compared
  photometrically (L1 + SSIM) with the crop inside the visible face mask.
* **Cycle consistency**: the textured mesh is turned by a small random rotation R about its
  centroid and re-rendered over the crop (a novel view x'); G1(x') must give R applied to P (the
  whole UV map and its landmarks), and the texture read from x' at G1(x')'s x, y, rendered at
  R^-1 G1(x'), must reproduce x. With ``cycle_yaw_deg = cycle_pitch_deg = 0`` this is the plain
  image -> UV -> re-rendered image -> UV cycle.

Labelled and unlabelled frames share a batch (``batch["labelled"]``); unlabelled ones enter only
through the adversarial and cycle terms.

Ablation presets (``PRESETS``): ``pretrain`` (supervised only), ``d1`` (+ D1), ``landmark``
(+ landmark loss, D2 and the landmark cycle), ``render`` (+ photometric and UV/photo cycles).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from streamcap.geometry.layout import UVLayout, grid_triangles
from trainer.losses import weight_mask_tensor, weighted_position_loss
from trainer.models.discriminators import lsgan_d_loss, lsgan_g_loss
from trainer.render import render, sample_image, ssim


@dataclass
class CycleConfig:
    """Every loss weight of the stage (``w_*``) and the knobs of its cycles.

    A weight of 0 switches its term off and skips the work it needs (no render when all render
    terms are 0, no D1/D2 forward when their adversarial weights are 0). Starting values are set
    so that, on a pretrained G1, each enabled term is within an order of magnitude of ``sup``.
    """

    input_size: int = 128  # S: the generator's crop side (pixels = P * S * output_scale)
    output_scale: float = 1.1
    w_sup: float = 1.0  # weighted-mask position loss on labelled samples
    w_adv_uv: float = 0.002  # G side of the LSGAN with D1
    w_lmk: float = 1.0  # 3D landmark distance to the labels
    w_adv_lmk: float = 0.002  # G side of the LSGAN with D2
    w_photo: float = 0.2  # L1 between re-render and crop in the visible mask
    w_ssim: float = 0.2  # (1 - SSIM) / 2 between re-render and crop in the visible mask
    w_cycle: float = 0.5  # G1(novel view) vs rotated first UV map (weighted mask)
    w_cycle_lmk: float = 0.5  # the same on the 68 landmarks
    w_cycle_photo: float = 0.2  # back-rendered texture of the novel view vs the crop
    w_d1: float = 1.0  # D1's own LSGAN loss (discriminator step)
    w_d2: float = 1.0  # D2's own LSGAN loss (discriminator step)
    d1_condition: bool = True  # D1 also sees the crop
    mesh_stride: int = 2  # render every n-th UV row/column (256 -> 128 grid at 2)
    cycle_yaw_deg: float = 20.0  # novel view: yaw uniform in +-this
    cycle_pitch_deg: float = 8.0  # and pitch uniform in +-this
    max_tri_pixels: int = 1024  # render guard: skip triangles with larger boxes (exploded maps)
    visibility_tol: float = 2.0  # px: a vertex within this of the z-buffer is visible in the crop
    ssim_window: int = 7
    detach_cycle_target: bool = True  # the first map is the cycle's target, not pulled toward x'
    # G1's input gradient on x' back into the first map is large and noisy (measured ~1000x the
    # direct terms on a fresh net); by default the cycle trains G1 on x' and leaves P to the rest
    detach_novel_view: bool = True
    amp: bool = False  # bf16 autocast of the networks (CUDA only); rendering stays fp32


PRESETS: dict[str, dict[str, float]] = {
    "pretrain": {"w_adv_uv": 0.0, "w_lmk": 0.0, "w_adv_lmk": 0.0, "w_photo": 0.0, "w_ssim": 0.0,
                 "w_cycle": 0.0, "w_cycle_lmk": 0.0, "w_cycle_photo": 0.0},
    "d1": {"w_lmk": 0.0, "w_adv_lmk": 0.0, "w_photo": 0.0, "w_ssim": 0.0, "w_cycle": 0.0,
           "w_cycle_lmk": 0.0, "w_cycle_photo": 0.0},
    "landmark": {"w_photo": 0.0, "w_ssim": 0.0, "w_cycle": 0.0, "w_cycle_photo": 0.0},
    "render": {},
}


def preset(name: str, cfg: CycleConfig | None = None) -> CycleConfig:
    """``cfg`` (default CycleConfig()) with the terms outside ablation column ``name`` switched off."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
    return replace(cfg or CycleConfig(), **PRESETS[name])


class UVTables(nn.Module):
    """Layout-derived constants on the right device: loss weights, face mask, landmark pixels and
    a (possibly strided) render mesh over the UV grid.

    Buffers: ``weight`` (1, 1, U, U) mean 1 on the face; ``face`` (1, 1, U, U) 0/1; ``kpt`` (68,)
    flat UV indices; ``mesh_idx`` (V',) flat UV indices of the render mesh's vertices; ``tris``
    (T', 3) into ``mesh_idx``.
    """

    def __init__(self, layout: UVLayout, mesh_stride: int = 2) -> None:
        super().__init__()
        u = layout.size
        face = layout.face_mask
        self.register_buffer("weight", weight_mask_tensor(layout.weight_mask))
        self.register_buffer("face", torch.as_tensor(face, dtype=torch.float32)[None, None])
        self.register_buffer("kpt", torch.as_tensor(layout.kpt_flat, dtype=torch.long))
        s = max(1, int(mesh_stride))
        sub = face[::s, ::s]
        rows, cols = np.nonzero(sub)  # row-major, the order grid_triangles indexes
        self.register_buffer("mesh_idx", torch.as_tensor(rows * s * u + cols * s, dtype=torch.long))
        self.register_buffer("tris", torch.as_tensor(grid_triangles(sub), dtype=torch.long))
        self.size = u


@dataclass
class CycleModels:
    """What one step needs: G1, the critics (None when their terms are off) and the tables."""

    generator: nn.Module
    d1: nn.Module | None
    d2: nn.Module | None
    tables: UVTables


@contextlib.contextmanager
def frozen(*nets: nn.Module | None) -> Iterator[None]:
    """Critics take no parameter gradients during the generator step (saves their backward)."""
    saved = [(p, p.requires_grad) for n in nets if n is not None for p in n.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _autocast(cfg: CycleConfig, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


def landmarks(uv: torch.Tensor, kpt: torch.Tensor) -> torch.Tensor:
    """(B, 3, U, U) maps -> (B, 68, 3) landmarks at the keypoint UV pixels."""
    return uv.flatten(2)[:, :, kpt].transpose(1, 2)


def mesh_vertices(uv: torch.Tensor, tables: UVTables, scale: float) -> torch.Tensor:
    """(B, 3, U, U) normalised maps -> (B, V', 3) render-mesh vertices in crop pixels."""
    return uv.flatten(2)[:, :, tables.mesh_idx].transpose(1, 2) * scale


def random_rotation(n: int, yaw_deg: float, pitch_deg: float, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n, 3, 3) rotations Ry(yaw) @ Rx(pitch) in image axes, angles uniform in +-limits."""
    yaw = (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * math.radians(yaw_deg)
    pitch = (torch.rand(n, device=device, dtype=dtype) * 2 - 1) * math.radians(pitch_deg)
    cy, sy, cp, sp = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin()
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).reshape(n, 3, 3)
    rx = torch.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], 1).reshape(n, 3, 3)
    return ry @ rx


def rotate_points(pts: torch.Tensor, rot: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """Rotate (B, N, 3) points about (B, 1, 3) centres by (B, 3, 3) rotations."""
    return (pts - centre) @ rot.transpose(1, 2) + centre


def _rotate_map(uv: torch.Tensor, rot: torch.Tensor, centre: torch.Tensor, scale: float) -> torch.Tensor:
    """The whole (B, 3, U, U) normalised map rotated in crop pixels, back to normalised units."""
    b, _, h, w = uv.shape
    pts = uv.flatten(2).transpose(1, 2) * scale
    return (rotate_points(pts, rot, centre) / scale).transpose(1, 2).reshape(b, 3, h, w)


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``err`` (B, C, H, W) over pixels where ``mask`` (B, 1, H, W) is 1 (0 if empty)."""
    m = mask.expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def _vertex_visibility(verts: torch.Tensor, depth: torch.Tensor, covered: torch.Tensor, tol: float) -> torch.Tensor:
    """(B, V, 1) 1 where a vertex is the front surface at its own pixel (its colour in the crop
    is its own), from the rendered depth image (B, 1, H, W). No gradient."""
    with torch.no_grad():
        b, _, h, w = depth.shape
        x = verts[..., 0].round().long()
        y = verts[..., 1].round().long()
        inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
        xi, yi = x.clamp(0, w - 1), y.clamp(0, h - 1)
        bi = torch.arange(b, device=verts.device)[:, None].expand_as(xi)
        zbuf = depth[bi, 0, yi, xi]
        cov = covered[bi, 0, yi, xi] > 0
        vis = inside & cov & (verts[..., 2] >= zbuf - tol)
    return vis.unsqueeze(-1).to(verts.dtype)


def cycle_step(batch: dict[str, torch.Tensor], models: CycleModels, cfg: CycleConfig,
               keep: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Generator losses of one batch; ``out["total"]`` is what to backpropagate into G1.

    ``batch``: ``image`` (B, 3, S, S) normalised crops in [0, 1], ``target`` (B, 3, U, U) labels
    (ignored where ``labelled`` (B,) bool is False). ``keep``, when given, receives the detached
    generated map (``uv``) and landmarks (``lmk``) for ``discriminator_step``.

    Code names -> symbols. L_P is PRNet's weighted-mask loss (Feng et al. 2018, Eq. 1), the
    adversarial terms are LSGAN's (Mao et al. 2017) and L_cyc follows CycleGAN's naming (Zhu et
    al. 2017). P = G1(x), P~ the label, W the weight mask, K the 68 keypoint UV pixels, T(P) the
    texture read from x at P's x, y, R(.) rendering, Rot a random rotation:

    * ``sup``        L_P     = sum W ||P - P~|| / sum W                    (labelled; PRNet Eq. 1)
    * ``adv_uv``     L_adv^1 = 1/2 (D1(P, x) - 1)^2                        (LSGAN, all samples)
    * ``lmk``        L_lmk   = mean_k ||P[K] - P~[K]||                     (labelled)
    * ``adv_lmk``    L_adv^2 = 1/2 (D2(P[K]) - 1)^2                        (all samples)
    * ``photo``      L_pho   = |R(P, T(P)) - x|_1 over the visible mask M
    * ``ssim``       L_ssim  = (1 - SSIM(R(P, T(P)), x)) / 2 over M
    * ``cycle``      L_cyc   = sum W ||G1(x') - Rot P|| / sum W, x' = R(Rot P, T(P)) over x
    * ``cycle_lmk``  L_cyc^K = mean_k ||G1(x')[K] - (Rot P)[K]||
    * ``cycle_photo`` L_cyc^pho = |R(Rot^-1 G1(x'), T'(G1(x'))) - x|_1 where both views saw the face
    * ``total``      sum of w_<name> * <name>
    """
    gen, tab = models.generator, models.tables
    x = batch["image"]
    dev = x.device
    lab = batch["labelled"].to(dev, torch.bool)
    scale = float(cfg.input_size) * cfg.output_scale
    zero = x.new_zeros(())
    out: dict[str, torch.Tensor] = {}
    with frozen(models.d1, models.d2):
        with _autocast(cfg, dev):
            uv = gen(x)
        uv = uv.float()
        face = tab.face
        lmk = landmarks(uv, tab.kpt)
        if keep is not None:
            keep["uv"], keep["lmk"] = uv.detach(), lmk.detach()
        n_lab = int(lab.sum())
        if n_lab:
            tgt = batch["target"][lab]
            out["sup"] = weighted_position_loss(uv[lab], tgt, tab.weight)
            out["lmk"] = torch.linalg.vector_norm(lmk[lab] - landmarks(tgt, tab.kpt), dim=-1).mean()
        else:
            out["sup"], out["lmk"] = zero, zero
        if cfg.w_adv_uv > 0 and models.d1 is not None:
            with _autocast(cfg, dev):
                score = models.d1(uv * face, x if cfg.d1_condition else None)
            out["adv_uv"] = lsgan_g_loss(score.float())
        if cfg.w_adv_lmk > 0 and models.d2 is not None:
            out["adv_lmk"] = lsgan_g_loss(models.d2(lmk))
        if max(cfg.w_photo, cfg.w_ssim, cfg.w_cycle, cfg.w_cycle_lmk, cfg.w_cycle_photo) > 0:
            out.update(_render_losses(x, uv, models, cfg, scale))
    total = zero
    for name, val in out.items():
        total = total + getattr(cfg, f"w_{name}") * val
    out["total"] = total
    return out


def _render_losses(x: torch.Tensor, uv: torch.Tensor, models: CycleModels, cfg: CycleConfig,
                   scale: float) -> dict[str, torch.Tensor]:
    """The render and cycle terms of ``cycle_step`` (see its docstring)."""
    gen, tab = models.generator, models.tables
    b, _, s, _ = x.shape
    size = (s, s)
    out: dict[str, torch.Tensor] = {}
    verts = mesh_vertices(uv, tab, scale)  # (B, V, 3) crop pixels
    tex = sample_image(x, verts[..., :2])  # (B, V, 3): the crop read at the predicted x, y
    r1 = render(verts, tab.tris, torch.cat([tex, verts[..., 2:]], -1), size, max_tri_pixels=cfg.max_tri_pixels)
    m1 = r1.visible
    rec = r1.image[:, :3]
    out["photo"] = _masked_mean((rec - x).abs(), m1)
    comp = m1 * rec + (1 - m1) * x  # outside the mask SSIM compares x with itself: no loss there
    out["ssim"] = _masked_mean((1 - ssim(comp, x, cfg.ssim_window)) / 2, m1)
    if max(cfg.w_cycle, cfg.w_cycle_lmk, cfg.w_cycle_photo) <= 0:
        return out
    # novel view x': the textured mesh turned about its centroid, rendered over the crop
    vis = _vertex_visibility(verts, r1.image[:, 3:4].detach(), m1, cfg.visibility_tol)
    rot = random_rotation(b, cfg.cycle_yaw_deg, cfg.cycle_pitch_deg, x.device)
    centre = verts.detach().mean(1, keepdim=True)
    r2 = render(rotate_points(verts, rot, centre), tab.tris, torch.cat([tex, vis], -1), size,
                background=torch.cat([x, torch.zeros_like(x[:, :1])], 1), max_tri_pixels=cfg.max_tri_pixels)
    x2 = r2.image[:, :3]
    if cfg.detach_novel_view:
        x2 = x2.detach()
    with _autocast(cfg, x.device):
        uv2 = gen(x2)
    uv2 = uv2.float()
    target = _rotate_map(uv, rot, centre, scale)
    if cfg.detach_cycle_target:
        target = target.detach()
    out["cycle"] = weighted_position_loss(uv2, target, tab.weight)
    out["cycle_lmk"] = torch.linalg.vector_norm(landmarks(uv2, tab.kpt) - landmarks(target, tab.kpt), dim=-1).mean()
    if cfg.w_cycle_photo > 0:
        # read x' at G1(x')'s x, y, turn the mesh back and render it where x was
        verts2 = mesh_vertices(uv2, tab, scale)
        valid_img = r2.image[:, 3:4] * r2.visible
        tex2 = sample_image(torch.cat([x2, valid_img.detach()], 1), verts2[..., :2])
        r3 = render(rotate_points(verts2, rot.transpose(1, 2), centre), tab.tris, tex2, size,
                    max_tri_pixels=cfg.max_tri_pixels)
        m3 = r3.visible * m1 * (r3.image[:, 3:4].detach() > 0.99).to(x.dtype)
        out["cycle_photo"] = _masked_mean((r3.image[:, :3] - x).abs(), m3)
    else:
        out["cycle_photo"] = x.new_zeros(())
    return out


def discriminator_step(batch: dict[str, torch.Tensor], models: CycleModels, cfg: CycleConfig,
                       fake: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """LSGAN losses of D1 and D2; ``out["total"]`` is what to backpropagate into the critics.

    Real samples are the labelled maps and their landmarks; fakes are G1's maps (all samples),
    taken from ``fake`` (``cycle_step``'s ``keep``) or recomputed without gradient.
    Code names: ``d1`` = L_D1 = 1/2 (D1(P~, x) - 1)^2 + 1/2 D1(P, x)^2, ``d2`` = L_D2 alike on
    landmarks; ``d1_real``/``d1_fake`` (and d2) are the mean scores, for monitoring.
    """
    x = batch["image"]
    dev = x.device
    lab = batch["labelled"].to(dev, torch.bool)
    tab = models.tables
    if fake is None:
        with torch.no_grad(), _autocast(cfg, dev):
            uv = models.generator(x).float()
        fake = {"uv": uv, "lmk": landmarks(uv, tab.kpt)}
    out: dict[str, torch.Tensor] = {}
    total = x.new_zeros(())
    if not bool(lab.any()):
        out["total"] = total
        return out
    real = batch["target"][lab]
    if cfg.w_adv_uv > 0 and models.d1 is not None:
        cond = cfg.d1_condition
        with _autocast(cfg, dev):
            s_real = models.d1(real * tab.face, x[lab] if cond else None).float()
            s_fake = models.d1(fake["uv"] * tab.face, x if cond else None).float()
        out["d1"] = lsgan_d_loss(s_real, s_fake)
        out["d1_real"], out["d1_fake"] = s_real.detach().mean(), s_fake.detach().mean()
        total = total + cfg.w_d1 * out["d1"]
    if cfg.w_adv_lmk > 0 and models.d2 is not None:
        s_real = models.d2(landmarks(real, tab.kpt))
        s_fake = models.d2(fake["lmk"])
        out["d2"] = lsgan_d_loss(s_real, s_fake)
        out["d2_real"], out["d2_fake"] = s_real.detach().mean(), s_fake.detach().mean()
        total = total + cfg.w_d2 * out["d2"]
    out["total"] = total
    return out


def config_fields() -> list[tuple[str, type, object]]:
    """(name, type, default) of CycleConfig, for building command-line flags."""
    d = CycleConfig()
    return [(f.name, type(getattr(d, f.name)), getattr(d, f.name)) for f in fields(CycleConfig)]
