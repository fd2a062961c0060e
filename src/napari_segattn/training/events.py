"""Progress events yielded by ``Trainer.run()``: plain data for a progress bar or a GUI plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Event", "EpochStart", "Step", "Validation", "Checkpoint", "Finished", "Cancelled", "Resumed"]


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class EpochStart(Event):
    epoch: int  # 0-based
    epochs: int
    steps: int  # optimiser steps in this epoch (this rank)
    lr: float


@dataclass(frozen=True)
class Step(Event):
    epoch: int
    step: int  # 0-based within the epoch
    loss: float
    lr: float  # the learning rate this step used
    eta_s: float  # estimated seconds left in the whole run (training steps only)
    steps: int = 0


@dataclass(frozen=True)
class Validation(Event):
    epoch: int
    loss: float
    metrics: dict[str, Any] = field(default_factory=dict)
    improved: bool = False  # by the recipe's selection rule (best model written)
    masks_committed: bool = False  # FANet feedback masks replaced this epoch
    # FANet: bytes the run-length-encoded training mask store holds vs dense bool masks
    mask_store_bytes: int | None = None
    mask_dense_bytes: int | None = None


@dataclass(frozen=True)
class Checkpoint(Event):
    path: Path
    epoch: int
    kind: str  # "last" (resume state), "step" (resume state within an epoch) or "best" (model.safetensors)
    steps_done: int | None = None  # "step": optimisation steps of ``epoch`` the state holds


@dataclass(frozen=True)
class Finished(Event):
    epochs: int
    best_epoch: int | None
    best_score: float | None
    model_path: Path | None


@dataclass(frozen=True)
class Cancelled(Event):
    epoch: int
    step: int
    last_checkpoint: Path | None


@dataclass(frozen=True)
class Resumed(Event):
    """A resumed run continues at ``step`` (0-based) of ``epoch`` (0-based) from ``path``."""

    epoch: int
    step: int
    steps: int
    path: Path
