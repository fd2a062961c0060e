"""Thin napari widgets over the GUI-free core: they read layers, call the core in workers,
and turn results into layers. No science lives here."""

from .batch_widget import BatchWidget
from .compare_widget import CompareWidget
from .inspect_widget import InspectWidget
from .model_widget import ModelWidget
from .refine_widget import PredictRefineWidget
from .train_widget import TrainWidget

__all__ = ["ModelWidget", "TrainWidget", "PredictRefineWidget", "InspectWidget", "CompareWidget", "BatchWidget"]
