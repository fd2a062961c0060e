"""Core results -> napari layers, in one place (the CLI writes the same results to files).

Layers the plugin creates carry ``metadata["segattn"] = True``; only those are ever updated in
place. A user's layer with the same name is never overwritten: ours gets a new name instead.
"""

from __future__ import annotations

import numpy as np

__all__ = ["upsert_layer", "place_slice", "layer_kind", "wrapped_label", "label_colormap", "ERROR_LEGEND"]

ERROR_LEGEND = "TP yellow · FN blue · FP red"


def layer_kind(layer) -> str:
    """'image', 'labels', ... from the layer class (napari 0.9 deprecates ``_type_string``)."""
    return type(layer).__name__.lower()


def wrapped_label(**kwargs):
    """A magicgui Label whose long text wraps instead of widening the dock."""
    from magicgui.widgets import Label

    from qtpy.QtWidgets import QSizePolicy

    label = Label(**kwargs)
    label.native.setWordWrap(True)
    # grow in height with the wrapped text instead of being clipped to half a line
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.MinimumExpanding)
    return label


def label_colormap(colors: dict):
    """A labels colormap with exactly these {value: RGBA} colours, everything else transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), **colors})


def _owned(layer) -> bool:
    return bool(layer.metadata.get("segattn"))


def upsert_layer(viewer, kind: str, data: np.ndarray, name: str, **kwargs):
    """Update our layer called ``name`` or add a new one; never touch a user's layer."""
    kwargs.setdefault("metadata", {})
    kwargs["metadata"] = {**kwargs["metadata"], "segattn": True}
    if name in viewer.layers:
        layer = viewer.layers[name]
        if _owned(layer) and layer_kind(layer) == kind and layer.data.ndim == np.ndim(data):
            layer.data = data
            for key in ("contrast_limits", "opacity", "blending", "scale", "translate", "metadata", "colormap", "gamma"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            layer.refresh()
            return layer
        if _owned(layer):
            viewer.layers.remove(layer)
        else:
            i = 2
            while f"{name} [{i}]" in viewer.layers:
                i += 1
            name = f"{name} [{i}]"
    add = getattr(viewer, f"add_{kind}")
    return add(data, name=name, **kwargs)


def place_slice(full_shape: tuple[int, ...], index: int | None, slice_data: np.ndarray, existing: np.ndarray | None = None) -> np.ndarray:
    """Put a 2D result into a volume-shaped array (keeping other slices of ``existing``)."""
    if index is None:
        return slice_data
    if existing is not None and existing.shape == tuple(full_shape):
        out = existing.copy()
    else:
        out = np.zeros(full_shape, dtype=slice_data.dtype)
    out[index] = slice_data
    return out
