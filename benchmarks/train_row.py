"""Row ``train_step``: one optimiser step (forward, loss, backward, Adam), eager fp32 vs tuned.

Built from the library's models and losses directly (not ``Trainer``) so that only the step is
timed: FANet with its feedback mask and 0.5 BCE + 0.5 Dice (fanet recipe), FPA with soft Dice
(pam recipe). Every variant starts from a copy of the same weights; ``loss`` is the first
step's loss, to show the variants compute the same thing.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

from napari_segattn.models import build_model
from napari_segattn.training.losses import BCEDiceLoss, SoftDiceLoss

from ._common import gpu_peak_mb, reset_gpu_peak, timed, variant

FULL = {"fanet": {"size": 256, "batch": 8}, "fpa": {"size": 192, "batch": 4}, "repeat": 2}
QUICK = {"fanet": {"size": 64, "batch": 2}, "fpa": {"size": 64, "batch": 2}, "repeat": 2}


def _batch(name: str, size: int, batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    c = 3 if name == "fanet" else 4
    x = torch.rand(batch, c, size, size, generator=g)
    y = (torch.rand(batch, size, size, generator=g) > 0.5).long()
    extras = [(torch.rand(batch, 1, size, size, generator=g) > 0.5).float()] if name == "fanet" else []
    return x.to(device), y.to(device), [e.to(device) for e in extras]


def _stepper(model, loss_fn, x, y, extras, device, *, channels_last=False, amp_dtype=None):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    losses = []

    def step():
        ac = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        opt.zero_grad(set_to_none=True)
        with ac:
            out = model(x, *extras)
        loss = loss_fn(out.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(float(loss.detach()))
        return losses[0]

    return step


def _one(name: str, size: int, batch: int, repeat: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    base = build_model(name, in_channels=3 if name == "fanet" else 4, out_channels=1).to(device).train()
    loss_fn = BCEDiceLoss() if name == "fanet" else SoftDiceLoss()
    x, y, extras = _batch(name, size, batch, device)
    label = f"{name} {batch}x{x.shape[1]}x{size}x{size}"
    t_ref, l_ref = timed(_stepper(copy.deepcopy(base), loss_fn, x, y, extras, device), device, repeat=repeat)
    rows = [variant(f"{label}: eager fp32 (reference)", t_ref, t_ref, loss=l_ref)]
    t, l = timed(_stepper(copy.deepcopy(base), loss_fn, x, y, extras, device, channels_last=True), device,
                 repeat=repeat)
    rows.append(variant(f"{label}: channels_last", t, t_ref, loss=l))
    if device.type == "cpu":
        # TrainConfig(amp="bf16") on CPU: worth it only with native bf16 (AMX / AVX512-BF16)
        t, l = timed(_stepper(copy.deepcopy(base), loss_fn, x, y, extras, device, amp_dtype=torch.bfloat16),
                     device, repeat=repeat)
        rows.append(variant(f"{label}: bfloat16 autocast", t, t_ref, loss=l))
    if device.type == "cuda":
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        t, l = timed(_stepper(copy.deepcopy(base), loss_fn, x, y, extras, device, channels_last=True,
                              amp_dtype=dt), device, repeat=repeat)
        rows.append(variant(f"{label}: channels_last + {str(dt).split('.')[-1]} AMP", t, t_ref, loss=l))
    return rows


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    cfg = dict(QUICK if quick else FULL, **(options or {}).get("train_step", {}))
    reset_gpu_peak(device)
    rows = _one("fanet", cfg["fanet"]["size"], cfg["fanet"]["batch"], cfg["repeat"], device)
    rows += _one("fpa", cfg["fpa"]["size"], cfg["fpa"]["batch"], cfg["repeat"], device)
    return {
        "what": "training step (forward + loss + backward + Adam)",
        "reference": "eager fp32, contiguous (each model's own first line)",
        "config": cfg,
        "reference_s": None,
        "variants": rows,
        "gpu_peak_mb": gpu_peak_mb(device),
    }
