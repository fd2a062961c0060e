import math

import numpy as np
import pytest

from napari_segattn.metrics import aggregate, segmentation_metrics


def test_mean_std_skip_nan_and_count_inf():
    res = aggregate([
        {"dice": 0.5, "hd95": 2.0, "precision": float("nan")},
        {"dice": 0.7, "hd95": float("inf"), "precision": 0.4},
        {"dice": 0.9, "hd95": 4.0, "precision": 0.6},
    ])
    assert res["dice"]["mean"] == pytest.approx(0.7)
    assert res["dice"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert res["dice"]["n"] == 3
    assert res["hd95"] == {"mean": pytest.approx(3.0), "std": pytest.approx(1.0), "n": 2, "n_nan": 0, "n_inf": 1}
    assert res["precision"]["mean"] == pytest.approx(0.5) and res["precision"]["n_nan"] == 1


def test_nested_per_class_results_aggregate_recursively():
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(3):
        gt = rng.integers(0, 3, (10, 10))
        runs.append(segmentation_metrics(rng.integers(0, 3, (10, 10)), gt, 3))
    agg = aggregate(runs)
    assert agg["class_2"]["dice"]["mean"] == pytest.approx(np.mean([r["class_2"]["dice"] for r in runs]))
    assert agg["mean"]["iou"]["n"] == 3


def test_all_nan_metric_has_nan_mean():
    res = aggregate([{"recall": float("nan")}, {"recall": float("nan")}])
    assert math.isnan(res["recall"]["mean"]) and res["recall"]["n_nan"] == 2
    assert aggregate([]) == {}
