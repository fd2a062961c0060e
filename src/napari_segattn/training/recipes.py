"""The papers' training settings per model family, as one overridable ``TrainConfig``.

Values are the released code's (reference-implementations.md §1.5, §2.4–2.5, §5.3) where it
exists; the Feedback Attention paper (Tsuda et al.) has no code and states only the loss.
Override any field with ``dataclasses.replace(recipe_for(name), epochs=5)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "recipe_for", "build_augmenter", "RECIPES", "PAM_MODELS"]


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "generic"
    epochs: int = 100
    batch_size: int = 4
    val_batch_size: int = 1
    drop_last: bool = False
    # optimiser
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = None
    # schedule
    scheduler: str = "none"  # none | multistep | plateau
    milestones: tuple[int, ...] | None = None  # None: [epochs//2, 3*epochs//4] (NNTrain.py)
    gamma: float = 0.1
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    # RFNA sawtooth warm-up (NNTrain.py): for epochs < warmup_epochs, after optimiser step j
    # lr := lr0 * j / steps_per_epoch. 0 = off.
    warmup_epochs: int = 0
    # loss
    loss: str = "dice"  # see losses.LOSSES
    loss_options: dict[str, Any] = field(default_factory=dict)
    # augmentation: none | flip (PAM 'all_flip') | fanet (rotate/flip/dropout, p 0.3)
    augment: str = "flip"
    tv_alpha: float | None = None  # TV-smoothing augmentation (Attention Shift), None = off
    # FANet feedback masks: "on_improvement" (released: replaced only when val loss improves)
    # or "every_epoch".
    mask_update: str = "on_improvement"
    # What a FANet is fed while training: "released" (its stored previous prediction, made on
    # another epoch's augmented view) or "corrections" (ours: its current prediction from a
    # no-grad pass on the same view, as RITM trains with its own previous mask, and with
    # probability correction_prob per sample a simulated user correction of it;
    # data/corrections.py).
    feedback: str = "released"
    correction_prob: float = 0.5
    # the simulated user's brush radius in pixels, drawn per correction from [lo, hi]; None paints
    # whole error components. Match it to how a user will correct: (8, 48) for strokes, a few
    # pixels for click-like corrections on small objects (experiments/corrections.py, DSB clicks).
    correction_radius: tuple[int, int] | None = (8, 48)
    # The learning rate of a correction-aware FANet's mask/edit input weights, as a multiple of
    # lr. Zero-initialised (models.fanet.with_feedback_inputs) and moved by Adam at about lr per
    # step, they reached 1-2 % of the image weights' norm in a fine-tune at lr/10 (reproduction.md
    # §5c), too small for a correction to reach the network.
    feedback_lr_scale: float = 1.0
    # Correction-aware training: weight of an extra loss term, the mean binary cross-entropy over the
    # errors a simulated correction left next to the painted pixels (the rest of the object the
    # user clicked into, the rest of the boundary sliver they stroked): what a correction should
    # propagate to. 0 = off, the plain loss over all pixels, where those pixels are a few hundred
    # of 65,536 in a 256² tile.
    correction_loss_weight: float = 0.0
    # ... and every pixel within this many px of the paint, right or wrong: without them the term
    # rewards flipping whatever lies near a correction (DSB clicks: a common start lost 0.07-0.10
    # Dice outside the paint over 10 clicks).
    correction_loss_margin: int = 0
    # What validation feeds a feedback model: "released" (its stored masks) or "corrections" (ours:
    # its own prediction with the largest error painted, as the simulated user does): the val loss,
    # Dice, plateau schedule and checkpoint then measure what the model makes of a correction.
    val_feedback: str = "released"
    # model selection for model.safetensors: val_loss (min) or dice (max; FU-net: class 1)
    select_on: str = "val_loss"
    select_class: int | None = None
    # run
    max_minutes: float | None = None  # time budget: stop after the epoch that passes it (saved, resumable)
    # also write the resume state last/ every N optimisation steps within an epoch (0 = only at
    # epoch ends), so a kill in a long epoch loses fewer than N steps
    checkpoint_every: int = 0
    seed: int = 0
    amp: str = "auto"  # auto (bf16/fp16 on CUDA, off elsewhere) | bf16 (also CPU) | fp16 | off
    channels_last: bool = True  # on CUDA; on CPU only for models measured faster (FANet)
    num_workers: int = 0
    deterministic: bool = True

    def __post_init__(self) -> None:
        # JSON turns tuples into lists; keep the dataclass hashable and comparable.
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        if self.correction_radius is not None:
            lo, hi = (int(r) for r in self.correction_radius)
            if not 1 <= lo <= hi:
                raise ValueError(f"TrainConfig.correction_radius={self.correction_radius!r}; use (lo, hi) with "
                                 "1 <= lo <= hi, or None for whole error components")
            object.__setattr__(self, "correction_radius", (lo, hi))
        checks = {
            "optimizer": ("adam", "adamw"),
            "scheduler": ("none", "multistep", "plateau"),
            "augment": ("none", "flip", "fanet"),
            "mask_update": ("on_improvement", "every_epoch"),
            "feedback": ("released", "corrections"),
            "val_feedback": ("released", "corrections"),
            "select_on": ("val_loss", "dice"),
            "amp": ("auto", "bf16", "fp16", "off"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; choose from {allowed}")
        if not (self.correction_loss_weight >= 0 and self.correction_loss_weight < float("inf")):
            raise ValueError(f"TrainConfig.correction_loss_weight={self.correction_loss_weight!r}; use a number >= 0")
        if int(self.correction_loss_margin) != self.correction_loss_margin or self.correction_loss_margin < 0:
            raise ValueError(f"TrainConfig.correction_loss_margin={self.correction_loss_margin!r}; use whole pixels >= 0")
        if not (self.feedback_lr_scale > 0 and self.feedback_lr_scale < float("inf")):
            raise ValueError(f"TrainConfig.feedback_lr_scale={self.feedback_lr_scale!r}; use a number > 0")
        if not 0.0 <= self.correction_prob <= 1.0:
            raise ValueError(f"TrainConfig.correction_prob={self.correction_prob!r}; choose a value in [0, 1]")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig.checkpoint_every={self.checkpoint_every!r}; use 0 (epoch ends only) or "
                             "a number of steps >= 1")
        if self.milestones is not None and any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones {list(self.milestones)}: each must be >= 1 (a milestone at epoch 0 lowers "
                             "the learning rate before the first step)")
        if not (self.lr > 0 and self.lr < float("inf")):
            raise ValueError(f"lr must be a number > 0, got {self.lr}")

    def resolved_milestones(self) -> list[int]:
        """The MultiStepLR milestones, inside the run: the derived E/2, 3E/4 drop any that fall on
        epoch 0 (with ``epochs=1`` both did, and the run trained at lr * gamma^2 from the first
        step, 1e-4 instead of the recipe's 1e-2); explicit ones past the run are warned about."""
        if self.milestones is not None:
            late = [m for m in self.milestones if m >= self.epochs]
            if late:
                import warnings

                from ..data.errors import SegattnWarning

                warnings.warn(f"lr milestone(s) {late} are at or past the last epoch ({self.epochs - 1}) and never "
                              "lower the learning rate", SegattnWarning, stacklevel=2)
            return list(self.milestones)
        return [m for m in (self.epochs // 2, 3 * self.epochs // 4) if m >= 1]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["milestones"] = None if self.milestones is None else list(self.milestones)
        d["correction_radius"] = None if self.correction_radius is None else list(self.correction_radius)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)


# Pay Attention to Mistakes (NNTrain.py, exps/*.py): every BRATS baseline shares this.
_PAM = TrainConfig(
    recipe="pam",
    epochs=100,
    batch_size=4,
    drop_last=True,
    optimizer="adamw",
    lr=1e-2,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-5,
    scheduler="multistep",
    gamma=0.1,
    loss="dice",
    augment="flip",
    seed=0,
)

RECIPES: dict[str, TrainConfig] = {
    "pam": _PAM,
    # RFNA: reversed labels (engine) + the sawtooth warm-up of 'fn' experiments.
    "rfna": dataclasses.replace(_PAM, recipe="rfna", warmup_epochs=10),
    # FANet train.py: Adam 1e-4, plateau(5) on val loss, batch 2, 500 epochs, seed 42.
    "fanet": TrainConfig(
        recipe="fanet",
        epochs=500,
        batch_size=2,
        # train.py validates at batch 2 too; its loss (Dice over the flattened batch) drives the
        # mask commits, the plateau scheduler and the checkpoint choice
        val_batch_size=2,
        optimizer="adam",
        lr=1e-4,
        scheduler="plateau",
        plateau_patience=5,
        plateau_factor=0.1,
        loss="bce_dice",
        augment="fanet",
        mask_update="on_improvement",
        seed=42,
    ),
    # FU-net main_unet2d.py: Adam 1e-3 constant, global-norm clip 5, batch 2, 500 epochs,
    # no augmentation, checkpoint on class-1 Dice.
    "brunet": TrainConfig(
        recipe="brunet",
        epochs=500,
        batch_size=2,
        optimizer="adam",
        lr=1e-3,
        grad_clip_norm=5.0,
        loss="feedback_ce",
        loss_options={"beta": 3.0, "op": 100.0, "detach_weight": False},
        augment="none",
        select_on="dice",
        select_class=1,
    ),
    # Feedback Attention (Tsuda et al.): the paper states only "softmax cross-entropy" (§3.1)
    # and 256×256 crops; optimiser, lr, batch and epochs are not given and there is no code.
    # We use Adam 1e-3, batch 2, 100 epochs [our choice, not the paper's].
    "fbunet": TrainConfig(
        recipe="fbunet",
        epochs=100,
        batch_size=2,
        optimizer="adam",
        lr=1e-3,
        loss="ce",
        augment="flip",
    ),
}

PAM_MODELS = ("unet", "wunet", "d6unet", "d9unet", "aunet", "cscunet", "cbamunet", "gcnunet", "fpa")


#: losses defined for one output channel only, and what a multi-class model trains with instead
BINARY_LOSSES = {"dice": "ce_dice", "bce_dice": "ce_dice"}


def recipe_for(model_name: str, out_channels: int = 1) -> TrainConfig:
    """The paper recipe of ``model_name`` (a generic Adam/Dice config for unknown models).

    The papers' recipes are for binary masks; for a model with ``out_channels`` > 1 a binary
    loss becomes its multi-class counterpart (soft Dice -> cross-entropy + Dice, nnU-Net's
    default), so a multi-class model trains with its recipe instead of failing."""
    if model_name in PAM_MODELS:
        cfg = RECIPES["pam"]
    else:
        cfg = RECIPES.get(model_name, TrainConfig())
    if out_channels > 1 and cfg.loss in BINARY_LOSSES:
        cfg = dataclasses.replace(cfg, loss=BINARY_LOSSES[cfg.loss])
    return cfg


def build_augmenter(config: TrainConfig):
    """The recipe's augmentation as a ``data.Augmenter`` (``None`` for none).

    ``flip``: FPA's 'all_flip'. ``fanet``: flips and ±35° rotation, each with p 0.3 (FANet
    train.py; its CoarseDropout is not reproduced). ``tv_alpha`` adds TV smoothing.
    The data set owns augmentation: pass this to the data set's ``augmenter``.
    """
    from ..data import Augmenter

    if config.augment == "none" and config.tv_alpha is None:
        return None
    kw: dict[str, Any] = {"flip": config.augment != "none"}
    if config.augment == "fanet":
        kw.update(p_flip=0.3, rotate=35.0, p_rotate=0.3)
    if config.tv_alpha is not None:
        kw["tv_alpha"] = config.tv_alpha
    return Augmenter(**kw)
