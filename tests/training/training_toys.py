"""Tiny registered models and toy data for the training tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from napari_segattn.models import registry
from napari_segattn.models.base import SegmentationModel


class TinyNet(SegmentationModel):
    """Two convs (+ dropout, so the resume test also covers the dropout RNG)."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 6, mask: bool = False, dropout: float = 0.1):
        super().__init__(in_channels, out_channels)
        self.mask = mask
        self.body = nn.Sequential(
            nn.Conv2d(in_channels + int(mask), width, 3, padding=1), nn.ReLU(), nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, out_channels, 1),
        )

    def _forward(self, x, *extras):
        if self.mask:
            x = torch.cat([x, extras[0]], 1)
        return self.body(x)


def _register():
    if "_tiny" in registry._REGISTRY:
        return
    kw = dict(summary="test", paper="test", defaults={"in_channels": 1, "out_channels": 1})
    registry.register_model("_tiny", **kw)(TinyNet)
    registry.register_model("_tiny_rev", reverse_labels=True, **kw)(TinyNet)
    registry.register_model("_tiny_fb", takes_mask=True, **kw)(lambda **c: TinyNet(mask=True, **c))
    # no dropout: DDP ranks draw the same dropout masks, a single process does not
    registry.register_model("_tiny_fb_nodrop", takes_mask=True, **kw)(lambda **c: TinyNet(mask=True, dropout=0.0, **c))


_register()


def skip_zoo_if_broken():
    """While other model modules are being written the zoo may not import; we only need ours."""
    try:
        from napari_segattn.models import zoo  # noqa: F401
    except Exception:
        registry._ensure_loaded = lambda: None


def toy_arrays(n: int = 8, size: int = 24, seed: int = 0, classes: int = 2):
    """Bright discs/squares on noise: learnable by two 3×3 convs."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        lab = np.zeros((size, size), np.int64)
        for c in range(1, classes):
            cy, cx = rng.integers(4, size - 4, 2)
            r = rng.integers(3, 6)
            lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = c
        img = lab.astype(np.float32) + 0.3 * rng.standard_normal((size, size)).astype(np.float32)
        images.append(img[None])
        labels.append(lab)
    return images, labels


def toy_dataset(n=8, size=24, seed=0, classes=2, augmenter=None):
    from napari_segattn.data import Normalization, SegmentationDataset

    images, labels = toy_arrays(n, size, seed, classes)
    return SegmentationDataset(images, labels, normalization=Normalization("none"), augmenter=augmenter, seed=seed)
