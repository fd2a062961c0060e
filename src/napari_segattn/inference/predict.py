"""Whole-image / whole-volume prediction as plain arrays, one implementation for CLI and GUI.

``iter_predict`` is the generator (yields :class:`PredictProgress`, returns a
:class:`Prediction`) that napari's ``thread_worker`` wraps; ``predict`` drives it with an
optional callback. Volumes are cut into 2D slices along ``slice_axis`` and run in batches.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..devices import resolve_device
from ..models.geometry import batch_part
from .checks import check_finite_output, check_image_size, check_int, check_threshold
from .layout import InputError, Layout
from .masks import binarize, class_labels, initial_masks
from .tiling import DEFAULT_OVERLAP
from .traits import ModelTraits, model_traits, normalize_image, to_probabilities

__all__ = [
    "Prediction",
    "PredictProgress",
    "predict",
    "iter_predict",
    "Cancelled",
    "GPUMemoryError",
    "prepare_stack",
    "prepare_source",
    "is_lazy",
    "run_batches",
    "autocast_dtype",
    "drive",
    "use_channels_last",
    "CPU_CHANNELS_LAST",
    "CPU_MICRO_BATCH",
]


class Cancelled(Exception):
    """The caller's cancel flag was set; no partial result is returned."""


class GPUMemoryError(RuntimeError):
    """CUDA ran out of memory; the message says which batch size to try."""


@dataclass(frozen=True)
class PredictProgress:
    done: int
    total: int
    stage: str = "predict"


@dataclass
class Prediction:
    """Probabilities ``(K, *spatial)`` float32 and labels ``(*spatial)`` in the input's order.

    One-logit models give ``K = 1``: the *foreground* probability (for RFNA already
    ``1 − sigmoid``), and bool labels ``p > threshold``. Multi-class models give the softmax
    and labels (uint8) by :func:`~.masks.class_labels`: ``argmax`` at the default 0.5, the
    threshold moving the boundary between background (class 0) and the best other class.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    model_name: str | None = None
    reverse_labels: bool = False
    threshold: float | None = 0.5
    device: str = "cpu"
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        return self.probabilities.shape[0] == 1

    @property
    def foreground(self) -> np.ndarray:
        """Foreground probability of a binary model."""
        if not self.binary:
            raise ValueError("foreground is defined for one-logit (binary) models only")
        return self.probabilities[0]


def is_lazy(image) -> bool:
    """dask / zarr / other array-likes that are read window by window, never loaded whole."""
    return not isinstance(image, np.ndarray) and hasattr(image, "shape") and hasattr(image, "dtype") \
        and hasattr(image, "__getitem__")


def _check_finite(image) -> None:
    if np.dtype(image.dtype).kind != "f":
        return
    if is_lazy(image):
        import dask.array as da

        from .tiling import as_dask

        n = int((~da.isfinite(as_dask(image))).sum().compute())  # chunk by chunk
    else:
        n = 0 if np.isfinite(image).all() else int((~np.isfinite(image)).sum())
    if n:
        raise InputError(f"the image contains {n} NaN/inf value(s); fill or mask them before predicting")


def _warn_if_constant(image) -> None:
    """A constant image has nothing to segment, and per-image z-scoring turns it into zeros,
    which a model may read as all foreground (the demo FANet: 99.98 %). Said, not refused: a
    blank slice is a legitimate input whose result is simply meaningless."""
    if is_lazy(image) or image.size == 0:
        return  # reading a whole lazy volume for this is not worth it
    first = image.flat[0]
    if np.all(image == first):
        import warnings

        from ..data.errors import SegattnWarning

        warnings.warn(f"the image is constant (every pixel {first.item()!r}): there is nothing to segment, so "
                      "a prediction (or a map) of it means nothing", SegattnWarning, stacklevel=3)


def _check_slice_size(model: torch.nn.Module, layout: Layout) -> None:
    sp = list(layout.spatial_shape)
    if layout.is_volume:
        sp.pop(layout.slice_pos)
    check_image_size(model, tuple(sp))


def prepare_source(
    traits: ModelTraits,
    image,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    model: torch.nn.Module | None = None,
):
    """Validate the image; returns its layout and a :class:`~.tiling.RawWindows` reader (numpy,
    dask or zarr; normalised per window with whole-slice / whole-volume statistics).

    With ``model``, slices smaller than it takes are refused here (``check_image_size``)."""
    from .tiling import RawWindows

    if not is_lazy(image):
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.float32)
    if np.dtype(image.dtype).kind not in "biuf":
        raise InputError(f"cannot predict on an array of dtype {image.dtype}")
    layout = Layout.infer(tuple(image.shape), channel_axis=channel_axis, slice_axis=slice_axis,
                          in_channels=traits.in_channels)
    if model is not None:
        _check_slice_size(model, layout)
    _check_finite(image)
    _warn_if_constant(image)
    return layout, RawWindows(image, layout, traits.normalization)


def prepare_stack(
    traits: ModelTraits,
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    model: torch.nn.Module | None = None,
) -> tuple[Layout, np.ndarray, np.ndarray]:
    """Validate and reshape: returns the layout, the raw and the normalised ``(Z, C, H, W)``.

    With ``model``, slices smaller than it takes are refused here (``check_image_size``)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.float32)
    if image.dtype.kind not in "biuf":
        raise InputError(f"cannot predict on an array of dtype {image.dtype}")
    layout = Layout.infer(image.shape, channel_axis=channel_axis, slice_axis=slice_axis,
                          in_channels=traits.in_channels)
    if model is not None:
        _check_slice_size(model, layout)
    _check_finite(image)
    _warn_if_constant(image)
    # the raw stack keeps its dtype: FANet's Otsu mask reads uint8 files as they are
    raw_cf = layout.channels_first(image)
    norm_cf = normalize_image(traits, raw_cf, slice_axis=1 + layout.slice_pos if layout.is_volume else None)

    def stack(cf: np.ndarray) -> np.ndarray:
        return np.moveaxis(cf, 1 + layout.slice_pos, 0) if layout.is_volume else cf[None]

    return layout, stack(raw_cf), np.ascontiguousarray(stack(norm_cf))


#: Models that run faster with channels-last memory on CPU too (measured in
#: docs/performance.md: FANet 1.3x; FPA's depthwise + InstanceNorm blocks run ~1.8x *slower*).
CPU_CHANNELS_LAST = frozenset({"fanet"})


#: Slices per forward pass on CPU. The convolutions already use every core for one slice, and
#: a batch's larger activations fall out of cache: FPA on 4 x 240 x 240 slices ran 1.35x
#: faster one slice at a time than in batches of 4 (docs/performance.md). ``batch_size`` still
#: sets the progress/cancel granularity.
CPU_MICRO_BATCH = 1


def use_channels_last(traits: ModelTraits, device: torch.device) -> bool:
    """Channels-last memory: always on CUDA (tensor cores); on CPU only where measured faster."""
    return device.type == "cuda" or (device.type == "cpu" and traits.name in CPU_CHANNELS_LAST)


@contextlib.contextmanager
def _eval_on(model: torch.nn.Module, device: torch.device, channels_last: bool | None = None, *,
             fold: bool = False) -> Iterator[torch.nn.Module]:
    """Eval mode + device for the block, yielding the network to run: with ``fold`` the model
    with its BatchNorms folded into the convolutions (a cached copy, ``inference.fold``),
    otherwise the model itself; the caller's train/eval flag is restored after.

    ``channels_last=None`` keeps the released rule (channels-last on CUDA only).
    """
    from .fold import folded_for_inference

    was_training = model.training
    model.eval()
    model.to(device)
    cl = bool(channels_last or (channels_last is None and device.type == "cuda"))
    if cl:
        model.to(memory_format=torch.channels_last)
    try:
        yield folded_for_inference(model, cl) if fold else model
    finally:
        model.train(was_training)


def _oom_message(batch_size: int) -> str:
    smaller = max(1, batch_size // 2)
    return (f"GPU out of memory with batch size {batch_size}; try batch_size={smaller} "
            f"(CLI: --batch-size {smaller}) or device='cpu'")


def _upload(arr: np.ndarray, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """Host array -> device tensor. On CUDA via pinned memory and a non-blocking copy, so the
    host can slice and pin the next batch while the GPU still works on this one."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    return t.contiguous(memory_format=memory_format) if t.ndim == 4 else t


def autocast_dtype(amp: bool | str | None, device: torch.device) -> torch.dtype | None:
    """The autocast precision for ``amp`` on ``device`` (None = plain float32).

    ``True``/``"auto"``: float16 on CUDA, float32 elsewhere, so CPU results are exact and the
    same on every machine. ``"bf16"``: bfloat16 autocast on CUDA *and* CPU -- opt-in on CPU
    because it changes probabilities by up to a few 1e-2 and only pays off with native bf16 (AMX /
    AVX512-BF16: FANet 512² step 3.8x faster; emulated on older CPUs: ~10x slower, see
    docs/performance.md). ``False``/``"off"``: float32 everywhere.
    """
    if amp is None or amp is False or amp == "off" or (type(amp) is int and amp == 0):
        return None
    if amp is True or amp == "auto" or (type(amp) is int and amp == 1):
        return torch.float16 if device.type == "cuda" else None
    if amp == "bf16":
        return torch.bfloat16
    raise ValueError(f"amp={amp!r}; use True/'auto', False/None/'off' or 'bf16'")


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    # cuDNN autotuning pays off because every batch but the last has the same shape.
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled or old
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def run_batches(
    model: torch.nn.Module,
    traits: ModelTraits,
    stack: np.ndarray,
    masks: np.ndarray | None,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool,
    cancel: Callable[[], bool] | None = None,
    channels_last: bool | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(slices_done, probabilities (b, K, H, W))`` batch by batch (inference mode).

    ``channels_last=None``: on CUDA always, on CPU for :data:`CPU_CHANNELS_LAST` models.
    ``amp``: see :func:`autocast_dtype`; probabilities are computed in float32 either way.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    amp_dtype = autocast_dtype(amp, device)
    if channels_last is None:
        channels_last = use_channels_last(traits, device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    n = stack.shape[0]
    cuda = device.type == "cuda"
    pending: _Pending | None = None
    with _cudnn_benchmark(cuda):
        for start in range(0, n, batch_size):
            if cancel is not None and cancel():
                raise Cancelled("prediction cancelled")
            stop = min(n, start + batch_size)
            try:
                with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                             enabled=amp_dtype is not None):
                    step = CPU_MICRO_BATCH if device.type == "cpu" else stop - start
                    parts = []
                    for a in range(start, stop, step):
                        b = min(stop, a + step)
                        args = [_upload(stack[a:b], device, mf)]
                        if traits.takes_mask:
                            args.append(_upload(masks[a:b, None].astype(np.float32), device, mf))
                        with batch_part(a, b):  # tiled: which windows of the slice these are
                            parts.append(to_probabilities(model(*args), traits.reverse_labels).float())
                    probs = parts[0] if len(parts) == 1 else torch.cat(parts)
                    current = _Pending.start(stop, probs, cuda)
                # One batch in flight: this batch's kernels and its device->host copy are queued
                # before we wait for the previous batch, so on CUDA the GPU computes batch k+1
                # while the host hands batch k to the caller and slices / pins batch k+2.
                if pending is not None:
                    yield pending.finish()
                pending = current
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                raise GPUMemoryError(_oom_message(batch_size)) from None
        if pending is not None:
            yield pending.finish()


class _Pending:
    """A batch's probabilities on their way to the host (non-blocking copy into pinned memory
    on CUDA, with an event to wait on; a plain tensor on CPU)."""

    def __init__(self, stop: int, host: torch.Tensor, event):
        self.stop, self.host, self.event = stop, host, event

    @classmethod
    def start(cls, stop: int, probs: torch.Tensor, cuda: bool) -> "_Pending":
        if not cuda:
            return cls(stop, probs, None)
        host = torch.empty(probs.shape, dtype=probs.dtype, pin_memory=True)
        host.copy_(probs, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return cls(stop, host, event)

    def finish(self) -> tuple[int, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return self.stop, self.host.numpy()


def iter_predict(
    model: torch.nn.Module,
    image,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    amp: bool | str = True,
    mask: np.ndarray | str | None = None,
    threshold: float = 0.5,
    cancel: Callable[[], bool] | None = None,
    tile: int | tuple[int, int] | str | None = "auto",
    overlap: float = DEFAULT_OVERLAP,
    memory_budget: int | str | None = None,
    squeeze: str = "window",
) -> Iterator[PredictProgress]:
    """Generator form of :func:`predict`: yields progress, *returns* the :class:`Prediction`.

    ``mask`` (FANet only) has the image's spatial shape; ``None`` means the released
    iteration-0 mask (Otsu, spec 2.7); ``"empty"``/``"full"`` are also accepted.

    ``tile``/``overlap``/``memory_budget``: sliding-window inference (``inference.tiling``):
    ``"auto"`` runs whole slices that fit ``memory_budget`` (default 1 GiB of activations) and
    Gaussian-blended windows otherwise; ``0`` forces whole slices, an int or ``(h, w)`` a window.
    Tiled runs yield :class:`~.tiling.TileProgress` (windows) instead of slice counts.
    ``squeeze="slice"``: tiled windows use the SE and InstanceNorm statistics of the whole
    slice (FANet, the PAM U-Nets; agrees with whole-slice inference, several times the
    windows' cost), ``"window"`` their own.
    ``image`` may be a dask or zarr array: it is read window by window.
    """
    from .tiling import iter_stack_probabilities

    t0 = time.perf_counter()
    traits = model_traits(model)
    batch_size = check_int(batch_size, "batch_size")
    if traits.binary:
        threshold = check_threshold(threshold)
    layout, source = prepare_source(traits, image, channel_axis=channel_axis, slice_axis=slice_axis, model=model)
    masks, mask_source = None, None
    if traits.takes_mask:
        if mask is None or isinstance(mask, str):
            mask_source = mask or "otsu"
            # one slice at a time (lazy inputs); the raw slice keeps its dtype: FANet's Otsu mask
            # reads uint8 files as they are
            masks = np.concatenate([initial_masks(source.raw(z)[None], mask_source)
                                    for z in range(layout.n_slices)])
        else:
            mask_source = "given"
            masks = layout.spatial_to_stack(np.asarray(mask)).astype(bool)
    elif mask is not None:
        raise InputError(f"model {traits.name!r} takes no feedback mask")
    dev = resolve_device(device)
    precision = autocast_dtype(amp, dev)  # checks ``amp`` before any work
    n = layout.n_slices
    probs, tiling = yield from iter_stack_probabilities(
        model, traits, source, masks, device=dev, amp=amp, batch_size=batch_size, tile=tile, overlap=overlap,
        memory_budget=memory_budget, cancel=cancel, squeeze=squeeze)
    check_finite_output(probs, traits.name)
    probabilities = layout.from_stack(probs)
    if traits.binary:
        labels = binarize(probabilities[0], threshold)
    else:
        labels = class_labels(probabilities, threshold)
    return Prediction(
        probabilities=probabilities,
        labels=labels,
        model_name=traits.name,
        reverse_labels=traits.reverse_labels,
        threshold=threshold,
        device=str(dev),
        seconds=time.perf_counter() - t0,
        info={"slices": n, "batch_size": batch_size, "amp": precision is not None,
              "precision": str(precision or torch.float32).removeprefix("torch."),
              "feedback_mask": mask_source, **tiling},
    )


def drive(gen, progress: Callable[[PredictProgress], None] | None = None):
    """Run a progress generator to the end and return its return value."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(ev)


def predict(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "auto",
    amp: bool | str = True,
    mask: np.ndarray | str | None = None,
    threshold: float = 0.5,
    progress: Callable[[PredictProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    tile: int | tuple[int, int] | str | None = "auto",
    overlap: float = DEFAULT_OVERLAP,
    memory_budget: int | str | None = None,
    squeeze: str = "window",
) -> Prediction:
    """Predict a 2D image, a multi-channel image or a whole volume (see :func:`iter_predict`;
    large slices run in Gaussian-blended windows, ``tile``/``overlap``/``memory_budget``)."""
    return drive(
        iter_predict(model, image, channel_axis=channel_axis, slice_axis=slice_axis, batch_size=batch_size,
                     device=device, amp=amp, mask=mask, threshold=threshold, cancel=cancel, tile=tile,
                     overlap=overlap, memory_budget=memory_budget, squeeze=squeeze),
        progress,
    )
