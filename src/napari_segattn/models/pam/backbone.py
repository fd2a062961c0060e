"""The 3-stage U-Net that every model of Paying Attention to Mistakes is built on (paper §3.3).

Layout of the released baseline classes that match the paper's 3.13M count (spec 1.6):
double conv in->w at full resolution; three stride-2 double convs w->2w->4w->8w; a stride-1
bridge 8w->8w; decoder = bilinear x2 (align_corners=True) + concat skip + double conv;
1x1 conv w->out without bias. The attention variants only swap blocks or add modules at
fixed places, so they are built from this class with factories.

Not reproduced: bug B1 of the released ``UNet``/``ERFANet`` (bridge upsampled then centre-
cropped back); the paper-matching baselines (``DilatedUNet`` and the attention U-Nets) do not
have it either.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
from ..base import SegmentationModel
from ..blocks import DoubleConv
from ..geometry import resize_align_corners

__all__ = ["PAMUNet", "BlockFactory", "ModuleFactory", "GateFactory"]

#: (in_channels, out_channels, stride) -> block; a replacement for an encoder double conv
BlockFactory = Callable[[int, int, int], nn.Module]
#: channels -> module applied to a feature map in place (y = m(x), same shape)
ModuleFactory = Callable[[int], nn.Module]
#: (gating channels, skip channels) -> module called as m(g, skip) -> gated skip
GateFactory = Callable[[int, int], nn.Module]


def _maybe(factory: ModuleFactory | None, channels: int) -> nn.Module:
    return factory(channels) if factory is not None else nn.Identity()


class PAMUNet(SegmentationModel):
    """3-stage U-Net (stride 8) with slots for the paper's attention modules.

    * ``encoder_block`` replaces the three stride-2 double convs (FPA/RFNA, dilated convs).
    * ``bridge_block`` replaces the bridge double conv (FPA/RFNA).
    * ``encoder_attention`` follows the three skip-level encoder blocks (CSC, CBAM, GC).
    * ``bridge_attention`` follows the bridge (CBAM, GC).
    * ``decoder_attention`` follows the three decoder double convs (CSC, CBAM).
    * ``skip_gate`` gates each skip with the upsampled deeper features (Attention U-Net).
    """

    stride = 8
    #: the bridge's InstanceNorm runs at 1/8; RFNA's branch goes deeper (set by its builder)
    norm_stride = 8

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int = 32,
        *,
        encoder_block: BlockFactory | None = None,
        bridge_block: BlockFactory | None = None,
        encoder_attention: ModuleFactory | None = None,
        bridge_attention: ModuleFactory | None = None,
        decoder_attention: ModuleFactory | None = None,
        skip_gate: GateFactory | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        w1, w2, w3, w4 = width, 2 * width, 4 * width, 8 * width
        down = encoder_block or DoubleConv
        self.width = width

        self.enc0 = DoubleConv(in_channels, w1)
        self.enc0_att = _maybe(encoder_attention, w1)
        self.enc1 = down(w1, w2, 2)
        self.enc1_att = _maybe(encoder_attention, w2)
        self.enc2 = down(w2, w3, 2)
        self.enc2_att = _maybe(encoder_attention, w3)
        self.enc3 = down(w3, w4, 2)
        self.bridge = (bridge_block or DoubleConv)(w4, w4, 1)
        self.bridge_att = _maybe(bridge_attention, w4)

        self.gate3 = skip_gate(w4, w3) if skip_gate else None
        self.dec3 = DoubleConv(w4 + w3, w3)
        self.dec3_att = _maybe(decoder_attention, w3)
        self.gate2 = skip_gate(w3, w2) if skip_gate else None
        self.dec2 = DoubleConv(w3 + w2, w2)
        self.dec2_att = _maybe(decoder_attention, w2)
        self.gate1 = skip_gate(w2, w1) if skip_gate else None
        self.dec1 = DoubleConv(w2 + w1, w1)
        self.dec1_att = _maybe(decoder_attention, w1)

        self.head = nn.Conv2d(w1, out_channels, 1, bias=False)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        s1 = self.enc0_att(self.enc0(x))
        s2 = self.enc1_att(self.enc1(s1))
        s3 = self.enc2_att(self.enc2(s2))
        y = self.bridge_att(self.bridge(self.enc3(s3)))
        stages = (
            (s3, self.gate3, self.dec3, self.dec3_att),
            (s2, self.gate2, self.dec2, self.dec2_att),
            (s1, self.gate1, self.dec1, self.dec1_att),
        )
        for skip, gate, dec, att in stages:
            # F.interpolate(scale_factor=2, align_corners=True), in the whole slice's geometry
            # when this runs on a window of it (models/geometry.py)
            y = resize_align_corners(y, (2 * y.shape[2], 2 * y.shape[3]))
            if gate is not None:
                skip = gate(y, skip)
            y = att(dec(torch.cat([y, skip], dim=1)))
        return self.head(y)
