"""FANet's feedback masks: the initial mask and the 0.5 binarisation (spec 2.5, 2.7)."""

from __future__ import annotations

import numpy as np

__all__ = ["initial_masks", "binarize"]

INIT_CHOICES = ("otsu", "empty", "full")


def binarize(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Released test.py feeds back ``sigmoid > 0.5`` (strict), never the soft map."""
    return np.asarray(probabilities) > threshold


def initial_masks(raw_stack: np.ndarray, init: str | np.ndarray = "otsu") -> np.ndarray:
    """``(Z, H, W)`` bool masks for a raw ``(Z, C, H, W)`` stack.

    ``"otsu"`` is the released iteration-0 mask: 5x5 Gaussian blur then Otsu on the *raw*
    image (before model normalisation, as test.py reads it from disk), per slice.
    """
    z, _, h, w = raw_stack.shape
    if isinstance(init, str):
        if init == "empty":
            return np.zeros((z, h, w), dtype=bool)
        if init == "full":
            return np.ones((z, h, w), dtype=bool)
        if init == "otsu":
            from ..data import otsu_mask

            return np.stack([np.asarray(otsu_mask(s), dtype=bool) for s in raw_stack])
        raise ValueError(f"unknown initial mask {init!r}; use one of {INIT_CHOICES} or an array")
    arr = np.asarray(init)
    if arr.shape != (z, h, w):
        raise ValueError(f"initial mask has shape {arr.shape}; expected {(z, h, w)} (slices, H, W)")
    return arr.astype(bool)
