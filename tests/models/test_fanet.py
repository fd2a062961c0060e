"""FANet against the released code's measurements (spec 2.1-2.3) and the paper's Eq. 1-2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_segattn.models import build_model, count_parameters, get_spec, record_attention
from napari_segattn.models.fanet import FANet, MixPool


def _mixpool_params(c: int) -> int:
    """Independent count from the block description (spec 2.1)."""
    fmask = (9 * c * c + c) + 2 * c + (c + 1)
    branch = (9 * c * (c // 2) + c // 2) + 2 * (c // 2)
    return fmask + 2 * branch


def _blob_mask(b: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(b, 1, h, w)
    m[..., h // 4 : h // 2, w // 3 : w // 2] = 1
    return m


def test_parameter_counts_match_released_code_and_paper():
    assert count_parameters(build_model("fanet")) == 7_720_266
    assert count_parameters(build_model("fanet", mixpool="none")) == 5_756_818
    # B3: MixPool only in e1 (32 ch) and d4 (16 ch)
    assert count_parameters(build_model("fanet", mixpool="first_last")) == 5_756_818 + _mixpool_params(32) + _mixpool_params(16)
    assert sum(_mixpool_params(c) for c in (32, 64, 128, 256, 128, 64, 32, 16)) == 7_720_266 - 5_756_818


def test_per_stage_counts_match_spec():
    net = FANet()
    stages = [count_parameters(b) for b in [*net.encoders, *net.decoders]]
    assert stages == [48_993, 210_753, 839_297, 3_349_761, 2_461_569, 616_385, 154_593, 38_897]
    assert count_parameters(net.output) == 18


def test_registry_spec_declares_mask_input():
    spec = get_spec("fanet")
    assert spec.takes_mask and spec.defaults == {"in_channels": 3, "out_channels": 1}
    assert FANet.stride == 16


@pytest.mark.parametrize("b,h,w", [(1, 100, 76), (2, 64, 48)])
def test_forward_shapes_at_odd_sizes(b, h, w):
    net = build_model("fanet").eval()
    with torch.no_grad():
        y = net(torch.randn(b, 3, h, w), _blob_mask(b, h, w))
    assert y.shape == (b, 1, h, w) and torch.isfinite(y).all()


def test_mask_is_required_and_checked():
    net = FANet().eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="needs the feedback mask"):
        net(x)
    with pytest.raises(ValueError, match="mask must have shape"):
        net(x, torch.zeros(1, 1, 32, 16))
    with pytest.raises(ValueError, match="mixpool"):
        FANet(mixpool="some")
    with pytest.raises(ValueError, match="mask_grad"):
        FANet(mask_grad="soft")


def _fmask_params(net: FANet) -> set[str]:
    return {n for n, _ in net.named_parameters() if ".mixpool.fmask." in n}


def test_released_threshold_blocks_fmask_gradients():
    net = FANet().train()
    x, m = torch.randn(2, 3, 32, 32), _blob_mask(2, 32, 32)
    before = [mod.running_mean.clone() for n, mod in net.named_modules() if n.endswith("fmask.1")]
    net(x, m).pow(2).mean().backward()
    no_grad = {n for n, p in net.named_parameters() if p.grad is None}
    assert no_grad == _fmask_params(net)
    assert sum(p.numel() for p in net.parameters() if p.grad is None) == 982_088
    # everything else is reached
    assert all(torch.count_nonzero(p.grad) > 0 for n, p in net.named_parameters() if n not in no_grad)
    # ... while the fmask BN running statistics still update in train mode (spec 2.1)
    after = [mod.running_mean for n, mod in net.named_modules() if n.endswith("fmask.1")]
    assert len(after) == 8 and all(not torch.equal(a, b) for a, b in zip(before, after))


def test_straight_through_estimator_trains_the_fmask_branch():
    net = FANet(mask_grad="ste").train()
    x = torch.randn(2, 3, 32, 32)
    # an empty feedback mask: the union is M' alone, so d(union)/dM' = 1 everywhere
    net(x, torch.zeros(2, 1, 32, 32)).pow(2).mean().backward()
    assert sum(p.numel() for p in net.parameters() if p.grad is None) == 0
    assert all(torch.count_nonzero(net.get_parameter(n).grad) > 0 for n in _fmask_params(net))


def test_ste_forward_equals_released_forward():
    torch.manual_seed(1)
    a = FANet().eval()
    b = FANet(mask_grad="ste").eval()
    b.load_state_dict(a.state_dict())
    x, m = torch.randn(1, 3, 48, 32), _blob_mask(1, 48, 32)
    with torch.no_grad():
        assert torch.equal(a(x, m), b(x, m))


def test_mixpool_union_is_or_of_pooled_mask_and_threshold():
    block = MixPool(8).eval()
    x = torch.randn(1, 8, 16, 16)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 5, 9] = 1  # one pixel -> lights exactly one 4x4 cell at 16x16
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 1, 2] = 1
    with torch.no_grad():
        block.fmask[-1].bias.fill_(-1e4)  # M' = 0 everywhere
        with record_attention(block) as rec:
            out = block(x, mask)
        assert torch.equal(rec[""], expected)
        # Eq. 2: concat of the masked-feature branch and the plain-feature branch
        assert torch.equal(out, torch.cat([block.masked_branch(x * expected), block.feature_branch(x)], 1))
        block.fmask[-1].bias.fill_(1e4)  # M' = 1 everywhere -> union is all ones
        with record_attention(block) as rec:
            block(x, mask)
        assert torch.equal(rec[""], torch.ones(1, 1, 16, 16))


def test_record_attention_gives_the_eight_union_masks():
    net = FANet().eval()
    with torch.no_grad(), record_attention(net) as rec:
        net(torch.randn(1, 3, 64, 64), _blob_mask(1, 64, 64))
    assert len(rec) == 8 and set(rec.kinds.values()) == {"mixpool"}
    sizes = [a.shape[-1] for a in rec.values()]
    assert sizes == [64, 32, 16, 8, 8, 16, 32, 64]
    for a in rec.values():
        assert a.shape[:2] == (1, 1) and set(a.unique().tolist()) <= {0.0, 1.0}
    # the union contains the (pooled) feedback mask at every scale
    e1 = rec["encoders.0.mixpool"]
    assert torch.all(e1 >= _blob_mask(1, 64, 64))


@pytest.mark.parametrize("mode,n", [("first_last", 2), ("none", 0)])
def test_ablation_configs_place_mixpool(mode, n):
    net = FANet(mixpool=mode).eval()
    with torch.no_grad(), record_attention(net) as rec:
        net(torch.randn(1, 3, 32, 32), _blob_mask(1, 32, 32))
    assert len(rec) == n
    if mode == "first_last":
        assert set(rec) == {"encoders.0.mixpool", "decoders.3.mixpool"}


def test_without_mixpool_mask_enters_only_through_output_conv():
    net = FANet(mixpool="none").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        diff = net(x, torch.ones(1, 1, 32, 32)) - net(x, torch.zeros(1, 1, 32, 32))
    torch.testing.assert_close(diff, net.output.weight[0, 16].expand_as(diff).clone(), rtol=0, atol=1e-5)


def test_mask_input_adds_one_input_channel_to_the_first_block():
    """mask_input=True: the mask is a 4th input channel of e1 (its 3x3 and 1x1 shortcut convs:
    10 x width more weights) and changes the output even without MixPool."""
    import torch

    from napari_segattn.models import build_model

    base = build_model("fanet", in_channels=3, out_channels=1, width=8, mixpool="none")
    withm = build_model("fanet", in_channels=3, out_channels=1, width=8, mixpool="none", mask_input=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(withm) - count(base) == 10 * 8
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    withm.eval()
    a = withm(x, torch.zeros(1, 1, 32, 32))
    b = withm(x, torch.ones(1, 1, 32, 32))
    assert a.shape == (1, 1, 32, 32) and not torch.allclose(a, b)


def test_edit_input_decodes_the_feedback_code_into_mask_and_signed_edit_channels():
    """edit_input=True: one more e1 input channel (10 x width weights); the fed code is split
    into the 0/1 mask and the signed edit (+1 painted fg, -1 painted bg), checked against a
    model fed the two channels by hand through the same weights."""
    import numpy as np

    from napari_segattn.models import build_model
    from napari_segattn.models.fanet import PAINTED_BACKGROUND, PAINTED_FOREGROUND, feedback_code

    mask = np.zeros((32, 32), bool)
    mask[4:20, 4:20] = True
    edit = np.zeros_like(mask)
    edit[0:8, 0:8] = True  # painted: fg over the mask's bg and fg, bg elsewhere in the square
    painted = np.zeros_like(mask)
    painted[0:4, 0:8] = True
    code = feedback_code(mask, edit, painted)
    assert set(np.unique(code)) == {PAINTED_BACKGROUND, 0.0, 1.0, PAINTED_FOREGROUND}
    np.testing.assert_array_equal(code[~edit], mask[~edit].astype(np.float32))
    np.testing.assert_array_equal(code[edit] == PAINTED_FOREGROUND, painted[edit])
    np.testing.assert_array_equal(feedback_code(mask), mask.astype(np.float32))

    m = build_model("fanet", in_channels=1, out_channels=1, width=8, mixpool="all", mask_input=True,
                    edit_input=True).eval()
    base = build_model("fanet", in_channels=1, out_channels=1, width=8, mixpool="all", mask_input=True)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(m) - count(base) == 10 * 8
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None, None]  # noqa: E731
    decoded_mask = np.where(edit, painted, mask)
    signed = edit & painted
    signed = signed.astype(np.float32) - (edit & ~painted).astype(np.float32)
    with torch.no_grad():
        got = m(x, t(code))
        # by hand: the e1 input is [image, mask, signed edit]; MixPool and the output see the mask
        xin = torch.cat([x, t(decoded_mask), t(signed)], 1)
        h, skips = xin, []
        for enc in m.encoders:
            h, s = enc(h, t(decoded_mask))
            skips.append(s)
        for dec, s in zip(m.decoders, reversed(skips)):
            h = dec(h, s, t(decoded_mask))
        want = m.output(torch.cat([h, t(decoded_mask)], 1))
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, m(x, t(decoded_mask)))  # the edit channel matters


def test_with_feedback_inputs_starts_as_the_trained_model():
    """The widened copy computes the same output as the model it came from (new input weights
    zero) for any mask and edit, and its config records the new options."""
    import numpy as np

    from napari_segattn.models import build_model
    from napari_segattn.models.fanet import feedback_code, with_feedback_inputs

    torch.manual_seed(0)
    base = build_model("fanet", in_channels=1, out_channels=1, width=8).eval()
    wide = with_feedback_inputs(base).eval()
    assert wide.mask_input and wide.edit_input and wide.segattn_config["config"]["edit_input"] is True
    x = torch.randn(2, 1, 32, 32)
    rng = np.random.default_rng(0)
    mask = rng.random((32, 32)) > 0.5
    edit = rng.random((32, 32)) > 0.8
    code = torch.from_numpy(feedback_code(mask, edit, rng.random((32, 32)) > 0.5))[None, None].repeat(2, 1, 1, 1)
    plain = torch.from_numpy(np.where(edit, code[0, 0].numpy() > 0.5, mask).astype(np.float32))[None, None]
    with torch.no_grad():
        torch.testing.assert_close(wide(x, code), base(x, plain.repeat(2, 1, 1, 1)))
