"""Tiled inference with the whole slice's statistics (SE squeezes, InstanceNorm, global pooling).

Some layers pool over their *whole input*: FANet's squeeze-and-excitation
(``x.mean((2, 3))``), the PAM U-Nets' ``InstanceNorm2d`` (per-channel mean and variance), and
the PAM paper's baselines' attention blocks (scSE's channel mean, CBAM's channel mean and
maximum, GCNet's softmax-weighted context).
A window sees other statistics than the whole slice, so tiled inference disagrees with
whole-slice inference (demo FANet, DSB 512²: Dice 0.987-0.995, max |dp| 0.34-0.53). Here
each such layer's statistics are first computed over the slice from the windows, in call
order: pass k runs every window up to layer k (the layers before it already fixed to their
slice-wide statistics) and accumulates its input over the part of each window that window
*owns* (overlaps split at their midpoint, so each pixel counts once). Then the windows run with
all layers fixed. Cost: one partial forward of every window per layer (FANet: 8 SE layers,
about 4 extra full passes; the PAM unet: 16 InstanceNorms, about ten times the windows' time).
A model with neither kind costs nothing. MONAI's sliding window has no notion of this (its
predictor sees one window at a time). The PAM U-Nets' size-dependent ``align_corners=True``
upsampling is handled apart, by resizing in the slice's geometry (``models/geometry.py``).

One measurement loop serves every kind; :class:`_Kind` says per kind what to accumulate over
the owned parts and how to apply the result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

__all__ = ["stat_layers", "fixed_stats", "iter_slice_stats", "slice_stats", "squeeze_layers", "fixed_squeeze",
           "slice_squeeze"]


class _Stop(Exception):
    """Raised by the hook of the layer being measured: nothing after it needs to run."""


# -- the two kinds of layer ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Kind:
    """What to measure for one kind of layer and how to make it use the measured statistic."""

    accumulator: Callable[[torch.nn.Module], "_Accumulator"]  # layer -> a fresh accumulator
    fix: Callable[[torch.nn.Module, torch.Tensor], None]
    unfix: Callable[[torch.nn.Module], None]


def _fix_se(layer, stat: torch.Tensor) -> None:
    layer.fixed_squeeze = stat


def _unfix_se(layer) -> None:
    layer.fixed_squeeze = None


def _fix_instance_norm(layer, stat: torch.Tensor) -> None:
    """``layer`` normalises with the given ``(2, C)`` mean/variance instead of its input's:
    ``(x - mean) / sqrt(var + eps) * weight + bias`` (an instance attribute shadows ``forward``)."""
    mean, var = stat[0], stat[1]
    scale = torch.rsqrt(var + layer.eps)
    shift = -mean * scale
    if layer.affine:
        scale, shift = scale * layer.weight.float(), shift * layer.weight.float() + layer.bias.float()
    scale, shift = scale[None, :, None, None], shift[None, :, None, None]
    layer.forward = lambda x: (x.float() * scale + shift).to(x.dtype)


def _unfix_instance_norm(layer) -> None:
    layer.__dict__.pop("forward", None)


def _fix_pool(layer, stat: torch.Tensor) -> None:
    layer.fixed_pool = stat


def _unfix_pool(layer) -> None:
    layer.fixed_pool = None


def _kinds() -> dict[type, _Kind]:
    from ..models.fanet import SELayer
    from ..models.pam.baselines import CBAM, ConcurrentSCSE, GlobalContext

    return {SELayer: _Kind(lambda _: _Moments(1), _fix_se, _unfix_se),
            torch.nn.InstanceNorm2d: _Kind(lambda _: _Moments(2), _fix_instance_norm, _unfix_instance_norm),
            # the PAM paper's baselines: scSE's channel squeeze, CBAM's mean and max, GCNet's
            # softmax-weighted context
            ConcurrentSCSE: _Kind(lambda _: _Moments(1), _fix_pool, _unfix_pool),
            CBAM: _Kind(lambda _: _MeanMax(), _fix_pool, _unfix_pool),
            GlobalContext: _Kind(_SoftmaxPool, _fix_pool, _unfix_pool)}


def _kind(layer) -> _Kind:
    return next(k for t, k in _kinds().items() if isinstance(layer, t))


def stat_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers whose output depends on statistics of their whole input (SE, InstanceNorm2d,
    scSE, CBAM, GC; not an InstanceNorm with running statistics, which uses those in eval)."""
    kinds = tuple(_kinds())
    return [m for m in model.modules() if isinstance(m, kinds) and not getattr(m, "track_running_stats", False)]


def squeeze_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """FANet's SE layers only (the name of the first version of this module)."""
    from ..models.fanet import SELayer

    return [m for m in model.modules() if isinstance(m, SELayer)]


@contextlib.contextmanager
def fixed_stats(layers, stats):
    """Every layer uses its given statistic (SE: a (C,) mean; InstanceNorm: (2, C) mean and
    variance) instead of its input's; restored on exit."""
    try:
        for layer, s in zip(layers, stats):
            _kind(layer).fix(layer, s)
        yield
    finally:
        for layer in layers:
            _kind(layer).unfix(layer)


#: the earlier name, for SE layers and their (C,) vectors; the same function
fixed_squeeze = fixed_stats


# -- where each window counts --------------------------------------------------------------------

def _owned(starts: list[int], window: int, size: int, end: int | None = None) -> dict[int, tuple[int, int]]:
    """start -> (lo, hi) in image coordinates: overlaps of neighbouring windows split at their
    middle. The last window owns up to ``end`` (default ``size``): the whole-slice reference is
    padded to the model stride at the bottom/right, and so is that window."""
    starts = sorted(set(starts))
    out = {}
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + window) // 2
        hi = (size if end is None else end) if i == len(starts) - 1 else (starts[i + 1] + s + window) // 2
        out[s] = (lo, hi)
    return out


def _owned_axis(starts, window: int, size: int, stride: int) -> dict[int, tuple[int, int]]:
    """:func:`_owned` with the last window reaching as far into the stride padding as both the
    whole slice's and its own padding go."""
    padded_window = -(-window // stride) * stride
    padded_size = -(-size // stride) * stride
    return _owned(starts, window, size, end=min(padded_size, max(starts) + padded_window))


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


def _float64(t: torch.Tensor) -> torch.Tensor:
    # sums of squares cancel in E[x²] - E[x]²; MPS has no float64, so those go through the host
    return t.double() if t.device.type != "mps" else t.cpu().double()


class _Accumulator:
    """Takes one window's owned part of a layer's input at a time; gives the slice's statistic."""

    def add(self, part: torch.Tensor) -> None:  # part: (C, h, w)
        raise NotImplementedError

    def statistic(self, device) -> torch.Tensor:
        raise NotImplementedError


class _Moments(_Accumulator):
    """Per-channel sums of x (and x²) in float64 over owned window parts -> the layer's statistic."""

    def __init__(self, moments: int) -> None:
        self.moments = moments
        self.sums: list = [None] * moments
        self.count = 0

    def add(self, part: torch.Tensor) -> None:
        """``part`` (C, h, w): one window's owned features."""
        p = _float64(part)
        for i in range(self.moments):
            s = (p if i == 0 else p * p).sum(dim=(1, 2))
            self.sums[i] = s if self.sums[i] is None else self.sums[i] + s
        self.count += part.shape[1] * part.shape[2]

    def statistic(self, device) -> torch.Tensor:
        """(C,) mean, or (2, C) mean and biased variance (as InstanceNorm computes it)."""
        n = max(self.count, 1)
        mean = self.sums[0] / n
        if self.moments == 1:
            return mean.float().to(device)
        var = (self.sums[1] / n - mean * mean).clamp_min(0)
        return torch.stack([mean, var]).float().to(device)


class _MeanMax(_Accumulator):
    """CBAM's two descriptors: per-channel mean and maximum -> ``(2, C)``."""

    def __init__(self) -> None:
        self.mean, self.peak = _Moments(1), None

    def add(self, part: torch.Tensor) -> None:
        self.mean.add(part)
        peak = part.float().amax(dim=(1, 2))
        self.peak = peak if self.peak is None else torch.maximum(self.peak, peak)

    def statistic(self, device) -> torch.Tensor:
        return torch.stack([self.mean.statistic(device), self.peak.to(device)])


class _SoftmaxPool(_Accumulator):
    """GCNet's context, sum_n x_n softmax(w . x)_n over the slice, merged across windows as a
    streaming log-sum-exp (each part's weights rescaled to the running maximum logit)."""

    def __init__(self, layer) -> None:
        self.layer, self.top, self.num, self.den = layer, None, None, None

    def add(self, part: torch.Tensor) -> None:
        c = part.shape[0]
        logits = _float64(self.layer.context(part[None]).reshape(-1))  # the layer's own 1x1 conv
        x = _float64(part.reshape(c, -1))
        top = logits.max() if self.top is None else torch.maximum(self.top, logits.max())
        if self.top is not None:  # rescale what was summed so far to the (new) maximum
            scale = torch.exp(self.top - top)
            self.num, self.den = self.num * scale, self.den * scale
        w = torch.exp(logits - top)
        num, den = x @ w, w.sum()
        self.num = num if self.num is None else self.num + num
        self.den = den if self.den is None else self.den + den
        self.top = top

    def statistic(self, device) -> torch.Tensor:
        return (self.num / self.den).float().to(device)


# -- the measurement -----------------------------------------------------------------------------

def slice_stats(net, read, mread, grid, stride: int, batch_size: int = 4,
                cancel: Callable[[], bool] | None = None) -> tuple[list, list]:
    """``(layers in call order, their slice-wide statistics)`` for one slice (blocking
    :func:`iter_slice_stats`)."""
    from .predict import drive

    return drive(iter_slice_stats(net, read, mread, grid, stride, batch_size, cancel))


def iter_slice_stats(net, read, mread, grid, stride: int, batch_size: int = 4,
                     cancel: Callable[[], bool] | None = None):
    """Measure one slice's statistics; yields the window passes done after each batch, of
    ``len(stat_layers(net)) * len(grid)`` (one partial pass of every window per layer: the
    progress bars count them), and *returns* ``(layers in call order, their statistics)``.

    ``read``/``mread`` give a window of the normalised slice / of the feedback mask (as
    ``tiling.iter_blend_block``); the windows run through ``net`` in float32, one batch at a
    time (not micro-batched, so the hook sees the batch it was given). Cancel is checked
    before every batch of every pass."""
    from ..models.geometry import windows_of_slice
    from .predict import Cancelled

    layers = stat_layers(net)
    if not layers:
        return [], []
    wh, ww = grid.window
    own_y = _owned_axis([sy.start for sy, _ in grid.slices], wh, grid.image[0], stride)
    own_x = _owned_axis([sx.start for _, sx in grid.slices], ww, grid.image[1], stride)
    padded = (-(-wh // stride) * stride, -(-ww // stride) * stride)
    batches = [grid.slices[i:i + batch_size] for i in range(0, len(grid.slices), batch_size)]
    device = next(net.parameters()).device

    def run(batch):
        x = torch.from_numpy(np.stack([read(sy, sx) for sy, sx in batch]).astype(np.float32)).to(device)
        args = [x]
        if mread is not None:
            m = np.stack([mread(sy, sx) for sy, sx in batch]).astype(np.float32)[:, None]
            args.append(torch.from_numpy(m).to(device))
        with torch.inference_mode(), windows_of_slice([(sy.start, sx.start) for sy, sx in batch], grid.image):
            net(*args)

    order = _call_order(net, layers, run, batches[0])
    stats: list[torch.Tensor] = []
    for k, layer in enumerate(order):
        acc = _kind(layer).accumulator(layer)
        current: list = []

        def measure(mod, args):
            feat = args[0]
            fy, fx = padded[0] / feat.shape[2], padded[1] / feat.shape[3]
            for b, (sy, sx) in enumerate(current):
                (y0, y1), (x0, x1) = own_y[sy.start], own_x[sx.start]
                r0, r1 = round((y0 - sy.start) / fy), round((y1 - sy.start) / fy)
                c0, c1 = round((x0 - sx.start) / fx), round((x1 - sx.start) / fx)
                acc.add(feat[b, :, r0:r1, c0:c1])
            raise _Stop

        hook = layer.register_forward_pre_hook(measure)
        try:
            with fixed_stats(order[:k], stats):
                passes = k * len(grid.slices)
                for batch in batches:
                    if cancel is not None and cancel():
                        raise Cancelled("prediction cancelled")
                    current[:] = batch
                    try:
                        run(batch)
                    except _Stop:
                        pass
                    passes += len(batch)
                    yield passes
        finally:
            hook.remove()
        stats.append(acc.statistic(device))
    if len(order) < len(layers):  # layers the forward never reached: their share is done too
        yield len(layers) * len(grid.slices)
    return order, stats


#: the earlier name; it now covers InstanceNorm as well as SE layers
slice_squeeze = slice_stats
