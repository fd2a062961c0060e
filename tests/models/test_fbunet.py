"""Feedback Attention U-Net (Tsuda et al. 2020) against the paper's Eq. 1-5 and Sec. 3.1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_segattn.models import build_model, count_parameters, get_spec, record_attention
from napari_segattn.models.fbunet import FeedbackAttention, FeedbackAttentionUNet


def _unet_count(cin: int, cout: int, base: int) -> int:
    double = lambda i, o: 9 * i * o + 2 * o + 9 * o * o + 2 * o  # noqa: E731  bias-free convs + BN
    c = [base * 2**i for i in range(5)]
    n = double(cin, c[0]) + sum(double(c[i], c[i + 1]) for i in range(4))
    n += sum(4 * c[i + 1] * c[i] + c[i] + double(2 * c[i], c[i]) for i in range(4))
    return n + c[0] * cout + cout


def _attention_count(c: int) -> int:
    proj = lambda i, o: i * o + 2 * o  # noqa: E731  1x1 conv (no bias) + BN
    return proj(c, c // 8) * 2 + proj(c, c // 2) + proj(c // 2, c) + 1


def test_parameters_are_one_unet_plus_attention():
    assert get_spec("fbunet").defaults == {"in_channels": 1, "out_channels": 4}  # ssTEM: 4 classes
    net = build_model("fbunet")
    assert count_parameters(net) == _unet_count(1, 4, 64) + _attention_count(64) == 31_042_021
    assert _attention_count(64) == 5_345
    for mode in ("st", "self"):
        small = FeedbackAttentionUNet(base_width=16, attention=mode)
        assert count_parameters(small) == _unet_count(1, 4, 16) + _attention_count(16)


@pytest.mark.parametrize("mode", ["st", "self"])
@pytest.mark.parametrize("b,h,w", [(1, 100, 76), (2, 64, 64)])
def test_forward_shapes(mode, b, h, w):
    net = FeedbackAttentionUNet(base_width=16, attention=mode).eval()
    x = torch.randn(b, 1, h, w)
    with torch.no_grad():
        y = net(x)
        first, second = net.forward_both(x)
    assert y.shape == first.shape == (b, 4, h, w)
    assert torch.isfinite(y).all() and torch.equal(y, second)


@pytest.mark.parametrize("mode", ["st", "self"])
def test_feedback_contributes_nothing_at_init_then_changes_the_second_pass(mode):
    net = FeedbackAttentionUNet(base_width=16, attention=mode)
    x = torch.randn(2, 1, 48, 48)
    for train in (True, False):
        net.train(train)
        with torch.no_grad():
            first, second = net.forward_both(x)
        assert torch.equal(first, second)  # scale (alpha/beta) starts at 0: A = F
    net.eval()
    with torch.no_grad():
        net.feedback.scale.fill_(0.5)
        first, second = net.forward_both(x)
    assert not torch.allclose(first, second)


def _naive(att: FeedbackAttention, f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1-5 with the explicit N x N attention matrix."""
    s = att.downsample
    fs, gs = (F.avg_pool2d(f, s), F.avg_pool2d(g, s)) if s > 1 else (f, g)
    b, _, h, w = gs.shape
    q = att.query(fs if att.mode == "st" else gs).flatten(2)  # B x C/8 x N
    k = att.key(gs).flatten(2)
    v = att.value(gs).flatten(2)  # B x C/2 x N
    wmat = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)  # w_ij, rows sum to 1 (Eq. 2)
    out = torch.einsum("bij,bcj->bci", wmat, v).reshape(b, -1, h, w)
    y = att.out(out)
    received = wmat.sum(dim=1).reshape(b, 1, h, w)
    if s > 1:
        y = F.interpolate(y, scale_factor=s, mode="bilinear", align_corners=False)
        received = F.interpolate(received, scale_factor=s, mode="bilinear", align_corners=False)
    return att.scale * y + f, received


@pytest.mark.parametrize("mode", ["st", "self"])
@pytest.mark.parametrize("downsample", [1, 2])
def test_attention_matches_explicit_equations(mode, downsample):
    att = FeedbackAttention(16, mode, downsample).eval()
    with torch.no_grad():
        att.scale.fill_(0.7)
        for bn in (att.query[1], att.key[1], att.value[1], att.out[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        f, g = torch.randn(2, 16, 12, 8), torch.randn(2, 16, 12, 8)
        with record_attention(att) as rec:
            got = att(f, g)
        want, received = _naive(att, f, g)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rec[""], received, rtol=1e-4, atol=1e-5)
    assert rec.kinds[""] == "feedback"
    torch.testing.assert_close(received.mean(), torch.tensor(1.0))  # columns of a row-stochastic matrix


def test_self_attention_ignores_the_input_side_map_except_for_the_residual():
    f1, f2, g = torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8), torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        for mode, same in (("self", True), ("st", False)):
            att = FeedbackAttention(16, mode).eval()
            att.scale.fill_(1.0)
            d1, d2 = att(f1, g) - f1, att(f2, g) - f2
            assert torch.allclose(d1, d2, atol=1e-5) is same


def test_record_attention_gives_one_per_pixel_map():
    net = FeedbackAttentionUNet(base_width=16).eval()
    with torch.no_grad(), record_attention(net) as rec:
        net(torch.randn(1, 1, 64, 48))
    assert list(rec) == ["feedback"] and rec["feedback"].shape == (1, 1, 64, 48)


def test_gradients_follow_the_scale_parameter():
    net = FeedbackAttentionUNet(base_width=16).train()
    x = torch.randn(2, 1, 32, 32)
    net(x).pow(2).mean().backward()
    zero = {n for n, p in net.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0}
    # alpha = 0 multiplies the attention output: only alpha itself learns at the first step
    assert zero == {n for n, _ in net.feedback.named_parameters(prefix="feedback") if n != "feedback.scale"}
    net.zero_grad(set_to_none=True)
    with torch.no_grad():
        net.feedback.scale.fill_(0.3)
    net(x).pow(2).mean().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in net.parameters())


def test_detach_feedback_cuts_gradient_into_the_first_pass():
    torch.manual_seed(3)
    a = FeedbackAttentionUNet(base_width=8).eval()
    b = FeedbackAttentionUNet(base_width=8, detach_feedback=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 1, 32, 32)
    grads = []
    for net in (a, b):
        with torch.no_grad():
            net.feedback.scale.fill_(0.5)
        net(x).sum().backward()
        grads.append(net.unet.dec[-1][0].weight.grad.clone())
    # the last decoder conv gets gradient from the second pass in both models, and from the
    # first pass (through the feedback) only when the feedback is not detached
    assert not torch.allclose(grads[0], grads[1])
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_invalid_options_are_named():
    with pytest.raises(ValueError, match="attention must be"):
        FeedbackAttentionUNet(base_width=8, attention="cross")
    with pytest.raises(ValueError, match="attention_downsample"):
        FeedbackAttentionUNet(base_width=8, attention_downsample=3)
    with pytest.raises(ValueError, match="1 input channel"):
        FeedbackAttentionUNet(base_width=8)(torch.randn(1, 3, 32, 32))
