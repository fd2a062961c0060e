"""BatchNorm folded into the preceding convolution, for inference only.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be
merged into the convolution's weights and bias (torch's ``fuse_conv_bn_eval`` does the
arithmetic). FANet spends 13 % of its float32 CPU time in ``native_batch_norm`` at 512²
(docs/performance.md); folding removes those passes over the activations.

The user's model is never changed: inference runs a folded *copy*, cached per model and
rebuilt when any parameter or buffer changed since (``Tensor._version`` counts in-place
updates, which is what optimiser steps and ``load_state_dict`` do), or when the device or
memory format differ.
"""

from __future__ import annotations

import copy
import weakref

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm", "folded_for_inference"]

_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module | None]]" = weakref.WeakKeyDictionary()


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with every ``Conv2d -> BatchNorm2d`` pair of a plain
    ``nn.Sequential`` folded; returns ``(copy, pairs folded)``.

    Only sequences whose forward is ``nn.Sequential.forward`` are touched, so the pair is
    known to run back to back; a model without such pairs comes back as an unchanged copy.
    """
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        # hooks (e.g. an attention recorder on the user's model) must not fire on the copy
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
    n = 0
    for seq in folded.modules():
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
                    and bn.running_mean is not None and conv.out_channels == bn.num_features):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
                n += 1
    return folded, n


def _state_key(model: nn.Module, channels_last: bool) -> tuple:
    tensors = list(model.parameters()) + list(model.buffers())
    return (channels_last, tuple((t.device, t._version, t.data_ptr()) for t in tensors))


def folded_for_inference(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """The folded copy of ``model`` (eval mode, on the model's device, in channels-last memory
    when asked), or ``model`` itself when it has no foldable pair."""
    key = _state_key(model, channels_last)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1] if hit[1] is not None else model
    folded, n = fold_batchnorm(model)
    if n and channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    # None, not the model itself: a cached value referring to its own key would keep it alive
    _CACHE[model] = (key, folded if n else None)
    return folded if n else model
