"""Feedback Attention U-Net (Tsuda, Shibuya & Hotta, arXiv 2008.06474).

A U-Net is run twice with shared weights (Sec. 3.1, Fig. 1). The feature map before the last
1x1 classifier of the first pass (output side, C x H x W) is fed back through Feedback Attention
(Sec. 3.2, Eq. 1-5) onto the feature map after the first two convolutions of the second pass
(input side, same C x H x W); the second pass continues from the attended map. No code was
released; choices the paper leaves open are marked [choice] and listed in docs/models-feedback.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationModel, pad_to_multiple
from .recorder import ExposesAttention
from .registry import register_model

__all__ = ["FeedbackAttention", "FeedbackAttentionUNet", "UNetBackbone"]

ATTENTION_MODES = ("st", "self")


def _conv1x1_bn(in_c: int, out_c: int) -> nn.Sequential:
    # [choice] bias-free conv before BN (a bias would be cancelled by the BN mean)
    return nn.Sequential(nn.Conv2d(in_c, out_c, 1, bias=False), nn.BatchNorm2d(out_c))


def _double_conv(in_c: int, out_c: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_c, out_c, 3, padding=1, bias=False), nn.BatchNorm2d(out_c), nn.ReLU(inplace=True),
        nn.Conv2d(out_c, out_c, 3, padding=1, bias=False), nn.BatchNorm2d(out_c), nn.ReLU(inplace=True),
    )


class FeedbackAttention(ExposesAttention, nn.Module):
    """A = scale * out(softmax(Q^T K) V^T) + F  (Eq. 1-3 for ``"st"``, Eq. 4-5 for ``"self"``).

    ``"st"`` (Source-Target): Query from the input-side map F, Key and Value from the output-side
    map G. ``"self"``: Query, Key and Value all from G. Q/K have C/8 channels, V has C/2; each is
    a 1x1 conv + BN, and so is the output projection C/2 -> C. The scale (alpha / beta) starts at
    0, so at initialisation A = F (SAGAN). No 1/sqrt(d) temperature: Eq. 1 has none.

    ``downsample`` > 1 computes the attention on s x s average-pooled maps and upsamples the
    projected result bilinearly [choice, not in the paper]: attention over H*W positions costs
    O((HW)^2) time. The exposed map is the attention each position *receives*,
    sum_i w_ij (mean 1 over the image), upsampled to F's size: Fig. 4 shows per-query rows.
    """

    attention_kind = "feedback"

    def __init__(self, channels: int, mode: str = "st", downsample: int = 1) -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}; got {mode!r}")
        if downsample < 1:
            raise ValueError(f"attention_downsample must be >= 1; got {downsample}")
        if channels < 8:
            raise ValueError(f"Feedback Attention needs >= 8 channels (Q/K have C/8); got {channels}")
        self.mode = mode
        self.downsample = downsample
        self.query = _conv1x1_bn(channels, channels // 8)
        self.key = _conv1x1_bn(channels, channels // 8)
        self.value = _conv1x1_bn(channels, channels // 2)
        self.out = _conv1x1_bn(channels // 2, channels)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = self.downsample
        fs, gs = (F.avg_pool2d(f, s), F.avg_pool2d(g, s)) if s > 1 else (f, g)
        b, _, h, w = gs.shape
        q = self.query(fs if self.mode == "st" else gs).flatten(2).transpose(1, 2)  # B x N x C/8
        k = self.key(gs).flatten(2).transpose(1, 2)
        v = self.value(gs).flatten(2).transpose(1, 2)  # B x N x C/2
        attended = _attend(q, k, v)
        # contiguous: the transposed view is channels-last, which would switch the following
        # convolutions to other kernels (rounding differs; at scale 0 the passes would not match)
        y = self.out(attended.transpose(1, 2).reshape(b, -1, h, w).contiguous())
        if s > 1:
            y = F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
        if self._recording:
            received = _attention_received(q.detach(), k.detach()).reshape(b, 1, h, w)
            if s > 1:
                received = F.interpolate(received, size=f.shape[-2:], mode="bilinear", align_corners=False)
            self.expose(received)
        return self.scale * y + f


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v with scale 1, through torch's fused attention.

    Zero-padding q and k to v's width leaves q k^T unchanged but lets torch pick its
    memory-efficient (flash) kernel, which needs equal head sizes and unit stride in the last
    dimension; otherwise it falls back to materialising the N x N matrix (17 GB at 256 x 256).
    """
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    dq, dv = q.shape[-1], v.shape[-1]
    if dq < dv:
        q = F.pad(q, (0, dv - dq))
        k = F.pad(k, (0, dv - dq))
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]


def _attention_received(q: torch.Tensor, k: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """sum_i w_ij (Eq. 1) for every key position j, in query chunks to bound memory."""
    total = torch.zeros(k.shape[:2], dtype=q.dtype, device=q.device)
    for start in range(0, q.shape[1], chunk):
        w = torch.softmax(q[:, start : start + chunk] @ k.transpose(1, 2), dim=-1)
        total += w.sum(dim=1)
    return total


class UNetBackbone(nn.Module):
    """U-Net (Ronneberger et al.) with 'same' padding and BN, 4 poolings, 2x2 up-convolutions.

    Split into ``stem`` (the first two convs: the input-side map of Sec. 3.1), ``body`` (the rest
    up to the last feature map: the output-side map) and ``classifier`` (1x1 conv).
    """

    def __init__(self, in_channels: int, out_channels: int, base_width: int) -> None:
        super().__init__()
        c = [base_width * 2**i for i in range(5)]
        self.stem = _double_conv(in_channels, c[0])
        self.down = nn.ModuleList(_double_conv(c[i], c[i + 1]) for i in range(4))
        self.up = nn.ModuleList(nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(3, -1, -1))
        self.dec = nn.ModuleList(_double_conv(2 * c[i], c[i]) for i in range(3, -1, -1))
        self.classifier = nn.Conv2d(c[0], out_channels, 1)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for down in self.down:
            x = down(F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.up, self.dec):
            x = dec(torch.cat([skips.pop(), up(x)], dim=1))
        return x


@register_model(
    "fbunet",
    summary="Feedback Attention U-Net: U-Net run twice, output features fed back by attention",
    paper="Tsuda, Shibuya & Hotta, Feedback Attention for Cell Image Segmentation (arXiv 2008.06474, 2020)",
    defaults={"in_channels": 1, "out_channels": 4},
)
class FeedbackAttentionUNet(SegmentationModel):
    """Two passes of one U-Net; ``forward`` returns the second pass (the paper's result).

    Training uses only the second pass (Sec. 3.1); ``forward_both`` also returns the first pass
    for an optional extra loss or for Table 4's comparison. ``attention`` is ``"st"`` or
    ``"self"``; ``attention_downsample`` (default 2, paper: 1) pools the maps before attention;
    ``detach_feedback=True`` stops gradients flowing into the first pass through the feedback
    [choice: the paper does not say; default lets them flow].
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        base_width: int = 64,
        attention: str = "st",
        attention_downsample: int = 2,
        detach_feedback: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels)
        if attention_downsample not in (1, 2, 4, 8, 16):
            raise ValueError(
                f"attention_downsample must divide the stride 16 (1, 2, 4, 8 or 16); got {attention_downsample}"
            )
        self.detach_feedback = detach_feedback
        self.unet = UNetBackbone(in_channels, out_channels, base_width)
        self.feedback = FeedbackAttention(base_width, attention, attention_downsample)

    def _passes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unet = self.unet
        f1 = unet.stem(x)
        g1 = unet.body(f1)
        logits1 = unet.classifier(g1)
        # The second pass's first two convs see the same image with the same weights, so their
        # output is f1 itself; reusing it saves a pass and gives the same values and gradients.
        a = self.feedback(f1, g1.detach() if self.detach_feedback else g1)
        logits2 = unet.classifier(unet.body(a))
        return logits1, logits2

    def _forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        return self._passes(x)[1]

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(first-pass logits, second-pass logits), both cropped to the input size."""
        self._check_input(x)
        xp, (h, w) = pad_to_multiple(x, self.stride)
        first, second = self._passes(xp)
        return first[..., :h, :w], second[..., :h, :w]
