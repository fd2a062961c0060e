"""Headless training: one event-generating engine, the papers' recipes and losses."""

from .engine import Trainer, TrainingError
from .events import Cancelled, Checkpoint, EpochStart, Event, Finished, Resumed, Step, Validation
from .losses import BCEDiceLoss, CEDiceLoss, CrossEntropyLoss, FeedbackWeightedCE, SoftDiceLoss, build_loss
from .mask_store import MaskStore, rle_decode, rle_encode
from .recipes import TrainConfig, build_augmenter, recipe_for

__all__ = [
    "Trainer",
    "TrainingError",
    "TrainConfig",
    "recipe_for",
    "build_augmenter",
    "MaskStore",
    "rle_encode",
    "rle_decode",
    "SoftDiceLoss",
    "BCEDiceLoss",
    "CEDiceLoss",
    "CrossEntropyLoss",
    "FeedbackWeightedCE",
    "build_loss",
    "Event",
    "EpochStart",
    "Step",
    "Validation",
    "Checkpoint",
    "Finished",
    "Cancelled",
    "Resumed",
]
