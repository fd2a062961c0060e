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

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..inference.checks import check_int
from ..inference.layout import InputError
from ..inference.masks import initial_masks
from ..inference.predict import Cancelled, _eval_on, prepare_stack
from ..inference.traits import ModelTraits, model_traits, to_probabilities
from .memory import ig_batch_size

__all__ = ["SaliencyMap", "SaliencyProgress", "saliency", "iter_saliency", "window_grid", "coverage", "METHODS",
           "BASELINES", "preview_factor", "describe_run"]

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
    #: the image was explained at 1/downscale of its size (a preview), the map scaled back up
    downscale: int = 1
    #: (n_steps, relative gap) of every run when the steps were chosen from the gap
    steps_tried: list[tuple[int, float]] = field(default_factory=list)

    @property
    def preview(self) -> bool:
        return self.downscale > 1

    def describe(self) -> str:
        """How the map was made, for a layer name: ``"preview, 8 steps, 1/4 size"``."""
        return describe_run(self.n_steps, self.downscale)


def describe_run(n_steps: int, downscale: int = 1) -> str:
    """``SaliencyMap.describe`` before the run: a viewer names (and prepares) its layer with it."""
    parts = (["preview"] if downscale > 1 else []) + [f"{n_steps} steps"]
    if downscale > 1:
        parts.append(f"1/{downscale} size")
    return ", ".join(parts)


@dataclass(frozen=True)
class SaliencyProgress:
    """IG interpolation steps done of total (over classes and windows) in the current run."""

    done: int
    total: int
    stage: str = "IG steps"


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


def _quadrature(n_steps: int) -> tuple[list[float], list[float]]:
    """captum's default Gauss-Legendre rule on [0, 1]: (step sizes, alphas)."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return (0.5 * weights).tolist(), (0.5 * (1.0 + nodes)).tolist()


def _check_cancel(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("saliency cancelled")


def _iter_ig(fn, x: torch.Tensor, base: torch.Tensor, n_steps: int, batch: int, cancel, extra=()):
    """IG of ``fn`` ((B, ...) -> (B,)) from ``base`` to ``x``, one forward/backward pass per
    ``batch`` interpolated images (captum's ``internal_batch_size``, over examples x steps).

    Written out rather than calling captum's ``attribute`` so each pass can report progress and
    a cancel stops the run within one pass; same quadrature and delta as captum's.
    Yields the steps of each pass; returns (attributions like ``x``, deltas (B,))."""
    sizes, alphas = _quadrature(n_steps)
    n, rest = x.shape[0], x.shape[1:]
    per_pass = max(1, batch // n)
    diff = x - base
    total = torch.zeros_like(x)
    for i in range(0, n_steps, per_pass):
        _check_cancel(cancel)
        a = torch.tensor(alphas[i:i + per_pass], dtype=x.dtype, device=x.device)
        k = a.numel()
        shape = (k,) + (1,) * x.ndim
        z = (base[None] + a.view(shape) * diff[None]).reshape(k * n, *rest).requires_grad_()
        args = [e.repeat(k, *([1] * (e.ndim - 1))) for e in extra]  # alpha-major, like z
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fn(z, *args).sum(), z)
        step = torch.tensor(sizes[i:i + k], dtype=x.dtype, device=x.device).view(shape)
        total += (g.view(k, n, *rest) * step).sum(0)
        yield k
    attr = total * diff
    with torch.no_grad():
        delta = attr.flatten(1).sum(1) - (fn(x, *extra) - fn(base, *extra))
    return attr, delta


def _tally(gen, tally: list[int]):
    """Re-yield a run's per-pass step counts as progress over the whole job."""
    while True:
        try:
            k = next(gen)
        except StopIteration as stop:
            return stop.value
        tally[0] += k
        yield SaliencyProgress(tally[0], tally[1])


def _runs_per_class(method: str, n_windows: int, window_batch: int) -> int:
    return {"fast": 1, "per_window": n_windows, "abs_windows": math.ceil(n_windows / window_batch)}[method]


def _iter_maps(model, traits, x, base, m, classes, method, wins, n_steps, batch, window_batch, cancel):
    """One IG run per class (``method`` as in the module docstring); yields SaliencyProgress and
    returns (maps, per-channel maps, deltas, output differences)."""
    h, w = x.shape[-2:]
    dev = x.device
    cov = torch.from_numpy(coverage((h, w), wins)).to(dev)
    tally = [0, len(classes) * _runs_per_class(method, len(wins), window_batch) * n_steps]
    maps, per_ch, deltas, diffs = [], [], [], []
    for k in classes:
        yk = _class_output(model, traits, m, k)
        with torch.no_grad():
            fx, fb = yk(x)[0], yk(base)[0]

        def run_ig(fn, inputs, baselines, extra=()):
            return _tally(_iter_ig(fn, inputs, baselines, n_steps, batch, cancel, extra), tally)

        if method == "fast":
            attr, delta = yield from run_ig(lambda z: (yk(z) * cov).sum(dim=(1, 2)), x, base)
            acc, gap = attr[0], float(delta.sum())
            diff = float(((fx - fb) * cov).sum())
            signed = acc.sum(0)
        elif method == "per_window":
            acc = torch.zeros_like(x[0])
            gap = diff = 0.0
            for sy, sx in wins:
                attr, delta = yield from run_ig(lambda z, sy=sy, sx=sx: yk(z)[:, sy, sx].sum(dim=(1, 2)), x, base)
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
                attr, delta = yield from run_ig(lambda z, wmask: (yk(z) * wmask).sum(dim=(1, 2)),
                                                x.expand(n, -1, -1, -1), base.expand(n, -1, -1, -1), (wm,))
                acc += attr.abs().sum(0)
                signed += attr.sum(1).abs().sum(0)
                gap += float(delta.sum())
                diff += float(((fx - fb)[None] * wm).sum())
        per_ch.append(acc.detach().float().cpu().numpy())
        maps.append(signed.detach().float().cpu().numpy())
        deltas.append(gap)
        diffs.append(diff)
    return maps, per_ch, deltas, diffs


def preview_factor(model, shape: tuple[int, int], factor: int) -> int:
    """The largest downscale <= ``factor`` at which ``model`` still takes an (H, W) image."""
    h, w = shape
    problem = getattr(model, "size_problem", None)
    factor = check_int(factor, "downscale")
    while factor > 1:
        sh, sw = math.ceil(h / factor), math.ceil(w / factor)
        if not (callable(problem) and problem(sh, sw)):
            break
        factor -= 1
    return factor


def _shrink(t: torch.Tensor, factor: int, mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    size = [math.ceil(s / factor) for s in t.shape[-2:]]
    return F.interpolate(t, size=size, mode=mode)


def _grow(a: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Each preview pixel repeated over the factor x factor pixels it stands for: it explains
    1/factor^2 of the outputs for factor^2 input pixels, so per pixel it reads on the full map's
    scale (and the full map's total is about factor^2 times the preview's own)."""
    big = np.repeat(np.repeat(a, factor, axis=-2), factor, axis=-1)[..., :shape[0], :shape[1]]
    return np.ascontiguousarray(big, dtype=np.float32)


#: the fewest IG passes a cancellable run is cut into (progress and Cancel between them)
PASSES_TO_CANCEL = 8


def _gap_warning(rel: float, steps: int, tolerance: float | None, baseline: str = "zeros") -> str | None:
    # Bias-free conv -> InstanceNorm (the PAM/FPA/RFNA blocks) is scale invariant, so along
    # the straight path from a zero (or constant) baseline F(beta*x) = F(x) for beta > 0:
    # the whole change happens at beta ~ 0 and IG misses it. The gap makes this visible.
    hint = ("(models with InstanceNorm after bias-free convs are scale invariant along a path from "
            "'zeros'/'mean'; 'blur' avoids that)" if baseline != "blur" else
            "(this run already used 'blur'; a larger blur sigma or more steps may close the gap)")
    if tolerance is not None:
        if rel <= tolerance:
            return None
        return (f"IG completeness gap is still {rel:.0%} of F(x) - F(x') at {steps} steps (the cap), above the "
                f"{tolerance:.0%} tolerance; the attributions do not add up. Try another baseline {hint}")
    if rel <= GAP_WARNING:
        return None
    return (f"IG completeness gap is {rel:.0%} of F(x) - F(x'); the attributions do not add up. "
            f"Try more steps or another baseline {hint}")


def iter_saliency(
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
    gap_tolerance: float | None = None,
    max_steps: int = 256,
    downscale: int = 1,
    cancel: Callable[[], bool] | None = None,
):
    """Patch-wise IG saliency of a 2D image for ``target_class`` (an int or a list), as a
    generator: yields :class:`SaliencyProgress` after every forward/backward pass and returns
    the :class:`SaliencyMap`. ``cancel()`` is checked before every pass and raises
    :class:`~napari_segattn.inference.Cancelled` (no partial map).

    ``target_class`` indexes the softmax of a multi-class model; for a one-logit model 1 is
    the foreground and 0 the background. FANet: the feedback ``mask`` (Otsu when None) is held
    fixed and only the image is explained. ``internal_batch_size`` bounds the interpolated
    images per pass (None: ``explain.memory.ig_batch_size``, ~1 MPixel per pass, which
    bounds memory and was also the fastest on CPU); ``window_batch`` the windows per batch in
    ``"abs_windows"``.

    ``gap_tolerance`` (e.g. 0.05): ``n_steps`` is the first try, doubled (up to ``max_steps``)
    until the relative completeness gap is below it; else ``warning`` gives the gap reached.
    ``downscale`` > 1 is a preview: the image (and feedback mask) shrunk by that factor (less
    where the model needs more pixels), explained, and the map spread back to full size; an
    explicit ``window``/``stride`` shrinks with it.
    """
    from ..devices import resolve_device

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {METHODS}")
    if baseline not in BASELINES:
        raise InputError(f"unknown baseline {baseline!r}; use one of {BASELINES}")
    n_steps = check_int(n_steps, "n_steps")
    window_batch = check_int(window_batch, "window_batch")
    max_steps = max(n_steps, check_int(max_steps, "max_steps"))
    if internal_batch_size is not None:
        internal_batch_size = check_int(internal_batch_size, "internal_batch_size")
    if gap_tolerance is not None and not (np.isfinite(gap_tolerance) and gap_tolerance > 0):
        raise InputError(f"gap_tolerance must be a positive fraction (0.05 = 5 %), got {gap_tolerance!r}")
    t0 = time.perf_counter()
    traits = model_traits(model)
    layout, raw, stack = prepare_stack(traits, image, channel_axis=channel_axis, model=model)
    classes = [int(target_class)] if np.isscalar(target_class) else [int(k) for k in target_class]
    for k in classes:
        if not 0 <= k < traits.num_classes:
            raise InputError(f"class {k} does not exist; the model has classes 0..{traits.num_classes - 1}")
    dev = resolve_device(device)
    x = torch.from_numpy(stack).to(dev)  # (1, C, H, W)
    full_shape = tuple(x.shape[-2:])
    m = None
    if traits.takes_mask:
        if mask is None or isinstance(mask, str):
            ms = initial_masks(raw, mask or "otsu")
        else:
            ms = layout.spatial_to_stack(np.asarray(mask)).astype(bool)
        m = torch.from_numpy(ms.astype(np.float32))[:, None].to(dev)
    factor = preview_factor(model, full_shape, downscale)
    if factor > 1:
        x = _shrink(x, factor, "area")
        m = None if m is None else (_shrink(m, factor, "nearest") > 0.5).float()
        if window is not None:
            window = max(1, math.ceil(window / factor)) if np.isscalar(window) else tuple(
                max(1, math.ceil(v / factor)) for v in window)
        stride = max(1, int(stride) // factor) if isinstance(stride, (int, np.integer)) and stride > 0 else stride
    h, w = x.shape[-2:]
    if window is None:
        window = int(getattr(model, "stride", 1)) if int(getattr(model, "stride", 1)) > 1 else 8
        window = min(window, h, w)  # the default shrinks to a small image; an explicit one is checked
    window, stride = _check_windows(window, stride, (h, w))
    wins = window_grid((h, w), window, stride)
    base = _baseline(x, baseline, blur_sigma)

    steps, tried = n_steps, []
    with _eval_on(model, dev):
        while True:
            batch = internal_batch_size or ig_batch_size((h, w), steps)
            if cancel is not None and internal_batch_size is None:
                # someone can press Cancel (the viewer): at least PASSES_TO_CANCEL passes, so a
                # small image, all of whose steps fit one pass, still shows progress and stops
                batch = min(batch, max(1, -(-steps // PASSES_TO_CANCEL)))
            maps, per_ch, deltas, diffs = yield from _iter_maps(model, traits, x, base, m, classes, method, wins,
                                                                steps, batch, window_batch, cancel)
            gaps = [abs(d) for d in deltas]
            rel = [g / abs(o) if o else float("nan") for g, o in zip(gaps, diffs)]
            tried.append((steps, max(rel)))
            if gap_tolerance is None or max(rel) <= gap_tolerance or steps >= max_steps:
                break
            steps = min(2 * steps, max_steps)

    single = np.isscalar(target_class)
    out_map, out_ch = (maps[0], per_ch[0]) if single else (np.stack(maps), np.stack(per_ch))
    if factor > 1:
        out_map, out_ch = _grow(out_map, factor, full_shape), _grow(out_ch, factor, full_shape)
    return SaliencyMap(
        map=out_map,
        per_channel=out_ch,
        target_classes=classes,
        method=method,
        window=(window, window) if isinstance(window, int) else tuple(window),
        stride=stride,
        n_windows=len(wins),
        n_steps=steps,
        baseline=baseline,
        completeness_gap=max(gaps),
        relative_gap=max(rel),
        deltas=deltas,
        output_difference=diffs,
        seconds=time.perf_counter() - t0,
        warning=_gap_warning(max(rel), steps, gap_tolerance, baseline),
        downscale=factor,
        steps_tried=tried if gap_tolerance is not None else [],
    )


def saliency(
    model: torch.nn.Module,
    image: np.ndarray,
    target_class: int | Sequence[int] = 1,
    *,
    progress: Callable[[SaliencyProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **kwargs,
) -> SaliencyMap:
    """:func:`iter_saliency` run to the end (same keyword arguments), calling ``progress(event)``
    after every pass: for callers that want a plain function (CLI, experiments)."""
    from ..inference.predict import drive

    return drive(iter_saliency(model, image, target_class, cancel=cancel, **kwargs), progress)
