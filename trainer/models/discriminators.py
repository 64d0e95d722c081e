"""Discriminators of the cycle-GAN stage and their least-squares GAN losses.

* ``UVDiscriminator`` (D1): a ResNet-18 (stem, 4 stages of 2 basic blocks, global pooling, one
  linear score) that tells labelled UV position maps from generated ones. Off-face UV pixels are
  zeroed by the caller (labels are zero there, predictions are not, and D1 must not win on that).
  With ``condition=True`` it also sees the input crop resized to the UV size, so it judges
  whether the map fits *this* face, not only whether it looks like a face.
* ``LandmarkDiscriminator`` (D2): an MLP on a 68-point set normalised for translation and scale,
  so it judges the plausibility of the landmark *shape* (mouth, eyes, jaw line) and ignores where
  the face sits in the crop.

Least-squares GAN (Mao et al. 2017): D is regressed to 1 on real and 0 on fake, G pushes D(fake)
toward 1. It gives non-saturating gradients without a sigmoid, which suits the small weights
the adversarial terms get next to the supervised loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, identity or 1x1-projected shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(h)) + self.short(x), inplace=True)


class UVDiscriminator(nn.Module):
    """D1: ResNet-18 scoring (B, 3, U, U) UV maps [+ (B, 3, S, S) crops]. Returns (B,) scores.

    ``width`` is the first stage's channel count (64 in the original ResNet-18; smaller values
    make a cheaper critic, the tests use 8). ``in_size`` resizes the inputs first (0: as given).
    """

    def __init__(self, width: int = 32, condition: bool = True, in_size: int = 0) -> None:
        super().__init__()
        self.condition = condition
        self.in_size = in_size
        cin = 6 if condition else 3
        c = [width, width * 2, width * 4, width * 8]
        self.stem = nn.Sequential(nn.Conv2d(cin, c[0], 7, 2, 3, bias=False), nn.BatchNorm2d(c[0]),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, prev = [], c[0]
        for i, ch in enumerate(c):
            stages.append(nn.Sequential(BasicBlock(prev, ch, 1 if i == 0 else 2), BasicBlock(ch, ch, 1)))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(prev, 1)

    def forward(self, uv: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        size = self.in_size or uv.shape[-1]
        x = uv if uv.shape[-1] == size else F.interpolate(uv, size=(size, size), mode="bilinear", align_corners=False)
        if self.condition:
            if image is None:
                raise ValueError("a conditional D1 needs the input crop")
            img = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
            x = torch.cat([x, img], 1)
        h = self.stages(self.stem(x))
        return self.fc(h.mean((2, 3))).squeeze(1)


def normalize_landmarks(lmk: torch.Tensor) -> torch.Tensor:
    """(B, 68, 3) -> (B, 68, 3) with zero mean and unit RMS radius in x, y (z scaled alike), so
    D2 sees shape only."""
    centred = lmk - lmk.mean(1, keepdim=True)
    radius = centred[..., :2].pow(2).sum(-1).mean(1).clamp_min(1e-12).sqrt()
    return centred / radius[:, None, None]


class LandmarkDiscriminator(nn.Module):
    """D2: MLP on normalised (B, 68, 3) landmark sets -> (B,) scores."""

    def __init__(self, n_points: int = 68, hidden: int = 256, dims: int = 3) -> None:
        super().__init__()
        self.dims = dims
        self.net = nn.Sequential(
            nn.Linear(n_points * dims, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden // 2, 1),
        )

    def forward(self, lmk: torch.Tensor) -> torch.Tensor:
        x = normalize_landmarks(lmk)[..., : self.dims]
        return self.net(x.flatten(1)).squeeze(1)


def lsgan_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator side: 0.5 E[(D(real) - 1)^2] + 0.5 E[D(fake)^2]."""
    return 0.5 * ((real - 1.0).pow(2).mean() + fake.pow(2).mean())


def lsgan_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """Generator side: 0.5 E[(D(G(x)) - 1)^2]."""
    return 0.5 * (fake - 1.0).pow(2).mean()
