"""Train widget: the engine's Trainer on the chosen layers, in a worker, with a live plot,
cancel, and save. Settings default to the model's paper recipe; any field can be changed."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, PushButton,
                              SpinBox)
from napari.utils.notifications import show_error, show_info

from .inputs import InputError, gather_input
from .plot import LivePlot
from .docking import dock_as_tab
from .layers import wrapped_label
from .settings import plugin_defaults, remember_model
from .state import get_state
from .warmup import wait_for_warm_up
from .workers import run_in_worker

__all__ = ["TrainWidget"]


def _leave_a_core_for_the_viewer(run):
    """Train with one intra-op thread fewer than there are cores, so Qt's event loop is never
    starved (measured: with all cores busy the viewer stalled ~400 ms on 2 cores)."""
    import os

    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) - 1)))
    try:
        return (yield from run())
    finally:
        torch.set_num_threads(before)


def fresh_run_dir(path: Path) -> Path:
    """``path`` if it is new or empty, else the first free ``path-2``, ``path-3``, ...: a second
    run into the default folder would replace the first run's model and checkpoints."""
    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    stem = re.sub(r"-\d+$", "", path.name)  # after run-2 comes run-3, not run-2-2
    candidate, k = path, 2
    while not free(candidate):
        candidate, k = path.with_name(f"{stem}-{k}"), k + 1
    return candidate


class TrainWidget(Container):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.recipe = wrapped_label(label="recipe", value="(no model)")
        self.epochs = SpinBox(label="epochs", value=20, min=1, max=10000)
        self.batch_size = SpinBox(label="batch size", value=4, min=1, max=1024)
        self.lr = FloatSpinBox(label="learning rate (0 = recipe)", value=0.0, min=0.0, max=1.0, step=1e-4)
        self.lr.native.setDecimals(6)
        self.loss = ComboBox(label="loss", choices=["recipe", "dice", "bce_dice", "ce", "ce_dice", "feedback_ce"],
                             value="recipe")
        self.augment = ComboBox(label="augmentation", choices=["recipe", "none", "flip", "fanet"], value="recipe")
        self.tv_alpha = FloatSpinBox(label="TV smoothing alpha (0 = off)", value=0.0, min=0.0, max=1000.0, step=0.5)
        self.val_fraction = FloatSpinBox(label="validation fraction", value=0.2, min=0.0, max=0.9, step=0.05)
        self.tile = SpinBox(label="tile size for 2D (0 = whole)", value=256, min=0, max=8192, step=32)
        self.binarize = CheckBox(label="binary: labels > 0 are foreground", value=True)
        self.out_dir = FileEdit(label="run folder", mode="d", value=str(plugin_defaults().runs_path / "run"))
        self.train_button = PushButton(text="Train")
        self.cancel_button = PushButton(text="Cancel")
        self.save_path = FileEdit(label="save model as", mode="w", filter="*.safetensors")
        self.save_button = PushButton(text="Save model")
        self.status = wrapped_label(value="")
        self.extend([self.recipe, self.epochs, self.batch_size, self.lr, self.loss, self.augment, self.tv_alpha,
                     self.val_fraction, self.tile, self.binarize, self.out_dir, self.train_button, self.cancel_button,
                     self.save_path, self.save_button, self.status])
        self.plot = LivePlot("loss", x_label="training step", y_label="loss / val Dice")
        self.native.layout().addWidget(self.plot)
        self.trainer = None
        self.worker = None
        self._cancel_requested = False
        self.train_events: list = []
        self.train_button.changed.connect(self.train)
        self.cancel_button.changed.connect(self.cancel)
        self.save_button.changed.connect(self.save)
        self.state.model_changed.connect(self._model_changed)
        for w in (self.epochs, self.batch_size, self.lr, self.loss, self.augment, self.tv_alpha):
            w.changed.connect(self._describe_run)
        self._model_changed(self.state.loaded)

    def _model_changed(self, loaded):
        if loaded is None:
            self.recipe.value = "(no model)"
            self._fields_from = None
            return
        if loaded is not getattr(self, "_fields_from", None):
            # a new model: its recipe's batch size; the same model with new weights (our own run
            # finished): the user's settings stay
            from ..training import recipe_for

            self._fields_from = loaded
            self.batch_size.value = recipe_for(loaded.name).batch_size
            self.binarize.value = loaded.model.out_channels == 1
        self._describe_run()

    def _describe_run(self, *_):
        """The recipe line says what Train will run: the fields over the model's paper recipe."""
        if self.state.loaded is None:
            self.recipe.value = "(no model)"
            return
        from ..training import recipe_for

        loaded = self.state.loaded
        paper, c = recipe_for(loaded.name, int(getattr(loaded.model, "out_channels", 1))), self.build_config()
        aug = c.augment if isinstance(c.augment, str) else "recipe's"
        self.recipe.value = (f"will run {c.epochs} epoch(s) of {c.recipe}: {c.optimizer} lr {c.lr:g}, loss {c.loss}, "
                             f"batch {c.batch_size}, augmentation {aug}"
                             + (f", TV alpha {c.tv_alpha:g}" if c.tv_alpha else "")
                             + (f" (the paper trains {paper.epochs} epochs)" if paper.epochs != c.epochs else ""))

    # -- data + config -----------------------------------------------------------------------
    def build_config(self):
        from ..training import recipe_for

        loaded = self.state.loaded
        cfg = recipe_for(loaded.name, int(getattr(loaded.model, "out_channels", 1)))
        changes = {"epochs": int(self.epochs.value), "batch_size": int(self.batch_size.value)}
        if self.lr.value > 0:
            changes["lr"] = float(self.lr.value)
        if self.loss.value != "recipe":
            changes["loss"] = self.loss.value
        if self.augment.value != "recipe":
            changes["augment"] = self.augment.value
        changes["tv_alpha"] = float(self.tv_alpha.value) if self.tv_alpha.value > 0 else None
        if cfg.milestones is None and cfg.scheduler == "multistep":
            changes["milestones"] = None  # resolved from the new epoch count
        return dataclasses.replace(cfg, **changes)

    def build_datasets(self, inp, config):
        from ..data import Normalization, SegmentationDataset, tile_pairs
        from ..training import build_augmenter

        if inp.image.shape[-3] != self.state.loaded.model.in_channels:
            raise InputError(f"the model takes {self.state.loaded.model.in_channels} channel(s); the chosen layers give "
                             f"{inp.image.shape[-3]}")
        if inp.is_volume:
            images = [inp.image[z] for z in range(inp.image.shape[0])]
            labels = [inp.ground_truth[z] for z in range(inp.ground_truth.shape[0])]
        else:
            images, labels = tile_pairs(inp.image, inp.ground_truth, int(self.tile.value))
        norm = Normalization.from_dict(self.state.loaded.normalization) if self.state.loaded.normalization else \
            Normalization(mode="zscore", per="image")
        ds = SegmentationDataset.from_arrays(images, labels, channel_axis=0, binarize=bool(self.binarize.value),
                                             normalization=norm, augmenter=build_augmenter(config), seed=config.seed,
                                             name="+".join(inp.names))
        if len(ds) < 2 or self.val_fraction.value == 0:
            return ds, None, norm
        train_ds, val_ds = ds.split(float(self.val_fraction.value), seed=config.seed)
        return train_ds, val_ds, norm

    # -- actions -------------------------------------------------------------------------------
    def train(self, *_):
        if self.state.loaded is None:
            show_error("build or load a model in the Model widget first")
            return None
        if self.state.busy:
            show_error("another job is running; wait for it or cancel it")
            return None
        try:
            config = self.build_config()
            imgs, gt = self.state.input_layers(self.viewer)
            if gt is None:
                raise InputError("training needs a ground-truth labels layer (choose it in the Model widget)")
            inp = gather_input(self.viewer, imgs, gt, scope="volume")
        except Exception as exc:
            show_error(f"cannot train: {exc}")
            self.status.value = f"error: {exc}"
            return None
        run_dir = fresh_run_dir(Path(str(self.out_dir.value)))
        if str(run_dir) != str(self.out_dir.value):
            show_info(f"{self.out_dir.value} holds an earlier run; this one goes to {run_dir} (nothing is overwritten)")
            self.out_dir.value = str(run_dir)
        self.train_events = []
        self.trainer = None
        self._cancel_requested = False
        self.plot.clear()
        self._step_count = 0
        self.state.busy = True
        self.status.value = "preparing data..."
        self.worker = run_in_worker(self._train_job, inp, config, run_dir, on_yield=self._on_event,
                                    desc=f"training {self.state.loaded.name}", total=0, on_finish=self._finished,
                                    on_error=lambda exc: setattr(self.status, "value", f"error: {exc}"))
        return self.worker

    def _train_job(self, inp, config, run_dir: Path):
        """Runs in the worker thread: data set building is slow enough to stall the viewer."""
        from ..training import Trainer

        wait_for_warm_up()  # the first optimiser's imports (widgets/warmup.py)
        train_ds, val_ds, norm = self.build_datasets(inp, config)
        yield from ()  # a generator even if cancelled before the trainer exists
        loaded = self.state.loaded
        self.trainer = Trainer(loaded.model, train_ds, val_ds, config, device=self.state.device,
                               out_dir=run_dir, normalization=norm.to_dict(),
                               class_names=loaded.class_names)
        if self._cancel_requested:
            self.trainer.cancel()
        return (yield from _leave_a_core_for_the_viewer(self.trainer.run))

    def _on_event(self, ev):
        from ..training import Cancelled, Finished, Step, Validation

        self.train_events.append(ev)
        if isinstance(ev, Step):
            self._step_count += 1
            self.plot.add_point("loss", self._step_count, ev.loss)
            self.status.value = f"epoch {ev.epoch + 1} step {ev.step + 1}: loss {ev.loss:.4f}, ETA {ev.eta_s:.0f} s"
        elif isinstance(ev, Validation):
            self.plot.add_point("val loss", self._step_count, ev.loss)
            dice = ev.metrics.get("dice") if isinstance(ev.metrics, dict) else None
            if isinstance(dice, (int, float)):
                self.plot.add_point("val dice", self._step_count, float(dice))
        elif isinstance(ev, Finished):
            best = "none" if ev.best_epoch is None else ev.best_epoch + 1  # 1-based, as the log prints it
            self.status.value = f"finished: best epoch {best}, model at {ev.model_path}"
            if ev.model_path:
                remember_model(ev.model_path)  # offered in the Model widget's list
            show_info(self.status.value)
        elif isinstance(ev, Cancelled):
            self.status.value = f"cancelled at epoch {ev.epoch + 1}; last checkpoint: {ev.last_checkpoint}"

    def _finished(self):
        self.state.busy = False
        if self.trainer is not None:
            loaded = self.state.loaded
            loaded.model.eval()
            loaded.normalization = self.trainer.normalization
            self._describe_trained(loaded)
            self.state.model_changed.emit(loaded)  # the model's weights changed

    def _describe_trained(self, loaded) -> None:
        """What the Model widget shows for the weights now in memory (the last epoch's): not
        "the shipped demo model" or the loaded file's training any more."""
        from ..training import Cancelled, Checkpoint, Finished

        epochs = sum(1 for ev in self.train_events if isinstance(ev, Checkpoint) and ev.kind == "last")
        ended = next((ev for ev in reversed(self.train_events) if isinstance(ev, (Finished, Cancelled))), None)
        start = (loaded.info or {}).get("trained_from") or (
            "scratch" if loaded.source == "built" else Path(loaded.source).name)
        text = f"trained here from {start}: {epochs} epoch(s) into {self.trainer.out_dir}"
        if isinstance(ended, Finished) and ended.model_path:
            text += f" (best epoch {ended.best_epoch + 1 if ended.best_epoch is not None else '?'} saved as {ended.model_path.name})"
        elif isinstance(ended, Cancelled):
            text += " (cancelled)"
        loaded.source = text
        loaded.info = {k: v for k, v in (loaded.info or {}).items() if k != "training"}
        loaded.info["trained_from"] = start
        if epochs:
            loaded.info["training"] = {"recipe": self.trainer.config.recipe, "epochs_done": epochs}

    def cancel(self, *_):
        self._cancel_requested = True
        if self.trainer is not None:
            self.trainer.cancel()

    def save(self, *_, path=None):
        from ..models import save_model

        if self.state.loaded is None:
            show_error("no model to save")
            return None
        path = Path(str(path or self.save_path.value))
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        if path.exists():
            show_error(f"{path} exists; choose a new name (nothing was overwritten)")
            return None
        loaded = self.state.loaded
        save_model(loaded.model, path, normalization=loaded.normalization, class_names=loaded.class_names)
        show_info(f"saved {path}")
        self.status.value = f"saved {path}"
        return path
