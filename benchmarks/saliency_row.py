"""Row ``saliency``: patch-wise IG map, ``method="fast"`` vs the literal per-window captum loop."""

from __future__ import annotations

import numpy as np
import torch

from napari_segattn.explain.saliency import saliency, window_grid

from ._common import gpu_peak_mb, reset_gpu_peak, timed, variant
from ._models import tiny_unet

FULL = {"size": 256, "n_steps": 50, "window": 8, "stride": 8}
QUICK = {"size": 96, "n_steps": 4, "window": 8, "stride": 8}


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    cfg = dict(QUICK if quick else FULL, **(options or {}).get("saliency", {}))
    size = cfg["size"]
    rng = np.random.default_rng(0)
    img = rng.random((size, size)).astype(np.float32)
    model = tiny_unet()
    kw = dict(window=cfg["window"], stride=cfg["stride"], n_steps=cfg["n_steps"], device=str(device))
    reset_gpu_peak(device)
    # The reference loop is long and deterministic: one timed call, no warm-up (a warm-up
    # call of the fast path below covers one-off costs such as captum's import).
    t_ref, ref = timed(lambda: saliency(model, img, 1, method="per_window", **kw), device, repeat=1, warmup=0)
    t_fast, fast = timed(lambda: saliency(model, img, 1, method="fast", **kw), device, repeat=3)
    scale = float(np.abs(ref.map).max())
    err = float(np.abs(fast.map - ref.map).max()) / scale if scale else 0.0
    return {
        "what": f"patch-wise IG map, one class, {size}x{size}, {cfg['n_steps']} steps, "
                f"{len(window_grid((size, size), cfg['window'], cfg['stride']))} windows (tiny stride-8 U-Net)",
        "reference": "per_window: one captum IG run per window (the paper's loop)",
        "config": cfg,
        "reference_s": t_ref,
        "variants": [variant("fast: one IG run on the coverage-weighted output", t_fast, t_ref,
                             max_abs_diff_rel=err, identical=err <= 1e-4)],
        "gpu_peak_mb": gpu_peak_mb(device),
    }
