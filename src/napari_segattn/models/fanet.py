"""FANet: Feedback Attention Network (Tomar et al., TNNLS 2023), as released in nikhilroxtomar/FANet.

The network takes the image and a binary mask from the previous epoch/iteration (Otsu at the
start); eight MixPool blocks join the mask with a learnt hard-attention map (paper Eq. 1-2,
Fig. 2). Layer widths and placement follow the released model definition (spec 2.1/2.2), which
gives the paper's 7.72M parameters (5.76M without MixPool).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import SegmentationModel
from .recorder import ExposesAttention
from .registry import register_model

__all__ = ["FANet", "SELayer", "SEResidualBlock", "MixPool", "feedback_code", "PAINTED_BACKGROUND", "PAINTED_FOREGROUND"]

MIXPOOL_MODES = ("all", "first_last", "none")
MASK_GRAD_MODES = ("none", "ste")


def _conv_bn(in_c: int, out_c: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(in_c, out_c, k, padding=k // 2), nn.BatchNorm2d(out_c)]


class SELayer(nn.Module):
    """Squeeze-and-excitation (Hu et al.): GAP -> FC(C->C/r) -> ReLU -> FC -> sigmoid -> scale."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    #: a (C,) squeeze to use instead of this input's mean: tiled inference sets the whole
    #: slice's (inference.global_squeeze), so a window gets the channel weights of the slice
    fixed_squeeze: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3)) if self.fixed_squeeze is None else self.fixed_squeeze.to(x.dtype).expand(x.shape[0], -1)
        w = self.fc(s)
        return x * w[:, :, None, None]


class SEResidualBlock(nn.Module):
    """SE-Residual block (paper Fig. 2a).

    Released code: the SE layer sits on the 1x1 *shortcut* branch (not after the second BN of the
    main branch as drawn) and uses r = C, a one-unit bottleneck (spec 2.8 D1).
    """

    def __init__(self, in_c: int, out_c: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            *_conv_bn(in_c, out_c, 3), nn.ReLU(inplace=True), *_conv_bn(out_c, out_c, 3)
        )
        self.shortcut = nn.Sequential(*_conv_bn(in_c, out_c, 1), SELayer(out_c, reduction=out_c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


class _HardThresholdSTE(torch.autograd.Function):
    """Forward: 1[p > 0.5]; backward: identity (straight-through estimator, Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, p: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (p > 0.5).to(p.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class MixPool(ExposesAttention, nn.Module):
    """MixPool block (paper Eq. 1-2, Fig. 2b): hard attention F * (M OR M'), concat with F'.

    ``mask_grad="none"`` is the released behaviour: the threshold in Eq. 1 has zero gradient,
    so the fmask branch (3x3 conv, BN, 1x1 conv) never trains (spec 2.8 D2). ``"ste"`` passes the
    gradient straight through the threshold and through a differentiable OR
    (M + M' - M*M', equal to the logical OR on {0,1}) so that the branch learns.
    The exposed map is the union mask (B x 1 x h x w), the hard attention actually applied.
    """

    attention_kind = "mixpool"

    def __init__(self, channels: int, mask_grad: str = "none") -> None:
        super().__init__()
        if mask_grad not in MASK_GRAD_MODES:
            raise ValueError(f"mask_grad must be one of {MASK_GRAD_MODES}; got {mask_grad!r}")
        self.mask_grad = mask_grad
        half = channels // 2
        self.fmask = nn.Sequential(
            *_conv_bn(channels, channels, 3), nn.ReLU(inplace=True), nn.Conv2d(channels, 1, 1)
        )
        self.masked_branch = nn.Sequential(*_conv_bn(channels, half, 3), nn.ReLU(inplace=True))
        self.feature_branch = nn.Sequential(*_conv_bn(channels, half, 3), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        prob = torch.sigmoid(self.fmask(x))
        # Released code: MaxPool2d(kernel = stride = (H/h, W/w)) of the full-resolution mask.
        kh, kw = mask.shape[-2] // x.shape[-2], mask.shape[-1] // x.shape[-1]
        m = F.max_pool2d(mask, kernel_size=(kh, kw), stride=(kh, kw))
        if self.mask_grad == "ste":
            m_prime = _HardThresholdSTE.apply(prob)
            union = m + m_prime - m * m_prime
        else:
            m_prime = (prob > 0.5).to(x.dtype)
            union = torch.logical_or(m_prime > 0, m > 0).to(x.dtype)
        self.expose(union)
        return torch.cat([self.masked_branch(x * union), self.feature_branch(x)], dim=1)


def _mixpool_at(mode: str) -> list[bool]:
    """Which of the 8 blocks (e1..e4, d1..d4) carry a MixPool (ablation B1-B4, Table IX)."""
    if mode == "all":
        return [True] * 8
    if mode == "first_last":
        return [True] + [False] * 6 + [True]
    if mode == "none":
        return [False] * 8
    raise ValueError(f"mixpool must be one of {MIXPOOL_MODES}; got {mode!r}")


class _EncoderBlock(nn.Module):
    def __init__(self, in_c: int, out_c: int, mixpool: bool, mask_grad: str) -> None:
        super().__init__()
        self.res = nn.Sequential(SEResidualBlock(in_c, out_c), SEResidualBlock(out_c, out_c))
        self.mixpool = MixPool(out_c, mask_grad) if mixpool else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.res(x)
        y = self.mixpool(skip, mask) if self.mixpool is not None else skip
        # skip connections carry the pre-MixPool features (released code)
        return F.max_pool2d(y, 2), skip


class _DecoderBlock(nn.Module):
    def __init__(self, in_c: int, skip_c: int, out_c: int, mixpool: bool, mask_grad: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_c, in_c, kernel_size=4, stride=2, padding=1)
        self.res = nn.Sequential(SEResidualBlock(in_c + skip_c, out_c), SEResidualBlock(out_c, out_c))
        self.mixpool = MixPool(out_c, mask_grad) if mixpool else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.res(torch.cat([self.up(x), skip], dim=1))
        return self.mixpool(y, mask) if self.mixpool is not None else y


@register_model(
    "fanet",
    summary="FANet: SE-residual U-Net with 8 MixPool hard-attention blocks fed by the previous mask",
    paper="Tomar et al., FANet: A Feedback Attention Network for Improved Biomedical Image Segmentation (TNNLS 2023)",
    defaults={"in_channels": 3, "out_channels": 1},
    takes_mask=True,
)
class FANet(SegmentationModel):
    """FANet as released; ``forward(image, mask)`` with mask B x 1 x H x W in {0, 1}.

    Options (released behaviour is the default):
    ``mixpool``: ``"all"`` (B2/B4), ``"first_last"`` (B3: e1 and d4 only), ``"none"`` (B1).
    The final concat of the input mask before the 1x1 output conv is kept in every mode, as in
    the released code (it is part of the 5.76M "without MixPool" count).
    ``mask_grad``: ``"none"`` (released, fmask branch untrained) or ``"ste"``.
    ``width``: channels of the first encoder block (released 32; the others scale with it). Not in
    the paper; it lets a small demo model ship with the package (width 8: ~0.5M parameters).
    ``mask_input``: also feed the mask as an extra input channel of the first block (ours, off
    as released). Released, the mask enters only through MixPool's ``M OR M'`` after a
    max-pool, so wherever the model's own M' is 1 the fed mask has no effect, plus one channel
    before the output conv; interactive segmentation models (RITM, SAM, nnInteractive) give
    the previous mask to the encoder from the first layer, which lets a user's correction
    steer every feature. Used by correction-aware training (docs/models-feedback.md).
    ``edit_input``: the fed mask carries the user's edit (:func:`feedback_code`) and the signed
    edit map (+1 painted foreground, -1 painted background, 0 untouched) is one more input
    channel (ours). A mask alone cannot tell the model which pixels a person vouched for and
    which are its own guesses; RITM and nnInteractive give the clicks/scribbles as separate
    channels beside the previous mask for the same reason. MixPool and the output concat see
    the plain 0/1 mask.
    """

    stride = 16

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        mixpool: str = "all",
        mask_grad: str = "none",
        width: int = 32,
        mask_input: bool = False,
        edit_input: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels)
        if width < 4 or width % 2:
            # width 2 gives the last MixPool 1 channel, halved to a 0-channel conv
            raise ValueError(f"width must be an even number >= 4; got {width}")
        if mask_grad not in MASK_GRAD_MODES:
            raise ValueError(f"mask_grad must be one of {MASK_GRAD_MODES}; got {mask_grad!r}")
        at = _mixpool_at(mixpool)
        self.mixpool_mode = mixpool
        self.mask_grad = mask_grad
        self.mask_input = bool(mask_input)
        self.edit_input = bool(edit_input)
        w = width
        enc = [in_channels + int(self.mask_input) + int(self.edit_input), w, 2 * w, 4 * w, 8 * w]
        self.encoders = nn.ModuleList(
            _EncoderBlock(enc[i], enc[i + 1], at[i], mask_grad) for i in range(4)
        )
        dec = [(8 * w, 8 * w, 4 * w), (4 * w, 4 * w, 2 * w), (2 * w, 2 * w, w), (w, w, w // 2)]
        self.decoders = nn.ModuleList(
            _DecoderBlock(i, s, o, at[4 + k], mask_grad) for k, (i, s, o) in enumerate(dec)
        )
        self.output = nn.Conv2d(w // 2 + 1, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if mask is None:
            raise ValueError(
                "FANet needs the feedback mask: call model(image, mask) with mask of shape "
                "(B, 1, H, W) in {0, 1} (Otsu mask of the image at the first iteration)"
            )
        self._check_input(x)
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != x.shape[0] or mask.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"FANet mask must have shape (B, 1, H, W) = {(x.shape[0], 1, *x.shape[-2:])}; "
                f"got {tuple(mask.shape)}"
            )
        return super().forward(x, mask.to(x.dtype))

    def feedback_input_weights(self) -> list[tuple[nn.Parameter, int]]:
        """The first block's conv weights that read the input, each with the index of its first
        mask/edit channel (its weights ``[:, index:]`` act on the fed mask and edit); empty for a
        model without those inputs. Training scales their updates (``feedback_lr_scale``) and
        the corrections study reports their size."""
        extra = int(self.mask_input) + int(self.edit_input)
        if not extra:
            return []
        width = self.in_channels + extra
        return [(w, self.in_channels) for w in self.encoders[0].parameters() if w.ndim == 4 and w.shape[1] == width]

    def _forward(self, x: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
        (mask,) = extras
        if self.edit_input:
            edit = (mask > 1.5).to(x.dtype) - (mask < -0.5).to(x.dtype)
            mask = (mask > 0.5).to(x.dtype)
        if self.mask_input:
            x = torch.cat([x, mask], dim=1)
        if self.edit_input:
            x = torch.cat([x, edit], dim=1)
        skips = []
        for enc in self.encoders:
            x, skip = enc(x, mask)
            skips.append(skip)
        for dec, skip in zip(self.decoders, reversed(skips)):
            x = dec(x, skip, mask)
        return self.output(torch.cat([x, mask], dim=1))


#: :func:`feedback_code` values of painted pixels (unpainted pixels are the 0/1 mask)
PAINTED_BACKGROUND, PAINTED_FOREGROUND = -1.0, 2.0


def feedback_code(mask: np.ndarray, edit: np.ndarray | None = None, painted: np.ndarray | None = None) -> np.ndarray:
    """The feedback array of an ``edit_input`` FANet: one float32 map, so that everything that
    carries a mask (tiling, batching, the mask store) carries the edit with it. Unpainted pixels
    are the 0/1 ``mask``; pixels in ``edit`` are PAINTED_FOREGROUND / PAINTED_BACKGROUND by their
    ``painted`` value (default: the mask's). ``FANet._forward`` decodes it."""
    code = np.asarray(mask, bool).astype(np.float32)
    if edit is None:
        return code
    edit = np.asarray(edit, bool)
    value = np.asarray(mask if painted is None else painted, bool)
    code[edit & value] = PAINTED_FOREGROUND
    code[edit & ~value] = PAINTED_BACKGROUND
    return code


def with_feedback_inputs(model: FANet, *, mask_input: bool = True, edit_input: bool = True) -> FANet:
    """A copy of a trained ``model`` that also takes the mask and/or the user's edit as input
    channels, with zero weights on the new channels: it computes exactly what ``model`` does
    until it is fine-tuned (``feedback="corrections"``). Starting a correction-aware FANet from a
    trained one (as ControlNet starts its new inputs at zero) keeps its segmentation quality
    instead of learning the image and the corrections at once."""
    from .registry import build_model

    config = {**model.segattn_config["config"], "mask_input": mask_input, "edit_input": edit_input}
    new = build_model("fanet", **config)
    old_state, state = model.state_dict(), new.state_dict()
    for key, value in state.items():
        src = old_state[key]
        if src.shape != value.shape:  # the first block's convs: more input channels
            if src.shape[0] != value.shape[0] or src.shape[2:] != value.shape[2:] or src.shape[1] > value.shape[1]:
                raise ValueError(f"cannot widen {key}: {tuple(src.shape)} -> {tuple(value.shape)}")
            widened = torch.zeros_like(value)
            widened[:, : src.shape[1]] = src
            src = widened
        state[key] = src.clone()
    new.load_state_dict(state)
    for attr in ("segattn_normalization", "segattn_class_names"):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    return new
