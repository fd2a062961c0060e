"""Pooling per-image metric dicts into mean ± std (the papers report per-image means)."""

from __future__ import annotations

import math

import numpy as np


def aggregate(results: list[dict]) -> dict:
    """``{metric: {"mean", "std", "n", "n_nan", "n_inf"}}`` over a list of metric dicts.

    NaN values (undefined, e.g. precision with no prediction) are skipped and counted in
    ``n_nan``; infinite values (hd95 with one empty mask) are left out of mean/std and counted
    in ``n_inf``, so one empty prediction does not turn the mean into inf. ``std`` is the
    population standard deviation (ddof = 0). Nested dicts (per-class results) are aggregated
    recursively.
    """
    if not results:
        return {}
    keys = []
    for r in results:
        keys += [k for k in r if k not in keys]
    out = {}
    for k in keys:
        vals = [r[k] for r in results if k in r]
        if all(isinstance(v, dict) for v in vals):
            out[k] = aggregate(vals)
            continue
        nums = [float(v) for v in vals if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)]
        if not nums:
            continue
        arr = np.asarray(nums)
        nan, inf = np.isnan(arr), np.isinf(arr)
        ok = arr[~nan & ~inf]
        out[k] = {
            "mean": float(ok.mean()) if ok.size else math.nan,
            "std": float(ok.std()) if ok.size else math.nan,
            "n": int(ok.size), "n_nan": int(nan.sum()), "n_inf": int(inf.sum()),
        }
    return out
