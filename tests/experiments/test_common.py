"""Helpers of the reproduction studies, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segattn.data import DataError
from napari_segattn.experiments import common
from napari_segattn.explain import ERROR_COLORS, FN, FP, TN, TP


def test_downsample_is_block_mean_and_strided_labels():
    img = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    lab = (np.arange(64).reshape(8, 8) % 3 == 0).astype(np.int64)
    small, slab = common.downsample(img, lab, 2)
    expect = img[0].astype(float).reshape(4, 2, 4, 2).mean(axis=(1, 3))
    assert small.dtype == np.uint8 and small.shape == (1, 4, 4)
    np.testing.assert_array_equal(small[0], np.rint(expect).astype(np.uint8))
    np.testing.assert_array_equal(slab, lab[::2, ::2])


def test_em_split_is_fanets_24_3_3_and_disjoint():
    s = common.em_split(30)
    assert [len(s[k]) for k in ("train", "val", "test")] == [24, 3, 3]
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(30))


def test_evenly_spreads_and_keeps_ends():
    assert common.evenly(list(range(10)), 3) == [0, 4, 9] or common.evenly(list(range(10)), 3) == [0, 5, 9]
    assert common.evenly([1, 2], 5) == [1, 2]


def test_error_rgb_uses_the_explain_colours():
    labels = np.array([[TN, TP], [FN, FP]])
    rgb = common.error_rgb(labels)
    for v in (TP, FN, FP):
        np.testing.assert_array_equal(rgb[labels == v][0], np.round(np.array(ERROR_COLORS[v][:3]) * 255))
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])


def test_data_root_accepts_root_or_folder(tmp_path):
    (tmp_path / "mni152").mkdir()
    assert common.data_root(tmp_path, "mni152") == tmp_path.resolve()
    assert common.data_root(tmp_path / "mni152", "mni152") == tmp_path.resolve()
    with pytest.raises(DataError, match="isbi2012_em"):
        common.data_root(tmp_path, "isbi2012_em")


def test_write_json_and_csv_keep_nan_and_inf_readable(tmp_path):
    import csv
    import json

    common.write_json(tmp_path / "r.json", {"a": float("nan"), "b": float("inf"), "c": np.float32(0.5)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": None, "b": "inf", "c": 0.5}
    common.write_csv(tmp_path / "t.csv", [{"x": 1, "y": 0.25}, {"x": 2, "z": "q"}])
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert rows[0] == {"x": "1", "y": "0.25", "z": ""} and rows[1]["z"] == "q"


def test_mean_rows_skips_nan():
    assert common.mean_rows([{"a": 1.0}, {"a": float("nan")}, {"a": 3.0}], ["a"]) == {"a": 2.0}
