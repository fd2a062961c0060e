"""HD95 against an independent brute force: explicit 4/6-neighbour surfaces + cKDTree distances."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_segattn.metrics import binary_metrics, hd95


def brute_surface(mask):
    """Foreground voxels with at least one face neighbour outside the mask or the array."""
    m = np.pad(mask, 1, constant_values=False)
    inner = np.ones_like(m)
    for ax in range(m.ndim):
        inner &= np.roll(m, 1, axis=ax) & np.roll(m, -1, axis=ax)
    sl = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~inner[sl]


def brute_hd95(a, b, spacing):
    sp = np.asarray(spacing, dtype=float)
    pa = np.argwhere(brute_surface(a)) * sp
    pb = np.argwhere(brute_surface(b)) * sp
    d_ab = cKDTree(pb).query(pa)[0]
    d_ba = cKDTree(pa).query(pb)[0]
    return float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def random_blobs(rng, shape, n):
    m = np.zeros(shape, bool)
    grids = np.indices(shape)
    for _ in range(n):
        c = [rng.uniform(0, s) for s in shape]
        r = [rng.uniform(1, s / 3) for s in shape]
        m |= sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) <= 1
    return m


@pytest.mark.parametrize("seed", range(12))
def test_hd95_2d_matches_brute_force_including_anisotropic(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
    a, b = random_blobs(rng, shape, 3), random_blobs(rng, shape, 3)
    if not a.any() or not b.any():
        pytest.skip("empty draw")
    spacing = (float(rng.uniform(0.3, 3)), float(rng.uniform(0.3, 3)))
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b, (1, 1)), rel=1e-9)
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-9)
    m = binary_metrics(a, b, spacing=spacing)
    assert m["hd95"] == pytest.approx(brute_hd95(a, b, (1, 1)))
    assert m["hd95_mm"] == pytest.approx(brute_hd95(a, b, spacing))


@pytest.mark.parametrize("seed", range(4))
def test_hd95_3d_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (12, 25, 30)
    a, b = random_blobs(rng, shape, 2), random_blobs(rng, shape, 2)
    if not a.any() or not b.any():
        pytest.skip("empty draw")
    spacing = (7.5, 0.5, 0.5)  # the SCT T2* grid
    assert hd95(a, b, spacing) == pytest.approx(brute_hd95(a, b, spacing), rel=1e-9)


def test_objects_touching_the_array_edge_keep_their_edge_as_surface():
    # medpy's erosion uses a background border: a full-width band has its edge rows as surface
    a = np.zeros((10, 10), bool)
    a[:, :] = True
    b = np.zeros((10, 10), bool)
    b[2:8, 2:8] = True
    assert hd95(a, b) == pytest.approx(brute_hd95(a, b, (1, 1)))


def test_point_to_point_distance():
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[2, 3] = True
    b[5, 7] = True
    assert hd95(a, b) == pytest.approx(5.0)
    assert hd95(a, b, (2.0, 1.0)) == pytest.approx(np.hypot(6, 4))
