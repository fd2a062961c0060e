"""The attention maps a model exposes (FPA/RFNA gates, MixPool unions, ...) at image size.

Maps come from :func:`~napari_segattn.models.record_attention`; each ``B x C x h x w`` tensor
is reduced by the channel mean (the maps are per-channel gates in FPA/RFNA and a single
channel in MixPool) and bilinearly resized to the image so they can be overlaid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.masks import initial_masks
from ..inference.predict import _eval_on, prepare_stack
from ..inference.traits import model_traits

__all__ = ["AttentionMap", "attention_maps"]


@dataclass
class AttentionMap:
    name: str  # module name in the model
    kind: str  # the module's ``attention_kind``
    map: np.ndarray  # (H, W) float32 at image size
    native_shape: tuple[int, ...]  # (C, h, w) as the module produced it


def attention_maps(
    model: torch.nn.Module,
    image: np.ndarray,
    mask: np.ndarray | str | None = None,
    *,
    channel_axis: int | None = None,
    device: str | torch.device = "cpu",
) -> list[AttentionMap]:
    """One forward pass on a 2D image, recording every exposed map (forward order).

    FANet-style models get ``mask`` (Otsu when None, as at iteration 0).
    """
    from ..devices import resolve_device
    from ..models import record_attention

    traits = model_traits(model)
    layout, raw, stack = prepare_stack(traits, image, channel_axis=channel_axis)
    dev = resolve_device(device)
    x = torch.from_numpy(stack).to(dev)
    args = [x]
    if traits.takes_mask:
        if mask is None or isinstance(mask, str):
            ms = initial_masks(raw, mask or "otsu")
        else:
            ms = layout.spatial_to_stack(np.asarray(mask)).astype(bool)
        args.append(torch.from_numpy(ms.astype(np.float32))[:, None].to(dev))
    h, w = x.shape[-2:]
    stride = max(1, int(getattr(model, "stride", 1)))
    hp, wp = -(-h // stride) * stride, -(-w // stride) * stride
    with _eval_on(model, dev), torch.inference_mode(), record_attention(model) as rec:
        model(*args)
    out = []
    for name, t in rec.items():
        t = t.float()
        if t.ndim == 3:
            t = t[:, None]
        if t.ndim != 4:
            continue  # not a spatial map
        m = t[:1].mean(dim=1, keepdim=True)
        if m.shape[-2:] != (h, w):
            # maps live on the stride-padded input (SegmentationModel pads bottom/right):
            # resize to the padded extent, then crop, so pixels stay aligned
            m = F.interpolate(m, size=(hp, wp), mode="bilinear", align_corners=False)[..., :h, :w]
        out.append(AttentionMap(name=name, kind=rec.kinds.get(name, "attention"),
                                map=m[0, 0].cpu().numpy().astype(np.float32), native_shape=tuple(t.shape[1:])))
    return out
