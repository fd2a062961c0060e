"""Training losses of the papers. All take ``(logits B×C×H×W, target int64 B×H×W)``.

Binary losses (``C == 1``) read the target as foreground = ``target > 0``; the engine has
already reversed it for RFNA. Multi-class losses read ``target`` as class indices.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "SoftDiceLoss",
    "BCEDiceLoss",
    "CEDiceLoss",
    "CrossEntropyLoss",
    "FeedbackWeightedCE",
    "feedback_weight",
    "build_loss",
    "LOSSES",
]


def _binary_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] != 1:
        raise ValueError(f"a binary loss needs 1 output channel, got {logits.shape[1]}")
    return (target > 0).to(logits.dtype).reshape(logits.shape)


def _soft_dice(p: torch.Tensor, t: torch.Tensor, smooth: float) -> torch.Tensor:
    # Whole batch flattened into one set (NNLoss.py / FANet utils), not a per-image mean.
    inter = (p * t).sum()
    return (2.0 * inter + smooth) / (p.sum() + t.sum() + smooth)


class SoftDiceLoss(nn.Module):
    """FPA/RFNA soft Dice (Pay Attention to Mistakes, NNLoss.py): 1 − (2Σpt+s)/(Σp+Σt+s), p = σ(z)."""

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = _binary_target(logits, target)
        return 1.0 - _soft_dice(torch.sigmoid(logits.float()), t.float(), self.smooth)


class BCEDiceLoss(nn.Module):
    """FANet loss (train.py): ``bce_weight``·BCE + (1 − ``bce_weight``)·(1 − Dice), Dice smooth 1."""

    def __init__(self, bce_weight: float = 0.5, smooth: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        t = _binary_target(z, target)
        bce = F.binary_cross_entropy_with_logits(z, t)
        dice = _soft_dice(torch.sigmoid(z), t, self.smooth)
        return self.bce_weight * bce + (1.0 - self.bce_weight) * (1.0 - dice)


class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy (Feedback Attention paper, §3.1); BCE for a 1-channel model."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if z.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(z, _binary_target(z, target))
        return F.cross_entropy(z, target)


class CEDiceLoss(nn.Module):
    """Multi-class: ``ce_weight``·CE + (1 − ``ce_weight``)·(1 − mean over classes of soft Dice on softmax)."""

    def __init__(self, ce_weight: float = 0.5, smooth: float = 1.0) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if z.shape[1] == 1:
            return BCEDiceLoss(self.ce_weight, self.smooth)(z, target)
        ce = F.cross_entropy(z, target)
        p = torch.softmax(z, dim=1)
        onehot = F.one_hot(target, z.shape[1]).permute(0, 3, 1, 2).to(p.dtype)
        dims = (0, 2, 3)
        dice = (2 * (p * onehot).sum(dims) + self.smooth) / (p.sum(dims) + onehot.sum(dims) + self.smooth)
        return self.ce_weight * ce + (1.0 - self.ce_weight) * (1.0 - dice.mean())


def feedback_weight(p_t: torch.Tensor, beta: float = 3.0, op: float = 100.0) -> torch.Tensor:
    """FU-net pixel weight w = op^(−p_t^β) = exp(−p_t^β·ln op) (FU-net §2.2, ``_weight.py``)."""
    return torch.exp(-p_t.pow(beta) * math.log(op))


class FeedbackWeightedCE(nn.Module):
    """FU-net / BRU-net loss: mean over pixels of w·CE with w from the current softmax (FU-net eq. 2).

    ``detach_weight=False`` is the released behaviour: the TF code computes w inside the
    GradientTape, so gradients also flow through w (dw/dp_t = −β·p_t^(β−1)·ln(op)·w).
    ``detach_weight=True`` treats w as a constant per step.
    """

    def __init__(self, beta: float = 3.0, op: float = 100.0, detach_weight: bool = False) -> None:
        super().__init__()
        self.beta = beta
        self.op = op
        self.detach_weight = detach_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = logits.float()
        if z.shape[1] == 1:
            # Two-class equivalent of a sigmoid output: logits (0, z).
            z = torch.cat([torch.zeros_like(z), z], dim=1)
            target = (target > 0).long()
        logp = torch.log_softmax(z, dim=1)
        logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
        w = feedback_weight(logp_t.exp(), self.beta, self.op)
        if self.detach_weight:
            w = w.detach()
        return (w * -logp_t).mean()


LOSSES = {
    "dice": SoftDiceLoss,
    "bce_dice": BCEDiceLoss,
    "ce": CrossEntropyLoss,
    "ce_dice": CEDiceLoss,
    "feedback_ce": FeedbackWeightedCE,
}


def build_loss(name: str, out_channels: int, **options) -> nn.Module:
    """A loss by name; refuses a binary-only loss for a multi-class model."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    if out_channels > 1 and name in ("dice", "bce_dice"):
        raise ValueError(
            f"loss {name!r} is binary (1 output channel) but the model has {out_channels}; "
            "use 'ce', 'ce_dice' or 'feedback_ce'"
        )
    return LOSSES[name](**options)
