"""Losses of the generator's training.

Pretraining (PRNet, Feng et al. 2018, Eq. 1):  L = sum_{u,v} ||P(u,v) - P~(u,v)|| * W(u,v)
with P the predicted UV position map, P~ the label and W the weight mask (16:4:3:0 for
eyes-nose-mouth : face : forehead-cheeks : neck, from the UV layout's regions).
"""

from __future__ import annotations

import numpy as np
import torch


def weight_mask_tensor(weight_mask: np.ndarray) -> torch.Tensor:
    """(U, U) layout weights -> (1, 1, U, U) tensor normalised to mean 1 over the face, so the
    loss scale does not depend on how many pixels each region has."""
    w = torch.as_tensor(weight_mask, dtype=torch.float32)
    w = w / w[w > 0].mean()
    return w[None, None]


def weighted_position_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_{u,v} ||P - P~|| W / sum W. Shapes (N, 3, U, U), W (1, 1, U, U)."""
    dist = torch.linalg.vector_norm(pred - target, dim=1, keepdim=True)  # (N, 1, U, U)
    return (dist * weight).sum(dim=(1, 2, 3)).mean() / weight.sum()


# 68-point pairs across the inner lips and the eyelids (0-based): their gaps are how far the mouth
# and the eyes are open
OPENING_PAIRS = ((61, 67), (62, 66), (63, 65), (37, 41), (38, 40), (43, 47), (44, 46))


def opening_loss(pred: torch.Tensor, target: torch.Tensor, kpt_flat: torch.Tensor) -> torch.Tensor:
    """Mean L1 error of the image-plane gap vectors between upper and lower inner lip and eyelid
    landmarks. A position loss over 43k pixels barely notices a mouth that stays shut while its
    label opens; this term is about the opening alone (B, 3, H, W maps; kpt_flat: the 68 pixels)."""
    lp = pred.flatten(2)[:, :2, kpt_flat]  # (B, 2, 68)
    lt = target.flatten(2)[:, :2, kpt_flat]
    a = torch.as_tensor([p[0] for p in OPENING_PAIRS], device=pred.device)
    b = torch.as_tensor([p[1] for p in OPENING_PAIRS], device=pred.device)
    gp = lp[:, :, a] - lp[:, :, b]
    gt = lt[:, :, a] - lt[:, :, b]
    return (gp - gt).abs().mean()
