"""napari layers -> the plain arrays the core takes (the only place that reads layer data)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._nifti_layers import nifti_grid

__all__ = ["ModelInput", "InputError", "gather_input", "attach_ground_truth", "current_index", "scope_picker",
           "scope_of", "is_lazy_layer"]

SCOPES = {"current slice": "slice", "whole volume": "volume"}


def scope_picker():
    """The 'run on: current slice / whole volume' choice shared by the widgets."""
    from magicgui.widgets import RadioButtons

    return RadioButtons(label="run on", choices=list(SCOPES), value="current slice", orientation="horizontal")


def scope_of(picker) -> str:
    return SCOPES[picker.value]


class InputError(ValueError):
    """Layers that cannot feed the model, explained in words for a notification."""


@dataclass
class ModelInput:
    image: np.ndarray  # (C, H, W) for one slice, (Z, C, H, W) for a volume
    ground_truth: np.ndarray | None  # (H, W) or (Z, H, W), integer
    is_volume: bool
    slice_index: int | None  # the z of a single slice taken from a volume layer
    layer_shape: tuple[int, ...]  # spatial shape of the source layer (2D or 3D)
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    names: list[str]
    lazy: bool = False  # image is a dask array over the layer's (multiscale level's) data, not loaded
    level: int = 0  # the multiscale level the image was taken from
    grid: dict = field(default_factory=dict)  # the source NIfTI grid (affine, header) of the first layer

    @property
    def result_metadata(self) -> dict:
        """Metadata for a result layer on the whole input grid: File > Save writes it on the source grid."""
        return dict(self.grid)

    @property
    def spatial(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])


def _channels_first(layer) -> np.ndarray:
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        data = np.moveaxis(data[..., :3], -1, 0 if data.ndim == 3 else 1)  # (3,H,W) or (Z,3,H,W)
        return data
    return data[None] if data.ndim == 2 else data[:, None]  # (1,H,W) or (Z,1,H,W)


def is_lazy_layer(layer) -> bool:
    """A multiscale layer or one backed by dask / zarr rather than numpy."""
    return bool(getattr(layer, "multiscale", False)) or not isinstance(layer.data, np.ndarray)


def _lazy_channels_first(layer, level: int):
    """Like :func:`_channels_first`, as a dask view (nothing is read) of ``level``."""
    import dask.array as da

    from ..inference.tiling import as_dask

    data = layer.data
    if getattr(layer, "multiscale", False):
        if not 0 <= level < len(data):
            raise InputError(f"layer {layer.name!r} has {len(data)} resolution level(s); level {level} does not exist")
        data = data[level]
    elif level:
        raise InputError(f"layer {layer.name!r} is not multiscale; use level 0")
    data = as_dask(data)
    if getattr(layer, "rgb", False):
        return da.moveaxis(data[..., :3], -1, 0 if data.ndim == 3 else 1)
    return data[None] if data.ndim == 2 else data[:, None]


def _level_scale(layer, level: int) -> tuple[float, ...]:
    """World scale of one pixel of ``level`` (level 0's scale times its downsampling)."""
    scale = np.asarray(layer.scale, float)
    if getattr(layer, "multiscale", False) and level:
        s0, sl = np.asarray(layer.data[0].shape, float), np.asarray(layer.data[level].shape, float)
        n = len(scale)
        scale = scale * (s0[:n] / sl[:n])
    return tuple(float(v) for v in scale)


def _gather_lazy(viewer, image_layers, scope: str, level: int) -> ModelInput:
    """Dask views of the layers (one level of a multiscale pyramid), stacked as channels."""
    import dask.array as da

    arrays = [_lazy_channels_first(l, level) for l in image_layers]
    shapes = {a.shape[-2:] if a.ndim == 3 else (a.shape[0], *a.shape[-2:]) for a in arrays}
    if len(shapes) != 1:
        raise InputError(f"the image layers differ in shape {sorted(shapes)}; channels must align pixel for pixel")
    shape = shapes.pop()
    data = da.concatenate(arrays, axis=-3) if len(arrays) > 1 else arrays[0]
    first = image_layers[0]
    slice_index, is_volume = None, len(shape) == 3 and scope == "volume"
    if len(shape) == 3 and not is_volume:
        # current_index maps the world point to level 0; scale it to this level
        z0 = current_index(viewer, first)
        slice_index = int(round(z0 * shape[0] / _level_zero_depth(first)))
        data = data[slice_index]
    return ModelInput(image=data, ground_truth=None, is_volume=is_volume, slice_index=slice_index,
                      layer_shape=tuple(shape), scale=_level_scale(first, level), translate=tuple(first.translate),
                      names=[l.name for l in image_layers], lazy=True, level=level,
                      grid=nifti_grid(first.metadata) if level == 0 else {})


def _level_zero_depth(layer) -> int:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return int(data.shape[0])


def current_index(viewer, layer) -> int:
    """The data index of the slice shown for a 3D layer (world point -> data coordinates)."""
    if layer.ndim < 3:
        return 0
    z = layer.world_to_data(viewer.dims.point)[0]
    return int(np.clip(round(float(z)), 0, layer.data.shape[0] - 1))


def gather_input(viewer, image_layers, gt_layer=None, scope: str = "slice", *, lazy: bool = False,
                 level: int = 0) -> ModelInput:
    """Stack the chosen image layers as channels; a 3D layer gives a slice or the volume.

    ``lazy``: dask / zarr / multiscale layers stay lazy (a dask view of ``level``, nothing
    read; the ground truth is not used) for the windowed prediction; numpy layers are read as usual.
    """
    if not image_layers:
        raise InputError("choose at least one image layer")
    if lazy and any(is_lazy_layer(l) for l in image_layers):
        return _gather_lazy(viewer, image_layers, scope, level)
    spatial = {tuple(l.data.shape[:-1] if getattr(l, "rgb", False) else l.data.shape) for l in image_layers}
    if len(spatial) != 1:
        raise InputError(f"the image layers differ in shape {sorted(spatial)}; channels must align pixel for pixel")
    shape = spatial.pop()
    if len(shape) not in (2, 3):
        raise InputError(f"image layers must be 2D or 3D (a stack of slices); got shape {shape}")
    arrays = [_channels_first(l).astype(np.float32, copy=False) for l in image_layers]
    data = np.concatenate(arrays, axis=-3)
    if not np.isfinite(data).all():
        bad = [l.name for l, a in zip(image_layers, arrays) if not np.isfinite(a).all()]
        raise InputError(f"layer(s) {bad} contain NaN or Inf pixels; fix or mask them before running a model")
    first = image_layers[0]
    slice_index = None
    is_volume = len(shape) == 3 and scope == "volume"
    if len(shape) == 3 and not is_volume:
        slice_index = current_index(viewer, first)
        data = data[slice_index]
    inp = ModelInput(
        image=np.ascontiguousarray(data),
        ground_truth=None,
        is_volume=is_volume,
        slice_index=slice_index,
        layer_shape=shape,
        scale=tuple(first.scale),
        translate=tuple(first.translate),
        names=[l.name for l in image_layers],
        grid=nifti_grid(first.metadata),
    )
    return attach_ground_truth(inp, gt_layer)


def attach_ground_truth(inp: ModelInput, gt_layer) -> ModelInput:
    """``inp`` with the ground truth of ``gt_layer`` (None: none); checked only by the jobs that
    use it (training, metrics, error maps), so an unrelated labels layer never blocks a Predict."""
    if gt_layer is None:
        inp.ground_truth = None
        return inp
    gt = np.asarray(gt_layer.data)
    if gt.shape != tuple(inp.layer_shape):
        raise InputError(f"ground truth {gt_layer.name!r} has shape {gt.shape} but the image is "
                         f"{tuple(inp.layer_shape)}; choose another ground-truth layer in the Model widget")
    gt = gt.astype(np.int64, copy=False)
    inp.ground_truth = gt[inp.slice_index] if inp.slice_index is not None else gt
    return inp
