"""One mechanism for every attention map a model exposes.

Attention modules inherit :class:`ExposesAttention` and call ``self.expose(map)`` in their
forward. Nothing is kept unless a :func:`record_attention` context is active, so training pays
nothing. The GUI and the explain code read maps by module name, never touching internals.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

__all__ = ["ExposesAttention", "record_attention", "AttentionRecord"]


class ExposesAttention:
    """Mixin for modules that produce an attention map (FPA/RFNA sigmoid, MixPool union, ...)."""

    #: a short label for the kind of map, shown in the GUI (e.g. "fpa", "mixpool")
    attention_kind: str = "attention"
    _recording: bool = False
    last_attention: torch.Tensor | None = None

    def expose(self, attention: torch.Tensor) -> None:
        if self._recording:
            self.last_attention = attention.detach()


class AttentionRecord(dict):
    """``{module_name: tensor}`` in forward order, filled by :func:`record_attention`."""

    kinds: dict[str, str]


@contextmanager
def record_attention(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record every exposed attention map during the forward passes inside the block.

    For modules called more than once (e.g. shared weights run twice) the last call wins.
    """
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, ExposesAttention)]
    record = AttentionRecord()
    record.kinds = {}
    for _, m in modules:
        m._recording = True
        m.last_attention = None
    try:
        yield record
    finally:
        for name, m in modules:
            m._recording = False
            if m.last_attention is not None:
                record[name] = m.last_attention
                record.kinds[name] = m.attention_kind
            m.last_attention = None
