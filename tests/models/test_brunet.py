"""BRU-net against the released TensorFlow Unet2D (spec 5.2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from napari_segattn.models import build_model, count_parameters, get_spec
from napari_segattn.models.brunet import BRUNet, ResidualUnit


def _analytic_count(residual: bool) -> int:
    """Layer list of spec 5.2, counted by hand: conv k*k*i*o + o, BN 2*o, residual bias o."""
    conv = lambda k, i, o: k * k * i * o + o  # noqa: E731
    n = conv(7, 1, 8)  # stem
    widths = [8, 16, 32, 64, 128]
    prev = 8
    for c in widths:
        n += conv(3, prev, c) + 2 * c + conv(3, c, c) + 2 * c + (c if residual else 0)
        prev = c
    for level in (3, 2, 1, 0):
        f = 16 * 2 ** (level + 1)
        n += conv(3, prev, f // 2) + 2 * (f // 2)  # transpose conv + BN
        cat = widths[level] + f // 2
        n += conv(3, cat, f // 4) + 2 * (f // 4) + conv(3, f // 4, f // 4) + 2 * (f // 4) + (f // 4 if residual else 0)
        prev = f // 4
    return n + conv(1, 8, 3)


def test_parameter_counts_match_spec():
    assert _analytic_count(True) == 690_315 and _analytic_count(False) == 689_947
    assert count_parameters(build_model("brunet")) == 690_315
    assert count_parameters(build_model("brunet", residual=False)) == 689_947
    # BN moving statistics: 1,952 values (spec 5.2)
    net = BRUNet()
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert stats == 1_952


def test_defaults_and_stride():
    assert get_spec("brunet").defaults == {"in_channels": 1, "out_channels": 3}
    assert BRUNet.stride == 16


@pytest.mark.parametrize("b,h,w", [(1, 100, 76), (2, 64, 64)])
def test_forward_shapes_and_relu_head(b, h, w):
    net = BRUNet().eval()
    with torch.no_grad():
        y = net(torch.randn(b, 1, h, w))
    assert y.shape == (b, 3, h, w) and torch.isfinite(y).all()
    assert y.min() >= 0  # released head: ReLU on the logits
    plain = BRUNet(head_relu=False).eval()
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        z = plain(torch.randn(b, 1, h, w))
    assert z.min() < 0


def test_keras_batchnorm_and_dropout_settings():
    net = BRUNet()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert len(bns) == 22 and all(m.eps == 1e-3 and m.momentum == 0.1 for m in bns)
    assert drops and all(m.p == 0.15 for m in drops)
    x = torch.randn(1, 1, 32, 32)
    net.train()
    assert not torch.equal(net(x), net(x))  # dropout active in training
    net.eval()
    assert torch.equal(net(x), net(x))


def test_residual_unit_pads_or_truncates_channels_and_adds_bias():
    unit = ResidualUnit(4)
    with torch.no_grad():
        unit.bias.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    y = torch.zeros(1, 4, 2, 2)
    small = torch.full((1, 2, 2, 2), 10.0)
    out = unit(y, small)
    assert out[0, :, 0, 0].tolist() == [11.0, 12.0, 3.0, 4.0]
    big = torch.arange(6.0).view(1, 6, 1, 1).expand(1, 6, 2, 2)
    out = unit(y, big)
    assert out[0, :, 1, 1].tolist() == [1.0, 3.0, 5.0, 7.0]


def test_transpose_conv_has_tensorflow_same_alignment():
    """TF 'SAME' k3 s2: input o writes outputs 2o..2o+2 (torch padding=1 would give 2o-1..2o+1)."""
    up = BRUNet().up[0].up
    x = torch.zeros(1, up.in_channels, 4, 4)
    x[0, 0, 1, 2] = 1.0
    with torch.no_grad():
        nn.init.zeros_(up.bias)
        y = up(x)[..., :8, :8]
    rows = torch.nonzero(y.abs().sum(dim=(0, 1, 3)))[:, 0].tolist()
    cols = torch.nonzero(y.abs().sum(dim=(0, 1, 2)))[:, 0].tolist()
    assert rows == [2, 3, 4] and cols == [4, 5, 6]


def test_truncated_normal_init_matches_tensorflow():
    net = BRUNet()
    w = net.down[4].conv2.weight  # level 4: features 256, k 3
    std = math.sqrt(2 / (9 * 256))
    assert w.abs().max() <= 2 * std
    # a normal truncated at +-2 sigma has std 0.8796 sigma
    assert abs(w.std().item() / std - 0.8796) < 0.02
    assert torch.all(net.down[4].conv2.bias == 0)
    stem_std = math.sqrt(2 / (49 * 16))
    assert net.stem.weight.abs().max() <= 2 * stem_std


@pytest.mark.parametrize("residual", [True, False])
def test_backward_reaches_every_parameter(residual):
    net = build_model("brunet", residual=residual).train()
    net(torch.randn(2, 1, 48, 40)).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert not missing
