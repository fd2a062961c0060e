"""The two "Paying Attention to Mistakes" blocks: FPA (Eq. 1) and RFNA (Eq. 2).

Both keep the main branch F = double conv (first conv strided) and return Y = F*A + F with a
per-channel, per-pixel sigmoid map A, which they expose to :func:`record_attention`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..blocks import DoubleConv, conv_in_relu
from ..geometry import resize_align_corners
from ..recorder import ExposesAttention

__all__ = [
    "FalsePositiveAttention",
    "ReverseFalseNegativeAttention",
    "ReleasedFalseNegativeAttention",
    "RFNA_UPSAMPLE_RATIOS",
]

#: the RFNA ablation (paper §4.3): x8 = W1a,W2a,W3a; x4 = W3a removed; x2 = W2a removed too
RFNA_UPSAMPLE_RATIOS = (2, 4, 8)


class FalsePositiveAttention(ExposesAttention, nn.Module):
    """FPA, Eq. 1 / Fig. 2: A = sigmoid(W3a(dilated(dilated(W1a(X))))) in parallel to F.

    As released (spec 1.3): W1a is a 1x1 conv Ci -> expansion*Co carrying the block's stride,
    then two depthwise 3x3 convs with dilation ``dilation`` (each IN + ReLU), then a 1x1 conv
    back to Co. ``depthwise=False`` uses full 3x3 convs (the paper's ablation, §4.3).
    ``shared_dilated=True`` applies one dilated conv twice, as the paper text says (§3.3);
    the released code uses two separate convs.
    """

    attention_kind = "fpa"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        dilation: int = 9,
        depthwise: bool = True,
        expansion: int = 4,
        shared_dilated: bool = False,
    ) -> None:
        super().__init__()
        if dilation < 1 or expansion < 1:
            raise ValueError(f"dilation and expansion must be >= 1, got {dilation}, {expansion}")
        hidden = expansion * out_channels
        groups = hidden if depthwise else 1
        self.shared_dilated = shared_dilated
        self.main = DoubleConv(in_channels, out_channels, stride)
        self.w1a = nn.Conv2d(in_channels, hidden, 1, stride=stride, bias=False)
        self.dilated1 = nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation, groups=groups, bias=False)
        self.norm1 = nn.InstanceNorm2d(hidden, affine=True)
        # Shared mode registers no second conv, so the state dict has no aliased tensors
        # (safetensors refuses those).
        self.dilated2 = None if shared_dilated else nn.Conv2d(
            hidden, hidden, 3, padding=dilation, dilation=dilation, groups=groups, bias=False
        )
        self.norm2 = nn.InstanceNorm2d(hidden, affine=True)
        self.w3a = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The sigmoid map A (same size as F) for block input ``x``."""
        a = self.w1a(x)
        a = F.relu(self.norm1(self.dilated1(a)))
        second = self.dilated1 if self.dilated2 is None else self.dilated2
        a = F.relu(self.norm2(second(a)))
        return torch.sigmoid(self.w3a(a))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.main(x)
        a = self.attention(x)
        self.expose(a)
        return f * a + f


def _dw_down(channels: int, depthwise: bool) -> nn.Sequential:
    # Pre-activation order (IN -> ReLU -> strided conv): the paper omits where its norms sit,
    # and normalising *before* each downsampling keeps InstanceNorm off 1x1 maps, which it
    # cannot normalise (a single-element map raises in torch >= 1.10, cf. bug B6).
    return nn.Sequential(
        nn.InstanceNorm2d(channels, affine=True),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 3, stride=2, padding=1, groups=channels if depthwise else 1, bias=False),
    )


class ReverseFalseNegativeAttention(ExposesAttention, nn.Module):
    """RFNA as the paper describes it, Eq. 2 / Fig. 3 / §3.3:

    A = sigmoid(W4a(UpSample(W3a(W2a(W1a(F))))) + F),  Y = F*A + F.

    The attention branch runs *after* the main branch, on F. Reading of the text used here:
    W1a is a 1x1 conv Co -> expansion*Co with stride 2 (the released blocks put the stride
    on this 1x1 conv too); W2a and W3a are depthwise 3x3 stride-2 convs, so the branch
    downsamples by 8 and ``upsample=8`` brings it back. The ablation (§4.3) removes W3a for
    ``upsample=4`` and W2a as well for ``upsample=2``. The bilinear upsampling goes to F's
    exact size (x8 when F's size divides by 8; the nearest fit otherwise).
    """

    attention_kind = "rfna"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        upsample: int = 8,
        depthwise: bool = True,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        if upsample not in RFNA_UPSAMPLE_RATIOS:
            raise ValueError(f"RFNA upsample must be one of {RFNA_UPSAMPLE_RATIOS}, got {upsample}")
        if expansion < 1:
            raise ValueError(f"expansion must be >= 1, got {expansion}")
        hidden = expansion * out_channels
        self.upsample = upsample
        self.main = DoubleConv(in_channels, out_channels, stride)
        self.w1a = nn.Conv2d(out_channels, hidden, 1, stride=2, bias=False)
        self.w2a = _dw_down(hidden, depthwise) if upsample >= 4 else nn.Identity()
        self.w3a = _dw_down(hidden, depthwise) if upsample >= 8 else nn.Identity()
        self.w4a = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def attention(self, f: torch.Tensor) -> torch.Tensor:
        """The sigmoid map A for main-branch features ``f``."""
        a = self.w3a(self.w2a(self.w1a(f)))
        a = resize_align_corners(a, f.shape[-2:])  # align_corners=True; a window: the slice's geometry
        return torch.sigmoid(self.w4a(a) + f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.main(x)
        a = self.attention(f)
        self.expose(a)
        return f * a + f


class ReleasedFalseNegativeAttention(ExposesAttention, nn.Module):
    """The FN block of the released code (spec 1.3), which differs from the paper's RFNA.

    Attention on the block input x: f1 = W1(x) (1x1, stride s, Ci -> expansion*Co);
    f2 = dw(f1) + f1; g = dw'(f2) + f2 (depthwise 3x3, no dilation, IN + ReLU);
    A = sigmoid(W4(g) + P(x)) with P a 1x1 stride-s projection Ci -> Co. No downsampling,
    no upsampling, and the pre-sigmoid residual is a projection of x, not F.
    """

    attention_kind = "rfna"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, expansion: int = 4) -> None:
        super().__init__()
        hidden = expansion * out_channels
        self.main = DoubleConv(in_channels, out_channels, stride)
        self.w1 = nn.Conv2d(in_channels, hidden, 1, stride=stride, bias=False)
        self.identity = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.dw1 = conv_in_relu(hidden, hidden, groups=hidden)
        self.dw2 = conv_in_relu(hidden, hidden, groups=hidden)
        self.w4 = nn.Conv2d(hidden, out_channels, 1, bias=False)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.w1(x)
        f2 = self.dw1(f1) + f1
        g = self.dw2(f2) + f2
        return torch.sigmoid(self.w4(g) + self.identity(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.main(x)
        a = self.attention(x)
        self.expose(a)
        return f * a + f
