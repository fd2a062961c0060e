"""Patch-wise Integrated Gradients saliency for segmentation (Attention Shift, sec. 2).

The paper slides a window "at the size of the receptive field to one pixel in the bottleneck"
over the softmax output of a class with stride 8 (three poolings), runs IG (eq. 2) for the
class output summed inside each window, and accumulates the window maps into one saliency map
(18 x 18 windows per slice in the paper).

IG is linear in the explained function: for a fixed input, baseline and quadrature,
``IG[f + g] = IG[f] + IG[g]`` holds exactly, also for the discretised integral. So the
accumulated map equals ONE IG run on ``sum_p coverage(p) * y_k(p)``, where ``coverage(p)`` is
the number of windows covering output pixel ``p``. ``method="fast"`` uses that identity,
``"per_window"`` is the literal loop (the reference the tests compare against) and
``"abs_windows"`` accumulates ``|IG|`` per window, which has no linear shortcut: there signed
contributions of different windows cannot cancel (windows are batched instead).

Default window: ``model.stride`` (the output footprint of one bottleneck pixel, 8 for a
three-pooling U-Net), stride 8. IG is invariant to per-channel affine normalisation
((x - x') * dF/dx is unchanged), so the map is the same on raw or normalised intensities;
the *baseline*, however, is defined in the model's input space (``"zeros"`` = the mean
intensity after z-scoring).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..inference.checks import check_int
from ..inference.layout import InputError
from ..inference.masks import initial_masks
from ..inference.predict import _eval_on, prepare_stack
from ..inference.traits import ModelTraits, model_traits, to_probabilities
from .memory import ig_batch_size

__all__ = ["SaliencyMap", "saliency", "window_grid", "coverage", "METHODS", "BASELINES"]

METHODS = ("fast", "per_window", "abs_windows")
BASELINES = ("zeros", "blur", "mean")
#: relative completeness gap above which SaliencyMap.warning is set
GAP_WARNING = 0.05


@dataclass
class SaliencyMap:
    """IG saliency: ``map`` (H, W) for one class or (K, H, W) for a list of classes, the sum
    over input channels of ``per_channel`` ((C, H, W) or (K, C, H, W)).

    ``completeness_gap`` = max over classes of ``|sum(attributions) - (F(x) - F(x'))|`` for
    the accumulated (signed) windows (IG's completeness axiom); ``relative_gap`` divides it by
    ``|F(x) - F(x')|``.
    """

    map: np.ndarray
    per_channel: np.ndarray
    target_classes: list[int]
    method: str
    window: tuple[int, int]
    stride: int
    n_windows: int
    n_steps: int
    baseline: str
    completeness_gap: float
    relative_gap: float
    deltas: list[float]
    output_difference: list[float]
    seconds: float
    warning: str | None = None


def _starts(size: int, win: int, stride: int) -> list[int]:
    if win >= size:
        return [0]
    s = list(range(0, size - win + 1, stride))
    if s[-1] + win < size:  # cover the last rows/columns too (the paper's sizes tile exactly)
        s.append(size - win)
    return s


def window_grid(shape: tuple[int, int], window: int | tuple[int, int], stride: int) -> list[tuple[slice, slice]]:
    """Window positions over an (H, W) output, row-major."""
    wh, ww = (window, window) if isinstance(window, int) else window
    h, w = shape
    return [(slice(y, y + min(wh, h)), slice(x, x + min(ww, w)))
            for y in _starts(h, wh, stride) for x in _starts(w, ww, stride)]


def coverage(shape: tuple[int, int], windows: Sequence[tuple[slice, slice]]) -> np.ndarray:
    """How many windows cover each output pixel."""
    cov = np.zeros(shape, np.float32)
    for sl in windows:
        cov[sl] += 1
    return cov


def _check_windows(window, stride, shape: tuple[int, int]):
    """Window in 1..image size, stride >= 1: window 0 gave an all-zero map and a NaN relative gap,
    stride 0 a raw ``range()`` error, a negative stride an IndexError."""
    h, w = shape
    wins = (window, window) if np.isscalar(window) else tuple(window)
    if len(wins) != 2:
        raise InputError(f"window must be an int or (height, width), got {window!r}")
    wh = check_int(wins[0], "window", maximum=h)
    ww = check_int(wins[1], "window", maximum=w)
    # a stride beyond the image just gives one window per axis (the default 8 on a tiny image)
    stride = check_int(stride, "stride")
    return (wh if np.isscalar(window) else (wh, ww)), stride


def _class_output(model, traits: ModelTraits, mask: torch.Tensor | None, k: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> (B, H, W) probability of class k (binary: 1 = foreground, RFNA-reversed)."""

    def f(x: torch.Tensor) -> torch.Tensor:
        args = [x] if mask is None else [x, mask.expand(x.shape[0], -1, -1, -1)]
        p = to_probabilities(model(*args), traits.reverse_labels)
        if traits.binary:
            return p[:, 0] if k == 1 else 1.0 - p[:, 0]
        return p[:, k]

    return f


def _baseline(x: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    if kind == "zeros":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if kind == "blur":
        from scipy.ndimage import gaussian_filter

        arr = x.detach().cpu().numpy()
        out = np.stack([[gaussian_filter(c, blur_sigma) for c in b] for b in arr])
        return torch.from_numpy(out.astype(np.float32)).to(x.device)
    raise ValueError(f"unknown baseline {kind!r}; use one of {BASELINES}")


def saliency(
    model: torch.nn.Module,
    image: np.ndarray,
    target_class: int | Sequence[int] = 1,
    *,
    method: str = "fast",
    window: int | tuple[int, int] | None = None,
    stride: int = 8,
    n_steps: int = 50,
    baseline: str = "zeros",
    blur_sigma: float = 5.0,
    internal_batch_size: int | None = None,
    window_batch: int = 16,
    channel_axis: int | None = None,
    mask: np.ndarray | str | None = None,
    device: str | torch.device = "cpu",
) -> SaliencyMap:
    """Patch-wise IG saliency of a 2D image for ``target_class`` (an int or a list).

    ``target_class`` indexes the softmax of a multi-class model; for a one-logit model 1 is
    the foreground and 0 the background. FANet: the feedback ``mask`` (Otsu when None) is held
    fixed and only the image is explained. ``internal_batch_size`` bounds captum's batch of
    interpolation steps (None: ``explain.memory.ig_batch_size``, ~1 MPixel per pass, which
    bounds memory and was also the fastest on CPU); ``window_batch`` the windows per batch in
    ``"abs_windows"``.
    """
    from captum.attr import IntegratedGradients

    from ..devices import resolve_device

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {METHODS}")
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; use one of {BASELINES}")
    n_steps = check_int(n_steps, "n_steps")  # captum asserts on 0 / negative
    window_batch = check_int(window_batch, "window_batch")
    if internal_batch_size is not None:
        internal_batch_size = check_int(internal_batch_size, "internal_batch_size")
    t0 = time.perf_counter()
    traits = model_traits(model)
    layout, raw, stack = prepare_stack(traits, image, channel_axis=channel_axis, model=model)
    classes = [int(target_class)] if np.isscalar(target_class) else [int(k) for k in target_class]
    for k in classes:
        if not 0 <= k < traits.num_classes:
            raise InputError(f"class {k} does not exist; the model has classes 0..{traits.num_classes - 1}")
    dev = resolve_device(device)
    x = torch.from_numpy(stack).to(dev)  # (1, C, H, W)
    h, w = x.shape[-2:]
    m = None
    if traits.takes_mask:
        if mask is None or isinstance(mask, str):
            ms = initial_masks(raw, mask or "otsu")
        else:
            ms = layout.spatial_to_stack(np.asarray(mask)).astype(bool)
        m = torch.from_numpy(ms.astype(np.float32))[:, None].to(dev)
    if window is None:
        window = int(getattr(model, "stride", 1)) if int(getattr(model, "stride", 1)) > 1 else 8
        window = min(window, h, w)  # the default shrinks to a small image; an explicit one is checked
    window, stride = _check_windows(window, stride, (h, w))
    wins = window_grid((h, w), window, stride)
    cov = torch.from_numpy(coverage((h, w), wins)).to(dev)
    base = _baseline(x, baseline, blur_sigma)
    if internal_batch_size is None:
        internal_batch_size = ig_batch_size((h, w), n_steps)

    maps, per_ch, deltas, diffs = [], [], [], []
    with _eval_on(model, dev):
        for k in classes:
            yk = _class_output(model, traits, m, k)
            with torch.no_grad():
                fx, fb = yk(x)[0], yk(base)[0]

            def run_ig(fn, inputs, baselines, extra=None):
                ig = IntegratedGradients(fn)
                return ig.attribute(inputs, baselines=baselines, additional_forward_args=extra, n_steps=n_steps,
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)

            if method == "fast":
                attr, delta = run_ig(lambda z: (yk(z) * cov).sum(dim=(1, 2)), x, base)
                acc, gap = attr[0], float(delta.sum())
                diff = float(((fx - fb) * cov).sum())
                signed = acc.sum(0)
            elif method == "per_window":
                acc = torch.zeros_like(x[0])
                gap = diff = 0.0
                for sy, sx in wins:
                    attr, delta = run_ig(lambda z, sy=sy, sx=sx: yk(z)[:, sy, sx].sum(dim=(1, 2)), x, base)
                    acc += attr[0]
                    gap += float(delta.sum())
                    diff += float((fx - fb)[sy, sx].sum())
                signed = acc.sum(0)
            else:  # abs_windows: batch of windows, one IG example per window
                acc = torch.zeros_like(x[0])
                signed = torch.zeros((h, w), dtype=x.dtype, device=dev)
                gap = diff = 0.0
                for i in range(0, len(wins), window_batch):
                    chunk = wins[i:i + window_batch]
                    wm = torch.zeros((len(chunk), h, w), dtype=x.dtype, device=dev)
                    for j, (sy, sx) in enumerate(chunk):
                        wm[j, sy, sx] = 1.0
                    n = len(chunk)
                    attr, delta = run_ig(lambda z, wmask: (yk(z) * wmask).sum(dim=(1, 2)),
                                         x.expand(n, -1, -1, -1), base.expand(n, -1, -1, -1), (wm,))
                    acc += attr.abs().sum(0)
                    signed += attr.sum(1).abs().sum(0)
                    gap += float(delta.sum())
                    diff += float(((fx - fb)[None] * wm).sum())
            per_ch.append(acc.detach().float().cpu().numpy())
            maps.append(signed.detach().float().cpu().numpy())
            deltas.append(gap)
            diffs.append(diff)

    gaps = [abs(d) for d in deltas]
    rel = [g / abs(o) if o else float("nan") for g, o in zip(gaps, diffs)]
    single = np.isscalar(target_class)
    warning = None
    if max(rel) > GAP_WARNING:
        # Bias-free conv -> InstanceNorm (the PAM/FPA/RFNA blocks) is scale invariant, so along
        # the straight path from a zero (or constant) baseline F(beta*x) = F(x) for beta > 0:
        # the whole change happens at beta ~ 0 and IG misses it. The gap makes this visible.
        warning = (f"IG completeness gap is {max(rel):.0%} of F(x) - F(x'); the attributions do not add up. "
                   f"Try more steps or another baseline (models with InstanceNorm after bias-free convs are "
                   f"scale invariant along a path from 'zeros'/'mean'; 'blur' avoids that)")
    return SaliencyMap(
        map=maps[0] if single else np.stack(maps),
        per_channel=per_ch[0] if single else np.stack(per_ch),
        target_classes=classes,
        method=method,
        window=(window, window) if isinstance(window, int) else tuple(window),
        stride=stride,
        n_windows=len(wins),
        n_steps=n_steps,
        baseline=baseline,
        completeness_gap=max(gaps),
        relative_gap=max(rel),
        deltas=deltas,
        output_difference=diffs,
        seconds=time.perf_counter() - t0,
        warning=warning,
    )
