"""Paying Attention to Mistakes: backbone, ablations, baselines, FPA and RFNA.

Parameter counts are the ones measured on the authors' released model definitions
(spec 1.6, 4 input channels, 1 output); RFNA (paper reading) has no released counterpart,
its count is derived by hand below.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_segattn.models import build_model, count_parameters, get_spec, load_model, record_attention, save_model
from napari_segattn.models.pam import (
    FalsePositiveAttention,
    GlobalContext,
    ReverseFalseNegativeAttention,
)

PAM = ["unet", "wunet", "d6unet", "d9unet", "aunet", "cscunet", "cbamunet", "gcnunet", "fpa", "rfna"]

UNET = 3_129_248


def _rfna_paper_extra(widths=(64, 128, 256, 256), expansion=4, n_dw=2) -> int:
    # Per block on F (Co channels): W1a Co*eCo + W4a eCo*Co + per depthwise unit (IN 2eCo + 9eCo).
    return sum(2 * expansion * c * c + n_dw * 11 * expansion * c for c in widths)


COUNTS = [
    ("unet", {}, UNET),
    ("wunet", {}, 12_506_944),
    ("unet", {"width": 64}, 12_506_944),
    ("d6unet", {}, UNET),
    ("d9unet", {}, UNET),
    ("aunet", {}, 3_161_843),
    ("cscunet", {}, 3_140_448),
    ("cbamunet", {}, 3_142_942),
    ("gcnunet", {}, 3_151_608),
    ("gcnunet", {"gc_norm": "instance_1x1"}, 3_151_608),
    ("fpa", {}, 4_231_584),
    ("fpa", {"dilation": 6}, 4_231_584),
    ("fpa", {"dilation": 12}, 4_231_584),
    # one depthwise 3x3 (9 * 4Co weights) fewer per block: 36 * (64 + 128 + 256 + 256)
    ("fpa", {"shared_dilated": True}, 4_231_584 - 36 * 704),
    ("rfna", {}, UNET + _rfna_paper_extra()),
    ("rfna", {"upsample": 4}, UNET + _rfna_paper_extra(n_dw=1)),
    ("rfna", {"upsample": 2}, UNET + _rfna_paper_extra(n_dw=0)),
    ("rfna", {"variant": "released"}, 4_340_128),
]


@pytest.mark.parametrize("name,config,expected", COUNTS, ids=[f"{n}{c or ''}" for n, c, _ in COUNTS])
def test_parameter_counts_match_the_released_code(name, config, expected):
    assert count_parameters(build_model(name, **config)) == expected


def test_rfna_paper_count_value():
    # Independent of the helper above: the number reported in docs/models-pam.md.
    assert count_parameters(build_model("rfna")) == 4_403_616


@functools.cache
def _eval_model(name: str, out_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, out_channels=out_channels).eval()


@pytest.mark.parametrize("name", PAM)
@pytest.mark.parametrize("size", [(1, 100, 76), (2, 128, 128)])
def test_forward_keeps_odd_input_sizes(name, size):
    b, h, w = size
    model = _eval_model(name)
    with torch.no_grad():
        y = model(torch.randn(b, 4, h, w))
    assert y.shape == (b, 1, h, w)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["unet", "aunet", "fpa", "rfna"])
def test_multi_class_logits(name):
    model = _eval_model(name, out_channels=3)
    with torch.no_grad():
        y = model(torch.randn(1, 4, 40, 56))
    assert y.shape == (1, 3, 40, 56)
    assert model.head.out_channels == 3


# The released Attention-U-Net gate keeps biases on 1x1 convs that feed a non-affine
# InstanceNorm; the norm subtracts the per-channel mean, so these biases get zero gradient.
_CANCELLED_BY_NORM = {"aunet": ("w_g.0.bias", "w_x.0.bias", "psi.0.bias")}


def _cbam_mlps_with_dead_hidden_units(model: nn.Module, x: torch.Tensor) -> set[str]:
    """CBAM MLPs whose hidden ReLU units are all off for every pooled descriptor of ``x``.

    The released CBAM squeezes 32/64 channels to 2/4 hidden units; at PyTorch's default
    init all of them can start negative on the (non-negative) pooled features, and then
    no gradient reaches that MLP. This happens with seed 0 for ``dec2_att``.
    """
    dead: set[str] = set()
    hooks = []
    for name, m in model.named_modules():
        if name.endswith("_att") and hasattr(m, "mlp"):

            def hook(mod, inputs, output, name=name):
                f = inputs[0]
                desc = torch.cat([f.mean(dim=(2, 3), keepdim=True), f.amax(dim=(2, 3), keepdim=True)])
                if not (mod.mlp[0](desc) > 0).any():
                    dead.add(name)

            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return dead


# wunet is unet at width 64: same code, four times the cost.
@pytest.mark.parametrize("name", [n for n in PAM if n != "wunet"])
def test_backward_reaches_every_parameter(name):
    model = build_model(name).train()
    x = torch.randn(2, 4, 48, 40)
    model(x).pow(2).mean().backward()
    cancelled = _CANCELLED_BY_NORM.get(name, ())
    dead_mlps = _cbam_mlps_with_dead_hidden_units(model, x) if name == "cbamunet" else set()
    reached = 0
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        if pname.endswith(cancelled):
            assert p.grad.abs().max() < 1e-4, pname
        elif pname.split(".mlp.")[0] in dead_mlps:
            assert torch.count_nonzero(p.grad) == 0, pname
        else:
            assert torch.count_nonzero(p.grad) > 0, pname
            reached += 1
    assert reached >= len(list(model.parameters())) - 3 * len(cancelled) - 2 * len(dead_mlps) > 0


def _without_norms(block: nn.Module) -> nn.Module:
    block = copy.deepcopy(block)
    for name, m in list(block.named_modules()):
        if isinstance(m, nn.InstanceNorm2d):
            parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
            setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    return block


@pytest.mark.parametrize("dilation", [6, 9, 12])
def test_fpa_dilation_sets_the_receptive_field_not_the_count(dilation):
    # InstanceNorm couples every pixel through its statistics, so the local (convolutional)
    # receptive field is measured with the norms removed: two dilated 3x3 convs reach
    # 2 * 2 * dilation pixels, i.e. a (4d + 1)-wide window.
    block = _without_norms(FalsePositiveAttention(4, 4, 1, dilation=dilation))
    x = torch.randn(1, 4, 81, 81, requires_grad=True)
    a = block.attention(x)
    a[0, :, 40, 40].sum().backward()
    support = x.grad.abs().sum(dim=(0, 1)) > 0
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    assert (rows.min().item(), rows.max().item()) == (40 - 2 * dilation, 40 + 2 * dilation)
    assert (cols.min().item(), cols.max().item()) == (40 - 2 * dilation, 40 + 2 * dilation)
    assert count_parameters(build_model("fpa", dilation=dilation)) == 4_231_584
    convs = [m for m in build_model("fpa", dilation=dilation).modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)]
    assert len(convs) == 8 and all(c.dilation == (dilation, dilation) for c in convs)


@pytest.mark.parametrize("name,dilation", [("d6unet", 6), ("d9unet", 9)])
def test_dilated_unets_dilate_exactly_the_encoder_convs(name, dilation):
    model = build_model(name)
    for stage in ("enc1", "enc2", "enc3"):
        convs = [m for m in getattr(model, stage).modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) == 2
        assert all(c.dilation == (dilation, dilation) and c.padding == (dilation, dilation) for c in convs)
    for stage in ("enc0", "bridge", "dec3", "dec2", "dec1"):
        assert all(m.dilation == (1, 1) for m in getattr(model, stage).modules() if isinstance(m, nn.Conv2d))
    assert [m.stride for m in (model.enc1[0][0], model.enc2[0][0], model.enc3[0][0])] == [(2, 2)] * 3


def test_fpa_block_follows_eq1():
    block = FalsePositiveAttention(8, 16, 2).eval()
    x = torch.randn(2, 8, 20, 24)
    with torch.no_grad():
        f = block.main(x)
        a = block.attention(x)
        y = block(x)
    assert f.shape == a.shape == (2, 16, 10, 12)
    assert ((a > 0) & (a < 1)).all()
    torch.testing.assert_close(y, f * a + f)


@pytest.mark.parametrize("upsample", [8, 4, 2])
def test_rfna_block_follows_eq2_and_downsamples_by_the_ratio(upsample):
    block = ReverseFalseNegativeAttention(8, 16, 1, upsample=upsample).eval()
    x = torch.randn(1, 8, 24, 24)
    with torch.no_grad():
        f = block.main(x)
        coarse = block.w3a(block.w2a(block.w1a(f)))
        a = block.attention(f)
        y = block(x)
    assert coarse.shape[-2:] == (24 // upsample, 24 // upsample)
    expected_a = torch.sigmoid(
        block.w4a(F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=True)) + f
    )
    torch.testing.assert_close(a, expected_a)
    torch.testing.assert_close(y, f * a + f)


def test_rfna_is_registered_for_reversed_labels():
    assert get_spec("rfna").reverse_labels
    assert not any(get_spec(n).reverse_labels for n in PAM if n != "rfna")


# (model, config, {module name: (channels, downsampling)}) for a 4-channel input
ATTENTION_MAPS = [
    ("fpa", {}, {"enc1": (64, 2), "enc2": (128, 4), "enc3": (256, 8), "bridge": (256, 8)}),
    ("rfna", {}, {"enc1": (64, 2), "enc2": (128, 4), "enc3": (256, 8), "bridge": (256, 8)}),
    ("rfna", {"variant": "released"}, {"enc1": (64, 2), "enc2": (128, 4), "enc3": (256, 8), "bridge": (256, 8)}),
    ("aunet", {}, {"gate3": (1, 4), "gate2": (1, 2), "gate1": (1, 1)}),
    (
        "cscunet",
        {},
        {f"enc{i}_att": (1, 2**i) for i in range(3)} | {f"dec{i}_att": (1, 2 ** (i - 1)) for i in (3, 2, 1)},
    ),
    (
        "cbamunet",
        {},
        {f"enc{i}_att": (1, 2**i) for i in range(3)}
        | {"bridge_att": (1, 8)}
        | {f"dec{i}_att": (1, 2 ** (i - 1)) for i in (3, 2, 1)},
    ),
    ("gcnunet", {}, {f"enc{i}_att": (1, 2**i) for i in range(3)} | {"bridge_att": (1, 8)}),
]


@pytest.mark.parametrize("name,config,expected", ATTENTION_MAPS, ids=[f"{n}{c or ''}" for n, c, _ in ATTENTION_MAPS])
def test_record_attention_returns_one_map_per_module(name, config, expected):
    model = build_model(name, **config).eval()
    b, h, w = 2, 64, 48
    with record_attention(model) as maps, torch.no_grad():
        model(torch.randn(b, 4, h, w))
    assert set(maps) == set(expected)
    for mod, (c, s) in expected.items():
        assert maps[mod].shape == (b, c, h // s, w // s), mod
        assert ((maps[mod] >= 0) & (maps[mod] <= 1)).all(), mod
    for name_, m in model.named_modules():
        assert getattr(m, "last_attention", None) is None, name_
    if name == "gcnunet":  # softmax pooling weights sum to one over the image
        torch.testing.assert_close(maps["bridge_att"].sum(dim=(2, 3)), torch.ones(b, 1))


def test_no_maps_are_kept_outside_a_recording():
    model = build_model("fpa").eval()
    with torch.no_grad():
        model(torch.randn(1, 4, 32, 32))
    assert all(getattr(m, "last_attention", None) is None for m in model.modules())


def test_gc_instance_norm_option_reproduces_the_constant_torch14_attention():
    # Bug B6: InstanceNorm of the 1x1 context returns its bias, so t does not depend on x.
    gc = GlobalContext(16, norm="instance_1x1")
    with torch.no_grad():
        gc.norm.bias.normal_()
        t = gc.expand(F.relu(gc.norm.bias.view(1, -1, 1, 1)))
        for _ in range(2):
            x = torch.randn(2, 16, 9, 7)
            torch.testing.assert_close(gc(x), t * x + x)


def test_fpa_shared_dilated_saves_and_loads(tmp_path):
    model = build_model("fpa", shared_dilated=True).eval()
    assert model.enc1.dilated2 is None
    path = save_model(model, tmp_path / "fpa.safetensors")
    loaded = load_model(path).eval()
    x = torch.randn(1, 4, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    "name,config",
    [
        ("rfna", {"upsample": 3}),
        ("rfna", {"variant": "bmvc"}),
        ("rfna", {"variant": "released", "upsample": 4}),
        ("gcnunet", {"gc_norm": "batch"}),
        ("fpa", {"dilation": 0}),
    ],
)
def test_invalid_options_are_clear_errors(name, config):
    with pytest.raises(ValueError):
        build_model(name, **config)
