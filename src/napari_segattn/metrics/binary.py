"""Overlap and distance metrics for one binary mask pair (2D or 3D).

Definitions (TP/FP/FN/TN pixel counts):
  dice = 2TP/(2TP+FP+FN) (= F1), iou = TP/(TP+FP+FN) (true Jaccard, not FPA's "IoU", which is
  a mean two-class Dice, spec B8), precision = TP/(TP+FP), recall = TP/(TP+FN),
  specificity = TN/(TN+FP), accuracy = (TP+TN)/N, f2 = 5TP/(5TP+4FN+FP) (FANet's F2),
  fp_rate = FP/(FP+TN), fn_rate = FN/(FN+TP): FPA Table 5's "False Positive/Negative Rate";
  the paper gives no formula, the released code logs FP/N and FN/P ("FPs/Ns", "FNs/Ps").
Empty conventions: a ratio with a zero denominator is NaN (undefined), except dice, iou and f2,
which are 1 when both masks are empty (nothing to find, nothing found) — so a one-sided empty
pair gives dice 0. hd95 = 0 when both are empty and inf when exactly one is.
"""

from __future__ import annotations

import numpy as np

from .surface import hd95 as _hd95
from .surface import hd95_px_and_mm

METRIC_KEYS = ("dice", "iou", "precision", "recall", "specificity", "accuracy", "f2", "fp_rate", "fn_rate", "hd95")


def _ratio(num: float, den: float, empty: float = float("nan")) -> float:
    return float(num) / float(den) if den > 0 else empty


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    tp = int(np.count_nonzero(pred & gt))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(gt)) - tp
    tn = int(pred.size) - tp - fp - fn
    return tp, fp, fn, tn


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing=None, *, connectivity: int = 1,
                   roi: np.ndarray | None = None) -> dict:
    """All metrics for one pair; ``hd95`` in pixels/voxels, plus ``hd95_mm`` when ``spacing`` is given.

    ``roi`` (same shape, > 0 inside): count only pixels inside it, as field-of-view data (retinal
    fundus images) are scored: the dark border outside is neither a true negative nor a
    boundary; hd95 is taken between the two masks cut to the ROI."""
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if roi is not None:
        roi = np.asarray(roi) > 0
        if roi.shape != pred.shape or gt.shape != pred.shape:
            raise ValueError(f"ROI {roi.shape}, prediction {pred.shape} and ground truth {gt.shape} differ in shape")
        pred, gt = pred & roi, gt & roi
    tp, fp, fn, tn = confusion(pred[roi], gt[roi]) if roi is not None else confusion(pred, gt)
    n = tp + fp + fn + tn
    both_empty = tp + fp + fn == 0
    out = {
        "dice": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if both_empty else tp / (tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, n),
        "f2": 1.0 if both_empty else 5 * tp / (5 * tp + 4 * fn + fp),
        "fp_rate": _ratio(fp, fp + tn),
        "fn_rate": _ratio(fn, fn + tp),
        "hd95": None,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }
    if spacing is None:
        out["hd95"] = _hd95(pred, gt, None, connectivity)
    else:
        out["hd95"], out["hd95_mm"] = hd95_px_and_mm(pred, gt, spacing, connectivity)
    return out
