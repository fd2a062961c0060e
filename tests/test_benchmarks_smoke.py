"""Smoke run of the benchmark harness on tiny sizes: every row runs and its checks hold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks.run import format_row, main, run_row

TINY = {
    "saliency": {"size": 32, "n_steps": 2},
    "fanet_step": {"size": 32, "repeat": 1},
    "volume": {"slices": 2, "size": 32, "batch_size": 2},
    "train_step": {"fanet": {"size": 32, "batch": 1}, "fpa": {"size": 32, "batch": 1}, "repeat": 1},
}


@pytest.fixture(autouse=True)
def _one_thread():
    # the harness is checked, not timed: one thread keeps the smoke run fast on a busy machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _variant(row, prefix):
    return next(v for v in row["variants"] if v["name"].startswith(prefix))


def test_saliency_row_fast_equals_the_per_window_loop():
    r = run_row("saliency", quick=True, device="cpu", options=TINY)
    v = r["variants"][0]
    assert v["identical"] and v["max_abs_diff_rel"] <= 1e-4
    assert r["config"]["size"] == 32 and "16 windows" in r["what"]  # 4 x 4 windows of 8 x 8
    assert v["ratio"] > 1.0 and r["threads"] == 1 and r["peak_rss_mb"] >= r["rss_before_row_mb"] > 0
    assert "CPU timing, for context" in format_row(r)


def test_fanet_row_fp32_variants_agree_with_the_reference():
    r = run_row("fanet_step", quick=True, device="cpu", options=TINY)
    for prefix in ("inference_mode", "library"):
        v = _variant(r, prefix)
        assert v["dice_vs_fp32"] == 1.0 and v["max_abs_prob_diff"] < 1e-5
    for prefix in ("inference_mode + channels_last + bfloat16", "library: FANetRefiner(amp='bf16')"):
        bf16 = _variant(r, prefix)
        assert 0.0 <= bf16["dice_vs_fp32"] <= 1.0 and 0 < bf16["max_abs_prob_diff"] < 0.5


def test_volume_row_batched_prediction_equals_the_slice_loop():
    r = run_row("volume", quick=True, device="cpu", options=TINY)
    v, v16 = r["variants"]
    assert v["dice_vs_fp32"] == 1.0 and v["max_abs_prob_diff"] < 1e-5 and v["precision"] == "float32"
    assert v16["precision"] == "bfloat16" and 0 < v16["max_abs_prob_diff"] < 0.5


def test_train_row_variants_compute_the_same_first_loss():
    r = run_row("train_step", quick=True, device="cpu", options=TINY)
    names = [v["name"] for v in r["variants"]]
    assert len(names) == 6 and all(v["seconds"] > 0 for v in r["variants"])
    for model in ("fanet", "fpa"):
        ref, cl, bf16 = (v for v in r["variants"] if v["name"].startswith(model))
        assert cl["loss"] == pytest.approx(ref["loss"], abs=1e-4)
        assert bf16["loss"] == pytest.approx(ref["loss"], abs=2e-2)  # same step, bf16 roundoff


def test_rle_row_counts_bytes_independently(tmp_path, shared_data):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--only", "rle", "--in-process", "--json", str(out), "--quiet"]) == 0
    row = json.loads(out.read_text())["rows"][0]
    v = row["variants"][0]
    assert v["round_trip_exact"]
    masks_dir = shared_data / "isbi2012_em" / "masks"
    if masks_dir.exists():
        import imageio.v3 as iio

        files = sorted(masks_dir.glob("*.png"), key=lambda p: int(p.stem))[:5]
        masks = [np.asarray(iio.imread(f)) > 0 for f in files]
        # independent count: one (start, length) int64 pair per run of foreground in each row-major mask
        runs = sum(int(np.count_nonzero(np.diff(np.concatenate(([0], m.ravel().astype(np.int8), [0]))) == 1))
                   for m in masks)
        itemsize = np.dtype(v["run_dtype"]).itemsize
        assert v["bytes"] == 2 * itemsize * runs and v["dense_bytes"] == sum(m.size for m in masks)


def test_tiling_row_measures_each_point_in_its_own_process():
    opts = {"tiling": {"models": ["unet"], "sizes": [96], "whole_max": 96, "agree_max": 96,
                       "memory_budget": "8M", "batch_size": 2}}
    r = run_row("tiling", quick=True, device="cpu", options=opts)
    whole, tiled = r["variants"]
    assert "error" not in whole and "error" not in tiled
    assert whole["peak_rss_mb"] > 0 and tiled["peak_rss_mb"] > 0 and tiled["seconds"] > 0
    # 8 MiB / 1440 B/px -> 64² windows over 96², 2 x 2 of them; agreement with the whole image measured
    assert tiled["window"] == [64, 64] and tiled["windows"] == 4
    assert 0.0 <= tiled["vs_whole_dice"] <= 1.0 and tiled["vs_whole_max_abs_prob_diff"] >= 0.0
