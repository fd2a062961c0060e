"""Error maps: counts against an independent count, fixed label values and paper colours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segattn.explain import ERROR_COLORS, FN, FP, TN, TP, error_map


def test_binary_counts_match_independent_count():
    rng = np.random.default_rng(0)
    pred = rng.random((40, 30)) > 0.6
    gt = rng.random((40, 30)) > 0.5
    em = error_map(pred, gt)
    # independent count with integer arithmetic: 2*gt + pred -> 0 TN, 1 FP, 2 FN, 3 TP
    code = 2 * gt.astype(int) + pred.astype(int)
    tn, fp, fn, tp = (int((code == i).sum()) for i in range(4))
    assert em.counts[0] == {"TN": tn, "TP": tp, "FN": fn, "FP": fp}
    assert em.labels.dtype == np.uint8 and em.labels.shape == pred.shape
    assert (em.labels == TP).sum() == tp and (em.labels == FP).sum() == fp
    np.testing.assert_array_equal(em.labels == FN, gt & ~pred)
    assert em.rates[0]["fp_rate"] == pytest.approx(fp / (fp + tn))
    assert em.rates[0]["fn_rate"] == pytest.approx(fn / (fn + tp))
    assert em.binary


def test_hand_example_and_colours():
    pred = np.array([[1, 1, 0, 0]])
    gt = np.array([[1, 0, 1, 0]])
    em = error_map(pred, gt)
    np.testing.assert_array_equal(em.labels, [[TP, FP, FN, TN]])
    assert (TN, TP, FN, FP) == (0, 1, 2, 3)
    # FPA paper figures: TP yellow, FN blue; FP red; TN transparent
    assert ERROR_COLORS[TP] == (1.0, 1.0, 0.0, 1.0)
    assert ERROR_COLORS[FN] == (0.0, 0.0, 1.0, 1.0)
    assert ERROR_COLORS[FP] == (1.0, 0.0, 0.0, 1.0)
    assert ERROR_COLORS[TN][3] == 0.0 and ERROR_COLORS[None][3] == 0.0


def test_multiclass_one_vs_rest():
    pred = np.array([[0, 1, 2], [2, 2, 1]])
    gt = np.array([[0, 1, 1], [2, 0, 1]])
    em = error_map(pred, gt, num_classes=3)
    assert em.labels.shape == (3, 2, 3) and em.classes == [0, 1, 2]
    np.testing.assert_array_equal(em.labels[1], [[TN, TP, FN], [TN, TN, TP]])
    np.testing.assert_array_equal(em.labels[2], [[TN, TN, FP], [TP, FP, TN]])
    assert em.counts[0] == {"TN": 4, "TP": 1, "FN": 1, "FP": 0}
    for k in range(3):
        assert sum(em.counts[k].values()) == pred.size
    with pytest.raises(ValueError, match="shape"):
        error_map(pred, gt[:, :2])


def test_multiclass_label_range_checked():
    with pytest.raises(ValueError, match="outside"):
        error_map(np.array([0, 3]), np.array([0, 1]), num_classes=3)
