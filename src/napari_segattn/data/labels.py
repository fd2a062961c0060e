"""Checking images and label maps before they reach a model: the errors users actually hit."""

from __future__ import annotations

import numpy as np

from .errors import DataError, few

MAX_CLASSES = 64


def check_finite(image: np.ndarray, name: str) -> None:
    if np.issubdtype(np.asarray(image).dtype, np.floating) and not np.all(np.isfinite(image)):
        bad = int(np.size(image) - np.count_nonzero(np.isfinite(image)))
        raise DataError(f"{name}: image contains {bad} NaN/Inf pixel(s); fix or mask them before training")


def _warn_lossy(lab: np.ndarray, name: str) -> None:
    """A {0, 255} mask saved as JPEG has compression noise 1..~10 around its edges, which
    ``label > 0`` counts as foreground without a word; say so and name the threshold to use.

    Only for a saturated two-level mask (most foreground at >= 90 % of the maximum): instance
    labels (ids 1..N spread evenly, e.g. the DSB 2018 sample's 125 nuclei up to id 183) have most
    of their ids below half the maximum and are not noise; warning there told users to threshold
    away half their objects."""
    hi = int(lab.max(initial=0))
    if hi < 128:
        return
    foreground = int(np.count_nonzero(lab > 0))
    if np.count_nonzero(lab >= 0.9 * hi) < 0.8 * foreground:
        return
    faint = int(((lab > 0) & (lab < hi // 2)).sum())
    if faint:
        import warnings

        from .errors import SegattnWarning

        warnings.warn(f"{name}: {faint} pixel(s) have values between 0 and {hi // 2} (lossy/JPEG noise?) and count "
                      f"as foreground with --binarize; pass --binarize {hi // 2} (Python: binarize={hi // 2}) "
                      "to threshold at half the maximum", SegattnWarning, stacklevel=4)


def to_label_map(
    label: np.ndarray,
    name: str,
    *,
    binarize: bool = False,
    label_map: dict | None = None,
    max_classes: int = MAX_CLASSES,
) -> np.ndarray:
    """int64 label map of small non-negative integers (class indices).

    ``binarize``: label > 0 → 1 (e.g. {0, 255} masks or instance labels). ``label_map``:
    explicit value → class mapping applied first (e.g. BRATS {4: 1}); unmapped values stay.
    """
    lab = np.asarray(label)
    if lab.dtype == bool:
        return lab.astype(np.int64)
    if not (np.issubdtype(lab.dtype, np.integer) or np.issubdtype(lab.dtype, np.floating)):
        raise DataError(f"{name}: labels must be numeric, got dtype {lab.dtype}")
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab)):
            raise DataError(f"{name}: labels contain NaN/Inf")
        if binarize:
            return (lab > 0).astype(np.int64)
        if not np.all(lab == np.round(lab)):
            vals = np.unique(lab[lab != np.round(lab)])
            raise DataError(
                f"{name}: labels must be integers, found values {few(vals.tolist(), 4)} "
                "(soft masks: threshold them, or binarize: --binarize [T] on the command line, "
                "binarize=True or a threshold in Python, maps label > T to 1)"
            )
    lab = lab.astype(np.int64)
    if label_map:
        out = lab.copy()
        for src, dst in label_map.items():
            out[lab == int(src)] = int(dst)
        lab = out
    if binarize:
        _warn_lossy(lab, name)
        return (lab > 0).astype(np.int64)
    lo, hi = int(lab.min(initial=0)), int(lab.max(initial=0))
    if lo < 0:
        raise DataError(f"{name}: labels must be >= 0, found {lo}")
    if hi >= max_classes:
        vals = np.unique(lab)
        hint = " (a {0, 255} mask)" if set(vals.tolist()) <= {0, 255} else ""
        raise DataError(
            f"{name}: label value {hi} is out of range{hint}; labels must be class indices "
            f"0..{max_classes - 1} — pass --binarize to map label > 0 to 1 (--binarize 127 for JPEG masks; "
            f"Python: binarize=True or a threshold, or label_map={{value: class}} to renumber) "
            f"(values found: {few(vals.tolist(), 6)})"
        )
    return lab
