"""Generator networks: face crop -> UV position map (N, 3, 256, 256) in [0, 1].

Shared by the trainer and the runtime's torch backend (the ONNX Runtime and TensorRT backends
never import torch). Three architectures with one interface:

* ``prnet``: the network of Feng et al. 2018: a 256x256 input, a stride-2 residual encoder
  256 -> 8 (16..512 channels, 10 residual blocks) and 17 transposed convolutions back to a
  256x256x3 map, BN + ReLU throughout and a sigmoid output.
* ``mobile``: the default since the 3DDFA_V2-labelled corpus: a 128-160 px input, a
  MobileNetV2-style inverted-residual encoder and a light separable decoder back to 1/2 of the
  input, bilinearly resized to the 256x256 layout.
* ``light``: for real time on CPUs: a 128x128 input, depthwise-separable residual encoder to
  4x4, a U-Net style decoder with skips back to 128x128, a sigmoid, and a bilinear x2 to the
  256x256 UV layout (the map is smooth, so the upsampling costs no accuracy that matters).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GeneratorConfig:
    arch: str = "light"
    input_size: int = 128
    uv_size: int = 256
    width: float = 1.0  # channel multiplier (light only)

    def to_dict(self) -> dict:
        return asdict(self)


def _bn_relu(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class SepConv(nn.Module):
    """Depthwise 3x3 (stride s) + pointwise 1x1, each with BN; ReLU after both."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), *_bn_relu(cin),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x))


class SepRes(nn.Module):
    """Two separable convolutions with an identity shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = SepConv(c, c)
        self.b = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.b(self.a(x)))


class LightGenerator(nn.Module):
    """128x128 crop -> 256x256 UV position map, ~0.1 GFLOPs."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        w = cfg.width
        c = [max(8, int(round(v * w))) for v in (16, 24, 48, 96, 160)]
        self.uv_size = cfg.uv_size
        self.stem = nn.Sequential(nn.Conv2d(3, c[0], 3, 2, 1, bias=False), *_bn_relu(c[0]))  # /2
        self.enc = nn.ModuleList([
            nn.Sequential(SepConv(c[0], c[1], 2), SepRes(c[1])),  # /4
            nn.Sequential(SepConv(c[1], c[2], 2), SepRes(c[2]), SepRes(c[2])),  # /8
            nn.Sequential(SepConv(c[2], c[3], 2), SepRes(c[3]), SepRes(c[3])),  # /16
            nn.Sequential(SepConv(c[3], c[4], 2), SepRes(c[4]), SepRes(c[4])),  # /32
        ])
        self.dec = nn.ModuleList([
            SepConv(c[4] + c[3], c[3]),
            SepConv(c[3] + c[2], c[2]),
            SepConv(c[2] + c[1], c[1]),
            SepConv(c[1] + c[0], c[0]),
        ])
        self.head = nn.Sequential(SepConv(c[0], c[0]), nn.Conv2d(c[0], 3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.enc:
            skips.append(stage(skips[-1]))
        y = skips.pop()
        for block in self.dec:
            s = skips.pop()
            y = block(torch.cat([F.interpolate(y, size=s.shape[-2:], mode="nearest"), s], 1))
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        y = torch.sigmoid(self.head(y))
        return F.interpolate(y, size=(self.uv_size, self.uv_size), mode="bilinear", align_corners=False)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (t x), 3x3 depthwise (stride s), 1x1 linear project; identity
    shortcut when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class MobileGenerator(nn.Module):
    """128-160 px crop -> 256x256 UV position map: a MobileNetV2-style inverted-residual encoder to
    1/32, a light separable decoder with skips back to 1/2, a sigmoid, and a bilinear resize to
    the UV layout."""

    # (output channels at width 1, blocks, stride of the first) per encoder stage
    STAGES = ((24, 2, 2), (32, 3, 2), (64, 3, 2), (96, 2, 1), (160, 3, 2))

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        w = cfg.width
        ch = lambda v: max(8, int(round(v * w / 8.0)) * 8)  # noqa: E731
        self.uv_size = cfg.uv_size
        c0 = ch(16)
        self.stem = nn.Sequential(nn.Conv2d(3, c0, 3, 2, 1, bias=False), *_bn_relu(c0))  # /2
        stages, cin, skips = [], c0, [c0]
        for cout, n, stride in self.STAGES:
            blocks = [InvertedResidual(cin, ch(cout), stride)]
            blocks += [InvertedResidual(ch(cout), ch(cout)) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = ch(cout)
            skips.append(cin)
        self.enc = nn.ModuleList(stages)
        # decoder: 1/32 -> 1/16 (+ the 96 stage) -> 1/8 -> 1/4 -> 1/2
        self.skip_at = (3, 1, 0)  # encoder stage outputs joined at 1/16, 1/8 and 1/4; the stem at 1/2
        dec_out = (ch(64), ch(32), ch(24), ch(16))
        ins = (skips[5] + skips[4], dec_out[0] + skips[2], dec_out[1] + skips[1], dec_out[2] + skips[0])
        self.dec = nn.ModuleList([SepConv(i, o) for i, o in zip(ins, dec_out)])
        self.head = nn.Sequential(SepConv(dec_out[3], dec_out[3]), nn.Conv2d(dec_out[3], 3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for stage in self.enc:
            feats.append(stage(feats[-1]))
        # feats: 0 stem /2, 1 /4, 2 /8, 3 /16 (64), 4 /16 (96), 5 /32
        y = feats[5]
        for block, s in zip(self.dec, (feats[4], feats[2], feats[1], feats[0])):
            y = block(torch.cat([F.interpolate(y, size=s.shape[-2:], mode="nearest"), s], 1))
        y = torch.sigmoid(self.head(y))
        return F.interpolate(y, size=(self.uv_size, self.uv_size), mode="bilinear", align_corners=False)


class ResBlock(nn.Module):
    """PRNet's residual block: 1x1 -> 4x4 (stride s) -> 1x1 bottleneck with a projected shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cout // 2
        self.short = (nn.Conv2d(cin, cout, 1, stride, bias=False)
                      if stride != 1 or cin != cout else nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, mid, 4, stride, padding=0, bias=False), *_bn_relu(mid),
            nn.Conv2d(mid, cout, 1, bias=False),
        )
        self.stride = stride
        self.post = nn.Sequential(*_bn_relu(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 'same' padding for the 4x4 kernel: TensorFlow pads (1, 2) at stride 1 and (1, 2) at stride 2
        h = self.body[0:3](x)
        h = F.pad(h, (1, 2, 1, 2))
        h = self.body[3:](h)
        return self.post(h + self.short(x))


def _up(cin: int, cout: int, stride: int) -> nn.Sequential:
    conv = nn.ConvTranspose2d(cin, cout, 4, stride, padding=1 if stride == 2 else 0, bias=False)
    return nn.Sequential(conv, *_bn_relu(cout))


class PRNetGenerator(nn.Module):
    """Feng et al. 2018: 256x256x3 -> 256x256x3 UV position map."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.uv_size = cfg.uv_size
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 1, padding=0, bias=False), *_bn_relu(16))
        chans = [(16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1),
                 (128, 256, 2), (256, 256, 1), (256, 512, 2), (512, 512, 1)]
        self.encoder = nn.Sequential(*[ResBlock(a, b, s) for a, b, s in chans])  # 256 -> 8
        spec = [(512, 512, 1), (512, 256, 2), (256, 256, 1), (256, 256, 1), (256, 128, 2), (128, 128, 1),
                (128, 128, 1), (128, 64, 2), (64, 64, 1), (64, 64, 1), (64, 32, 2), (32, 32, 1),
                (32, 16, 2), (16, 16, 1), (16, 3, 1), (3, 3, 1)]
        self.decoder = nn.ModuleList([_up(a, b, s) for a, b, s in spec])  # 16 + final = 17
        self.final = nn.ConvTranspose2d(3, 3, 4, 1, padding=0)

    @staticmethod
    def _same(x: torch.Tensor, layer: nn.Module, stride: int) -> torch.Tensor:
        y = layer(x)
        if stride == 1:  # a 4x4 transposed conv at stride 1 grows by 3: crop back to 'same'
            y = y[..., 1:-2, 1:-2]
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(F.pad(x, (1, 2, 1, 2)))
        x = self.encoder(x)
        for layer in self.decoder:
            stride = layer[0].stride[0]
            x = self._same(x, layer, stride)
        x = self.final(x)[..., 1:-2, 1:-2]
        return torch.sigmoid(x)


ARCHS = {"light": LightGenerator, "prnet": PRNetGenerator, "mobile": MobileGenerator}
DEFAULT_INPUT = {"light": 128, "prnet": 256, "mobile": 160}


def build_generator(arch: str = "light", **cfg: object) -> nn.Module:
    """Build a generator by name; ``cfg`` fills GeneratorConfig (input size defaults per arch)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown generator arch {arch!r} (choose from {', '.join(ARCHS)})")
    cfg = {"input_size": DEFAULT_INPUT[arch], **cfg, "arch": arch}
    cfg = {k: v for k, v in cfg.items() if k in GeneratorConfig.__dataclass_fields__}
    return ARCHS[arch](GeneratorConfig(**cfg))  # type: ignore[arg-type]
