"""Segmentation metrics: overlap (Dice, IoU, ...), FPA's FP/FN rates, medpy-style HD95, pooling."""

from .aggregate import aggregate
from .binary import METRIC_KEYS, binary_metrics, confusion
from .multiclass import segmentation_metrics
from .surface import hd95, surface_distances

__all__ = ["binary_metrics", "segmentation_metrics", "aggregate", "confusion", "hd95", "surface_distances", "METRIC_KEYS"]
