"""Argument checks shared by the public inference/explain functions, so bad numbers fail early
with the same one-line :class:`InputError` the CLI prints, instead of a silent wrong result
(``threshold=nan`` gave all-False labels, ``window=0`` an all-zero saliency map) or a raw
error from deep inside torch/captum.
"""

from __future__ import annotations

import math

import numpy as np

from .layout import InputError

__all__ = ["check_int", "check_threshold", "check_finite_output", "check_image_size"]


def check_int(value, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; bools and non-integral floats are refused."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        ok, value = True, int(value)
    if not ok:
        raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise InputError(f"{name} must be {bound}, got {value}")
    return value


def check_threshold(value, name: str = "threshold") -> float:
    """A probability threshold strictly inside (0, 1): 0 and 1 (and NaN) make the labels constant."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in (0, 1), got {value!r}") from None
    if not (math.isfinite(t) and 0.0 < t < 1.0):
        raise InputError(f"{name} must be in (0, 1) (exclusive), got {value!r}")
    return t


def check_finite_output(probabilities: np.ndarray, model_name: str | None) -> None:
    """Refuse probabilities with NaN/inf: thresholding them gives a plausible-looking empty mask."""
    bad = ~np.isfinite(probabilities)
    if bad.any():
        raise InputError(
            f"model {model_name!r} produced {int(bad.sum())} NaN/inf probabilities of {bad.size}; its weights "
            "or this input overflow (try amp off / --no-amp, check the checkpoint); no result was written"
        )


def check_image_size(model, spatial_shape: tuple[int, ...]) -> None:
    """Refuse 2D slices smaller than the model takes (the rule is the model's ``size_problem``)."""
    if len(spatial_shape) < 2:
        return
    h, w = spatial_shape[-2:]
    problem = getattr(model, "size_problem", None)
    msg = problem(h, w) if callable(problem) else (
        f"the image is {h}x{w}; it needs at least 1 pixel per side" if min(h, w) < 1 else None)
    if msg:
        raise InputError(msg)
