"""Pictures of what the cycle stage sees, for TensorBoard: a GAN's losses can look fine while
its geometry drifts, so every few hundred steps the run shows, per sample, the crop, the
predicted mesh and landmarks over it, the crop re-rendered through the predicted geometry, and
the turned novel view x' that the cycle feeds back into the generator.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.cycle import CycleConfig, CycleModels, landmarks, mesh_vertices, random_rotation, rotate_points
from trainer.render import render, sample_image


def _to_uint8(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(B, 3, H, W) normalised crops -> (B, H, W, 3) uint8 (the generator's input convention)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * s + m).clamp(0, 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _dots(img: np.ndarray, xy: np.ndarray, colour: tuple[int, int, int], radius: int) -> None:
    """Paint square dots of side 2*radius+1 at pixel positions ``xy`` (N, 2), clipped to ``img``."""
    h, w = img.shape[:2]
    c = np.round(xy).astype(np.int64)
    c = c[(c[:, 0] >= 0) & (c[:, 0] < w) & (c[:, 1] >= 0) & (c[:, 1] < h)]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            img[np.clip(c[:, 1] + dy, 0, h - 1), np.clip(c[:, 0] + dx, 0, w - 1)] = colour


@torch.no_grad()
def preview(image: torch.Tensor, models: CycleModels, cfg: CycleConfig, mean: tuple[float, ...],
            std: tuple[float, ...], n: int = 4) -> np.ndarray:
    """(n*S, 4*S, 3) uint8 grid; one row per sample: crop | mesh + landmarks | re-render | novel view."""
    with torch.random.fork_rng(devices=[image.device] if image.is_cuda else []):  # leave training's RNG alone
        return _preview(image[:n], models, cfg, mean, std)


def _preview(x: torch.Tensor, models: CycleModels, cfg: CycleConfig, mean: tuple[float, ...],
             std: tuple[float, ...]) -> np.ndarray:
    gen, tab = models.generator, models.tables
    was_training = gen.training
    gen.eval()
    b, _, s, _ = x.shape
    scale = float(cfg.input_size) * cfg.output_scale
    uv = gen(x).float()
    verts = mesh_vertices(uv, tab, scale)
    tex = sample_image(x, verts[..., :2])
    r1 = render(verts, tab.tris, tex, (s, s), max_tri_pixels=cfg.max_tri_pixels)
    rerender = r1.visible * r1.image + (1 - r1.visible) * x * 0.25  # dim what the mesh does not cover
    rot = random_rotation(b, cfg.cycle_yaw_deg, cfg.cycle_pitch_deg, x.device)
    turned = rotate_points(verts, rot, verts.mean(1, keepdim=True))
    novel = render(turned, tab.tris, tex, (s, s), background=x, max_tri_pixels=cfg.max_tri_pixels).image
    gen.train(was_training)

    crops = _to_uint8(x, mean, std)
    overlay = crops.copy()
    pts, lmk = verts[..., :2].cpu().numpy(), landmarks(uv, tab.kpt)[..., :2].cpu().numpy() * scale
    for i in range(b):
        _dots(overlay[i], pts[i, ::4], (0, 200, 255), 0)
        _dots(overlay[i], lmk[i], (255, 60, 60), 1)
    panels = [crops, overlay, _to_uint8(rerender, mean, std), _to_uint8(novel, mean, std)]
    return np.concatenate([np.concatenate([p[i] for p in panels], 1) for i in range(b)], 0)
