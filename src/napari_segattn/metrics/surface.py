"""Surface distances and HD95 as medpy defines them (FPA's ``NNMetrics.hd95`` is medpy's code).

Surface = object voxels removed by one erosion with the ``connectivity`` structuring element
(voxels on the array edge count as surface); the distance of every surface voxel of one mask to
the nearest surface voxel of the other comes from a Euclidean distance transform with the voxel
``spacing``; HD95 = 95th percentile (numpy's linear interpolation) of both directions pooled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    footprint = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=footprint, iterations=1)


def _crop_to_union(a: np.ndarray, b: np.ndarray):
    """Crop both masks to the union's bounding box plus one voxel (clipped to the array).

    Distances only involve surface voxels, all inside the box; the one-voxel margin keeps the
    erosion identical to the uncropped one (a background margin, or the true array edge).
    """
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, a.shape)
    sl = tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))
    return a[sl], b[sl]


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing=None, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(distances of pred's surface voxels to gt's surface, and of gt's to pred's); both non-empty masks."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    pred, gt = _crop_to_union(pred, gt)
    sampling = None if spacing is None else np.broadcast_to(np.asarray(spacing, dtype=np.float64), (pred.ndim,))
    sp, sg = surface(pred, connectivity), surface(gt, connectivity)
    d_pred = ndimage.distance_transform_edt(~sg, sampling=sampling)[sp]
    d_gt = ndimage.distance_transform_edt(~sp, sampling=sampling)[sg]
    return d_pred, d_gt


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None, connectivity: int = 1) -> float:
    """95th-percentile symmetric surface distance; both empty → 0.0, exactly one empty → inf."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    p, g = pred.any(), gt.any()
    if not p and not g:
        return 0.0
    if p != g:
        return float("inf")
    d1, d2 = surface_distances(pred, gt, spacing, connectivity)
    return float(np.percentile(np.hstack((d1, d2)), 95))
