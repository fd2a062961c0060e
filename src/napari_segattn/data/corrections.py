"""Simulated user corrections of a binary mask (the interactive-segmentation protocol).

RITM (Sofiiuk et al. 2021), nnInteractive and micro-sam evaluate and train interactive models
with a simulated user who corrects the *largest error region* each round. Our user paints
instead of clicking: the ground truth is pasted into the largest connected false-negative or
false-positive component of the current mask. Training (``TrainConfig.feedback="corrections"``)
adds imperfections outside the painted region (erosion / dilation, dropped objects), so the
model learns to trust a correction but not to copy the rest of the mask blindly.

Components are 4-connected (scikit-image ``label`` with ``connectivity=1``) and FN and FP
regions are labelled separately, so one component is all-missing or all-extra.
"""

from __future__ import annotations

import numpy as np

__all__ = ["error_regions", "paint_largest_errors", "simulate_correction"]


def error_regions(mask: np.ndarray, truth: np.ndarray, n: int | None = None) -> list[np.ndarray]:
    """The ``n`` largest error components of ``mask`` against ``truth`` (bool arrays), largest
    first (all of them when ``n`` is None)."""
    from skimage.measure import label

    mask, truth = np.asarray(mask, bool), np.asarray(truth, bool)
    if mask.shape != truth.shape:
        raise ValueError(f"mask {mask.shape} and ground truth {truth.shape} differ in shape")
    found = []  # (size, kind, label id)
    labelled = []
    for kind, err in enumerate((truth & ~mask, mask & ~truth)):  # false negatives, false positives
        lab, count = label(err, connectivity=1, return_num=True)
        labelled.append(lab)
        if count:
            sizes = np.bincount(lab.ravel())[1:]
            found += [(int(sz), kind, k + 1) for k, sz in enumerate(sizes)]
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    return [labelled[kind] == k for _, kind, k in found[:n]]


def _brush(region: np.ndarray, radius: int) -> np.ndarray:
    """The part of ``region`` within ``radius`` of its most interior pixel (where RITM's simulated
    user clicks: the maximum of the distance to the region's border)."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(region, 1))[(slice(1, -1),) * region.ndim]
    centre = np.unravel_index(int(np.argmax(dist)), region.shape)
    grid = np.ogrid[tuple(slice(0, n) for n in region.shape)]
    near = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2
    return region & near


def paint_largest_errors(mask: np.ndarray, truth: np.ndarray, n: int = 1,
                         radius: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One simulated correction: ``truth`` pasted into the ``n`` largest error components, each
    limited to a brush of ``radius`` pixels around its most interior point (``None``: the
    whole component; on EM the membrane network is one component, so a brush is what a
    person would paint).

    Returns ``(corrected mask, painted region)``; the region is empty when there is no error."""
    mask, truth = np.asarray(mask, bool), np.asarray(truth, bool)
    region = np.zeros(mask.shape, bool)
    for r in error_regions(mask, truth, max(int(n), 0)):
        region |= r if radius is None else _brush(r, int(radius))
    out = mask.copy()
    out[region] = truth[region]
    return out, region


def simulate_correction(pred: np.ndarray, truth: np.ndarray, rng: np.random.Generator, *,
                        max_regions: int = 3, p_morph: float = 0.5, p_drop: float = 0.3,
                        radius: tuple[int, int] | None = (8, 48), return_region: bool = False):
    """A plausible corrected mask for training: the model's ``pred`` with 1..``max_regions`` of
    its largest errors painted from ``truth`` (with a brush of a radius drawn from ``radius``,
    or whole components when None), then, outside the painted pixels, a one-pixel erosion or
    dilation (probability ``p_morph``) and one dropped object (``p_drop``).

    ``return_region``: return ``(mask, painted region)``, for models told what was painted."""
    from scipy import ndimage
    from skimage.measure import label

    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    brush = None if radius is None else int(rng.integers(radius[0], radius[1] + 1))
    out, region = paint_largest_errors(pred, truth, int(rng.integers(1, max_regions + 1)), brush)
    free = ~region
    if rng.random() < p_morph:
        op = ndimage.binary_erosion if rng.random() < 0.5 else ndimage.binary_dilation
        out = np.where(free, op(out), out)
    if rng.random() < p_drop:
        lab, n = label(out & free, connectivity=1, return_num=True)
        if n:
            out = out & (lab != int(rng.integers(1, n + 1)))
    return (out, region) if return_region else out
