"""FANet's feedback masks: the initial mask and the 0.5 binarisation (spec 2.5, 2.7)."""

from __future__ import annotations

import numpy as np

__all__ = ["initial_masks", "binarize", "class_labels"]

INIT_CHOICES = ("otsu", "empty", "full")


def binarize(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Released test.py feeds back ``sigmoid > 0.5`` (strict), never the soft map."""
    return np.asarray(probabilities) > threshold


def class_labels(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Labels of a softmax ``(K, ...)`` with class 0 as background, at a threshold: a pixel takes
    its most probable foreground class k where ``p_k / (p_k + p_0) > threshold``, else 0.

    The binary rule generalised (K = 2: ``p_1 > threshold``): the threshold moves the boundary
    between background and the best other class only. At 0.5 it is ``argmax`` exactly, as the
    released code labels (ties go to the lower class there too): ``(1 - t) p_k > t p_0`` is
    computed so that t = 0.5 scales both sides by the same power of two."""
    p = np.asarray(probabilities)
    if p.shape[0] < 2:
        raise ValueError("class_labels needs at least two classes (background and one other)")
    best = p[1:].argmax(axis=0)
    p_best = np.take_along_axis(p[1:], best[None], axis=0)[0]
    keep = (1 - threshold) * p_best > threshold * p[0]
    dtype = np.uint8 if p.shape[0] <= 256 else np.int32
    return np.where(keep, best + 1, 0).astype(dtype)


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
