"""One registry of segmentation models, built by name + config (as smp's ``create_model``).

The config a model was built with is kept on the instance so that ``save_model`` can write
it beside the weights and ``load_model`` can rebuild exactly the same architecture.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

__all__ = ["ModelSpec", "register_model", "build_model", "list_models", "get_spec", "model_config"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    summary: str
    paper: str
    # Default config for the parameter-count table (the papers' BRATS set-up unless noted).
    defaults: dict[str, Any]
    takes_mask: bool = False  # FANet-style models take (image, mask)
    reverse_labels: bool = False  # RFNA predicts background; foreground = p < 0.5


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    summary: str,
    paper: str,
    defaults: dict[str, Any] | None = None,
    takes_mask: bool = False,
    reverse_labels: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model class or factory under ``name``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            builder=builder,
            summary=summary,
            paper=paper,
            defaults=dict(defaults or {"in_channels": 4, "out_channels": 1}),
            takes_mask=takes_mask,
            reverse_labels=reverse_labels,
        )
        return builder

    return deco


def _ensure_loaded() -> None:
    # Importing the model modules registers them; done lazily to keep import order simple.
    from . import zoo  # noqa: F401


def list_models() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; registered models: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a registered model; missing ``in_channels``/``out_channels`` take the defaults."""
    spec = get_spec(name)
    full = {**spec.defaults, **config}
    params = inspect.signature(spec.builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(full) - set(params))
        if unknown:
            raise TypeError(
                f"model {name!r} has no option(s) {unknown}; options: {sorted(params)}"
            )
    model = spec.builder(**full)
    model.segattn_config = {"name": name, "config": full}
    return model


def model_config(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "config"}`` a registry model was built with."""
    cfg = getattr(model, "segattn_config", None)
    if cfg is None:
        raise ValueError("model was not built by napari_segattn.models.build_model")
    return cfg


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
