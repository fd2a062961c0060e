"""Row ``tiling``: peak RSS and seconds of ``predict`` on large images, tiled vs whole.

Every (model, size, mode) runs in its own Python process (one thread) so its peak RSS
(``ru_maxrss``) belongs to that prediction alone. ``tiled`` is ``predict``'s default
(``tile="auto"``: whole when the slice fits the 1 GiB activation budget, Gaussian-blended
windows otherwise); ``whole`` forces ``tile=0`` and is the reference where it fits
(``whole_max``). Agreement (Dice of ``p > 0.5``, max |dp|) of tiled against whole at the
sizes up to ``agree_max``, in a separate process so it does not distort the memory columns.
MONAI (which the tiled path imports) is imported before the
measurement in both modes. Random weights (memory and speed do not need trained ones) and a smooth random image (uint8
RGB for FANet, float32 grey for U-Net).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from ._common import variant

FULL = {"models": ["unet", "fanet"], "sizes": [1024, 2048, 4096, 8192], "whole_max": 2048, "agree_max": 1024,
        "memory_budget": None, "batch_size": 4}
QUICK = {"models": ["unet", "fanet"], "sizes": [128, 256], "whole_max": 256, "agree_max": 128,
         "memory_budget": "16M", "batch_size": 4}

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(1)
import monai.data.utils  # imported by the tiled path (2.6 s, ~165 MB once per process): paid before timing
from napari_segattn.inference import predict
from napari_segattn.models import build_model
name, size, mode, budget, batch, device = sys.argv[1:7]
size, batch = int(size), int(batch)
torch.manual_seed(0)
m = build_model(name) if name != "unet" else build_model(name, in_channels=1)
m.segattn_normalization = {"mode": "zscore", "per": "image"}
rng = np.random.default_rng(0)
# smooth random structure (block-upsampled noise), built in its final dtype: a float64 np.kron
# of an 8192^2 RGB image peaked at 3.7 GB before predict started and hid predict's own peak
small = rng.random((size // 16 + 1, size // 16 + 1, 3 if name == "fanet" else 1))
small = (small * 255).astype(np.uint8) if name == "fanet" else small.astype(np.float32)
img = np.repeat(np.repeat(small, 16, axis=0), 16, axis=1)[:size, :size]
img = img if name == "fanet" else img[..., 0]
kw = dict(channel_axis=-1 if name == "fanet" else None, device=device, batch_size=batch,
          memory_budget=None if budget == "None" else budget)
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
before = peak_mb()
if mode == "agree":
    w = predict(m, img, tile=0, **kw)
    t = predict(m, img, **kw)
    a, b = w.labels, t.labels
    s = int(a.sum()) + int(b.sum())
    out = {"dice": 1.0 if s == 0 else 2 * int((a & b).sum()) / s,
           "max_abs_prob_diff": float(np.abs(w.probabilities - t.probabilities).max()),
           "window": t.info.get("window")}
else:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    p = predict(m, img, tile=0 if mode == "whole" else "auto", **kw)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    out = {"seconds": sec, "peak_rss_mb": peak_mb(), "rss_before_mb": before, "tiled": p.info["tiled"],
           "window": p.info.get("window"), "windows": p.info.get("windows"),
           "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}
    if p.info.get("windows"):
        out["windows_per_s"] = p.info["windows"] / sec
print(json.dumps(out))
"""


def _child(name: str, size: int, mode: str, cfg: dict, device: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, name, str(size), mode, str(cfg["memory_budget"]),
                           str(cfg["batch_size"]), device], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    cfg = dict(QUICK if quick else FULL, **(options or {}).get("tiling", {}))
    variants = []
    for name in cfg["models"]:
        for size in cfg["sizes"]:
            whole = _child(name, size, "whole", cfg, str(device)) if size <= cfg["whole_max"] else None
            tiled = _child(name, size, "tiled", cfg, str(device))
            agree = _child(name, size, "agree", cfg, str(device)) if size <= cfg["agree_max"] else {}
            if whole is not None:
                variants.append(variant(f"{name} {size}²: whole (tile=0)", whole.get("seconds"), None,
                                        peak_rss_mb=whole.get("peak_rss_mb"), gpu_peak_mb=whole.get("gpu_peak_mb"),
                                        **({"error": whole["error"]} if "error" in whole else {})))
            extra = {k: tiled[k] for k in ("peak_rss_mb", "window", "windows", "windows_per_s", "gpu_peak_mb",
                                           "error") if tiled.get(k) is not None}
            extra.update({f"vs_whole_{k}": v for k, v in agree.items() if k in ("dice", "max_abs_prob_diff")})
            variants.append(variant(f"{name} {size}²: predict default (tiled={tiled.get('tiled')})",
                                    tiled.get("seconds"), whole.get("seconds") if whole else None, **extra))
            print(f"   [tiling] {variants[-1]}", file=sys.stderr, flush=True)
    return {
        "what": f"predict on {', '.join(f'{s}²' for s in cfg['sizes'])} images, {' and '.join(cfg['models'])}, "
                "one process per point, one thread",
        "reference": "whole-image predict (tile=0) where it fits; ratio = whole s / tiled s",
        "reference_s": None,
        "config": cfg,
        "variants": variants,
        "gpu_peak_mb": None,
    }
