"""Inference: whole-image/volume prediction (tiled when large, into zarr when lazy) and FANet's
test-time feedback iteration.

Results are plain numpy arrays plus small dataclasses, shared by the CLI and the widgets.
"""

from .layout import ChannelMismatchError, InputError, Layout
from .predict import Cancelled, GPUMemoryError, Prediction, PredictProgress, iter_predict, predict
from .refine import FANetRefiner, IterationResult
from .traits import ModelTraits, model_traits, to_probabilities
from .tiling import TileProgress
from .chunked import ZarrPrediction, iter_predict_to_zarr, predict_to_zarr
from .instances import Instances, instance_labels

__all__ = [
    "predict",
    "iter_predict",
    "Prediction",
    "PredictProgress",
    "FANetRefiner",
    "IterationResult",
    "Layout",
    "InputError",
    "ChannelMismatchError",
    "GPUMemoryError",
    "Cancelled",
    "ModelTraits",
    "model_traits",
    "to_probabilities",
    "TileProgress",
    "predict_to_zarr",
    "iter_predict_to_zarr",
    "ZarrPrediction",
    "Instances",
    "instance_labels",
]
