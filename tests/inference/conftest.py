"""Tiny stand-in models with known outputs, registered under private names.

They are ``SegmentationModel`` subclasses with closed-form logits, so every expected
probability in the tests is computed by hand (numpy), independent of the code under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.registry import _REGISTRY, register_model


class MeanThreshold(SegmentationModel):
    """logit = 10 * (mean over channels - 0.5) (one logit) or class scores k * mean."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.scale = torch.nn.Parameter(torch.tensor(10.0))

    def _forward(self, x):
        m = x.mean(1, keepdim=True)
        if self.out_channels == 1:
            return self.scale * (m - 0.5)
        ks = torch.arange(self.out_channels, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        # class k wins where mean is closest to k / (K-1): -(m*(K-1) - k)^2
        return -self.scale * (m * (self.out_channels - 1) - ks) ** 2


class GrowFromMask(SegmentationModel):
    """FANet-like stand-in: logit = 10 * (dilate3x3(mask) + x - 1.2).

    So the binarised output is ``dilate(mask) & (x > 0.2)``: each feedback step grows the mask
    by one pixel inside the bright region, which makes the iteration count known by hand.
    """

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def _forward(self, x, mask):
        grown = F.max_pool2d(mask, 3, stride=1, padding=1)
        return 10.0 * (grown + x.mean(1, keepdim=True) - 1.2) + self.dummy


class InvertMask(SegmentationModel):
    """Feedback stand-in that answers the opposite of what it is fed: logit = 10 * (0.5 - mask),
    so its loop alternates between two masks (a 2-cycle) from the first step."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def _forward(self, x, mask):
        return 10.0 * (0.5 - mask) + 0.0 * x.mean(1, keepdim=True) + self.dummy


def _register(name, builder, **kw):
    if name not in _REGISTRY:
        register_model(name, summary="test stand-in", paper="-", **kw)(builder)


_register("_standin", MeanThreshold)
_register("_standin_rfna", MeanThreshold, reverse_labels=True)
_register("_standin_fanet", GrowFromMask, takes_mask=True)
_register("_standin_fanet_invert", InvertMask, takes_mask=True)


def make(cls, name, in_channels=1, out_channels=1):
    m = cls(in_channels, out_channels)
    m.segattn_config = {"name": name, "config": {"in_channels": in_channels, "out_channels": out_channels}}
    m.segattn_normalization = None
    return m


@pytest.fixture
def standin():
    """Factory: ``standin(kind, in_channels=1, out_channels=1)`` with kind in
    ``"plain"``, ``"rfna"``, ``"fanet"``."""
    kinds = {"plain": (MeanThreshold, "_standin"), "rfna": (MeanThreshold, "_standin_rfna"),
             "fanet": (GrowFromMask, "_standin_fanet"), "invert": (InvertMask, "_standin_fanet_invert")}

    def factory(kind="plain", in_channels=1, out_channels=1):
        cls, name = kinds[kind]
        return make(cls, name, in_channels, out_channels)

    return factory
