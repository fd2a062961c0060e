"""Sliding-window inference with Gaussian blending: bounded memory for large images and volumes.

The window grid and the Gaussian importance map are MONAI's (``dense_patch_slices``,
``compute_importance_map``, the scan interval of ``sliding_window_inference``), so a tiled
result equals ``monai.inferers.sliding_window_inference(..., mode="gaussian")`` (tested). We
do not call that function itself because it is one blocking call on a whole in-memory tensor
with a whole in-memory output: here the loop is a generator (progress and cancel per window
batch, as every long job in the core), windows are read from lazy arrays (dask, zarr) one at a
time and normalised on read with whole-image statistics, and one output *block* can be computed
on its own (exactly, from the windows of the global grid that touch it), which is what chunked
zarr writes and dask.distributed tasks need.

Models are 2D: a volume is a stack of slices, each slice tiled in 2D.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .layout import InputError, Layout

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_OVERLAP",
    "BYTES_PER_PIXEL",
    "WindowGrid",
    "RawWindows",
    "TileProgress",
    "parse_bytes",
    "choose_window",
    "make_grid",
    "iter_blend_block",
    "iter_stack_probabilities",
    "stack_probabilities",
]

#: Bytes the model's activations may take in one forward pass unless told otherwise: whole
#: slices that fit run whole, larger ones in windows that fit. 1 GiB keeps an 8192² image
#: under 3 GB peak RSS on CPU (docs/performance.md) and fits a laptop.
DEFAULT_MEMORY_BUDGET = 1 << 30

BLENDS = ("gaussian", "monai")

#: Share of a window that overlaps its neighbour (MONAI's default is 0.25 as well).
DEFAULT_OVERLAP = 0.25

#: float32 CPU inference memory per input pixel, measured once per architecture with default
#: constructor arguments by ``python -m benchmarks.activation_memory`` (peak RSS slope
#: between 256² and 512², one thread, torch 2.13). Only the ratio to the budget matters, so
#: a few per cent of measurement noise changes a window side by ~1 %.
BYTES_PER_PIXEL = {
    "aunet": 1657, "brunet": 500, "cbamunet": 1508, "cscunet": 1762, "d6unet": 1443, "d9unet": 1741,
    "fanet": 1213, "fbunet": 2389, "fpa": 1572, "gcnunet": 1549, "rfna": 1584, "unet": 1440, "wunet": 2921,
}
#: for architectures not in the table (stand-ins, plug-ins): above every measured one
DEFAULT_BYTES_PER_PIXEL = 3000

#: windows are multiples of this (the U-Nets' downsampling factor divides it) unless the
#: image itself is smaller
WINDOW_MULTIPLE = 32
#: a budget that only allows windows smaller than this is refused: the blending would be
#: dominated by window borders
MIN_AUTO_WINDOW = 64


@dataclass(frozen=True)
class TileProgress:
    """Windows done of total, the event tiled inference yields: ``stage="windows"``, or
    ``"statistics"`` while ``squeeze="slice"`` measures a slice's statistics (those partial
    passes of the windows are counted in ``done``/``total`` too)."""

    done: int
    total: int
    stage: str = "windows"


def parse_bytes(text: str | int | float | None) -> int | None:
    """``"1.5G"``, ``"800M"``, ``"2GiB"``, ``1e9`` -> bytes (binary units); None stays None."""
    if text is None or isinstance(text, (int, float)):
        if text is not None and text <= 0:
            raise InputError(f"memory budget must be positive, got {text}")
        return None if text is None else int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text).lower())
    if not m:
        raise InputError(f"cannot read memory budget {text!r}; write e.g. 1.5G, 800M or 2000000000")
    value = float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")
    if value <= 0:
        raise InputError(f"memory budget must be positive, got {text!r}")
    return int(value)


def bytes_per_pixel(name: str | None) -> int:
    return BYTES_PER_PIXEL.get(name or "", DEFAULT_BYTES_PER_PIXEL)


def _pair(tile) -> tuple[int, int]:
    if isinstance(tile, (int, np.integer)):
        return int(tile), int(tile)
    t = tuple(int(v) for v in tile)
    if len(t) != 2:
        raise InputError(f"tile must be one size or (height, width); got {tile!r}")
    return t  # type: ignore[return-value]


def choose_window(
    hw: tuple[int, int],
    *,
    model_name: str | None = None,
    tile: int | Sequence[int] | str | None = "auto",
    memory_budget: int | str | None = None,
    per_forward: int = 1,
    overlap: float = DEFAULT_OVERLAP,
    stride: int = 1,
) -> tuple[int, int] | None:
    """The window ``(h, w)`` for slices of size ``hw``, or None for whole-slice inference.

    ``tile="auto"`` (or None): whole when ``h * w * bytes_per_pixel * per_forward`` fits
    ``memory_budget``, else the largest square window (a multiple of 32) that fits.
    ``tile=0`` / ``"off"``: whole. An int or ``(h, w)``: that window, which must fit the image
    and be at least the model's ``stride`` (a smaller window is padded up to the stride in every
    forward: as many windows as pixels/stride-padding, a 512x512 FANet slice at tile 8 ran
    thousands of 16x16 forwards with no word why).
    """
    h, w = int(hw[0]), int(hw[1])
    if tile in (0, "0", "off", "whole", False):
        return None
    if tile is None or tile == "auto":
        budget = parse_bytes(memory_budget) or DEFAULT_MEMORY_BUDGET
        bpp = bytes_per_pixel(model_name) * max(1, per_forward)
        if h * w * bpp <= budget:
            return None
        side = int(math.sqrt(budget / bpp)) // WINDOW_MULTIPLE * WINDOW_MULTIPLE
        if side < MIN_AUTO_WINDOW:
            need = MIN_AUTO_WINDOW ** 2 * bpp
            raise InputError(f"memory budget {budget / 2**20:.0f} MiB allows only windows below "
                             f"{MIN_AUTO_WINDOW}x{MIN_AUTO_WINDOW} for {model_name or 'this model'}; "
                             f"give at least {math.ceil(need / 2**20)} MiB")
        return _fitted(h, side, overlap), _fitted(w, side, overlap)
    th, tw = _pair(tile)
    if th < 1 or tw < 1:
        raise InputError(f"tile must be >= 1 pixel, got {th}x{tw}")
    if min(th, tw) < stride <= min(h, w):
        raise InputError(f"window {th}x{tw} is smaller than the model's stride {stride}: every window would be "
                         f"padded to a multiple of {stride}; use a tile of at least {stride} (a multiple of {stride} "
                         "wastes nothing), auto, or 0 (whole image)")
    if th > h or tw > w:
        raise InputError(f"window {th}x{tw} is larger than the image slice {h}x{w}; use a smaller tile "
                         "or tile=0 (whole image)")
    return th, tw


def _fitted(n: int, side: int, overlap: float) -> int:
    """The smallest window (multiple of 32, <= side) covering ``n`` pixels with as few windows
    at ``overlap`` as windows of ``side`` would need."""
    if n <= side:
        return n
    count = math.ceil((n - overlap * side) / ((1 - overlap) * side))
    need = math.ceil(n / (count - (count - 1) * overlap))
    return min(side, n, math.ceil(need / WINDOW_MULTIPLE) * WINDOW_MULTIPLE)


def _scan_interval(image: Sequence[int], window: Sequence[int], overlap: float) -> tuple[int, ...]:
    # as monai.inferers.utils._get_scan_interval (private there, so restated): a window as large
    # as the image does not move, otherwise it moves by (1 - overlap) of its size, at least 1
    return tuple(int(r) if r == n else max(1, int(r * (1 - overlap))) for n, r in zip(image, window))


@dataclass(frozen=True)
class WindowGrid:
    """The windows covering one ``(H, W)`` slice and their Gaussian blending weights."""

    image: tuple[int, int]
    window: tuple[int, int]
    overlap: float
    slices: tuple[tuple[slice, slice], ...]
    weights: np.ndarray  # (h, w) float32 Gaussian, sigma 0.125 * size (see make_grid)

    def __len__(self) -> int:
        return len(self.slices)

    def touching(self, region: tuple[slice, slice]) -> list[int]:
        """Indices of the windows that overlap ``region`` (a block of the output)."""
        (r0, r1), (c0, c1) = (region[0].start, region[0].stop), (region[1].start, region[1].stop)
        return [i for i, (sy, sx) in enumerate(self.slices)
                if sy.start < r1 and sy.stop > r0 and sx.start < c1 and sx.stop > c0]


def make_grid(hw: tuple[int, int], window: tuple[int, int], overlap: float = DEFAULT_OVERLAP,
              blend: str = "gaussian") -> WindowGrid:
    """MONAI's sliding-window grid over ``hw`` (the last window on each axis ends at the border).

    ``blend="gaussian"``: :func:`gaussian_weights`; ``"monai"``: MONAI's clamped map, so the
    result equals ``sliding_window_inference(mode="gaussian")`` exactly.
    """
    import torch
    from monai.data.utils import compute_importance_map, dense_patch_slices

    if not 0 <= overlap < 1:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    hw = (int(hw[0]), int(hw[1]))
    window = (int(window[0]), int(window[1]))
    if window[0] > hw[0] or window[1] > hw[1]:
        raise InputError(f"window {window[0]}x{window[1]} is larger than the image slice {hw[0]}x{hw[1]}")
    if blend not in BLENDS:
        raise InputError(f"unknown blending {blend!r}; use one of {BLENDS}")
    slices = dense_patch_slices(hw, window, _scan_interval(hw, window, overlap))
    if blend == "monai":
        weights = compute_importance_map(window, mode="gaussian", sigma_scale=0.125,
                                         device=torch.device("cpu")).numpy()
    else:
        weights = gaussian_weights(window)
    slices = tuple(tuple(slice(int(a.start), int(a.stop)) for a in s) for s in slices)
    return WindowGrid(hw, window, float(overlap), slices, weights)


def gaussian_weights(window: tuple[int, int], sigma_scale: float = 0.125) -> np.ndarray:
    """MONAI's Gaussian importance map without its clamp to >= 1e-3.

    Deviation (docs/deviations.md): MONAI clamps the map at 1e-3, which at the image border
    gives a window's corrupted edge (zero padding inside the window) the *same* weight as a
    neighbour's well-inside pixel; measured on a local conv net that is what kept tiled vs whole
    at Dice 0.995, max |dp| 0.41. Unclamped (floored at 1e-12 against 0/0), the neighbour
    dominates there too (Dice 1.0, max |dp| < 0.05; tests/inference/test_tiling.py).
    """
    axes = []
    for n in window:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(-(x ** 2) / (2 * (sigma_scale * n) ** 2)))
    w = np.outer(axes[0], axes[1])
    return np.maximum(w / w.max(), 1e-12).astype(np.float32)


class RawWindows:
    """Windows ``(C, h, w)`` of slice ``z`` read from the caller's array in its own axis order.

    Works on anything indexable like numpy (numpy, dask, zarr): only the window is read,
    never the whole array. Normalisation is applied per window with statistics of the whole
    slice (``per="image"``) or volume (``per="volume"``), so windows agree with a whole-image
    normalisation exactly.
    """

    def __init__(self, array, layout: Layout, normalization: dict | None = None) -> None:
        self.array = array
        self.layout = layout
        self.norm = None
        if normalization:
            from ..data import Normalization

            self.norm = Normalization.from_dict(normalization)
            if self.norm.mode == "none":
                self.norm = None
        self._stats: dict[int | None, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_slices(self) -> int:
        return self.layout.n_slices

    @property
    def hw(self) -> tuple[int, int]:
        sp = list(self.layout.spatial_shape)
        if self.layout.is_volume:
            sp.pop(self.layout.slice_pos)
        return int(sp[0]), int(sp[1])

    def _index(self, z: int | None, sy: slice, sx: slice) -> tuple:
        lay = self.layout
        idx, plane = [], iter((sy, sx))
        for ax in range(len(lay.shape)):
            if ax == lay.channel_axis:
                idx.append(slice(None))
            elif ax == lay.slice_axis:
                idx.append(z)
            else:
                idx.append(next(plane))
        return tuple(idx)

    def raw(self, z: int, sy: slice = slice(None), sx: slice = slice(None)) -> np.ndarray:
        """The raw window ``(C, h, w)`` in the array's dtype."""
        win = np.asarray(self.array[self._index(z if self.layout.is_volume else None, sy, sx)])
        if self.layout.channel_axis is None:
            return win[None]
        # the channel axis keeps its place among the (kept) axes; H, W stay in order
        c = self.layout.channel_axis - (1 if self.layout.is_volume and self.layout.slice_axis < self.layout.channel_axis else 0)
        return np.moveaxis(win, c, 0)

    def prepare(self) -> "RawWindows":
        """Compute the normalisation statistics now (before windows are read, or before this
        object is sent to dask workers, so each worker does not reduce the image again)."""
        if self.norm is not None:
            for z in range(self.n_slices):
                self._statistics(z)
        return self

    def _statistics(self, z: int):
        key = z if (self.layout.is_volume and self.norm.per == "image") else None
        if key not in self._stats:
            if key is None and self.layout.is_volume:
                data = self.layout.channels_first(self.array) if isinstance(self.array, np.ndarray) else None
                self._stats[key] = _statistics(self.norm, data if data is not None else self._lazy_cf())
            else:
                self._stats[key] = _statistics(self.norm, self._slice_cf(z))
        return self._stats[key]

    def _slice_cf(self, z: int):
        if isinstance(self.array, np.ndarray):
            return self.raw(z)
        import dask.array as da

        arr = as_dask(self.array)
        idx = self._index(z if self.layout.is_volume else None, slice(None), slice(None))
        win = arr[idx]
        if self.layout.channel_axis is None:
            return win[None]
        c = self.layout.channel_axis - (1 if self.layout.is_volume and self.layout.slice_axis < self.layout.channel_axis else 0)
        return da.moveaxis(win, c, 0)

    def _lazy_cf(self):
        import dask.array as da

        arr = as_dask(self.array)
        return arr[None] if self.layout.channel_axis is None else da.moveaxis(arr, self.layout.channel_axis, 0)

    def read(self, z: int, sy: slice, sx: slice) -> np.ndarray:
        """The normalised float32 window ``(C, h, w)`` the model sees."""
        win = self.raw(z, sy, sx)
        if self.norm is None:
            return win.astype(np.float32, copy=False)
        return self.norm.apply(win, channel_axis=0, stats=self._statistics(z))


def as_dask(array):
    """A dask view of an array-like, chunked as it is stored (zarr's chunks), for reductions
    that read it chunk by chunk."""
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    chunks = getattr(array, "chunks", None)
    return da.from_array(array, chunks=tuple(chunks) if chunks is not None else "auto")


def _statistics(norm, cf) -> tuple[np.ndarray, np.ndarray]:
    """``Normalization.statistics`` of a channels-first array; dask arrays are reduced chunk by
    chunk (never loaded whole)."""
    if isinstance(cf, np.ndarray):
        return norm.statistics(cf, channel_axis=0)
    import dask
    import dask.array as da

    c = cf.shape[0]
    offset, scale = np.zeros(c), np.ones(c)
    for i in range(c):
        ch = cf[i].astype(np.float64)
        if norm.mode == "zscore_nonzero":
            nz = ch != 0
            n, s, s2 = dask.compute(nz.sum(), da.where(nz, ch, 0).sum(), da.where(nz, ch * ch, 0).sum())
            if n == 0:
                continue
            mean = s / n
            lo, spread = mean, math.sqrt(max(s2 / n - mean * mean, 0.0))
        elif norm.mode == "zscore":
            lo, spread = dask.compute(ch.mean(), ch.std())
        else:
            lo, hi = dask.compute(ch.min(), ch.max())
            spread = hi - lo
        offset[i] = lo
        scale[i] = spread if spread > norm.eps else 1.0
    return offset, scale


# -- the blending loop ---------------------------------------------------------------------------

Forward = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


def iter_blend_block(
    forward: Forward,
    read: Callable[[slice, slice], np.ndarray],
    grid: WindowGrid,
    n_out: int,
    *,
    region: tuple[slice, slice] | None = None,
    mask: Callable[[slice, slice], np.ndarray] | None = None,
    batch_size: int = 4,
    cancel: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Blend the windows of ``grid`` that touch ``region`` (default: the whole slice) into the
    probabilities ``(n_out, *region)``; yields windows done after each batch, *returns* the block.

    ``forward(x (b, C, h, w), masks (b, h, w) | None) -> (b, n_out, h, w)``;
    ``read(sy, sx)`` / ``mask(sy, sx)`` give a window of the image / of the feedback mask, so
    FANet's mask is cut exactly like the image. The result is
    ``sum_w g_w p_w / sum_w g_w`` over the windows, as MONAI's gaussian blending.
    """
    from ..models.geometry import windows_of_slice
    from .predict import Cancelled

    if region is None:
        region = (slice(0, grid.image[0]), slice(0, grid.image[1]))
    r0, c0 = region[0].start, region[1].start
    bh, bw = region[0].stop - r0, region[1].stop - c0
    out = np.zeros((n_out, bh, bw), np.float32)
    wsum = np.zeros((bh, bw), np.float32)
    todo = grid.touching(region)
    for start in range(0, len(todo), max(1, batch_size)):
        if cancel is not None and cancel():
            raise Cancelled("prediction cancelled")
        batch = [grid.slices[i] for i in todo[start:start + batch_size]]
        x = np.stack([read(sy, sx) for sy, sx in batch])
        m = None if mask is None else np.stack([mask(sy, sx) for sy, sx in batch])
        with windows_of_slice([(sy.start, sx.start) for sy, sx in batch], grid.image):
            probs = forward(x, m)  # align_corners resizing in the slice's geometry (models/geometry.py)
        for (sy, sx), p in zip(batch, probs):
            # the part of this window inside the block, in window and in block coordinates
            y0, y1 = max(sy.start, r0), min(sy.stop, r0 + bh)
            x0, x1 = max(sx.start, c0), min(sx.stop, c0 + bw)
            g = grid.weights[y0 - sy.start:y1 - sy.start, x0 - sx.start:x1 - sx.start]
            out[:, y0 - r0:y1 - r0, x0 - c0:x1 - c0] += p[:, y0 - sy.start:y1 - sy.start, x0 - sx.start:x1 - sx.start] * g
            wsum[y0 - r0:y1 - r0, x0 - c0:x1 - c0] += g
        yield min(len(todo), start + batch_size)
    out /= wsum
    return out


def model_forward(net, traits, device, amp, channels_last=None) -> Forward:
    """A :data:`Forward` over numpy window batches through ``run_batches`` (upload, autocast,
    channels-last and OOM advice as for whole slices)."""
    from .predict import run_batches

    def forward(x: np.ndarray, m: np.ndarray | None) -> np.ndarray:
        out = None
        for _, out in run_batches(net, traits, x, m, batch_size=len(x), device=device, amp=amp,
                                  channels_last=channels_last):
            pass
        return out

    return forward


def iter_stack_probabilities(
    model,
    traits,
    stack,
    masks: np.ndarray | None,
    *,
    device,
    amp,
    batch_size: int = 16,
    tile="auto",
    overlap: float = DEFAULT_OVERLAP,
    memory_budget=None,
    cancel: Callable[[], bool] | None = None,
    blend: str = "gaussian",
    squeeze: str = "window",
) -> Iterator:
    """Probabilities ``(Z, K, H, W)`` of a normalised ``(Z, C, H, W)`` stack (numpy) or of a
    :class:`RawWindows` source, whole slices or windows as the memory budget says.

    ``squeeze="slice"``: windows use the SE and InstanceNorm statistics of the whole slice
    (``inference.global_squeeze``; FANet, the PAM U-Nets), so tiled agrees with whole-slice
    inference, at the cost of one partial pass of the windows per such layer; ``"window"``:
    each window its own.

    Yields :class:`~napari_segattn.inference.PredictProgress` (slices) when whole,
    :class:`TileProgress` (windows) when tiled; *returns* ``(probabilities, info)``.
    """
    from .global_squeeze import fixed_stats, iter_slice_stats, stat_layers
    from .predict import PredictProgress, _eval_on, run_batches, use_channels_last

    if squeeze not in ("window", "slice"):  # checked before any work, whole or tiled
        raise InputError(f"squeeze must be 'window' or 'slice', got {squeeze!r}")
    source = stack if isinstance(stack, RawWindows) else None
    n, hw = (source.n_slices, source.hw) if source is not None else (stack.shape[0], tuple(stack.shape[2:]))
    k = 1 if traits.binary else traits.out_channels
    per_forward = 1 if getattr(device, "type", "cpu") == "cpu" else batch_size
    window = choose_window(hw, model_name=traits.name, tile=tile, memory_budget=memory_budget,
                           per_forward=per_forward, overlap=overlap, stride=int(getattr(model, "stride", 1) or 1))
    cl = use_channels_last(traits, device)
    probs = np.empty((n, k, *hw), np.float32)
    with _eval_on(model, device, cl, fold=True) as net:
        if window is None:
            if source is not None:
                stack = np.stack([source.read(z, slice(None), slice(None)) for z in range(n)])
            yield PredictProgress(0, n)
            for done, out in run_batches(net, traits, stack, masks, batch_size=batch_size, device=device,
                                         amp=amp, cancel=cancel, channels_last=cl):
                probs[done - out.shape[0]:done] = out
                yield PredictProgress(done, n)
            return probs, {"tiled": False}
        # the grid covers the slice padded to the model stride, as the whole-slice forward pads
        # it: every window then starts on the stride grid, so its downsampling sees the whole
        # slice's pixel phases (MONAI's last window at size - window did not: 500x470, unet,
        # Dice 0.986 against whole)
        padded_hw = stride_padded(hw, model)
        grid = make_grid(padded_hw, window, overlap, blend)
        forward = model_forward(net, traits, device, amp, cl)
        # squeeze="slice": each slice first measures its statistics, one partial pass of its
        # windows per SE/InstanceNorm layer; the progress counts those passes as windows too
        passes = len(stat_layers(net)) if squeeze == "slice" else 0
        per_slice = len(grid) * (1 + passes)
        total = n * per_slice
        yield TileProgress(0, total)
        for z in range(n):
            if source is not None:
                read = lambda sy, sx, z=z: source.read(z, sy, sx)  # noqa: E731
            else:
                read = lambda sy, sx, z=z: stack[z][:, sy, sx]  # noqa: E731
            mread = None if masks is None else (lambda sy, sx, z=z: masks[z][sy, sx])
            if padded_hw != hw:
                read, mread = _padded_reader(read, hw, "reflect"), mread and _padded_reader(mread, hw, "constant")
            layers, stats = [], []
            if passes:
                measure = iter_slice_stats(net, read, mread, grid, getattr(model, "stride", 1), max(1, batch_size),
                                           cancel)
                layers, stats = yield from _as_progress(measure, z * per_slice, total, "statistics")
            with fixed_stats(layers, stats):
                blending = iter_blend_block(forward, read, grid, k, mask=mread, batch_size=batch_size, cancel=cancel)
                block = yield from _as_progress(blending, z * per_slice + passes * len(grid), total, "windows")
                probs[z] = block[:, :hw[0], :hw[1]]
    return probs, {"tiled": True, "window": list(window), "overlap": overlap, "windows": n * len(grid),
                   "statistics_passes": n * passes * len(grid)}


def _as_progress(gen, offset: int, total: int, stage: str):
    """Re-yield a generator's window counts as :class:`TileProgress` over the whole run
    (``offset`` windows before it); returns what it returns."""
    while True:
        try:
            done = next(gen)
        except StopIteration as stop:
            return stop.value
        yield TileProgress(offset + done, total, stage)


def stride_padded(hw: tuple[int, int], model) -> tuple[int, int]:
    """``hw`` rounded up to the model's stride: the size the whole-slice forward pads to, and
    the size the window grid covers."""
    stride = int(getattr(model, "stride", 1) or 1)
    return (-(-int(hw[0]) // stride) * stride, -(-int(hw[1]) // stride) * stride)


def _padded_reader(read, hw: tuple[int, int], mode: str):
    """``read`` for windows of the slice padded at the bottom/right beyond ``hw``: the part inside
    is read, the rest padded as ``models.base.pad_to_multiple`` pads the whole slice (image:
    reflect; feedback mask: zeros). A window holds more rows than the padding, so reflecting its
    own rows is reflecting the slice's."""
    def padded(sy: slice, sx: slice) -> np.ndarray:
        inside = read(slice(sy.start, min(sy.stop, hw[0])), slice(sx.start, min(sx.stop, hw[1])))
        pad = [(0, 0)] * (inside.ndim - 2) + [(0, max(0, sy.stop - hw[0])), (0, max(0, sx.stop - hw[1]))]
        return np.pad(inside, pad, mode=mode)

    return padded


def stack_probabilities(model, traits, stack, masks, **kwargs) -> np.ndarray:
    """Blocking :func:`iter_stack_probabilities`: the ``(Z, K, H, W)`` probabilities only."""
    from .predict import drive

    return drive(iter_stack_probabilities(model, traits, stack, masks, **kwargs))[0]
