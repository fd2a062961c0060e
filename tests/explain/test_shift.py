"""attention_shift(): numbers on a constructed example worked out by hand."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from napari_segattn.explain import attention_shift


@pytest.fixture
def example():
    gt = np.zeros((10, 10), int)
    gt[:, 5:] = 1  # left half region 0, right half region 1
    a = np.zeros((10, 10))
    a[2, 2] = 1.0
    a[2, 7] = -3.0  # negative attribution counts by magnitude
    b = np.zeros((10, 10))
    b[7, 7] = 4.0
    return a, b, gt


def test_mass_centroid_shift_by_hand(example, tmp_path):
    a, b, gt = example
    r = attention_shift(a, b, gt, class_names=["bg", "fg"], spacing=(2.0, 1.0))
    np.testing.assert_allclose(r.mass_a, [[0.25, 0.75]])
    np.testing.assert_allclose(r.mass_b, [[0.0, 1.0]])
    np.testing.assert_allclose(r.mass_delta, [[-0.25, 0.25]])
    # centroid a = (2, (2*1 + 7*3)/4) = (2, 5.75); b = (7, 7)
    np.testing.assert_allclose(r.centroid_a, [[2.0, 5.75]])
    np.testing.assert_allclose(r.centroid_b, [[7.0, 7.0]])
    assert r.shift_px[0] == pytest.approx(math.sqrt(5 ** 2 + 1.25 ** 2))
    assert r.shift_mm[0] == pytest.approx(math.sqrt(10 ** 2 + 1.25 ** 2))
    # unit-mass difference map
    assert r.difference[0, 7, 7] == pytest.approx(1.0)
    assert r.difference[0, 2, 7] == pytest.approx(-0.75)
    assert r.difference[0, 2, 2] == pytest.approx(-0.25)
    assert r.difference.sum() == pytest.approx(0.0, abs=1e-6)
    assert r.regions == ["bg", "fg"]

    rows = list(csv.DictReader(r.to_csv(tmp_path / "shift.csv").open()))
    assert float(rows[0]["mass_a:fg"]) == pytest.approx(0.75)
    assert float(rows[0]["mass_delta:bg"]) == pytest.approx(-0.25)
    payload = json.loads(r.to_json(tmp_path / "shift.json").read_text())
    assert payload["rows"][0]["shift_mm"] == pytest.approx(math.sqrt(101.5625))


def test_multi_class_and_errors(example):
    a, b, gt = example
    r = attention_shift(np.stack([a, b]), np.stack([b, a]), gt)
    assert r.classes == ["0", "1"] and r.shift_mm is None
    np.testing.assert_allclose(r.shift_px, [r.shift_px[1]] * 2)
    np.testing.assert_allclose(r.mass_a[1], [0.0, 1.0])
    with pytest.raises(ValueError, match="do not match"):
        attention_shift(a, b[:5], gt)
    empty = attention_shift(np.zeros_like(a), b, gt)
    assert np.isnan(empty.mass_a).all() and np.isnan(empty.shift_px[0])


def test_accepts_saliency_maps(standin):
    from napari_segattn.explain import saliency

    rng = np.random.default_rng(0)
    img = rng.normal(size=(16, 16)).astype(np.float32)
    gt = (np.arange(16)[None, :] >= 8).astype(int).repeat(16, 0)
    sa = saliency(standin("unet", out_channels=3), img, [0, 1], window=8, stride=8, n_steps=8)
    r = attention_shift(sa, sa, gt, class_names=["bg", "gm", "wm"])
    assert r.classes == ["bg", "gm"]
    np.testing.assert_allclose(r.shift_px, 0.0)
    np.testing.assert_allclose(r.mass_a.sum(1), 1.0)


def test_summary_sentence_and_plain_table_by_hand(example):
    """Issue 14 item 7: what a person reads, worked out from the hand example above."""
    a, b, gt = example
    r = attention_shift(a, b, gt, class_names=["bg", "fg"], spacing=(2.0, 1.0), labels=("a:plain", "b:gated"))
    # the explained class is 0 ("bg"), so the sentence talks about region bg: 25 % -> 0 %
    assert r.summary() == ("b (gated) puts 25 percentage points less of its saliency on bg than a (plain) "
                           "(0% vs 25%); the saliency centroid moved 5.2 px (10.08 mm).")
    cols, rows = r.table()
    assert cols == ["class", "on bg: a (%)", "on bg: b (%)", "on bg: b - a (points)", "on fg: a (%)", "on fg: b (%)",
                    "on fg: b - a (points)", "centroid shift (px)", "centroid shift (mm)"]
    assert rows == [["bg", 25.0, 0.0, -25.0, 75.0, 100.0, 25.0, 5.2, 10.08]]
    # a class not among the regions: the region whose share changed most (tie -> the first)
    r2 = attention_shift(a[None], b[None], gt, regions=[0, 1], class_names=["bg", "fg", "other"])
    r2.classes = ["other"]
    assert " on bg " in r2.summary() and r2.summary().startswith("b puts")


def test_relative_saliency_and_symmetric_limits():
    from napari_segattn.explain.shift import relative_saliency, symmetric_limits

    m = np.array([[0.0, -2.0], [1.0, 1.0]])
    np.testing.assert_allclose(relative_saliency(m), [[0.0, 2.0], [1.0, 1.0]])  # mean |m| = 1
    np.testing.assert_allclose(relative_saliency(100 * m), relative_saliency(m), rtol=1e-6)  # scale free
    d = np.concatenate([np.linspace(-1, 1, 999), [50.0]])  # one extreme pixel
    lo, hi = symmetric_limits(d, 99.0)
    assert lo == -hi and 0.95 < hi < 1.0
    assert symmetric_limits(np.zeros(4)) == (-1.0, 1.0)
