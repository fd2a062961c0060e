"""What inference needs to know about a model: mask input, label reversal, normalisation.

One place turns logits into *foreground* probabilities so that predict, the FANet refiner and
the saliency code agree on RFNA's reversal (spec 1.5: RFNA is trained on 1 − label and its
foreground is ``sigmoid < 0.5``; we return ``1 − sigmoid`` so that every caller thresholds
the same way, ``p > 0.5``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ModelTraits", "model_traits", "to_probabilities", "normalize_image"]


@dataclass(frozen=True)
class ModelTraits:
    name: str | None
    in_channels: int
    out_channels: int
    takes_mask: bool
    reverse_labels: bool
    normalization: dict[str, Any] | None

    @property
    def binary(self) -> bool:
        return self.out_channels == 1

    @property
    def num_classes(self) -> int:
        """Classes in the probability output; a one-logit model is background/foreground."""
        return 2 if self.binary else self.out_channels


def model_traits(model: torch.nn.Module) -> ModelTraits:
    """Read the registry spec named in ``model.segattn_config`` (stand-ins: set it by hand)."""
    from ..models import get_spec

    cfg = getattr(model, "segattn_config", None)
    name = cfg.get("name") if isinstance(cfg, dict) else None
    spec = get_spec(name) if name is not None else None
    return ModelTraits(
        name=name,
        in_channels=int(getattr(model, "in_channels", 1)),
        out_channels=int(getattr(model, "out_channels", 1)),
        takes_mask=bool(spec.takes_mask) if spec else False,
        reverse_labels=bool(spec.reverse_labels) if spec else False,
        normalization=getattr(model, "segattn_normalization", None),
    )


def to_probabilities(logits: torch.Tensor, reverse_labels: bool = False) -> torch.Tensor:
    """Logits ``(B, K, H, W)`` -> probabilities; one logit: sigmoid (RFNA: 1 − sigmoid)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits)
        return 1.0 - p if reverse_labels else p
    return torch.softmax(logits, dim=1)


def normalize_image(traits: ModelTraits, image_cf: np.ndarray, slice_axis: int | None = None) -> np.ndarray:
    """Apply the normalisation saved with the model to a channels-first image, float32.

    ``slice_axis`` (volumes): statistics per slice when the model was trained with
    ``per="image"``, over the whole volume with ``per="volume"`` (FPA z-scores per volume).
    """
    if not traits.normalization:
        return np.asarray(image_cf, dtype=np.float32)
    from ..data import Normalization

    norm = Normalization.from_dict(traits.normalization)
    return np.asarray(norm.apply(image_cf, channel_axis=0, slice_axis=slice_axis), dtype=np.float32)
