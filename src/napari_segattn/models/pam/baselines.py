"""The attention baselines of Paying Attention to Mistakes (§4.2, Table 1), as released.

Each module follows the released ``NNBaselines`` definitions (spec 1.6), which reproduce the
paper's parameter counts exactly, and exposes one spatial map to :func:`record_attention`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..recorder import ExposesAttention

__all__ = ["AttentionGate", "ConcurrentSCSE", "CBAM", "GlobalContext", "GC_NORMS"]


class AttentionGate(ExposesAttention, nn.Module):
    """Additive attention gate (Oktay et al., Attention U-Net), gating a skip with g.

    alpha = sigmoid(IN(psi(ReLU(IN(W_g g) + IN(W_x x))))), output alpha*x + x (released: the
    gated skip keeps a residual). The 1x1 convs keep their biases as released, although the
    non-affine InstanceNorm right after each cancels them (they count, but learn nothing).
    """

    attention_kind = "attention_gate"

    def __init__(self, gating_channels: int, skip_channels: int) -> None:
        super().__init__()
        inter = max(skip_channels // 2, 1)
        self.w_g = nn.Sequential(nn.Conv2d(gating_channels, inter, 1), nn.InstanceNorm2d(inter))
        self.w_x = nn.Sequential(nn.Conv2d(skip_channels, inter, 1), nn.InstanceNorm2d(inter))
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1), nn.InstanceNorm2d(1))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.sigmoid(self.psi(F.relu(self.w_g(g) + self.w_x(x))))
        self.expose(alpha)
        return alpha * x + x


def _given(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) slice-wide statistic as the (B, C, 1, 1) pooled descriptor of ``x``'s batch."""
    return stat.to(x.dtype).view(1, -1, 1, 1).expand(x.shape[0], -1, 1, 1)


class ConcurrentSCSE(ExposesAttention, nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al., MICCAI 2018).

    Released form: y = sigmoid(conv1x1(x)) * x + sigmoid(SE(x)) * x with SE reduction 8 and
    bias-free convs. Exposes the spatial (sSE) map; the channel weights are per image.
    """

    attention_kind = "csc_spatial"
    #: (C,) channel means of the whole slice for tiled inference (``inference.global_squeeze``);
    #: None: this input's own
    fixed_pool: torch.Tensor | None = None

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze = nn.Conv2d(channels, hidden, 1, bias=False)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)
        self.spatial = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = torch.sigmoid(self.spatial(x))
        mean = x.mean(dim=(2, 3), keepdim=True) if self.fixed_pool is None else _given(self.fixed_pool, x)
        channel = torch.sigmoid(self.expand(F.relu(self.squeeze(mean))))
        self.expose(spatial)
        return spatial * x + channel * x


class CBAM(ExposesAttention, nn.Module):
    """Convolutional block attention module (Woo et al., ECCV 2018), released form.

    Channel attention from avg- and max-pooled descriptors through one shared MLP (reduction
    16), then spatial attention from a 3x3 conv on [mean_c, max_c]; output a_s * x' + x
    (residual to the block input). Exposes the spatial map a_s.
    """

    attention_kind = "cbam_spatial"
    #: (2, C) channel means and maxima of the whole slice for tiled inference; None: this input's
    fixed_pool: torch.Tensor | None = None

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_pool is None:
            mean, peak = x.mean(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        else:
            mean, peak = _given(self.fixed_pool[0], x), _given(self.fixed_pool[1], x)
        a_c = torch.sigmoid(self.mlp(mean) + self.mlp(peak))
        xc = x * a_c
        a_s = torch.sigmoid(self.spatial(torch.cat([xc.mean(dim=1, keepdim=True), xc.amax(dim=1, keepdim=True)], dim=1)))
        self.expose(a_s)
        return a_s * xc + x


#: "layer": LayerNorm over the bottleneck as in GCNet; "instance_1x1": what the released
#: InstanceNorm on the 1x1 context gave in torch 1.4 (its bias beta, input-independent; bug B6)
GC_NORMS = ("layer", "instance_1x1")


class _InstanceNormOfOnePixel(nn.Module):
    """InstanceNorm2d(affine) of a 1x1 map as torch 1.4 computed it: x_hat = 0, so gamma*0 + beta."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight.view(1, -1, 1, 1) * torch.zeros_like(x) + self.bias.view(1, -1, 1, 1)


class GlobalContext(ExposesAttention, nn.Module):
    """Global-context block (Cao et al., GCNet), as released in the paper's GCNUnet.

    Context = softmax-weighted spatial pooling (weights from a 1x1 conv C -> 1); transform =
    1x1 C -> C/8, norm, ReLU, 1x1 C/8 -> C; released fusion is multiplicative with residual,
    y = t * x + x (GCNet adds t). Exposes the softmax pooling weights as a 1-channel map.

    ``norm``: the released InstanceNorm on the 1x1 context crashes in torch >= 1.10 (bug B6),
    so the default is GCNet's LayerNorm (same parameter count); ``"instance_1x1"`` reproduces
    the torch-1.4 result of the released code (a constant, so nothing before it learns).
    """

    attention_kind = "gc_context"
    #: (C,) softmax-pooled context of the whole slice for tiled inference; None: this input's
    fixed_pool: torch.Tensor | None = None

    def __init__(self, channels: int, reduction: int = 8, norm: str = "layer") -> None:
        super().__init__()
        if norm not in GC_NORMS:
            raise ValueError(f"GC norm must be one of {GC_NORMS}, got {norm!r}")
        hidden = max(channels // reduction, 1)
        self.context = nn.Conv2d(channels, 1, 1, bias=False)
        self.squeeze = nn.Conv2d(channels, hidden, 1, bias=False)
        self.norm = nn.LayerNorm([hidden, 1, 1]) if norm == "layer" else _InstanceNormOfOnePixel(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(self.context(x).view(b, 1, h * w), dim=-1)
        if self.fixed_pool is None:
            context = torch.einsum("bcn,bkn->bc", x.view(b, c, h * w), weights).view(b, c, 1, 1)
        else:
            context = _given(self.fixed_pool, x)
        t = self.expand(F.relu(self.norm(self.squeeze(context))))
        self.expose(weights.view(b, 1, h, w))
        return t * x + x
