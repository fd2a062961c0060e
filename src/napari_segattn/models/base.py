"""Common base of all segmentation models: pad to the stride, crop back, never resize."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .geometry import padded_windows

__all__ = ["SegmentationModel", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H and W (bottom/right) up to a multiple; returns the padded tensor and original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    # reflect needs pad < size; fall back to replicate for tiny inputs
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


class SegmentationModel(nn.Module):
    """Base class: validates input, pads H/W to ``stride`` and crops the logits back.

    Subclasses implement ``_forward(x, *extras)`` on stride-aligned inputs. ``extras`` are
    extra full-resolution maps (FANet's feedback mask), padded with zeros alongside ``x``.
    """

    #: total downsampling factor; inputs are padded to a multiple of it
    stride: int = 1
    #: downsampling at the deepest per-sample normalisation (InstanceNorm), which needs at least
    #: 2 pixels there; None: no such layer, any size >= 1 x 1 runs (BatchNorm models in eval)
    norm_stride: int | None = None

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError("in_channels and out_channels must be >= 1")
        self.in_channels = in_channels
        self.out_channels = out_channels

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects a batch of 2D images (B, C, H, W); got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for {self.in_channels} input channel(s); "
                f"got {x.shape[1]} (shape {tuple(x.shape)})"
            )
        problem = self.size_problem(int(x.shape[-2]), int(x.shape[-1]))
        if problem:
            raise ValueError(problem)

    def size_problem(self, h: int, w: int) -> str | None:
        """Why an ``h x w`` input is too small for this model (None: it runs). Stated up front so
        a tiny image gets this sentence instead of a torch padding/InstanceNorm error."""
        cfg = getattr(self, "segattn_config", None)
        name = repr(cfg["name"]) if isinstance(cfg, dict) and "name" in cfg else type(self).__name__
        if h < 1 or w < 1:
            return f"the image is {h}x{w}; {name} needs at least 1x1 pixels"
        s = self.norm_stride
        if s and math.ceil(h / s) * math.ceil(w / s) < 2:
            return (f"the image is {h}x{w}, too small for {name}: its deepest InstanceNorm sees the image "
                    f"downsampled {s}x and needs 2 pixels there, i.e. ceil(H/{s}) * ceil(W/{s}) >= 2 "
                    f"(smallest square {s + 1}x{s + 1}); use a larger image or pad it")
        return None

    def forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        xp, (h, w) = pad_to_multiple(x, self.stride)
        padded_extras = [pad_to_multiple(e, self.stride, mode="constant")[0] for e in extras]
        with padded_windows(self.stride, xp.shape[-2:]):  # tiled inference: the slice's geometry
            out = self._forward(xp, *padded_extras)
        return out[..., :h, :w]

    def _forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError
