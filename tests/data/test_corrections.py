"""The simulated user: largest error components by hand, training corrections' invariants."""

from __future__ import annotations

import numpy as np

from napari_segattn.data import error_regions, paint_largest_errors, simulate_correction


def scene():
    truth = np.zeros((12, 12), bool)
    truth[1:5, 1:5] = True  # 16 px object, half missed below
    truth[8:10, 8:10] = True  # 4 px object, missed entirely
    mask = truth.copy()
    mask[3:5, 1:5] = False  # FN component of 8 px
    mask[8:10, 8:10] = False  # FN component of 4 px
    mask[0, 8:11] = True  # FP component of 3 px
    return mask, truth


def test_error_regions_largest_first_fn_and_fp_apart():
    mask, truth = scene()
    regs = error_regions(mask, truth)
    assert [int(r.sum()) for r in regs] == [8, 4, 3]
    assert regs[0][3:5, 1:5].all() and regs[2][0, 8:11].all()
    assert [int(r.sum()) for r in error_regions(mask, truth, 2)] == [8, 4]


def test_paint_largest_errors_fixes_exactly_those_pixels():
    mask, truth = scene()
    out, region = paint_largest_errors(mask, truth, 1)
    assert region.sum() == 8 and out[3:5, 1:5].all()
    np.testing.assert_array_equal(out[~region], mask[~region])
    out2, region2 = paint_largest_errors(out, truth, 2)
    assert region2.sum() == 7
    np.testing.assert_array_equal(out2, truth)
    same, none = paint_largest_errors(truth, truth)
    assert not none.any() and np.array_equal(same, truth)


def test_simulated_correction_keeps_the_painted_region_exact():
    mask, truth = scene()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        out = simulate_correction(mask, truth, rng, max_regions=1, p_morph=1.0, p_drop=1.0, radius=None)
        # the largest error (8 px FN) is always painted from the truth, whatever the noise does
        assert out[3:5, 1:5].all()
    # with no noise, k regions painted and nothing else changed
    out = simulate_correction(mask, truth, np.random.default_rng(0), max_regions=3, p_morph=0.0, p_drop=0.0, radius=None)
    changed = out != mask
    assert changed.sum() in (8, 12, 15) and np.array_equal(out[changed], truth[changed])


def test_brush_paints_a_disc_around_the_most_interior_pixel():
    truth = np.zeros((40, 40), bool)
    truth[5:35, 5:35] = True  # one 30x30 missed square: its most interior pixel is near (19.5, 19.5)
    out, region = paint_largest_errors(np.zeros_like(truth), truth, 1, radius=5)
    yy, xx = np.nonzero(region)
    assert 60 <= region.sum() <= 90  # ~ pi 5^2 = 78.5
    assert abs(yy.mean() - 19.5) <= 1 and abs(xx.mean() - 19.5) <= 1
    assert np.array_equal(out, region)
    # a brush larger than the component paints the whole component
    _, whole = paint_largest_errors(np.zeros_like(truth), truth, 1, radius=100)
    assert np.array_equal(whole, truth)
