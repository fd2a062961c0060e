"""Row ``fanet_step``: one FANet feedback step on 1x3xHxW, eager fp32 vs tuned inference.

Input: an ISBI 2012 EM slice (grey repeated to 3 channels, as FANet's released cv2 read) and
its Otsu feedback mask when the shared data is present, else a fixed random image; random
FANet weights (speed and numeric agreement do not need trained ones). Agreement is the Dice
of the ``p > 0.5`` masks against the fp32 reference, plus the largest probability difference.
"""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path

import numpy as np
import torch

from napari_segattn.inference import FANetRefiner
from napari_segattn.models import build_model

from ._common import dice, gpu_peak_mb, reset_gpu_peak, timed, variant

FULL = {"size": 512, "repeat": 3}
QUICK = {"size": 160, "repeat": 2}
EM_IMAGE = Path("/work/shared/data/isbi2012_em/images/0.png")


def _image(size: int) -> np.ndarray:
    if EM_IMAGE.exists():
        import imageio.v3 as iio

        img = iio.imread(EM_IMAGE)
        if img.ndim == 3:
            img = img[..., 0]
        img = img[:size, :size]
        if img.shape == (size, size):
            return img
    return (np.random.default_rng(0).random((size, size)) * 255).astype(np.uint8)


def _autocast_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    options = options or {}
    cfg = dict(QUICK if quick else FULL, **options.get("fanet_step", {}))
    size, repeat = cfg["size"], cfg["repeat"]
    gray = _image(size)
    torch.manual_seed(0)
    model = build_model("fanet", in_channels=3, out_channels=1).eval().to(device)
    model.segattn_normalization = None
    img = np.repeat(gray[None].astype(np.float32) / 255.0, 3, axis=0)  # (3, H, W)
    refiner = FANetRefiner(model, img, channel_axis=0, device=str(device))
    x = torch.from_numpy(img)[None].to(device)
    m = torch.from_numpy(refiner.initial_mask.astype(np.float32))[None, None].to(device)
    reset_gpu_peak(device)

    def plain():
        with torch.no_grad():
            return torch.sigmoid(model(x, m)).float().cpu().numpy()[0, 0]

    t_ref, p_ref = timed(plain, device, repeat=repeat)
    ref_mask = p_ref > 0.5

    def agree(p):
        return {"dice_vs_fp32": dice(p > 0.5, ref_mask), "max_abs_prob_diff": float(np.abs(p - p_ref).max())}

    def tuned(mod, *, channels_last=False, amp=False):
        xx = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        ac = torch.autocast(device.type, dtype=_autocast_dtype(device)) if amp else contextlib.nullcontext()

        def f():
            with torch.inference_mode(), ac:
                return torch.sigmoid(mod(xx, m)).float().cpu().numpy()[0, 0]

        return f

    rows = []
    t, p = timed(tuned(model), device, repeat=repeat)
    rows.append(variant("inference_mode", t, t_ref, **agree(p)))
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    t, p = timed(tuned(cl_model, channels_last=True), device, repeat=repeat)
    rows.append(variant("inference_mode + channels_last", t, t_ref, **agree(p)))
    dt = _autocast_dtype(device)
    t, p = timed(tuned(cl_model, channels_last=True, amp=True), device, repeat=repeat)
    rows.append(variant(f"inference_mode + channels_last + {str(dt).split('.')[-1]} autocast", t, t_ref, **agree(p)))
    if device.type == "cpu" and torch.get_num_threads() > 1:
        # on a busy machine, OpenMP threads that spin-wait for each other can cost more than they give
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t, p = timed(tuned(cl_model, channels_last=True), device, repeat=repeat)
        finally:
            torch.set_num_threads(n)
        rows.append(variant("inference_mode + channels_last, 1 thread", t, t_ref, **agree(p)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        t, p = timed(tuned(cl_model, channels_last=True, amp=True), device, repeat=max(repeat, 10), warmup=3)
        rows.append(variant("… + cudnn.benchmark", t, t_ref, **agree(p), ms_per_step=1000 * t))
    if options.get("compile"):
        compiled = torch.compile(cl_model)
        t0 = time.perf_counter()
        tuned(compiled, channels_last=True)()
        compile_s = time.perf_counter() - t0
        t, p = timed(tuned(compiled, channels_last=True), device, repeat=repeat)
        rows.append(variant("torch.compile (channels_last, fp32)", t, t_ref, compile_s=compile_s, **agree(p)))

    def library_step():
        refiner.reset()
        return refiner.step().probabilities

    t, p = timed(library_step, device, repeat=repeat)
    rows.append(variant("library: FANetRefiner.step() (defaults)", t, t_ref, **agree(p)))
    refiner16 = FANetRefiner(model, img, channel_axis=0, device=str(device), amp="bf16")

    def library_step_bf16():
        refiner16.reset()
        return refiner16.step().probabilities

    t, p = timed(library_step_bf16, device, repeat=repeat)
    rows.append(variant("library: FANetRefiner(amp='bf16').step()", t, t_ref, **agree(p)))
    return {
        "what": f"FANet refinement step 1x3x{size}x{size} (random weights, EM slice + Otsu mask)",
        "reference": "eager fp32 under torch.no_grad(), contiguous, no tuning",
        "config": dict(cfg, threads=torch.get_num_threads()),
        "reference_s": t_ref,
        "variants": rows,
        "gpu_peak_mb": gpu_peak_mb(device),
    }
