"""Stand-in models for the explain tests (closed-form ones and a tiny random U-Net)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.recorder import ExposesAttention
from napari_segattn.models.registry import _REGISTRY, register_model


class PixelSigmoid(SegmentationModel):
    """logit = 10 * (mean_c x - 0.5) pixel by pixel: IG has a closed form per pixel."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.scale = nn.Parameter(torch.tensor(10.0))

    def _forward(self, x):
        return self.scale * (x.mean(1, keepdim=True) - 0.5)


class MaskShift(SegmentationModel):
    """FANet-like: logit = 10 * (mask + x - 1.2), pixel by pixel."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.dummy = nn.Parameter(torch.zeros(()))

    def _forward(self, x, mask):
        return 10.0 * (mask + x.mean(1, keepdim=True) - 1.2) + self.dummy


class Gate(nn.Module, ExposesAttention):
    attention_kind = "gate"

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, f):
        a = torch.sigmoid(self.conv(f))
        self.expose(a)
        return f * a


class TinyUNet(SegmentationModel):
    """Three poolings (stride 8) like the paper's U-Net, random init; one gate per scale."""

    stride = 8

    def __init__(self, in_channels: int = 1, out_channels: int = 3) -> None:
        super().__init__(in_channels, out_channels)
        c = 6
        self.enc = nn.ModuleList([nn.Conv2d(in_channels, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1),
                                  nn.Conv2d(c, c, 3, padding=1)])
        self.bottleneck = nn.Conv2d(c, c, 3, padding=1)
        self.gate = Gate(c)
        self.dec = nn.ModuleList([nn.Conv2d(2 * c, c, 3, padding=1) for _ in range(3)])
        self.head = nn.Conv2d(c, out_channels, 1)

    def _forward(self, x):
        skips = []
        for conv in self.enc:
            x = torch.tanh(conv(x))
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.gate(torch.tanh(self.bottleneck(x)))
        for conv, s in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = torch.tanh(conv(torch.cat([x, s], 1)))
        return self.head(x)


def _register(name, builder, **kw):
    if name not in _REGISTRY:
        register_model(name, summary="test stand-in", paper="-", **kw)(builder)


_register("_explain_pixel", PixelSigmoid)
_register("_explain_mask", MaskShift, takes_mask=True)
_register("_explain_unet", TinyUNet)


@pytest.fixture
def standin():
    kinds = {"pixel": (PixelSigmoid, "_explain_pixel"), "mask": (MaskShift, "_explain_mask"),
             "unet": (TinyUNet, "_explain_unet")}

    def factory(kind, in_channels=1, out_channels=1):
        cls, name = kinds[kind]
        torch.manual_seed(0)
        m = cls(in_channels, out_channels)
        m.segattn_config = {"name": name, "config": {"in_channels": in_channels, "out_channels": out_channels}}
        m.segattn_normalization = None
        return m

    return factory
