"""Losses against the papers' formulas, computed independently in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_segattn.training.losses import (
    BCEDiceLoss, CEDiceLoss, FeedbackWeightedCE, SoftDiceLoss, build_loss, feedback_weight,
)


def _sig(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize(
    "p_t,w3,w1",
    [(0.0, 1.0, 1.0), (0.25, 0.9306, 0.3162), (0.5, 0.5623, 0.1), (0.7, 0.2061, 0.0398),
     (0.8, 0.0946, 0.0251), (0.9, 0.0348, 0.0158), (0.95, 0.0193, 0.0126), (1.0, 0.01, 0.01)],
)
def test_feedback_weight_matches_the_spec_table(p_t, w3, w1):
    assert float(feedback_weight(torch.tensor(p_t), beta=3, op=100)) == pytest.approx(w3, abs=5e-5)
    assert float(feedback_weight(torch.tensor(p_t), beta=1, op=100)) == pytest.approx(w1, abs=5e-5)


def test_soft_dice_is_fpa_formula_over_the_whole_batch():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 1, 5, 7, generator=g)
    t = torch.randint(0, 2, (3, 5, 7), generator=g)
    p, tt = _sig(z.numpy().astype(np.float64)).ravel(), t.numpy().ravel()
    expect = 1 - (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1)
    assert float(SoftDiceLoss()(z, t)) == pytest.approx(expect, rel=1e-5)
    # not a per-image mean: differs from the mean of per-image Dice losses
    per = np.mean([1 - (2 * (pi * ti).sum() + 1) / (pi.sum() + ti.sum() + 1)
                   for pi, ti in zip(_sig(z.numpy().astype(np.float64)).reshape(3, -1), t.numpy().reshape(3, -1))])
    assert abs(per - expect) > 1e-4


def test_bce_dice_is_half_bce_plus_half_dice_loss():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 1, 4, 4, generator=g)
    t = torch.randint(0, 2, (2, 4, 4), generator=g)
    zz, tt = z.numpy().astype(np.float64).ravel(), t.numpy().ravel()
    p = _sig(zz)
    bce = -np.mean(tt * np.log(p) + (1 - tt) * np.log(1 - p))
    dice = (2 * (p * tt).sum() + 1) / (p.sum() + tt.sum() + 1)
    assert float(BCEDiceLoss()(z, t)) == pytest.approx(0.5 * bce + 0.5 * (1 - dice), rel=1e-5)


def test_ce_dice_multiclass():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 3, 4, 5, generator=g)
    t = torch.randint(0, 3, (2, 4, 5), generator=g)
    zz = z.numpy().astype(np.float64)
    p = np.exp(zz) / np.exp(zz).sum(1, keepdims=True)
    oh = np.eye(3)[t.numpy()].transpose(0, 3, 1, 2)
    ce = -np.mean(np.log((p * oh).sum(1)))
    dice = [(2 * (p[:, c] * oh[:, c]).sum() + 1) / (p[:, c].sum() + oh[:, c].sum() + 1) for c in range(3)]
    assert float(CEDiceLoss()(z, t)) == pytest.approx(0.5 * ce + 0.5 * (1 - np.mean(dice)), rel=1e-5)


def _manual_grad(z: np.ndarray, y: int, beta: float, op: float, detach: bool) -> np.ndarray:
    """d/dz of w(p_t)·(−log p_t) for one pixel, by hand (chain rule through softmax)."""
    p = np.exp(z - z.max())
    p /= p.sum()
    pt = p[y]
    onehot = np.eye(len(z))[y]
    w = math.exp(-(pt**beta) * math.log(op))
    grad = w * (p - onehot)  # w · dCE/dz
    if not detach:
        dw_dpt = -beta * pt ** (beta - 1) * math.log(op) * w
        dpt_dz = pt * (onehot - p)
        grad = grad + (-math.log(pt)) * dw_dpt * dpt_dz
    return grad


@pytest.mark.parametrize("detach", [False, True])
def test_feedback_ce_gradient_matches_hand_derivation(detach):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, 3, (1, 2, 2), generator=g)
    z.requires_grad_(True)
    FeedbackWeightedCE(beta=3, op=100, detach_weight=detach)(z, t).backward()
    zn, tn = z.detach().numpy(), t.numpy()
    for i in range(2):
        for j in range(2):
            expect = _manual_grad(zn[0, :, i, j], int(tn[0, i, j]), 3.0, 100.0, detach) / 4  # mean over 4 px
            np.testing.assert_allclose(z.grad[0, :, i, j].numpy(), expect, rtol=1e-5, atol=1e-12)


def test_detaching_the_weight_changes_the_gradient():
    z = torch.tensor([[[[0.3]], [[1.1]]]], requires_grad=True)  # p_t ≈ 0.69: dw/dp_t is large
    t = torch.tensor([[[1]]])
    grads = []
    for detach in (False, True):
        z.grad = None
        FeedbackWeightedCE(detach_weight=detach)(z, t).backward()
        grads.append(z.grad.clone())
    assert not torch.allclose(grads[0], grads[1], rtol=1e-3)


def test_feedback_ce_binary_equals_two_class_softmax():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 1, 3, 3, generator=g)
    t = torch.randint(0, 2, (2, 3, 3), generator=g)
    two = torch.cat([torch.zeros_like(z), z], 1)
    assert float(FeedbackWeightedCE()(z, t)) == pytest.approx(float(FeedbackWeightedCE()(two, t)), rel=1e-6)


def test_binary_losses_refuse_multiclass_models():
    with pytest.raises(ValueError, match="binary"):
        build_loss("dice", out_channels=3)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal", out_channels=1)
