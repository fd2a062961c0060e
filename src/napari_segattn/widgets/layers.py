"""Core results -> napari layers, in one place (the CLI writes the same results to files).

Layers the plugin creates carry ``metadata["segattn"] = True``; only those are ever updated in
place. A user's layer with the same name is never overwritten: ours gets a new name instead.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["upsert_layer", "prepare_layers", "TurnQueue", "place_slice", "layer_kind", "wrapped_label", "label_colormap", "ERROR_LEGEND",
           "stack_axis_caption", "label_stack_axis"]

ERROR_LEGEND = "TP yellow · FN blue · FP red"
#: the delay between queued GUI updates (``prepare_layers``, ``TurnQueue``): a real timer, so the
#: event loop serves input, repaints and other timers in between
TURN_MS = 1


def layer_kind(layer) -> str:
    """'image', 'labels', ... from the layer class (napari 0.9 deprecates ``_type_string``).

    ``__class__``, not ``type()``: napari hands plugins its layers wrapped in a PublicOnlyProxy,
    whose type is the proxy; ``type()`` made every update look like a new kind of layer, so each
    Step removed and re-added three layers (2 s of the GUI thread on the 512x512 sample)."""
    return layer.__class__.__name__.lower()


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


DISPLAY_KEYS = ("contrast_limits", "opacity", "blending", "scale", "translate", "metadata", "colormap", "gamma",
                "contour")
#: layer.unique_id -> repr of each display setting upsert_layer last gave it
_APPLIED: dict = {}


def upsert_layer(viewer, kind: str, data: np.ndarray, name: str, **kwargs):
    """Update our layer called ``name`` or add a new one; never touch a user's layer."""
    kwargs.setdefault("metadata", {})
    kwargs["metadata"] = {**kwargs["metadata"], "segattn": True}
    if name in viewer.layers:
        layer = viewer.layers[name]
        if _owned(layer) and layer_kind(layer) == kind and layer.data.ndim == np.ndim(data):
            same_array = layer.data is data
            layer.data = data
            applied = _APPLIED.setdefault(layer.unique_id, {})
            for key in DISPLAY_KEYS:
                # a property set re-renders the layer even when unchanged (a labels colormap
                # rebuilds its texture): set only what changed since we last set it
                if key in kwargs and applied.get(key) != (value := repr(kwargs[key])):
                    setattr(layer, key, kwargs[key])
                    applied[key] = value
            if same_array:  # mutated in place: napari cannot know
                layer.refresh()
            return layer
        if _owned(layer):
            viewer.layers.remove(layer)
        else:
            i = 2
            while f"{name} [{i}]" in viewer.layers:
                i += 1
            name = f"{name} [{i}]"
    applied = {key: repr(kwargs[key]) for key in DISPLAY_KEYS if key in kwargs}
    contour = kwargs.pop("contour", None)  # a Labels property, not an add_labels argument
    layer = getattr(viewer, f"add_{kind}")(data, name=name, **kwargs)
    if contour is not None:
        layer.contour = contour
    _APPLIED[layer.unique_id] = applied
    return layer


def prepare_layers(viewer, specs) -> Callable[[], None]:
    """Create a job's missing result layers while its worker computes them, one per event-loop turn.

    ``specs``: ``(kind, name, shape, dtype, display kwargs)`` as the job's result will be shown
    by ``upsert_layer``. Creating a napari layer costs the GUI thread 120-200 ms (its Qt controls
    and vispy visual; more for a new dims axis), and a Step that created three at once stalled
    the viewer 450-1050 ms; one per turn, the viewer repaints in between, and when the result
    arrives its layers are updated in place. Placeholders hold zeros and are marked
    ``metadata["placeholder"]`` until ``upsert_layer`` fills them. Returns ``discard``: call it
    when the job ends, to drop the placeholders never filled (a failed or cancelled job leaves
    nothing behind) and the creations not yet made.
    """
    from qtpy.QtCore import QTimer

    pending = [s for s in specs if s[1] not in viewer.layers]
    made: list = []

    def create_next() -> None:
        while pending:
            kind, name, shape, dtype, display = pending.pop(0)
            if name in viewer.layers:  # the result came first, or the user's own layer
                continue
            display = dict(display)
            display["metadata"] = {**display.get("metadata", {}), "placeholder": True}
            made.append(upsert_layer(viewer, kind, np.zeros(shape, dtype), name, **display))
            break
        if pending:
            QTimer.singleShot(TURN_MS, create_next)

    def discard() -> None:
        pending.clear()
        for layer in made:
            if layer in viewer.layers and layer.metadata.get("placeholder"):
                viewer.layers.remove(layer)

    if pending:
        QTimer.singleShot(TURN_MS, create_next)
    return discard


class TurnQueue:
    """GUI updates run one per event-loop turn, in the order given.

    Each napari layer update re-slices and re-renders on the GUI thread (40-70 ms for a 512x512
    stack on the loaded 2-core machine); a refinement Step made six of them in one callback
    (stack, probabilities, dims step, feedback, painted, instances), 150-250 ms without a
    repaint. Queued, the viewer repaints and takes input between them. A job's end goes through
    the same queue (``_start``), so "not busy" means its results are all shown."""

    def __init__(self) -> None:
        from collections import deque

        self._queue: deque = deque()
        self._scheduled = False

    def add(self, *updates: Callable[[], None]) -> None:
        self._queue.extend(updates)
        self._schedule()

    def _schedule(self) -> None:
        from qtpy.QtCore import QTimer

        if self._queue and not self._scheduled:
            self._scheduled = True
            # 1 ms, not 0: a zero timer is a posted event in Qt 6, served before due timers and
            # input, so queued parts ran back to back (two 90 ms parts, one 200 ms stall)
            QTimer.singleShot(TURN_MS, self._run_one)

    def _run_one(self) -> None:
        self._scheduled = False
        if not self._queue:
            return
        update = self._queue.popleft()
        try:
            update()
        finally:
            self._schedule()

    def __len__(self) -> int:
        return len(self._queue)


def stack_axis_caption(index: int, *, iterations: bool = False, stages: list[str] | None = None) -> str:
    """The dims-slider label of our leading stack axis: 'iteration' for the refinement stack, the
    current stage's name for attention maps, both when the two stacks share the axis."""
    parts = ["iteration"] if iterations else []
    if stages:
        n = len(stages)
        parts.append(f"stage {index + 1}/{n}: {stages[index]}" if 0 <= index < n else f"stage (1-{n})")
    return " | ".join(parts)


def label_stack_axis(viewer) -> None:
    """Name the viewer's leading axis after our stacks on it (the slider otherwise reads '-3')."""
    ndim = viewer.dims.ndim
    ours = [l for l in viewer.layers if _owned(l) and l.data.ndim == ndim]
    iterations = any("iteration_axis" in l.metadata for l in ours)
    stages = next((l.metadata["stages"] for l in ours if l.metadata.get("stages")), None)
    if ndim < 3 or not (iterations or stages):
        return
    caption = stack_axis_caption(int(viewer.dims.current_step[0]), iterations=iterations, stages=stages)
    if viewer.dims.axis_labels[0] != caption:
        viewer.dims.axis_labels = (caption, *viewer.dims.axis_labels[1:])


def slice_result_geometry(inp, leading: int = 0) -> dict:
    """scale/translate that show a result of the input's spatial shape over it, with ``leading``
    new axes in front (iterations, stages). A slice taken from a volume keeps its depth as a
    singleton axis at that slice (data from :func:`on_its_slice`): the stack's own axis then gets
    a slider of its own instead of landing on the volume's z axis at slice 0."""
    n = 3 if inp.is_volume or inp.slice_index is not None else 2
    scale, translate = list(inp.scale[-n:]), list(inp.translate[-n:])
    if inp.slice_index is not None:
        translate[0] += inp.slice_index * scale[0]
    return {"scale": [1.0] * leading + scale, "translate": [0.0] * leading + translate}


def on_its_slice(inp, arr: np.ndarray, leading: int = 0) -> np.ndarray:
    """``arr`` (``leading`` axes, then the input's spatial ones) with the singleton depth axis
    :func:`slice_result_geometry` expects for a slice of a volume; unchanged otherwise."""
    return np.expand_dims(arr, leading) if inp.slice_index is not None else arr


def off_its_slice(inp, arr: np.ndarray) -> np.ndarray:
    """The 2D data of a layer drawn with :func:`on_its_slice` (what a user painted on it)."""
    if inp.slice_index is not None and arr.ndim == 3 and arr.shape[0] == 1:
        return arr[0]
    return arr


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
