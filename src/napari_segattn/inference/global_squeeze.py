"""Tiled inference with the whole slice's squeeze-and-excitation statistics.

FANet's SE layers pool each channel over their *whole input* (``x.mean((2, 3))``), so a window
sees other channel weights than the whole slice and tiled FANet disagrees with whole-slice
FANet (demo model, DSB 512²: Dice 0.987-0.995, max |dp| 0.34-0.53). Here each SE layer's
squeeze is first computed over the slice from the windows, in call order: pass k runs every
window up to SE layer k (the layers before it already fixed to their slice-wide vectors) and
averages its input over the part of each window that window *owns* (overlaps split at their
midpoint, so each pixel counts once). Then the windows run with all SE layers fixed. Cost: one
partial forward of every window per SE layer (FANet: 8 layers, about 4 extra full passes).
MONAI's sliding window has no notion of this (its predictor sees one window at a time).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch

__all__ = ["squeeze_layers", "fixed_squeeze", "slice_squeeze"]


class _Stop(Exception):
    """Raised by the hook of the SE layer being measured: nothing after it needs to run."""


def squeeze_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from ..models.fanet import SELayer

    return [m for m in model.modules() if isinstance(m, SELayer)]


@contextlib.contextmanager
def fixed_squeeze(layers, vectors):
    """Every SE layer uses its given (C,) squeeze vector instead of its input's mean."""
    try:
        for layer, v in zip(layers, vectors):
            layer.fixed_squeeze = v
        yield
    finally:
        for layer in layers:
            layer.fixed_squeeze = None


def _owned(starts: list[int], window: int, size: int) -> dict[int, tuple[int, int]]:
    """start -> (lo, hi) in image coordinates: overlaps of neighbouring windows split at their middle."""
    starts = sorted(set(starts))
    out = {}
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + window) // 2
        hi = size if i == len(starts) - 1 else (starts[i + 1] + s + window) // 2
        out[s] = (lo, hi)
    return out


def _call_order(net, layers, run, batch) -> list[torch.nn.Module]:
    order = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args: order.append(mod) if mod not in order else None)
             for layer in layers]
    try:
        run(batch)
    finally:
        for h in hooks:
            h.remove()
    return order


def slice_squeeze(net, read, mread, grid, stride: int, batch_size: int = 4,
                  cancel: Callable[[], bool] | None = None) -> tuple[list, list]:
    """``(layers in call order, their slice-wide squeeze vectors)`` for one slice.

    ``read``/``mread`` give a window of the normalised slice / of the feedback mask (as
    ``tiling.iter_blend_block``); the windows run through ``net`` in float32, one batch at a
    time (not micro-batched, so the hook sees the batch it was given)."""
    from .predict import Cancelled

    layers = squeeze_layers(net)
    if not layers:
        return [], []
    wh, ww = grid.window
    own_y = _owned([sy.start for sy, _ in grid.slices], wh, grid.image[0])
    own_x = _owned([sx.start for _, sx in grid.slices], ww, grid.image[1])
    padded = (-(-wh // stride) * stride, -(-ww // stride) * stride)
    batches = [grid.slices[i:i + batch_size] for i in range(0, len(grid.slices), batch_size)]

    device = next(net.parameters()).device

    def run(batch):
        x = torch.from_numpy(np.stack([read(sy, sx) for sy, sx in batch]).astype(np.float32)).to(device)
        args = [x]
        if mread is not None:
            m = np.stack([mread(sy, sx) for sy, sx in batch]).astype(np.float32)[:, None]
            args.append(torch.from_numpy(m).to(device))
        with torch.inference_mode():
            net(*args)

    order = _call_order(net, layers, run, batches[0])
    vectors: list[torch.Tensor] = []
    for k, layer in enumerate(order):
        total, count = None, 0
        current: list = []

        def measure(mod, args):
            nonlocal total, count
            feat = args[0].float()
            fy, fx = padded[0] / feat.shape[2], padded[1] / feat.shape[3]
            for b, (sy, sx) in enumerate(current):
                (y0, y1), (x0, x1) = own_y[sy.start], own_x[sx.start]
                r0, r1 = round((y0 - sy.start) / fy), round((y1 - sy.start) / fy)
                c0, c1 = round((x0 - sx.start) / fx), round((x1 - sx.start) / fx)
                part = feat[b, :, r0:r1, c0:c1]
                s = part.sum(dim=(1, 2))
                total = s if total is None else total + s
                count += part.shape[1] * part.shape[2]
            raise _Stop

        hook = layer.register_forward_pre_hook(measure)
        try:
            with fixed_squeeze(order[:k], vectors):
                for batch in batches:
                    if cancel is not None and cancel():
                        raise Cancelled("prediction cancelled")
                    current[:] = batch
                    try:
                        run(batch)
                    except _Stop:
                        pass
        finally:
            hook.remove()
        vectors.append(total / max(count, 1))
    return order, vectors
