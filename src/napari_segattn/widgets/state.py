"""One evented state object per viewer, shared by all widgets (micro-sam's AnnotatorState idea).

Widgets never talk to each other directly: they read and set this object and listen to its
signals. It holds the current model, where it came from, the device, and the FANet refiner.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

__all__ = ["SegAttnState", "get_state", "LoadedModel"]


@dataclass
class LoadedModel:
    model: Any  # torch.nn.Module
    name: str
    config: dict
    source: str  # "built" or a checkpoint path
    normalization: dict | None = None
    class_names: list[str] | None = None
    takes_mask: bool = False
    reverse_labels: bool = False
    info: dict = field(default_factory=dict)


class SegAttnState:
    model_changed = Signal(object)  # LoadedModel | None
    refiner_changed = Signal(object)  # FANetRefiner | None
    device_changed = Signal(str)
    busy_changed = Signal(bool)
    refiner_replaced = Signal(object, object)  # (refiner, its input), just before it is dropped or replaced
    inputs_changed = Signal()


    def __init__(self) -> None:
        self.loaded: LoadedModel | None = None
        self.device: str = "auto"
        self.refiner = None
        self.refiner_input = None  # the ModelInput the refiner was started on
        self.refiner_session = None  # what must not change under it (refine_widget.SESSION_PARTS)
        self.refiner_layers: dict[str, str] = {}
        self._busy = False
        self.image_layer_names: list[str] = []
        self.gt_layer_name: str | None = None

    def set_inputs(self, image_layer_names: list[str], gt_layer_name: str | None) -> None:
        self.image_layer_names = list(image_layer_names)
        self.gt_layer_name = gt_layer_name
        self.inputs_changed.emit()

    def input_layers(self, viewer):
        """(image layers, ground-truth layer or None) as chosen in the Model widget."""
        imgs = [viewer.layers[n] for n in self.image_layer_names if n in viewer.layers]
        gt = viewer.layers[self.gt_layer_name] if self.gt_layer_name in viewer.layers else None
        return imgs, gt

    def set_model(self, loaded: LoadedModel | None) -> None:
        self.loaded = loaded
        self.set_refiner(None)
        self.model_changed.emit(loaded)

    def set_device(self, device: str) -> None:
        self.device = device
        self.device_changed.emit(device)

    def set_refiner(self, refiner, model_input=None, session=None) -> None:
        """The refinement in progress, with the input and session it was started on: kept here,
        not in a widget, so that closing and re-docking Predict & refine continues it."""
        if self.refiner is not None and self.refiner is not refiner:
            self.refiner_replaced.emit(self.refiner, self.refiner_input)
        self.refiner = refiner
        self.refiner_input, self.refiner_session = (model_input, session) if refiner is not None else (None, None)
        self.refiner_changed.emit(refiner)

    @property
    def busy(self) -> bool:
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = bool(value)
        self.busy_changed.emit(self._busy)


_STATES: "weakref.WeakKeyDictionary[Any, SegAttnState]" = weakref.WeakKeyDictionary()


def get_state(viewer) -> SegAttnState:
    """The state shared by every widget docked in ``viewer``."""
    state = _STATES.get(viewer)
    if state is None:
        from .warmup import start_warm_up

        state = _STATES[viewer] = SegAttnState()
        start_warm_up()  # a plugin session begins: the one-off imports now, off the GUI thread
    return state
