"""The registered networks of Paying Attention to Mistakes: backbone, ablations, baselines, FPA, RFNA.

All share :class:`PAMUNet`; placements follow Table 1 and the released baseline classes
(spec 1.6). Counts for ``in_channels=4, out_channels=1`` are in ``docs/models-pam.md``.
"""

from __future__ import annotations

from functools import partial

from ..blocks import DoubleConv
from ..registry import register_model
from .backbone import PAMUNet
from .baselines import CBAM, AttentionGate, ConcurrentSCSE, GlobalContext
from .mistakes import FalsePositiveAttention, ReleasedFalseNegativeAttention, ReverseFalseNegativeAttention

__all__ = ["unet", "dilated_unet", "aunet", "cscunet", "cbamunet", "gcnunet", "fpa", "rfna", "RFNA_VARIANTS"]

PAPER = "Paying Attention to Mistakes (BMVC 2020)"
_IO = {"in_channels": 4, "out_channels": 1}

#: "paper": Eq. 2 / Fig. 3 (downsampling + bilinear upsampling on F); "released": the FN block
#: of the authors' code (spec 1.3)
RFNA_VARIANTS = ("paper", "released")
RELEASED_RFNA_NORM_STRIDE = 8


@register_model(
    "wunet",
    summary="Wide U-Net (width 64): the capacity control of the ablation (Table 6, 12.51M).",
    paper=PAPER,
    defaults={**_IO, "width": 64},
)
@register_model(
    "unet",
    summary="3-stage U-Net backbone with InstanceNorm and bilinear upsampling (§3.3, 3.13M).",
    paper=PAPER,
    defaults={**_IO, "width": 32},
)
def unet(in_channels: int, out_channels: int, width: int = 32) -> PAMUNet:
    return PAMUNet(in_channels, out_channels, width)


@register_model(
    "d9unet",
    summary="U-Net with dilation-9 encoder convs: FPA without its main branch (ablation, Table 6).",
    paper=PAPER,
    defaults={**_IO, "width": 32, "dilation": 9},
)
@register_model(
    "d6unet",
    summary="U-Net with dilation-6 encoder convs: FPA without its main branch (ablation, Table 6).",
    paper=PAPER,
    defaults={**_IO, "width": 32, "dilation": 6},
)
def dilated_unet(in_channels: int, out_channels: int, width: int = 32, dilation: int = 6) -> PAMUNet:
    # Released DilatedUNet: only the three stride-2 encoder blocks are dilated.
    return PAMUNet(in_channels, out_channels, width, encoder_block=partial(DoubleConv, dilation=dilation))


@register_model(
    "aunet",
    summary="Attention U-Net baseline: additive attention gates on the three skips (spatial).",
    paper=PAPER,
    defaults={**_IO, "width": 32},
)
def aunet(in_channels: int, out_channels: int, width: int = 32) -> PAMUNet:
    return PAMUNet(in_channels, out_channels, width, skip_gate=AttentionGate)


@register_model(
    "cscunet",
    summary="Concurrent spatial+channel SE U-Net baseline: scSE after encoder and decoder blocks (mixed).",
    paper=PAPER,
    defaults={**_IO, "width": 32},
)
def cscunet(in_channels: int, out_channels: int, width: int = 32) -> PAMUNet:
    return PAMUNet(in_channels, out_channels, width, encoder_attention=ConcurrentSCSE, decoder_attention=ConcurrentSCSE)


@register_model(
    "cbamunet",
    summary="CBAM U-Net baseline: CBAM after encoder, bridge and decoder blocks (mixed).",
    paper=PAPER,
    defaults={**_IO, "width": 32},
)
def cbamunet(in_channels: int, out_channels: int, width: int = 32) -> PAMUNet:
    return PAMUNet(
        in_channels, out_channels, width, encoder_attention=CBAM, bridge_attention=CBAM, decoder_attention=CBAM
    )


@register_model(
    "gcnunet",
    summary="Global-context (GCNet) U-Net baseline: GC blocks after the encoder blocks and bridge (self-attention).",
    paper=PAPER,
    defaults={**_IO, "width": 32, "gc_norm": "layer"},
)
def gcnunet(in_channels: int, out_channels: int, width: int = 32, gc_norm: str = "layer") -> PAMUNet:
    gc = partial(GlobalContext, norm=gc_norm)
    return PAMUNet(in_channels, out_channels, width, encoder_attention=gc, bridge_attention=gc)


@register_model(
    "fpa",
    summary="False Positive Attention (Eq. 1): dilated-conv sigmoid attention in the 3 downsampling stages and bridge.",
    paper=PAPER,
    defaults={**_IO, "width": 32, "dilation": 9, "depthwise": True, "expansion": 4, "shared_dilated": False},
)
def fpa(
    in_channels: int,
    out_channels: int,
    width: int = 32,
    dilation: int = 9,
    depthwise: bool = True,
    expansion: int = 4,
    shared_dilated: bool = False,
) -> PAMUNet:
    block = partial(
        FalsePositiveAttention,
        dilation=dilation,
        depthwise=depthwise,
        expansion=expansion,
        shared_dilated=shared_dilated,
    )
    return PAMUNet(in_channels, out_channels, width, encoder_block=block, bridge_block=block)


@register_model(
    "rfna",
    summary="Reverse False Negative Attention (Eq. 2), trained on reversed labels: foreground where p < 0.5.",
    paper=PAPER,
    defaults={**_IO, "width": 32, "variant": "paper", "upsample": 8, "depthwise": True, "expansion": 4},
    reverse_labels=True,
)
def rfna(
    in_channels: int,
    out_channels: int,
    width: int = 32,
    variant: str = "paper",
    upsample: int = 8,
    depthwise: bool = True,
    expansion: int = 4,
) -> PAMUNet:
    if variant == "paper":
        block = partial(ReverseFalseNegativeAttention, upsample=upsample, depthwise=depthwise, expansion=expansion)
    elif variant == "released":
        if upsample != 8 or not depthwise:
            raise ValueError("the released RFNA block has no upsample/depthwise options; use variant='paper'")
        block = partial(ReleasedFalseNegativeAttention, expansion=expansion)
    else:
        raise ValueError(f"RFNA variant must be one of {RFNA_VARIANTS}, got {variant!r}")
    net = PAMUNet(in_channels, out_channels, width, encoder_block=block, bridge_block=block)
    # the attention branch downsamples the 1/8 features further; its last InstanceNorm runs
    # at 1/(8 * upsample / 2) (paper variant; measured for each, tests/models/test_min_size.py)
    net.norm_stride = 4 * upsample if variant == "paper" else RELEASED_RFNA_NORM_STRIDE
    return net
