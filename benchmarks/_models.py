"""A tiny stride-8 U-Net for the saliency row.

The literal per-window IG loop costs (number of windows) x (one IG run); on 256 x 256 that is
1024 runs of 50 steps, which only fits a CPU benchmark with a very small network. The speed-up
of ``method="fast"`` comes from replacing the window loop by one run, so it does not depend on
the network, but we measure it on this one and extrapolate nothing.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_segattn.models.base import SegmentationModel


class TinyUNet(SegmentationModel):
    """Three poolings (stride 8, the paper's bottleneck footprint), ``width`` channels, random init."""

    stride = 8

    def __init__(self, in_channels: int = 1, out_channels: int = 2, width: int = 4) -> None:
        super().__init__(in_channels, out_channels)
        c = width
        self.enc = nn.ModuleList([nn.Conv2d(in_channels, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1),
                                  nn.Conv2d(c, c, 3, padding=1)])
        self.bottleneck = nn.Conv2d(c, c, 3, padding=1)
        self.dec = nn.ModuleList([nn.Conv2d(2 * c, c, 3, padding=1) for _ in range(3)])
        self.head = nn.Conv2d(c, out_channels, 1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for conv in self.enc:
            x = torch.tanh(conv(x))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = torch.tanh(self.bottleneck(x))
        for conv, s in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = torch.tanh(conv(torch.cat([x, s], 1)))
        return self.head(x)


def tiny_unet(seed: int = 0, **kw) -> TinyUNet:
    torch.manual_seed(seed)
    m = TinyUNet(**kw).eval()
    m.segattn_normalization = None
    return m
