"""Bilinear ``align_corners=True`` resizing in the whole slice's geometry while windows of it run.

The PAM U-Nets upsample with ``align_corners=True`` (as released): output pixel ``i`` of an
``m``-pixel map reads input coordinate ``i (n - 1) / (m - 1)``, a mapping that depends on the
map's size. A window of a slice therefore places its coarse features up to half a coarse pixel
away from where the whole slice's forward places them, and no statistic can undo that: it was
what kept tiled ``unet`` at Dice 0.993 against whole-slice inference (docs/large-images.md).

Tiled inference says where each window of a batch lies (:func:`windows_of_slice`); the model's
``forward`` adds its stride padding (:func:`padded_windows`); :func:`resize_align_corners` then
computes every output pixel's input coordinate in the whole (padded) slice and samples the
window's map there, so a window's pixels get the values the whole slice's forward gives them.
Without a window context it is plain ``F.interpolate``. torch has no bilinear resize with a
per-sample offset (``grid_sample`` would need a full coordinate grid per sample), hence the two
separable gathers below.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["windows_of_slice", "batch_part", "padded_windows", "resize_align_corners"]


@dataclass(frozen=True)
class _Windows:
    offsets: np.ndarray  # (B, 2) each window's top-left corner in the slice, input pixels
    whole: tuple[int, int]  # the slice's size (padded to the model stride once the model has run)
    window: tuple[int, int] | None = None  # the windows' input size after the stride padding


_WINDOWS: contextvars.ContextVar[_Windows | None] = contextvars.ContextVar("segattn_windows", default=None)


@contextlib.contextmanager
def _set(value: _Windows | None):
    token = _WINDOWS.set(value)
    try:
        yield
    finally:
        _WINDOWS.reset(token)


def windows_of_slice(offsets, whole: tuple[int, int]):
    """Context: the next forwards run a batch of windows at ``offsets`` ((B, 2) y, x) of a slice
    of size ``whole`` (H, W)."""
    return _set(_Windows(np.asarray(offsets, np.int64).reshape(-1, 2), (int(whole[0]), int(whole[1]))))


def batch_part(start: int, stop: int):
    """Context: the windows ``start:stop`` of the current batch (a caller that splits a batch
    into micro-batches); nothing when no window context is set."""
    win = _WINDOWS.get()
    if win is None:
        return contextlib.nullcontext()
    return _set(_Windows(win.offsets[start:stop], win.whole, win.window))


def padded_windows(stride: int, window_hw: tuple[int, int]):
    """Context for a model's ``_forward``: the window context with the stride padding the model
    gives every input (the windows' and, in whole-slice inference, the slice's). Nothing when no
    window context is set."""
    win = _WINDOWS.get()
    if win is None or win.window is not None:
        return contextlib.nullcontext()
    whole = tuple(-(-n // stride) * stride for n in win.whole)
    return _set(_Windows(win.offsets, whole, (int(window_hw[0]), int(window_hw[1]))))


def _axis_coordinates(offsets: torch.Tensor, n: int, m: int, window: int, whole: int) -> torch.Tensor:
    """(B, m) input coordinates, in the window's ``n``-pixel map, of its ``m`` output pixels."""
    f_in, f_out = window / n, window / m  # input pixels per coarse / per output pixel
    big_n, big_m = whole / f_in, whole / f_out  # the whole slice's map sizes at both resolutions
    scale = (big_n - 1) / (big_m - 1) if big_m > 1 else 0.0
    i = torch.arange(m, dtype=torch.float64)
    u = (offsets[:, None].double() / f_out + i[None]) * scale - offsets[:, None].double() / f_in
    return u.clamp(0, n - 1)


def _lerp_along(y: torch.Tensor, u: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample ``y`` (B, C, H, W) at per-sample coordinates ``u`` (B, m) along ``dim`` (2 or 3)."""
    n = y.shape[dim]
    lo = u.floor().long().clamp(max=max(n - 2, 0))
    hi = (lo + 1).clamp(max=n - 1)
    w = (u - lo).to(y.dtype)
    shape = [y.shape[0], 1, 1, 1]
    shape[dim] = u.shape[1]
    expand = list(y.shape)
    expand[dim] = u.shape[1]
    lo, hi, w = (t.view(shape).expand(expand).to(y.device) for t in (lo, hi, w))
    return torch.gather(y, dim, lo) * (1 - w) + torch.gather(y, dim, hi) * w


def resize_align_corners(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(y, size, mode="bilinear", align_corners=True)``, in the whole slice's
    geometry while a window context is set (see the module docstring)."""
    win = _WINDOWS.get()
    size = (int(size[0]), int(size[1]))
    if win is None or win.window is None or (win.window == win.whole and not win.offsets.any()):
        return F.interpolate(y, size=size, mode="bilinear", align_corners=True)
    if len(win.offsets) != y.shape[0]:
        raise RuntimeError(f"window context for {len(win.offsets)} windows, but a batch of {y.shape[0]} ran")
    offsets = torch.from_numpy(win.offsets)
    uy = _axis_coordinates(offsets[:, 0], y.shape[2], size[0], win.window[0], win.whole[0])
    ux = _axis_coordinates(offsets[:, 1], y.shape[3], size[1], win.window[1], win.whole[1])
    return _lerp_along(_lerp_along(y, uy, 2), ux, 3)
