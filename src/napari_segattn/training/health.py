"""Warnings for a run that diverges: a non-finite loss, or weights that blow up.

``--lr 1e6`` used to train to exit 0 with frozen validation scores and no word; a NaN loss
was as quiet. The watch warns once per kind (``DivergenceWarning``, printed by the CLI as
``segattn train: warning: ...``, shown by napari as a notification) and never stops the run:
the user decides.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..data.errors import SegattnWarning

__all__ = ["DivergenceWarning", "DivergenceWatch", "GROWTH_LIMIT"]

#: RMS weight growth since the start that counts as exploding. Normal runs stay within ~10x
#: (measured, docs/bad-input.md); lr 1e6 on a U-Net gives ~1e6x after one epoch.
GROWTH_LIMIT = 1000.0


class DivergenceWarning(SegattnWarning):
    """The training run is diverging (loss or weights non-finite, or weights exploding)."""


def _rms(model: torch.nn.Module) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point():
                total += float(p.detach().float().pow(2).sum())
                n += p.numel()
    return math.sqrt(total / max(n, 1))


class DivergenceWatch:
    def __init__(self, model: torch.nn.Module, lr: float, hint: str = "try a smaller --lr / lr") -> None:
        self.model, self.lr, self.hint = model, lr, hint
        self.start = _rms(model)
        self.warned: set[str] = set()
        self.growth = 1.0

    def _warn(self, kind: str, text: str) -> None:
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(f"{text}; the run is diverging: {self.hint}", DivergenceWarning,
                          stacklevel=3)

    def step(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            self._warn("loss", f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1}")

    def epoch_end(self, epoch: int) -> None:
        rms = _rms(self.model)
        if not math.isfinite(rms):
            self._warn("weights", f"the weights hold NaN/inf after epoch {epoch + 1}")
            return
        self.growth = rms / self.start if self.start > 0 else 1.0
        if self.growth > GROWTH_LIMIT:
            self._warn("growth", f"the weights grew {self.growth:.3g}x (RMS) since the start by epoch {epoch + 1}")
