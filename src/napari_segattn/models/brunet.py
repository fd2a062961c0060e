"""BRU-net: U-net with batch normalisation and residual blocks (FU-net paper, Jafari et al. 2019).

Follows the released TensorFlow ``Unet2D`` (MinaJf/FU-net, spec 5.2) layer for layer, which gives
690,315 parameters (689,947 without the residual path). FU-net is the same network trained with
the feedback-weighted loss (spec 5.1); the loss lives in the training package, not here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationModel
from .registry import register_model

__all__ = ["BRUNet", "ResidualUnit"]

# Keras BatchNormalization(momentum=0.9) == torch momentum 0.1; Keras default epsilon 1e-3.
_BN = {"momentum": 0.1, "eps": 1e-3}


def _tf_init(conv: nn.Module, k: int, features: int) -> None:
    """TruncatedNormal(std = sqrt(2 / (k^2 f))), cut at 2 std as TensorFlow does; bias zero."""
    std = math.sqrt(2.0 / (k * k * features))
    nn.init.trunc_normal_(conv.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(conv.bias)


class ResidualUnit(nn.Module):
    """x -> x' (channels zero-padded or truncated to c_out), y + x' + b (b per channel, init 0)."""

    def __init__(self, out_c: int) -> None:
        super().__init__()
        self.out_c = out_c
        self.bias = nn.Parameter(torch.zeros(out_c))

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c < self.out_c:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_c - c))
        elif c > self.out_c:
            x = x[:, : self.out_c]
        return y + x + self.bias[:, None, None]


class _ConvLayer(nn.Module):
    """conv3x3 -> dropout -> BN -> ReLU -> conv3x3 -> dropout -> BN -> (+ residual) -> ReLU."""

    def __init__(self, in_c: int, out_c: int, features: int, dropout: float, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_c, out_c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_c, **_BN)
        self.conv2 = nn.Conv2d(out_c, out_c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_c, **_BN)
        self.drop = nn.Dropout(dropout)
        self.residual = ResidualUnit(out_c) if residual else None
        _tf_init(self.conv1, 3, features)
        _tf_init(self.conv2, 3, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.drop(self.conv1(x))))
        y = self.bn2(self.drop(self.conv2(y)))
        if self.residual is not None:
            y = self.residual(y, x)
        return F.relu(y)


class _UpLayer(nn.Module):
    """ConvTranspose 3x3 s2 'SAME' -> BN -> ReLU, concat [skip, up], then a conv layer."""

    def __init__(self, in_c: int, skip_c: int, features: int, dropout: float, residual: bool) -> None:
        super().__init__()
        up_c, out_c = features // 2, features // 4
        # padding=0 and cropping the last row/column reproduces TensorFlow's 'SAME' alignment for
        # k=3, s=2 (all padding after); torch's padding=1/output_padding=1 would shift by one pixel.
        self.up = nn.ConvTranspose2d(in_c, up_c, 3, stride=2, padding=0)
        self.bn = nn.BatchNorm2d(up_c, **_BN)
        self.conv = _ConvLayer(skip_c + up_c, out_c, features, dropout, residual)
        _tf_init(self.up, 3, features)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        up = self.up(x)[..., : 2 * h, : 2 * w]
        up = F.relu(self.bn(up))
        # residual uses the concatenated tensor; its first out_c channels are the skip features
        return self.conv(torch.cat([skip, up], dim=1))


@register_model(
    "brunet",
    summary="BRU-net (FU-net backbone): U-net with BN, residual units and dropout, 8-128 channels",
    paper="Jafari et al., FU-net: Multi-class Image Segmentation Using Feedback Weighted U-net (ICIG 2019)",
    defaults={"in_channels": 1, "out_channels": 3},
)
class BRUNet(SegmentationModel):
    """Released ``Unet2D`` (n_layer=5, features_root=16, keep_prob=0.85).

    Options (released behaviour is the default): ``residual=False`` gives the paper's plain
    "U-net" (BN kept, only the residual path removed); ``head_relu=False`` drops the ReLU the
    released code applies to the output logits; ``dropout`` is the drop rate (0.15 released,
    the paper text says 0.25).
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        features_root: int = 16,
        dropout: float = 0.15,
        residual: bool = True,
        head_relu: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.head_relu = head_relu
        # The stem halves features_root: the full-resolution width is 8, not 16 (spec 5.2).
        stem_c = features_root // 2
        self.stem = nn.Conv2d(in_channels, stem_c, 7, padding=3)
        self.stem_drop = nn.Dropout(dropout)
        _tf_init(self.stem, 7, features_root)
        widths = [stem_c * 2**level for level in range(5)]
        self.down = nn.ModuleList(
            _ConvLayer(stem_c if level == 0 else widths[level - 1], widths[level],
                       features_root * 2**level, dropout, residual)
            for level in range(5)
        )
        # every up level's input has widths[level + 1] channels (level 4 output or the previous up level)
        self.up = nn.ModuleList(
            _UpLayer(widths[level + 1], widths[level],
                     features_root * 2 ** (level + 1), dropout, residual)
            for level in range(3, -1, -1)
        )
        self.head = nn.Conv2d(stem_c, out_channels, 1)
        _tf_init(self.head, 1, features_root)

    def _forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        x = self.stem_drop(self.stem(x))  # no BN, no activation after the stem (released)
        skips = []
        for level, layer in enumerate(self.down):
            x = layer(x)
            if level < 4:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for layer, skip in zip(self.up, reversed(skips)):
            x = layer(x, skip)
        y = self.head(x)
        return F.relu(y) if self.head_relu else y
