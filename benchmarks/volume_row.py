"""Row ``volume``: whole-volume FPA prediction, a per-slice fp32 loop vs ``inference.predict``.

``predict`` batches slices under ``torch.inference_mode``; on CUDA it adds autocast,
channels_last and pinned, non-blocking host-to-device copies (the next batch is copied while
the current one runs). Random FPA weights; a smooth random 4-channel volume.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_segattn.inference import predict
from napari_segattn.models import build_model

from ._common import dice, gpu_peak_mb, reset_gpu_peak, timed, variant

FULL = {"slices": 155, "size": 240, "batch_size": 16, "repeat": 1}
QUICK = {"slices": 4, "size": 240, "batch_size": 4, "repeat": 1}


def _volume(slices: int, size: int) -> np.ndarray:
    """(4, Z, H, W) float32: a blurred noise volume, z-scored per channel (BRATS-like input)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.standard_normal((4, slices, size, size)).astype(np.float32), (0, 1, 4, 4))
    vol -= vol.mean(axis=(1, 2, 3), keepdims=True)
    vol /= vol.std(axis=(1, 2, 3), keepdims=True)
    return vol


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    cfg = dict(QUICK if quick else FULL, **(options or {}).get("volume", {}))
    vol = _volume(cfg["slices"], cfg["size"])
    torch.manual_seed(0)
    model = build_model("fpa", in_channels=4, out_channels=1).eval().to(device)
    model.segattn_normalization = None
    reset_gpu_peak(device)

    def per_slice():
        out = np.empty(vol.shape[1:], np.float32)
        with torch.no_grad():
            for z in range(vol.shape[1]):
                x = torch.from_numpy(np.ascontiguousarray(vol[:, z]))[None].to(device)
                out[z] = torch.sigmoid(model(x))[0, 0].cpu().numpy()
        return out

    def warm():
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(vol[:, :1].transpose(1, 0, 2, 3))).to(device))

    warm()  # one-off costs (allocator, oneDNN primitive cache) are paid before either timing
    t_ref, p_ref = timed(per_slice, device, repeat=cfg["repeat"], warmup=0)
    t, pred = timed(lambda: predict(model, vol, channel_axis=0, slice_axis=1, batch_size=cfg["batch_size"],
                                    device=str(device)), device, repeat=cfg["repeat"], warmup=0)
    p = pred.probabilities[0]
    # opt-in bfloat16 autocast (amp="bf16"); on CPUs without native bf16 this is much slower
    t16, pred16 = timed(lambda: predict(model, vol, channel_axis=0, slice_axis=1, batch_size=cfg["batch_size"],
                                        device=str(device), amp="bf16"), device, repeat=cfg["repeat"], warmup=0)
    p16 = pred16.probabilities[0]
    return {
        "what": f"whole-volume prediction, fpa, {cfg['slices']}x{cfg['size']}x{cfg['size']}, 4 channels",
        "reference": "per-slice loop, fp32, torch.no_grad()",
        "config": cfg,
        "reference_s": t_ref,
        "variants": [variant(f"library: predict(batch_size={cfg['batch_size']}, defaults)", t, t_ref,
                             dice_vs_fp32=dice(p > 0.5, p_ref > 0.5),
                             max_abs_prob_diff=float(np.abs(p - p_ref).max()),
                             precision=pred.info.get("precision"), slices_per_s=cfg["slices"] / t),
                     variant(f"library: predict(batch_size={cfg['batch_size']}, amp='bf16')", t16, t_ref,
                             dice_vs_fp32=dice(p16 > 0.5, p_ref > 0.5),
                             max_abs_prob_diff=float(np.abs(p16 - p_ref).max()),
                             precision=pred16.info.get("precision"), slices_per_s=cfg["slices"] / t16)],
        "gpu_peak_mb": gpu_peak_mb(device),
    }
