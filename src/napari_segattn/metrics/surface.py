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
    u = a | b
    sl = []
    for ax in range(u.ndim):
        hit = np.flatnonzero(u.any(axis=tuple(k for k in range(u.ndim) if k != ax)))
        sl.append(slice(max(int(hit[0]) - 1, 0), min(int(hit[-1]) + 2, u.shape[ax])))
    return a[tuple(sl)], b[tuple(sl)]


def _sampling(spacing, ndim: int):
    return None if spacing is None else tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)))


def _surfaces(pred, gt, connectivity):
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    pred, gt = _crop_to_union(pred, gt)
    return surface(pred, connectivity), surface(gt, connectivity)


def _distances(sp: np.ndarray, sg: np.ndarray, sampling) -> tuple[np.ndarray, np.ndarray]:
    d_pred = ndimage.distance_transform_edt(~sg, sampling=sampling)[sp]
    d_gt = ndimage.distance_transform_edt(~sp, sampling=sampling)[sg]
    return d_pred, d_gt


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing=None, connectivity: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(distances of pred's surface voxels to gt's surface, and of gt's to pred's); both non-empty masks."""
    sp, sg = _surfaces(pred, gt, connectivity)
    return _distances(sp, sg, _sampling(spacing, sp.ndim))


def _empty_case(pred, gt):
    p, g = bool(np.any(pred)), bool(np.any(gt))
    if not p and not g:
        return 0.0
    if p != g:
        return float("inf")
    return None


def hd95(pred: np.ndarray, gt: np.ndarray, spacing=None, connectivity: int = 1) -> float:
    """95th-percentile symmetric surface distance; both empty → 0.0, exactly one empty → inf."""
    special = _empty_case(pred, gt)
    if special is not None:
        return special
    d1, d2 = surface_distances(pred, gt, spacing, connectivity)
    return float(np.percentile(np.hstack((d1, d2)), 95))


def hd95_px_and_mm(pred: np.ndarray, gt: np.ndarray, spacing, connectivity: int = 1) -> tuple[float, float]:
    """HD95 in voxels and in ``spacing`` units, sharing the surfaces (and the EDT when isotropic)."""
    special = _empty_case(pred, gt)
    if special is not None:
        return special, special
    sp, sg = _surfaces(pred, gt, connectivity)
    px = float(np.percentile(np.hstack(_distances(sp, sg, None)), 95))
    sampling = _sampling(spacing, sp.ndim)
    if len(set(sampling)) == 1:
        return px, px * sampling[0]  # isotropic: every distance scales by the one spacing
    return px, float(np.percentile(np.hstack(_distances(sp, sg, sampling)), 95))
