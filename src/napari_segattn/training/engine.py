"""The one training loop: a generator of progress events with a cancel flag.

The napari widget runs ``Trainer.run()`` in a ``thread_worker`` and the CLI drives it with a
progress bar; neither has a loop of its own. Model-family rules are hidden here:

* RFNA (``spec.reverse_labels``) is trained on 1 − label (Pay Attention to Mistakes §3.2);
  validation metrics are reported on the foreground (p < 0.5).
* FANet (``spec.takes_mask``) gets each sample's stored feedback mask as its second input;
  the thresholded prediction σ(z) > 0.5 is staged per sample index and committed per
  ``config.mask_update`` (released: only when validation loss improved, §2.5).

Reproducibility: every epoch re-seeds torch/numpy/random and the data order from
``(seed, epoch)`` (DistributedSampler with one replica when not distributed), so a run resumed
from an epoch checkpoint reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from ..data.errors import SegattnWarning
from ..devices import resolve_device
from ..inference.predict import use_channels_last
from ..inference.traits import model_traits
from . import checkpoint as ckpt
from .events import Cancelled, Checkpoint, EpochStart, Event, Finished, Resumed, Step, Validation
from .losses import build_loss
from .mask_store import MaskStore
from .health import DivergenceWatch
from .recipes import TrainConfig, recipe_for

__all__ = ["Trainer", "TrainingError"]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


class Trainer:
    """Train ``model`` on ``train_ds`` (validating on ``val_ds``) with ``config``.

    ``out_dir``: where ``model.safetensors`` (best by ``config.select_on``) and the resume
    directory ``last/`` are written; ``None`` writes nothing. ``resume=True`` continues from
    ``out_dir/last`` if it exists. ``listeners`` are called with every event before it is
    yielded. ``mask_store``/``val_mask_store`` override FANet's Otsu initial masks.
    """

    def __init__(
        self,
        model: nn.Module,
        train_ds: Dataset,
        val_ds: Dataset | None = None,
        config: TrainConfig | None = None,
        *,
        device: str | torch.device = "auto",
        listeners: Iterable[Callable[[Event], None]] = (),
        out_dir: str | Path | None = None,
        resume: bool = False,
        normalization: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        takes_mask: bool | None = None,
        reverse_labels: bool | None = None,
        mask_store: MaskStore | None = None,
        val_mask_store: MaskStore | None = None,
    ) -> None:
        self.model = model
        self.train_ds = train_ds
        self.val_ds = val_ds if val_ds is not None and len(val_ds) > 0 else None
        cfg = getattr(model, "segattn_config", None) or {}
        self.model_name = cfg.get("name")
        spec = _spec(self.model_name)
        self.config = config if config is not None else recipe_for(self.model_name or "")
        self.takes_mask = bool(getattr(spec, "takes_mask", False)) if takes_mask is None else takes_mask
        self.reverse_labels = bool(getattr(spec, "reverse_labels", False)) if reverse_labels is None else reverse_labels
        self.out_channels = int(getattr(model, "out_channels", 1))
        self.device_name = device
        self.listeners = list(listeners)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = resume
        norm = normalization
        if norm is None and hasattr(train_ds, "normalization"):
            n = train_ds.normalization
            norm = n.to_dict() if hasattr(n, "to_dict") else n
        self.normalization = norm
        self.class_names = class_names
        self.mask_store = mask_store
        self.val_mask_store = val_mask_store
        self._cancel = threading.Event()
        self.history: list[Event] = []
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.best_val_loss: float | None = None
        self.last_checkpoint: Path | None = None
        self.model_path: Path | None = None
        self.start_epoch = 0

    # -- control --------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask a running ``run()`` to stop before its next step (thread-safe)."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def fit(self) -> list[Event]:
        """Run to the end; returns the events."""
        return list(self.run())

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> Iterator[Event]:
        cfg = self.config
        self._setup()
        steps = len(self.loader)  # full epochs: before any resume skip is set
        start_epoch, skip = self._maybe_resume(steps)
        self.start_epoch = start_epoch  # epochs finished before this call
        if self.resume and start_epoch >= cfg.epochs:
            warnings.warn(f"resume: the run in {self.out_dir} already finished its {cfg.epochs} epoch(s); nothing "
                          f"left to train (pass a larger epochs / --epochs to continue it)", SegattnWarning, stacklevel=2)
        elif self.resume and self.last_checkpoint is not None:
            yield self._emit(Resumed(start_epoch, skip, steps, self.last_checkpoint))
        watch = DivergenceWatch(self.model, cfg.lr, f"try a smaller --lr / lr (this run: {cfg.lr:g})")
        total_steps = max(1, (cfg.epochs - start_epoch) * steps - skip)
        done = 0
        t0 = time.perf_counter()
        for epoch in range(start_epoch, cfg.epochs):
            first = skip if epoch == start_epoch else 0
            batches = self._epoch_batches(epoch, first)
            yield self._emit(EpochStart(epoch, cfg.epochs, steps, self._lr()))
            self.model.train()
            for step, batch in enumerate(batches, start=first):
                if self._cancel.is_set():
                    yield self._emit(Cancelled(epoch, step, self.last_checkpoint))
                    return
                lr = self._lr()
                loss = self._train_step(batch, epoch, step, steps)
                watch.step(loss, epoch, step)
                done += 1
                eta = (time.perf_counter() - t0) / done * (total_steps - done)
                yield self._emit(Step(epoch, step, loss, lr, eta, steps))
                if self._step_checkpoint_due(step, steps):
                    yield from self._save_within_epoch(epoch, step + 1, steps)
            if self._cancel.is_set():
                yield self._emit(Cancelled(epoch, steps, self.last_checkpoint))
                return
            watch.epoch_end(epoch)
            yield from self._end_epoch(epoch)
            if cfg.max_minutes and epoch + 1 < cfg.epochs and time.perf_counter() - t0 >= 60 * cfg.max_minutes:
                warnings.warn(f"time budget of {cfg.max_minutes:g} min reached after epoch {epoch + 1} of {cfg.epochs}; "
                              "stopping with the checkpoints saved (resume continues the run)", SegattnWarning,
                              stacklevel=2)
                break
        yield self._emit(Finished(cfg.epochs, self.best_epoch, self.best_score, self.model_path))

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[dict[str, Any]]:
        """The epoch's batches from step ``skip`` on, in the order an uninterrupted run sees them.

        The order and the augmentation depend only on (seed, epoch); the skipped batches are not
        loaded. Resuming within an epoch, the RNG states saved with the checkpoint replace the
        epoch seed after the loader has drawn its own base seed, as it did the first time."""
        self._seed_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.order.skip = skip * self.config.batch_size
        batches = iter(self.loader)  # the sampler reads ``skip`` lazily: it stays set for this epoch
        if skip:
            _set_rng_state(self._resume_rng, self.device)
            self._resume_rng = None
        return batches

    def _step_checkpoint_due(self, step: int, steps: int) -> bool:
        n = self.config.checkpoint_every
        return bool(n) and (step + 1) % n == 0 and step + 1 < steps and self.out_dir is not None and self.rank == 0

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self) -> None:
        cfg = self.config
        self._cancel.clear()
        self.distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if self.distributed else 0
        self.world = torch.distributed.get_world_size() if self.distributed else 1
        self.device = resolve_device(self.device_name)
        if self.distributed and self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.manual_seed(cfg.seed)
        if cfg.deterministic:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        cuda = self.device.type == "cuda"
        self.net = self.model.to(self.device)
        # the layout inference uses: always on CUDA, on CPU only where measured faster (FANet's
        # training step 1.36x at 8x256², FPA's 0.61x: docs/performance.md)
        self.channels_last = cfg.channels_last and use_channels_last(model_traits(self.model), self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.amp_dtype = _amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.loss_fn = build_loss(cfg.loss, self.out_channels, **cfg.loss_options)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "multistep":
            self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, cfg.resolved_milestones(), gamma=cfg.gamma)
        elif cfg.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", patience=cfg.plateau_patience, factor=cfg.plateau_factor
            )
        else:
            self.scheduler = None
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if cuda else None)
        else:
            self.ddp = self.model
        self.train_data, self.val_data = self._attach_feedback()
        self._warn_unused_correction_options()
        # One sampler for both cases: the permutation depends only on (seed, epoch).
        self.sampler = DistributedSampler(
            self.train_data, num_replicas=self.world, rank=self.rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
        bs = cfg.batch_size
        if cfg.drop_last and len(self.sampler) < bs:
            raise TrainingError(
                f"batch size {bs} with drop_last leaves no batch: only {len(self.sampler)} training sample(s)"
                + (" on this rank" if self.distributed else "")
            )
        self.order = _SkipSampler(self.sampler)  # resuming within an epoch starts later in its order
        self._resume_rng: dict[str, Any] | None = None
        self.loader = DataLoader(
            self.train_data, batch_size=bs, sampler=self.order, drop_last=cfg.drop_last,
            num_workers=cfg.num_workers, pin_memory=cuda,
        )
        self.val_loader = (
            DataLoader(self.val_data, batch_size=cfg.val_batch_size, shuffle=False, num_workers=cfg.num_workers)
            if self.val_data is not None
            else None
        )
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def _warn_unused_correction_options(self) -> None:
        """Say which correction-aware options this model and run ignore, instead of training as if
        they applied (``segattn train --feedback-lr-scale 10`` on a model without feedback inputs)."""
        cfg = self.config
        unused = []
        if cfg.feedback_lr_scale != 1 and not getattr(self.model, "feedback_input_weights", lambda: [])():
            unused.append("feedback_lr_scale (the model has no mask/edit input channels)")
        if cfg.val_feedback != "released" and not self.takes_mask:
            unused.append("val_feedback (the model takes no feedback mask)")
        if cfg.correction_loss_weight and not (self.takes_mask and cfg.feedback == "corrections"):
            unused.append('correction_loss_weight (it needs a feedback model and feedback="corrections")')
        if unused:
            warnings.warn("ignored in this run: " + "; ".join(unused), SegattnWarning, stacklevel=3)

    def _attach_feedback(self) -> tuple[Dataset, Dataset | None]:
        """The data sets the loaders read: for a feedback model, views of the caller's data sets
        that read this run's mask store (the caller's objects are never modified)."""
        if not self.takes_mask:
            return self.train_ds, self.val_ds
        if self.mask_store is None:
            self.mask_store = MaskStore.initial(self.train_ds)
        if self.val_ds is not None and self.val_mask_store is None:
            self.val_mask_store = MaskStore.initial(self.val_ds)
        # The data set reads the current masks from the store, so it can augment them with the
        # sample when built with augment_feedback=True (released: not augmented, D4). Data sets
        # without ``with_feedback`` are fed from the store in ``_inputs``.
        views = []
        for ds, store in ((self.train_ds, self.mask_store), (self.val_ds, self.val_mask_store)):
            views.append(ds.with_feedback(store.get) if ds is not None and hasattr(ds, "with_feedback") else ds)
        return views[0], views[1]

    def _seed_epoch(self, epoch: int) -> None:
        s = (self.config.seed * 1_000_003 + epoch) % (2**32)
        torch.manual_seed(s)
        np.random.seed(s)
        random.seed(s)
        for ds in (self.train_data, self.val_data):
            # SegmentationDataset draws augmentation from default_rng((seed, epoch, index, ...)).
            if ds is not None and hasattr(ds, "set_epoch"):
                ds.set_epoch(epoch)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- one step -------------------------------------------------------------------------
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _inputs(self, batch: dict[str, Any], store: MaskStore | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        nb = self.device.type == "cuda"
        x = batch["image"].to(self.device, non_blocking=nb).float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["label"].to(self.device, non_blocking=nb).long()
        extras: tuple[torch.Tensor, ...] = ()
        if self.takes_mask:
            if "feedback" in batch:
                extras = (batch["feedback"].to(self.device, non_blocking=nb).float(),)
            elif store is not None:
                idx = batch["index"].tolist()
                m = np.stack([store.get(i) for i in idx])[:, None].astype(np.float32)
                if m.shape[-2:] != tuple(x.shape[-2:]):
                    raise TrainingError(
                        f"stored feedback masks are {m.shape[-2:]} but images are {tuple(x.shape[-2:])}; "
                        "FANet needs fixed-size samples (no random crops)"
                    )
                extras = (torch.from_numpy(m).to(self.device),)
            else:
                raise TrainingError("a feedback model needs masks: the batch has no 'feedback' and there is no mask store")
        return x, extras, y

    def _target(self, y: torch.Tensor) -> torch.Tensor:
        if self.out_channels == 1:
            fg = (y > 0).long()
            return 1 - fg if self.reverse_labels else fg
        return y

    def _foreground(self, logits: torch.Tensor) -> torch.Tensor:
        """Predicted labels (B×H×W int64) in the user's convention (RFNA: p < 0.5 is foreground)."""
        if self.out_channels == 1:
            p = torch.sigmoid(logits[:, 0].float())
            return ((p < 0.5) if self.reverse_labels else (p > 0.5)).long()
        return logits.argmax(1)

    def _train_step(self, batch: dict[str, Any], epoch: int, step: int, steps: int) -> float:
        cfg = self.config
        bs = int(batch["image"].shape[0])
        try:
            x, extras, y = self._inputs(batch, self.mask_store)
            own = zone = None
            if self.takes_mask and cfg.feedback == "corrections":
                extras, own, zone = self._simulated_corrections(x, extras, y, epoch, step)
            with self._autocast():
                logits = self.ddp(x, *extras)
            loss = self.loss_fn(logits.float(), self._target(y))
            if zone is not None and cfg.correction_loss_weight and zone.any():
                z = torch.from_numpy(zone).to(logits.device)
                loss = loss + cfg.correction_loss_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[:, 0].float()[z], self._target(y).float()[z])
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip_norm)
            with self._feedback_lr_scaled():
                self.scaler.step(self.optimizer)
            self.scaler.update()
        except torch.cuda.OutOfMemoryError as exc:
            self.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            smaller = max(1, bs // 2)
            where = f"; the last good checkpoint {self.last_checkpoint} is intact" if self.last_checkpoint else ""
            raise TrainingError(
                f"GPU out of memory at batch size {bs} (image {tuple(batch['image'].shape[-2:])}); "
                f"try --batch-size {smaller}, smaller images, or --device cpu{where}"
            ) from exc
        if epoch < cfg.warmup_epochs:
            # RFNA sawtooth warm-up as released (NNTrain.py): set after the step, so step 0 of
            # epoch 0 uses lr0 and the lr ramps 0→lr0 within each warm-up epoch.
            for g, lr0 in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = lr0 * step / steps
        if self.takes_mask and self.mask_store is not None:
            with torch.no_grad():
                # the store keeps the released feedback: the prediction from the stored mask
                pred = own if own is not None else self._mask_from_logits(logits)
            for i, m in zip(batch["index"].tolist(), pred):
                self.mask_store.stage(i, m)
        return float(loss.detach())

    @contextlib.contextmanager
    def _feedback_lr_scaled(self):
        """Around the optimiser step: the mask/edit input weights move ``feedback_lr_scale`` times
        the step the optimiser gave them. One conv weight holds image and feedback channels, and
        Adam's step does not depend on the gradient's scale, so a separate parameter group or a
        scaled gradient cannot give those channels their own learning rate; scaling the step can."""
        scale = self.config.feedback_lr_scale
        weights = self.model.feedback_input_weights() if scale != 1 and hasattr(self.model, "feedback_input_weights") else []
        before = [w.detach()[:, i:].clone() for w, i in weights]
        yield
        with torch.no_grad():
            for (w, i), old in zip(weights, before):
                w[:, i:] = old + scale * (w[:, i:] - old)

    @torch.no_grad()
    def _simulated_corrections(self, x, extras, y, epoch: int, step: int):
        """Correction-aware training, RITM's iterative training with painted corrections.

        The fed mask is built on this very augmented view, so it is aligned with image and labels
        (the stored mask is not: it comes from another epoch's view, D4). Start from the Otsu mask
        of the view (what inference starts from), then run 0..2 no-grad passes with the model in
        eval mode, each fed the previous mask or, with probability ``correction_prob``, a
        simulated user correction of it. The trained forward gets the last mask, corrected with
        the same probability. Otsu, the model's own masks and corrections of both are all seen
        throughout training. As in ``FANetRefiner(pin_edits=True)``, painted pixels accumulate,
        keep their painted value in later passes and, for an ``edit_input`` model, are marked in
        the fed code. Returns the new feedback, the last own prediction (None after 0 passes),
        which the mask store stages as the released loop would, and, with a
        ``correction_loss_weight``, the *propagation zone*: the errors of the fed mask in
        components that touch the painted pixels (None without).
        """
        from ..data import otsu_mask, simulate_correction
        from ..models.fanet import feedback_code

        rng = np.random.default_rng([self.config.seed, epoch, step, self.rank, 104729])
        p = self.config.correction_prob
        tell_edits = bool(getattr(self.model, "edit_input", False))
        truth = self._target(y).cpu().numpy() > 0
        mask = np.stack([otsu_mask(v, channel_axis=0) for v in x.float().cpu().numpy()])
        edit = np.zeros_like(mask)
        painted = np.zeros_like(mask)
        own = None

        def correct(m: np.ndarray) -> torch.Tensor:
            """Paint some samples (recorded in edit/painted) and encode the feedback."""
            m = m.copy()
            for b in np.flatnonzero(rng.random(len(m)) < p):
                m[b], region = simulate_correction(m[b], truth[b], rng, radius=self.config.correction_radius,
                                                   return_region=True)
                edit[b] |= region
                painted[b][region] = truth[b][region]
            m = np.where(edit, painted, m)
            code = np.stack([feedback_code(mb, eb, pb) if tell_edits else feedback_code(mb)
                             for mb, eb, pb in zip(m, edit, painted)])
            return torch.from_numpy(code[:, None]).to(extras[0].device)

        passes = int(rng.integers(0, 3))
        if passes:
            was_training = self.model.training
            self.model.eval()
            try:
                for _ in range(passes):
                    with self._autocast():
                        own = self._mask_from_logits(self.model(x, correct(mask), *extras[1:]))
                    mask = own
            finally:
                self.model.train(was_training)
        fed = correct(mask)
        zone = (_errors_touching(fed[:, 0].cpu().numpy() > 0.5, truth, edit, self.config.correction_loss_margin)
                if self.config.correction_loss_weight else None)
        return (fed, *extras[1:]), own, zone

    def _painted_feedback(self, logits: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Validation's simulated user (``val_feedback="corrections"``): the model's prediction
        with its largest error painted from the truth by a brush of the middle training radius,
        the same every epoch for the same prediction (no random draw), encoded as the model reads it."""
        from ..data import paint_largest_errors
        from ..models.fanet import feedback_code

        radius = self.config.correction_radius
        brush = None if radius is None else int(round(sum(radius) / 2))
        tell_edits = bool(getattr(self.model, "edit_input", False))
        truth = self._target(y).cpu().numpy() > 0
        codes = []
        for own, t in zip(self._mask_from_logits(logits), truth):
            fed, region = paint_largest_errors(own, t, 1, brush)
            codes.append(feedback_code(fed, region, t) if tell_edits else feedback_code(fed))
        return torch.from_numpy(np.stack(codes)[:, None]).to(device)

    def _mask_from_logits(self, logits: torch.Tensor) -> np.ndarray:
        # FANet stores σ(z) > 0.5 (train.py); for a multi-class feedback model, argmax > 0.
        if logits.shape[1] == 1:
            return (torch.sigmoid(logits[:, 0].float()) > 0.5).cpu().numpy()
        return (logits.argmax(1) > 0).cpu().numpy()

    # -- validation, masks, checkpoints ---------------------------------------------------
    @torch.no_grad()
    def _validate(self) -> tuple[float, dict[str, Any]]:
        self.model.eval()
        total, n = 0.0, 0
        per_image: list[dict[str, Any]] = []
        for batch in self.val_loader:
            x, extras, y = self._inputs(batch, self.val_mask_store)
            with self._autocast():
                logits = self.model(x, *extras)
            if self.takes_mask and self.val_mask_store is not None:
                for i, m in zip(batch["index"].tolist(), self._mask_from_logits(logits)):
                    self.val_mask_store.stage(i, m)
            if self.takes_mask and self.config.val_feedback == "corrections":
                with self._autocast():
                    logits = self.model(x, self._painted_feedback(logits, y, extras[0].device), *extras[1:])
            b = x.shape[0]
            total += float(self.loss_fn(logits.float(), self._target(y))) * b
            n += b
            pred = self._foreground(logits).cpu().numpy()
            gt = y.cpu().numpy()
            for p, g in zip(pred, gt):
                per_image.append(_image_metrics(p, g, self.out_channels))
        self.model.train()
        return total / max(n, 1), _mean_metrics(per_image)

    def _score(self, val_loss: float, metrics: dict[str, Any]) -> float:
        """Higher is better."""
        cfg = self.config
        if cfg.select_on == "val_loss":
            return -val_loss
        if cfg.select_class is not None and f"dice_class_{cfg.select_class}" in metrics:
            return float(metrics[f"dice_class_{cfg.select_class}"])
        return float(metrics.get("dice", float("nan")))

    def _end_epoch(self, epoch: int) -> Iterator[Event]:
        cfg = self.config
        improved = True
        committed = False
        if self.val_loader is not None:
            val_loss, metrics = self._validate()
            score = self._score(val_loss, metrics)
            improved = self.best_score is None or score > self.best_score
            loss_improved = self.best_val_loss is None or val_loss < self.best_val_loss
            if loss_improved:
                self.best_val_loss = val_loss
            if improved:
                self.best_score, self.best_epoch = score, epoch
        else:
            val_loss, metrics, loss_improved = float("nan"), {}, True
            self.best_epoch = epoch
        if self.takes_mask:
            if self.distributed:
                _gather_staged(self.mask_store, self.device)
            if cfg.mask_update == "every_epoch" or loss_improved:
                for s in (self.mask_store, self.val_mask_store):
                    if s is not None:
                        s.commit()
                committed = True
            else:
                for s in (self.mask_store, self.val_mask_store):
                    if s is not None:
                        s.discard()
        if self.val_loader is not None:
            store = self.mask_store
            yield self._emit(Validation(epoch, val_loss, metrics, improved, committed,
                                        mask_store_bytes=store.nbytes if store is not None else None,
                                        mask_dense_bytes=store.dense_nbytes if store is not None else None))
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if self.val_loader is not None:
                self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        if self.out_dir is not None and self.rank == 0:
            if improved:
                self.model_path = self._save_model(self.out_dir / "model.safetensors", epoch)
                yield self._emit(Checkpoint(self.model_path, epoch, "best"))
            self.last_checkpoint = ckpt.write_state_dir(self.out_dir, lambda d: self._write_state(d, epoch))
            yield self._emit(Checkpoint(self.last_checkpoint, epoch, "last"))

    def _save_model(self, path: Path, epoch: int, within: dict[str, Any] | None = None) -> Path:
        """Weights plus what they are, in the sidecar .json; epochs there are 1-based as the log
        prints them (``epoch 3: val loss ... *``, ``best epoch 3``)."""
        from ..models.io import save_model

        done = epoch + 1  # epochs finished by these weights
        info = {"epochs_done": done, "epochs": self.config.epochs,
                "best_epoch": self.best_epoch + 1 if self.best_epoch is not None else None,
                "recipe": self.config.recipe, "reverse_labels": self.reverse_labels,
                "data": _describe_data(self.train_ds, self.val_ds)}
        if within is not None:
            info["steps_done_in_epoch"] = {"epoch": within["epoch"] + 1, "steps": within["steps_done"],
                                           "of": within["steps"]}
        return save_model(self.model, path, normalization=self.normalization, class_names=self.class_names,
                          extra={"training": info})

    def _save_within_epoch(self, epoch: int, steps_done: int, steps: int) -> Iterator[Event]:
        """The resume state after ``steps_done`` steps of ``epoch`` (``checkpoint_every``)."""
        within = {"epoch": epoch, "steps_done": steps_done, "steps": steps, "batch_size": self.config.batch_size}
        self.last_checkpoint = ckpt.write_state_dir(self.out_dir, lambda d: self._write_state(d, epoch - 1, within))
        yield self._emit(Checkpoint(self.last_checkpoint, epoch, "step", steps_done))

    def _write_state(self, d: Path, epoch: int, within: dict[str, Any] | None = None) -> None:
        """``epoch``: the last finished epoch (-1: none); ``within``: where in the next one the
        state was written (its steps done, the staged FANet masks and the RNG states)."""
        self._save_model(d / "model.safetensors", epoch, within)
        tensors, opt_meta = ckpt.flatten_optimizer(self.optimizer.state_dict())
        for key, store in (("masks_train", self.mask_store), ("masks_val", self.val_mask_store)):
            if store is not None:
                for k, v in store.state_dict().items():
                    tensors[f"{key}/{k}"] = torch.from_numpy(np.ascontiguousarray(v))
        rng = None
        if within is not None:
            if self.mask_store is not None and self.mask_store.staged:
                for k, v in self.mask_store.staged_state_dict().items():
                    tensors[f"staged_train/{k}"] = torch.from_numpy(np.ascontiguousarray(v))
            rng_tensors, rng = _rng_state(self.device)
            tensors.update(rng_tensors)
        meta = {
            "format": "napari-segattn/training-state-v1",
            "epoch": epoch,
            "within_epoch": within,
            "rng": rng,
            "config": self.config.to_dict(),
            "optimizer": opt_meta,
            "scheduler": ckpt.jsonable(self.scheduler.state_dict()) if self.scheduler is not None else None,
            "scaler": ckpt.jsonable(self.scaler.state_dict()),
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "base_lrs": self.base_lrs,
        }
        ckpt.save_state(d, tensors, meta)

    def _maybe_resume(self, steps: int) -> tuple[int, int]:
        """``(epoch, step)`` to continue from: after the last finished epoch, or within an epoch
        when the state was written there (``checkpoint_every``)."""
        if not self.resume or self.out_dir is None:
            return 0, 0
        d = ckpt.find_state_dir(self.out_dir)
        if d is None:
            warnings.warn(f"resume: {self.out_dir} has no complete last/ checkpoint; training starts from scratch",
                          SegattnWarning, stacklevel=3)
            return 0, 0
        from safetensors.torch import load_file

        tensors, meta = ckpt.read_state(d)
        if meta.get("format") != "napari-segattn/training-state-v1":
            raise TrainingError(f"{d}: not a napari-segattn training state (format {meta.get('format')!r})")
        within = meta.get("within_epoch")
        if within is not None:
            self._check_within(d, within, steps)
        try:
            self.model.load_state_dict(load_file(str(d / "model.safetensors"), device=str(self.device)))
        except RuntimeError as exc:
            raise TrainingError(f"cannot resume from {d}: its weights do not fit this model ({exc})") from None
        self.optimizer.load_state_dict(ckpt.unflatten_optimizer(tensors, meta["optimizer"]))
        if self.scheduler is not None and meta.get("scheduler") is not None:
            sd = dict(meta["scheduler"])
            if hasattr(self.scheduler, "milestones"):
                sd["milestones"] = self.scheduler.milestones
            self.scheduler.load_state_dict(sd)
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        for key, store in (("masks_train", self.mask_store), ("masks_val", self.val_mask_store)):
            arrays = _prefixed(tensors, key)
            if store is not None and arrays:
                store.load_state_dict(arrays)
        staged = _prefixed(tensors, "staged_train")
        if self.mask_store is not None and staged:
            self.mask_store.load_staged_state_dict(staged)
        self.best_score, self.best_epoch = meta.get("best_score"), meta.get("best_epoch")
        self.best_val_loss = meta.get("best_val_loss")
        self.base_lrs = meta.get("base_lrs", self.base_lrs)
        self.last_checkpoint = d
        if (self.out_dir / "model.safetensors").exists():
            self.model_path = self.out_dir / "model.safetensors"
        if within is None:
            return int(meta["epoch"]) + 1, 0
        self._resume_rng = {"meta": meta["rng"], "tensors": _prefixed(tensors, "rng", numpy=False)}
        return int(within["epoch"]), int(within["steps_done"])

    def _check_within(self, d: Path, within: dict[str, Any], steps: int) -> None:
        """A state written within an epoch continues that epoch's order only with the same batches."""
        bs = self.config.batch_size
        if within["batch_size"] != bs or within["steps"] != steps:
            raise TrainingError(
                f"cannot resume from {d}: it was written at step {within['steps_done']} of epoch {within['epoch'] + 1} "
                f"with batch size {within['batch_size']} and {within['steps']} steps per epoch, this run has batch "
                f"size {bs} and {steps} steps; resume with the same data and --batch-size {within['batch_size']}"
            )

    def _emit(self, event: Event) -> Event:
        self.history.append(event)
        for listener in self.listeners:
            listener(event)
        return event


# -- helpers ------------------------------------------------------------------------------
class _SkipSampler(Sampler):
    """The wrapped sampler's order without its first ``skip`` indices (a resume within an epoch)."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner
        self.skip = 0

    def __iter__(self):
        return itertools.islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def _errors_touching(mask: np.ndarray, truth: np.ndarray, painted: np.ndarray, margin: int = 0) -> np.ndarray:
    """Per sample, the error components of ``mask`` (8-connected) that touch or border the
    ``painted`` pixels, what a correction there leaves for the model to fix, plus every pixel
    within ``margin`` px of the paint, right or wrong, so that the loss also covers what it must keep."""
    from scipy import ndimage

    out = np.zeros(mask.shape, bool)
    for b in range(len(mask)):
        if not painted[b].any():
            continue
        lab, _ = ndimage.label(mask[b] != truth[b], structure=np.ones((3, 3)))
        near = ndimage.binary_dilation(painted[b], iterations=2)
        touched = np.unique(lab[near & (lab > 0)])
        out[b] = np.isin(lab, touched) & (lab > 0)
        if margin:
            out[b] |= ndimage.distance_transform_edt(~painted[b]) <= margin
    return out


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str, numpy: bool = True) -> dict[str, Any]:
    return {k.split("/", 1)[1]: (v.numpy() if numpy else v) for k, v in tensors.items() if k.startswith(prefix + "/")}


def _rng_state(device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch, CUDA, numpy and ``random`` states (tensors + JSON), so dropout and any other draw
    continue after a resume within an epoch as they would have."""
    tensors = {"rng/torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng/cuda"] = torch.cuda.get_rng_state(device)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    meta = {"numpy": [name, int(pos), int(has_gauss), float(gauss)], "random": ckpt.jsonable(random.getstate())}
    return tensors, meta


def _set_rng_state(state: dict[str, Any] | None, device: torch.device) -> None:
    if state is None:
        return
    t, meta = state["tensors"], state["meta"]
    torch.set_rng_state(t["torch"])
    if "cuda" in t and device.type == "cuda":
        torch.cuda.set_rng_state(t["cuda"], device)
    name, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((name, t["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["random"]
    random.setstate((version, tuple(internal), gauss_next))


def _describe_data(train_ds, val_ds) -> dict[str, Any]:
    """What a checkpoint was trained on, so a loader can say it before anything runs."""
    names = [str(n) for n in (getattr(train_ds, "names", []) or [])]
    return {
        "train_samples": len(train_ds),
        "val_samples": len(val_ds) if val_ds is not None else 0,
        "examples": names[:3],
        "train_files": _source_files(train_ds),
        "val_files": _source_files(val_ds),
        "channels": getattr(train_ds, "num_channels", None),
        "classes": getattr(train_ds, "num_classes", None),
        "binarize": getattr(train_ds, "binarize", None),  # labels > T were foreground (None: not binarised)
    }


#: a sample name's tile / slice / list-item suffixes: ``a.png[tile 3]``, ``t1.nii.gz[z=40]``
_SAMPLE_SUFFIX = re.compile(r"(\[[^\[\]]*\])+$")


def _source_files(ds) -> list[str]:
    """The distinct files (or napari layers) behind a data set's samples, in order, as plain
    strings: a sample name without its tile/slice suffix."""
    out: dict[str, None] = {}
    for n in (getattr(ds, "names", None) or []) if ds is not None else []:
        out.setdefault(_SAMPLE_SUFFIX.sub("", str(n)) or str(n), None)
    return list(out)


def _spec(name: str | None):
    if not name:
        return None
    from ..models.registry import get_spec

    try:
        return get_spec(name)
    except KeyError:
        return None


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if amp == "bf16" and device.type == "cpu":
        # opt-in only: pays off on CPUs with native bf16 (AMX / AVX512-BF16), emulated and
        # slower elsewhere, and it changes numerics (docs/performance.md)
        return torch.bfloat16
    if device.type != "cuda" or amp == "off":
        return None  # "auto" and fp16 autocast only on CUDA
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _image_metrics(pred: np.ndarray, gt: np.ndarray, out_channels: int) -> dict[str, Any]:
    """Flat per-image metrics: binary as they are; multi-class the class mean plus per-class Dice/IoU."""
    from ..metrics import binary_metrics, segmentation_metrics

    if out_channels == 1:
        return binary_metrics(pred > 0, gt > 0)
    res = segmentation_metrics(pred, gt, out_channels)
    out = dict(res["mean"])
    for k, v in res.items():
        if k.startswith("class_"):
            out[f"dice_{k}"] = v["dice"]
            out[f"iou_{k}"] = v["iou"]
    return out


def _mean_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over images of every numeric metric (per image, then averaged, as FANet)."""
    out: dict[str, Any] = {}
    # NaN marks a metric undefined on an image (e.g. precision with no prediction); the mean
    # skips it and is NaN only when it is undefined on every image.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k, v in (rows[0].items() if rows else ()):
            vals = np.asarray([r.get(k) for r in rows], dtype=np.float64) if _numeric(v) else None
            if vals is not None:
                m = np.nanmean(vals, axis=0)
                out[k] = float(m) if m.ndim == 0 else m.tolist()
    return out


def _numeric(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, float, np.floating, np.integer)):
        return True
    return isinstance(v, (list, tuple, np.ndarray)) and np.asarray(v).dtype.kind in "fiu"


def _gather_staged(store: MaskStore | None, device: torch.device) -> None:
    """All ranks exchange their staged masks so each holds every global sample index."""
    import torch.distributed as dist

    if store is None:
        return
    flat: list[int] = []
    for i, ((h, w), runs) in store.staged_codes().items():
        flat += [i, h, w, len(runs), *runs.tolist()]
    # NCCL only moves CUDA tensors; gloo takes CPU ones.
    dev = device if dist.get_backend() == "nccl" else torch.device("cpu")
    local = torch.tensor(flat, dtype=torch.int64, device=dev)
    size = torch.tensor([local.numel()], dtype=torch.int64, device=dev)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    m = int(max(s.item() for s in sizes))
    padded = torch.zeros(m, dtype=torch.int64, device=dev)
    padded[: local.numel()] = local
    bufs = [torch.zeros(m, dtype=torch.int64, device=dev) for _ in sizes]
    dist.all_gather(bufs, padded)
    codes = {}
    for buf, s in zip(bufs, sizes):
        a = buf[: int(s.item())].cpu().numpy()
        k = 0
        while k < len(a):
            i, h, w, n = (int(v) for v in a[k : k + 4])
            codes[i] = ((h, w), a[k + 4 : k + 4 + n].copy())
            k += 4 + n
    store.stage_codes(codes)
