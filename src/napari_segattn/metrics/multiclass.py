"""Per-class metrics for integer label maps (one-vs-rest binary metrics per class)."""

from __future__ import annotations

import numpy as np

from .binary import binary_metrics


def segmentation_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int, spacing=None,
                         ignore_background: bool = True, *, connectivity: int = 1, roi: np.ndarray | None = None) -> dict:
    """``{"class_1": {...}, ..., "mean": {...}}``; ``mean`` averages each metric over the classes
    (NaN entries skipped; an inf hd95 in any class makes the mean inf). ``roi``: only pixels
    where it is > 0 count (:func:`binary_metrics`)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    classes = range(1 if ignore_background else 0, num_classes)
    out = {f"class_{c}": binary_metrics(pred == c, gt == c, spacing, connectivity=connectivity, roi=roi) for c in classes}
    keys = next(iter(out.values())).keys()
    mean = {}
    for k in keys:
        vals = np.array([out[f"class_{c}"][k] for c in classes], dtype=np.float64)
        finite_or_inf = vals[~np.isnan(vals)]
        mean[k] = float(finite_or_inf.mean()) if finite_or_inf.size else float("nan")
    out["mean"] = mean
    return out
