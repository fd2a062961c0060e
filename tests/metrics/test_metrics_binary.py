"""Overlap metrics against direct counts, FPA's FP/FN rates, and the empty-mask conventions."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segattn.metrics import binary_metrics, confusion, segmentation_metrics


def test_hand_counted_example():
    gt = np.zeros((4, 5), bool)
    gt[1:3, 1:4] = True  # 6 pixels
    pred = np.zeros((4, 5), bool)
    pred[1:3, 2:5] = True  # 6 pixels, 4 overlap
    m = binary_metrics(pred, gt)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 2, 2, 12)
    assert m["dice"] == pytest.approx(8 / 12)
    assert m["iou"] == pytest.approx(4 / 8)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["specificity"] == pytest.approx(12 / 14)
    assert m["accuracy"] == pytest.approx(16 / 20)
    assert m["f2"] == pytest.approx(5 * 4 / (5 * 4 + 4 * 2 + 2))
    assert m["fp_rate"] == pytest.approx(2 / 14)  # FP / (FP + TN)
    assert m["fn_rate"] == pytest.approx(2 / 6)  # FN / (FN + TP)
    # one-column shift of a 2x3 block: surfaces are 1 px apart except the unmatched columns
    assert m["hd95"] == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))), st.randoms())
def test_overlap_metrics_match_direct_counts(gt, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    pred = rng.random(gt.shape) < 0.5
    m = binary_metrics(pred, gt)
    tp = sum(1 for p, g in zip(pred.ravel(), gt.ravel()) if p and g)
    fp = sum(1 for p, g in zip(pred.ravel(), gt.ravel()) if p and not g)
    fn = sum(1 for p, g in zip(pred.ravel(), gt.ravel()) if not p and g)
    tn = gt.size - tp - fp - fn
    assert confusion(pred, gt) == (tp, fp, fn, tn)
    if tp + fp + fn:
        assert m["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert m["iou"] == pytest.approx(tp / (tp + fp + fn))
        # Dice and IoU are tied: D = 2J / (1 + J)
        assert m["dice"] == pytest.approx(2 * m["iou"] / (1 + m["iou"]))
    if tp + fp:
        assert m["precision"] == pytest.approx(tp / (tp + fp))
    if tp + fn:
        assert m["recall"] == pytest.approx(tp / (tp + fn))
        assert m["fn_rate"] == pytest.approx(1 - m["recall"])
    if tn + fp:
        assert m["fp_rate"] == pytest.approx(1 - m["specificity"])
    assert m["accuracy"] == pytest.approx((tp + tn) / gt.size)


def test_both_empty_is_perfect():
    z = np.zeros((8, 8), bool)
    m = binary_metrics(z, z, spacing=(0.5, 2.0))
    assert m["dice"] == 1.0 and m["iou"] == 1.0 and m["f2"] == 1.0
    assert m["hd95"] == 0.0 and m["hd95_mm"] == 0.0
    assert m["accuracy"] == 1.0 and m["specificity"] == 1.0 and m["fp_rate"] == 0.0
    # undefined ratios are NaN, not silently 0 or 1
    assert math.isnan(m["precision"]) and math.isnan(m["recall"]) and math.isnan(m["fn_rate"])


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_one_empty_gives_zero_dice_and_infinite_hd95(which):
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    b[2:5, 2:5] = True
    pred, gt = (a, b) if which == "pred" else (b, a)
    m = binary_metrics(pred, gt, spacing=(1.0, 1.0))
    assert m["dice"] == 0.0 and m["iou"] == 0.0 and m["f2"] == 0.0
    assert math.isinf(m["hd95"]) and math.isinf(m["hd95_mm"])
    if which == "pred":
        assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["fn_rate"] == 1.0
    else:
        assert m["precision"] == 0.0 and math.isnan(m["recall"]) and m["fp_rate"] == pytest.approx(9 / 64)


def test_3d_arrays_are_supported():
    gt = np.zeros((5, 6, 7), bool)
    gt[1:4, 1:5, 2:6] = True
    pred = np.roll(gt, 1, axis=0)
    m = binary_metrics(pred, gt, spacing=(3.0, 1.0, 1.0))
    assert m["tp"] == 2 * 4 * 4 and m["fp"] == 16 and m["fn"] == 16
    assert m["hd95"] == pytest.approx(1.0) and m["hd95_mm"] == pytest.approx(3.0)


def test_segmentation_metrics_per_class_and_mean():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 3, (20, 20))
    pred = np.where(rng.random((20, 20)) < 0.8, gt, rng.integers(0, 3, (20, 20)))
    res = segmentation_metrics(pred, gt, num_classes=3, spacing=(2.0, 1.0))
    assert set(res) == {"class_1", "class_2", "mean"}
    for c in (1, 2):
        ref = binary_metrics(pred == c, gt == c, spacing=(2.0, 1.0))
        assert res[f"class_{c}"] == pytest.approx(ref)
    assert res["mean"]["dice"] == pytest.approx((res["class_1"]["dice"] + res["class_2"]["dice"]) / 2)
    full = segmentation_metrics(pred, gt, num_classes=3, ignore_background=False)
    assert set(full) == {"class_0", "class_1", "class_2", "mean"}
    assert full["class_0"]["dice"] == pytest.approx(binary_metrics(pred == 0, gt == 0)["dice"])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        binary_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


def test_roi_counts_only_the_pixels_inside_it():
    from napari_segattn.metrics import binary_metrics, segmentation_metrics

    pred = np.zeros((6, 8), bool)
    gt = np.zeros((6, 8), bool)
    pred[1:3, 1:3] = gt[1:3, 1:3] = True  # agreement inside
    pred[:, 6:] = True  # false positives outside the ROI
    roi = np.zeros((6, 8), np.uint8)
    roi[:, :5] = 1
    m = binary_metrics(pred, gt, roi=roi)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (4, 0, 0, 26)
    assert m["dice"] == m["accuracy"] == m["precision"] == 1.0 and m["hd95"] == 0.0
    assert binary_metrics(pred, gt)["fp"] == 12  # without the ROI they count
    mc = segmentation_metrics(pred.astype(int), gt.astype(int), 2, roi=roi)
    assert mc["class_1"]["dice"] == 1.0
    with pytest.raises(ValueError, match="ROI"):
        binary_metrics(pred, gt, roi=roi[:3])
