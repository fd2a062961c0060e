"""TP / FN / FP maps in the colours of the FPA/RFNA paper's figures (Figs. 5-6).

Those figures draw true positives yellow and false negatives blue; we add false positives in
red and leave true negatives transparent. The label values are fixed so that a napari Labels
layer can use :data:`ERROR_COLORS` directly. For RFNA pass the *foreground* prediction
(what :func:`~napari_segattn.inference.predict` returns): the map is always about foreground.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ErrorMap", "error_map", "ERROR_COLORS", "ERROR_NAMES", "TN", "TP", "FN", "FP"]

TN, TP, FN, FP = 0, 1, 2, 3
ERROR_NAMES = {TN: "TN", TP: "TP", FN: "FN", FP: "FP"}
#: RGBA in [0, 1]; the ``None`` key is napari's default colour for any other value.
ERROR_COLORS: dict = {
    None: (0.0, 0.0, 0.0, 0.0),
    TN: (0.0, 0.0, 0.0, 0.0),
    TP: (1.0, 1.0, 0.0, 1.0),  # yellow
    FN: (0.0, 0.0, 1.0, 1.0),  # blue
    FP: (1.0, 0.0, 0.0, 1.0),  # red
}


@dataclass
class ErrorMap:
    """``labels`` uint8 (TN=0, TP=1, FN=2, FP=3): shape of the input (binary), or
    ``(len(classes), *spatial)`` with one one-vs-rest map per class (multi-class).

    ``counts[i]`` / ``rates[i]`` belong to ``classes[i]``; rates are the FPA paper's FP and FN
    rates (FP / (FP + TN), FN / (FN + TP)) plus sensitivity and precision.
    """

    labels: np.ndarray
    classes: list[int]
    counts: list[dict[str, int]]
    rates: list[dict[str, float]]
    colors: dict = field(default_factory=lambda: dict(ERROR_COLORS))

    @property
    def binary(self) -> bool:
        return len(self.classes) == 1


def _ratio(a: int, b: int) -> float:
    return float(a) / b if b else float("nan")


def _one(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, dict[str, int], dict[str, float]]:
    labels = np.zeros(pred.shape, np.uint8)
    labels[pred & gt] = TP
    labels[~pred & gt] = FN
    labels[pred & ~gt] = FP
    c = np.bincount(labels.ravel(), minlength=4)
    counts = {ERROR_NAMES[i]: int(c[i]) for i in range(4)}
    tp, fn, fp, tn = counts["TP"], counts["FN"], counts["FP"], counts["TN"]
    rates = {
        "fp_rate": _ratio(fp, fp + tn),
        "fn_rate": _ratio(fn, fn + tp),
        "sensitivity": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
    }
    return labels, counts, rates


def error_map(pred: np.ndarray, gt: np.ndarray, *, num_classes: int | None = None) -> ErrorMap:
    """Pixel-wise error categories of ``pred`` against ``gt`` (same shape).

    ``num_classes`` None or 2: binary, foreground = ``> 0`` in both. Otherwise integer label
    maps with classes ``0 .. num_classes-1``; one one-vs-rest map per class, background included.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if num_classes is None or num_classes == 2:
        labels, counts, rates = _one(pred > 0, gt > 0)
        return ErrorMap(labels, [1], [counts], [rates])
    if num_classes < 2:
        raise ValueError("num_classes must be >= 2")
    for name, a in (("prediction", pred), ("ground truth", gt)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    out = [_one(pred == k, gt == k) for k in range(num_classes)]
    return ErrorMap(np.stack([o[0] for o in out]), list(range(num_classes)), [o[1] for o in out],
                    [o[2] for o in out])
