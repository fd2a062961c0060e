"""Generic convolution blocks: bias-free conv -> InstanceNorm2d(affine) -> ReLU.

The convs carry no bias because the InstanceNorm right after them removes any constant
offset per channel (a bias there would be a dead parameter).
"""

from __future__ import annotations

import torch.nn as nn

__all__ = ["conv_in_relu", "DoubleConv"]


def conv_in_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """One "same"-padded conv (bias-free) -> InstanceNorm2d(affine=True) -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            groups=groups,
            bias=False,
        ),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.ReLU(inplace=True),
    )


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-IN-ReLU units; the first one carries the stride (no max-pooling).

    ``dilation`` dilates both convs (the D6/D9-Unet ablation of Paying Attention to Mistakes).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            conv_in_relu(in_channels, out_channels, stride=stride, dilation=dilation),
            conv_in_relu(out_channels, out_channels, dilation=dilation),
        )
