"""napari layers -> the plain arrays the core takes (the only place that reads layer data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ModelInput", "InputError", "gather_input", "attach_ground_truth", "current_index", "scope_picker",
           "scope_of"]

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

    @property
    def spatial(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])


def _channels_first(layer) -> np.ndarray:
    data = np.asarray(layer.data)
    if getattr(layer, "rgb", False):
        data = np.moveaxis(data[..., :3], -1, 0 if data.ndim == 3 else 1)  # (3,H,W) or (Z,3,H,W)
        return data
    return data[None] if data.ndim == 2 else data[:, None]  # (1,H,W) or (Z,1,H,W)


def current_index(viewer, layer) -> int:
    """The data index of the slice shown for a 3D layer (world point -> data coordinates)."""
    if layer.ndim < 3:
        return 0
    z = layer.world_to_data(viewer.dims.point)[0]
    return int(np.clip(round(float(z)), 0, layer.data.shape[0] - 1))


def gather_input(viewer, image_layers, gt_layer=None, scope: str = "slice") -> ModelInput:
    """Stack the chosen image layers as channels; a 3D layer gives a slice or the volume."""
    if not image_layers:
        raise InputError("choose at least one image layer")
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
