"""Predict & refine widget: predict a slice or volume; step FANet's feedback loop, with the
user's painted corrections fed back, every iteration kept on a scrub-able iteration axis."""

from __future__ import annotations

import dataclasses
import threading

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from .inputs import InputError, attach_ground_truth, gather_input, scope_of, scope_picker
from .docking import dock_as_tab
from .layers import (TurnQueue, label_colormap, label_stack_axis, layer_kind, off_its_slice, on_its_slice, place_slice,
                     prepare_layers, slice_result_geometry, upsert_layer, wrapped_label)
from .plot import LivePlot
from . import temp_stores
from .state import get_state
from .workers import ProgressLine, explain_exception, run_in_worker

__all__ = ["PredictRefineWidget"]

INIT_CHOICES = ["otsu", "empty", "full"]
REFINE_DESC = "FANet refinement"

#: what a refinement session was started from; a change of any of these starts a fresh one
SESSION_PARTS = ("image layer(s)", "image data", "slice", "scope", "model", "device", "ground truth", "initial mask")

REFINEMENT_LAYER = "refinement (0 = initial mask)"
PAINTED_LAYER = "painted (fixed)"
#: each refined slice of a volume, kept when the refinement moves on to another slice
REFINED_SLICES_LAYER = "refined slices"
# distinct colours: the model's refinement green, the feedback you paint orange, fixed paint cyan/magenta
REFINEMENT_COLORS = {1: (0.2, 0.9, 0.3, 1.0)}
FEEDBACK_COLORS = {1: (1.0, 0.55, 0.0, 1.0)}
PAINTED_COLORS = {1: (0.0, 1.0, 1.0, 1.0), 2: (1.0, 0.0, 1.0, 1.0)}  # painted foreground / background
# additive inferno with gamma 2: a background at p ~ 0.1 stays near black instead of washing the image purple
PROBABILITY_DISPLAY = dict(colormap="inferno", blending="additive", opacity=0.5, contrast_limits=(0.0, 1.0), gamma=2.0)
# the iterations as green outlines over the filled orange feedback you paint: both stay visible
REFINEMENT_DISPLAY = dict(opacity=0.9, contour=2)
FEEDBACK_DISPLAY = dict(opacity=0.4)
INSTANCES_LAYER = "instances"


#: masks up to this many pixels are labelled on the GUI thread, larger ones in a worker
INSTANCES_SYNC_PIXELS = 1 << 19


def _label_instances(mask, split: bool):
    from ..inference import instance_labels

    return instance_labels(mask, split=split)


def _is_binary(model) -> bool:
    from ..inference.traits import model_traits

    return model_traits(model).binary


def _refine_job(build, max_iters, tol, cancel):
    """Worker: build the refiner (Otsu, normalisation: seconds on a big image) off the GUI
    thread when a fresh session starts, then step it."""
    from ..inference import FANetRefiner

    refiner = build if isinstance(build, FANetRefiner) else FANetRefiner(**build)
    if not isinstance(build, FANetRefiner):
        yield ("refiner", refiner)
    return (yield from refiner.iter_run(max_iters, tol, cancel))


def _slice_to_keep(ref, inp) -> int | None:
    """The slice index whose refinement is worth keeping (one slice of a volume, refined or
    painted), else None."""
    if ref is None or inp is None or inp.slice_index is None or not (ref.history or ref.edit_mask.any()):
        return None
    return inp.slice_index


class PredictRefineWidget(Container):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self._turns = TurnQueue()  # a job's result updates, one per event-loop turn
        self.scope = scope_picker()
        self.batch_size = SpinBox(label="batch size", value=16, min=1, max=1024)
        # dask / zarr / multiscale layers: predicted window by window on this pyramid level
        self.level = SpinBox(label="level (multiscale)", value=0, min=0, max=16)
        self.predict_button = PushButton(text="Predict")
        self.threshold = FloatSpinBox(label="threshold", value=0.5, min=0.01, max=0.99, step=0.05,
                                      tooltip="foreground where probability > threshold (0.5 as released); with "
                                              "classes, a pixel takes its best class k other than background where "
                                              "p_k / (p_k + p_background) > threshold (0.5 = argmax). A change "
                                              "re-thresholds the last map at once and is used by the next Predict/Step")
        self.instances = CheckBox(label="instance labels", value=False,
                                  tooltip="one id per connected object of the shown mask, on the 'instances' layer")
        self.split_touching = CheckBox(label="split touching objects", value=False,
                                       tooltip="watershed on the distance transform: touching round objects "
                                               "(nuclei) get one id each")
        self.objects = wrapped_label(value="")
        self.init = ComboBox(label="initial mask", choices=INIT_CHOICES, value="otsu")
        self.max_iters = SpinBox(label="max iterations", value=10, min=1, max=100)
        self.tol = FloatSpinBox(label="stop when changed <", value=0.0, min=0.0, max=1.0, step=0.001,
                                tooltip="Run to convergence stops once a Step changes at most this fraction of "
                                        "pixels, or when the mask alternates between two masks (more Steps would "
                                        "only flip the same pixels back)")
        self.step_button = PushButton(text="Step")
        self.run_button = PushButton(text="Run to convergence")
        self.reset_button = PushButton(text="Reset")
        self.cancel_button = PushButton(text="Cancel")
        self.show_probs = CheckBox(label="show probabilities", value=True)
        self.keep_painted = CheckBox(label="Keep painted pixels", value=True,
                                     tooltip="pixels you paint on the feedback layer keep their value in every later "
                                             "iteration (shown on the 'painted (fixed)' layer); off: the model may "
                                             "overwrite them")
        self.focus = SpinBox(label="only near my edit (px)", value=0, min=0, max=4096,
                             tooltip="after you paint, the next Step changes only the box around what you "
                                     "painted, widened by this many pixels; the rest of the mask stays as it is "
                                     "(FocalClick's local refinement). 0: the whole image")
        self.merge = CheckBox(label="only changes touching my edit", value=False,
                              tooltip="after you paint, the next Step keeps only the changes connected to what "
                                      "you painted (FocalClick's progressive merge); changes elsewhere are dropped")
        # opt-in: 2-4x faster on CPUs with AMX / AVX512-BF16 (and on GPUs), slower on other CPUs,
        # probabilities change by up to a few 1e-2 (docs/performance.md); off = exact float32 on CPU
        self.bf16 = CheckBox(label="bfloat16", value=False,
                             tooltip="bfloat16 autocast: 2-4x faster on CPUs with AMX/AVX512-BF16 and on GPUs, "
                                     "slower on older CPUs; probabilities change by up to a few 1e-2")
        self.status = wrapped_label(value="")
        self.extend([self.scope, self.batch_size, self.level, self.threshold, self.predict_button, self.instances,
                     self.split_touching, self.objects, self.init, self.max_iters, self.tol,
                     self.step_button, self.run_button, self.reset_button, self.cancel_button, self.show_probs,
                     self.keep_painted, self.focus, self.merge, self.bf16, self.status])
        self.plot = LivePlot("Dice per iteration", x_label="iteration", y_label="Dice", y_range=(0.0, 1.0))
        self.native.layout().addWidget(self.plot)
        self._cancel = threading.Event()
        self._worker = None
        self._pred_input = None  # ModelInput of last_prediction
        self._shown = None  # "prediction" or "refinement": which mask was drawn last
        self.last_prediction = None
        self.last_instances = None
        self._instances_token = 0  # bumped per labelling: a worker's result for an older mask is dropped
        self.predict_button.changed.connect(self.predict)
        self.threshold.changed.connect(self._threshold_changed)
        self.instances.changed.connect(self._instances_changed)
        self.split_touching.changed.connect(self._instances_changed)
        self.step_button.changed.connect(lambda *_: self.refine(max_iters=1, tol=None))
        self.run_button.changed.connect(lambda *_: self.refine(max_iters=int(self.max_iters.value), tol=float(self.tol.value)))
        self.reset_button.changed.connect(self.reset)
        self.bf16.changed.connect(self._precision_changed)
        self.keep_painted.changed.connect(self._keep_painted_changed)
        self.focus.changed.connect(self._focus_changed)
        self.merge.changed.connect(self._focus_changed)
        self.cancel_button.changed.connect(lambda *_: self._cancel.set())
        self.state.model_changed.connect(self._model_changed)
        self.state.refiner_replaced.connect(self._keep_refined_slice)
        self.state.busy_changed.connect(self._busy_changed)
        for ev in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            ev.connect(self._refresh_inits)
        self._refresh_inits()
        self._enable_for(self.state.loaded)
        if self.state.refiner is not None:  # docked again: the refinement in progress goes on here
            self._shown = "refinement"
            self._show_history()
        self._bind_keys()

    #: keyboard shortcuts on the viewer (napari's own single letters stay untouched)
    KEYS = {"Alt-S": "step", "Alt-R": "run", "Alt-X": "reset"}

    def _bind_keys(self):
        actions = {"step": self.step_button, "run": self.run_button, "reset": self.reset_button}
        for key, action in self.KEYS.items():
            button = actions[action]

            def press(viewer, button=button):
                if button.enabled:
                    button.clicked.emit()

            try:
                self.viewer.bind_key(key, press, overwrite=True)
            except Exception:  # pragma: no cover - a napari without bind_key on the viewer
                pass
        self.step_button.tooltip = "Step (Alt-S)"
        self.run_button.tooltip = "Run to convergence (Alt-R)"
        self.reset_button.tooltip = "Reset (Alt-X)"

    # -- helpers ---------------------------------------------------------------------------
    def _refresh_inits(self, *_):
        keep = self.init.value
        # the user's labels layers, and the refined slices (to go on from a slice refined before)
        labels = [l.name for l in self.viewer.layers if layer_kind(l) == "labels"
                  and (not l.metadata.get("segattn") or l.name == REFINED_SLICES_LAYER)]
        self.init.choices = INIT_CHOICES + [f"layer: {n}" for n in labels]
        if keep in self.init.choices:
            self.init.value = keep

    def reset_choices(self, *_):
        """Called by napari on layer events once docked. Not magicgui's default, which puts back
        the construction-time choices and so forgets the user's (see ModelWidget.reset_choices)."""
        self._refresh_inits()

    def _model_changed(self, loaded):
        self.state.set_refiner(None)
        self._enable_for(loaded)

    def _enable_for(self, loaded):
        """The refinement controls for a FANet only, and the status line's first hint."""
        takes_mask = bool(loaded and loaded.takes_mask)
        for w in (self.init, self.max_iters, self.tol, self.step_button, self.run_button, self.reset_button):
            w.enabled = takes_mask
        self.status.value = "" if loaded is None else (
            "FANet: choose the initial mask, then Step / Run" if takes_mask else f"{loaded.name}: Predict")

    def _amp(self) -> bool | str:
        return "bf16" if self.bf16.value else True

    def _precision_changed(self, *_):
        # the next step of a running refinement uses the new precision; its history is kept
        if self.state.refiner is not None:
            self.state.refiner.amp = self._amp()
            self.status.value = (f"{'bfloat16' if self.bf16.value else 'float32'} from the next step on; the "
                                 f"{len(self.state.refiner.history)} iteration(s) so far are kept (Reset to redo them)")

    def _keep_painted_changed(self, *_):
        ref = self.state.refiner
        if ref is not None:
            ref.pin_edits = bool(self.keep_painted.value)
            self.status.value = ("painted pixels are kept from the next step on" if ref.pin_edits
                                 else "the next step may overwrite painted pixels")
        self._show_painted()

    def _focus_value(self) -> int | None:
        return int(self.focus.value) or None

    def _focus_changed(self, *_):
        """Applies to the running refinement from the next Step (no fresh start needed)."""
        if self.state.refiner is not None:
            self.state.refiner.focus = self._focus_value()
            self.state.refiner.progressive_merge = bool(self.merge.value)

    def _busy_changed(self, busy: bool):
        for w in (self.predict_button, self.step_button, self.run_button, self.reset_button):
            w.enabled = not busy and (w is self.predict_button or bool(self.state.loaded and self.state.loaded.takes_mask))
        # a running job owns the maps it is writing: re-threshold or relabel once it is done
        for w in (self.threshold, self.instances, self.split_touching):
            w.enabled = not busy

    # -- threshold and instances ---------------------------------------------------------------
    def _threshold_changed(self, *_):
        """Re-threshold the last probability map without running the model; Predict/Step use it next."""
        from ..inference import InputError as CoreInputError
        from ..inference.checks import check_threshold

        try:
            t = check_threshold(self.threshold.value)
        except CoreInputError as exc:
            show_error(str(exc))
            return
        notes = [self._rethreshold_prediction(t)]
        ref = self.state.refiner
        if ref is not None:
            pending = ref.pending_edit
            if ref.set_threshold(t):
                self._show_history()
                notes.append(f"last iteration re-thresholded at {t:.2f} (fed back at the next Step)")
            elif pending:
                notes.append(f"threshold {t:.2f} applies from the next Step; your painted correction is fed back first")
        if self._shown is not None:
            self._update_instances()
        notes = [n for n in notes if n]
        self.status.value = "; ".join(notes) or f"threshold {t:.2f} is used by the next Predict / Step"

    def _rethreshold_prediction(self, t: float) -> str:
        """Redraw the last binary prediction at threshold ``t``; what was done, '' when nothing."""
        pred, inp = self.last_prediction, self._pred_input
        if pred is None or inp is None:
            return ""
        from ..inference.masks import class_labels

        if not hasattr(pred, "binary"):  # a lazy (zarr) prediction: re-thresholded lazily, block by block
            import dask.array as da

            probs = da.from_zarr(pred.open()["probabilities"])
            if probs.shape[0] == 1:
                labels = (probs[0] > t).astype(np.uint8)
            else:  # the classes of a block together: one chunk along the class axis
                labels = da.map_blocks(class_labels, probs.rechunk({0: -1}), t, drop_axis=0, dtype=np.uint8)
            upsert_layer(self.viewer, "labels", labels, "prediction", opacity=0.5, metadata={"zarr_store": str(pred.path)},
                         **self._spatial_geometry(inp))
            return f"prediction shown at threshold {t:.2f} (read block by block from {pred.path})"
        labels = pred.foreground > t if pred.binary else class_labels(pred.probabilities, t)
        self.last_prediction = dataclasses.replace(pred, labels=labels, threshold=t)
        self._draw_prediction(inp, self.last_prediction)
        what = "foreground" if pred.binary else "in a class other than background"
        return (f"prediction re-thresholded at {t:.2f} without running the model: "
                f"{int(np.count_nonzero(labels)):,} px {what}")

    def _shown_mask(self):
        """(mask, layer geometry, slice input) of the mask drawn last, or None."""
        ref, ctx = self.state.refiner, self.state.refiner_input
        if self._shown == "refinement" and ref is not None and ctx is not None:
            if ctx.slice_index is not None:  # a slice of a volume: placed into the volume, as Predict's
                return ref.current_mask, {"scale": ctx.scale, "translate": ctx.translate}, ctx
            return ref.current_mask, self._spatial_geometry(ctx), None
        pred, inp = self.last_prediction, self._pred_input
        if self._shown == "prediction" and hasattr(pred, "binary") and inp is not None:
            return np.asarray(pred.labels) > 0, {"scale": inp.scale, "translate": inp.translate}, inp
        return None

    def _instances_changed(self, *_):
        if not self.instances.value:
            self._instances_token += 1  # a running labelling is dropped
            if INSTANCES_LAYER in self.viewer.layers and self.viewer.layers[INSTANCES_LAYER].metadata.get("segattn"):
                self.viewer.layers[INSTANCES_LAYER].visible = False
            self.objects.value = ""
            return
        if self._update_instances() is None:
            msg = ("instance labels need a mask in memory: Predict (a lazy zarr prediction is not labelled) or Step first"
                   if self.last_prediction is not None else "instance labels: Predict or Step first")
            show_info(msg)
            self.objects.value = msg

    def _update_instances(self):
        """One id per connected object of the shown mask on the 'instances' layer; count below.

        Masks up to ``INSTANCES_SYNC_PIXELS`` are labelled here (<= ~100 ms for 512², watershed
        split included); larger ones in a worker (the MNI volume, 91 slices, took 1.3 s, and 25 s
        with the split, all of it a frozen viewer). Returns the Instances, ``"pending"`` while a
        worker labels, or None when there is no mask to label."""
        if not self.instances.value:
            return None
        shown = self._shown_mask()
        if shown is None:
            return None
        mask, geom, inp = shown
        split = bool(self.split_touching.value)
        self._instances_token = token = self._instances_token + 1
        if mask.size <= INSTANCES_SYNC_PIXELS:
            return self._draw_instances(_label_instances(mask, split), geom, inp)
        self.objects.value = f"labelling objects{' (watershed split)' if split else ''}..."

        def done(inst):
            if token == self._instances_token and self.instances.value:  # the shown mask is still this one
                self._draw_instances(inst, geom, inp)

        run_in_worker(_label_instances, mask, split, on_return=done, desc="instance labels",
                      on_error=lambda exc: setattr(self.objects, "value", f"instance labels failed: {exc}"))
        return "pending"

    def _draw_instances(self, inst, geom, inp):
        labels = inst.labels if inp is None else place_slice(inp.layer_shape, inp.slice_index, inst.labels)
        grid = inp.result_metadata if inp is not None else {}
        layer = upsert_layer(self.viewer, "labels", labels, INSTANCES_LAYER, opacity=0.6,
                             metadata={**grid, "count": inst.count, "mean_area": inst.mean_area}, **geom)
        layer.visible = True
        self.last_instances = inst
        self.objects.value = inst.summary()
        return inst

    def _input(self, lazy: bool = False):
        """The chosen image(s), without ground truth: Predict never needs it."""
        if self.state.busy:
            raise InputError("another job is running; wait for it or cancel it")
        if self.state.loaded is None:
            raise InputError("load or build a model in the Model widget first")
        imgs, _ = self.state.input_layers(self.viewer)
        return gather_input(self.viewer, imgs, None, scope=scope_of(self.scope), lazy=lazy, level=int(self.level.value))

    @staticmethod
    def _core_layout(inp):
        # ModelInput.image is (C,H,W) or (Z,C,H,W)
        return {"channel_axis": 1 if inp.is_volume else 0, "slice_axis": 0 if inp.is_volume else None}

    def _spatial_geometry(self, inp, leading: int = 0):
        """scale/translate for a result of the input's spatial shape, plus ``leading`` new axes."""
        n = 3 if inp.is_volume else 2
        scale, translate = list(inp.scale[-n:]), list(inp.translate[-n:])
        return {"scale": [1.0] * leading + scale, "translate": [0.0] * leading + translate}

    # -- predict ---------------------------------------------------------------------------
    def predict(self, *_):
        from ..inference import iter_predict

        try:
            inp = self._input(lazy=True)
        except InputError as exc:
            show_error(str(exc))
            self.status.value = f"error: {exc}"  # not the last run's line
            return None
        loaded = self.state.loaded
        if inp.lazy:
            return self._predict_lazy(inp)
        mask = None
        if loaded.takes_mask:
            mask = self._initial_mask(inp)
        self._cancel.clear()
        self.state.busy = True
        self.status.value = "predicting..."
        n = inp.image.shape[0] if inp.is_volume else 1
        return self._start(
            iter_predict, loaded.model, inp.image, **self._core_layout(inp), batch_size=int(self.batch_size.value),
            device=self.state.device, amp=self._amp(), mask=mask, threshold=float(self.threshold.value),
            cancel=self._cancel.is_set, on_return=lambda pred: self._show_prediction(inp, pred), desc="predict", total=0,
            on_yield=self._progress_shower("predicting"), layers=self._prediction_layer_specs(inp),
        ) if n else None

    @staticmethod
    def _prediction_display(inp) -> dict:
        return {"opacity": 0.5, "scale": inp.scale, "translate": inp.translate, "metadata": inp.result_metadata}

    def _prediction_layer_specs(self, inp) -> list:
        specs = [("labels", "prediction", inp.layer_shape, np.uint8, self._prediction_display(inp))]
        if self.show_probs.value and self.state.loaded is not None and _is_binary(self.state.loaded.model):
            specs.append(("image", "probability", inp.layer_shape, np.float32,
                          {**PROBABILITY_DISPLAY, "scale": inp.scale, "translate": inp.translate}))
        return specs

    def _progress_shower(self, what: str):
        """A yield handler writing count, elapsed time and ETA to the status line."""
        line = ProgressLine(what)

        def show(ev):
            text = line(ev)
            if text:
                self.status.value = text
        return show

    def _predict_lazy(self, inp):
        """A dask / zarr / multiscale layer: windows read one by one, the result written block by
        block into a zarr store in a temporary folder and shown lazily from there (removed with
        its layer: ``temp_stores``; at once if the job fails or is cancelled)."""
        import shutil
        import tempfile

        from ..inference.chunked import iter_predict_to_zarr

        loaded = self.state.loaded
        if loaded.takes_mask and self.init.value not in INIT_CHOICES:
            show_error("a lazy (dask/zarr) image takes the otsu, empty or full initial mask")
            return None
        folder = tempfile.mkdtemp(prefix="segattn-")
        out = folder + "/prediction.zarr"
        self._cancel.clear()
        self.state.busy = True
        self.status.value = "predicting window by window..."
        return self._start(
            iter_predict_to_zarr, loaded.model, inp.image, out, **self._core_layout(inp),
            batch_size=int(self.batch_size.value), device=self.state.device, amp=self._amp(),
            mask=self.init.value if loaded.takes_mask else None, threshold=float(self.threshold.value),
            cancel=self._cancel.is_set, on_return=lambda res: self._show_lazy_prediction(inp, res, folder),
            on_error=lambda _exc: shutil.rmtree(folder, ignore_errors=True), desc="predict",
            on_yield=self._progress_shower("predicting window by window"))

    def _show_lazy_prediction(self, inp, res, folder):
        import dask.array as da

        g = res.open()
        geom = self._spatial_geometry(inp)  # the chosen level's grid (inp.scale includes its downsampling)
        meta = {"zarr_store": str(res.path)}
        upsert_layer(self.viewer, "labels", da.from_zarr(g["labels"]), "prediction", opacity=0.5, metadata=meta,
                     **geom)
        if self.show_probs.value and g["probabilities"].shape[0] == 1:
            upsert_layer(self.viewer, "image", da.from_zarr(g["probabilities"])[0], "probability",
                         **PROBABILITY_DISPLAY, metadata=meta, **geom)
        temp_stores.track(self.viewer, res.path, folder)
        temp_stores.release_unused()  # the store of the prediction this one replaced
        self.status.value = (f"predicted level {inp.level} in {res.seconds:.2f} s ({res.windows} windows); "
                             f"result in {res.path} (temporary: removed with the layer; File > Save Selected "
                             "Layers keeps it)")
        self.last_prediction, self._pred_input, self._shown = res, inp, None
        if self.instances.value:
            self.objects.value = "instance labels need a mask in memory (not a lazy zarr prediction)"
        return res

    def _start(self, func, *args, on_return=None, desc="working", total=0, on_yield=None, layers=(), **kwargs):
        """Run ``func`` in a worker; ``layers``: specs of the result layers to create meanwhile
        (``layers.prepare_layers``), dropped again if the job ends without filling them. After an
        error or a cancel the status line says so (it would otherwise keep 'predicting: 16/94')."""
        discard = prepare_layers(self.viewer, layers)
        failure: list[BaseException] = []
        own_error = kwargs.pop("on_error", None)

        def failed(exc):
            failure.append(exc)
            if own_error is not None:
                own_error(exc)

        def finish():  # after the job's queued updates (TurnQueue), so idle means all is shown
            def end():
                discard()
                self.state.busy = False
                self._worker = None
                if failure:
                    self.status.value = self._ended_note(desc, failure[0], kwargs.get("cancel_note"))
            self._turns.add(end)

        self._worker = run_in_worker(func, *args, on_yield=on_yield, on_return=on_return, on_finish=finish,
                                     on_error=failed, desc=desc, total=total, **kwargs)
        return self._worker

    def _ended_note(self, desc: str, exc: BaseException, cancel_note: str | None) -> str:
        from ..inference import Cancelled

        if not isinstance(exc, Cancelled):
            return f"error: {desc} failed: {explain_exception(exc)}"
        refiner = self.state.refiner
        if desc == REFINE_DESC and refiner is not None and refiner.history:
            return (f"{desc} cancelled; the {len(refiner.history)} iteration(s) done are kept (Step or Run "
                    f"continues from iteration {len(refiner.history)})")
        return f"{desc} cancelled; {cancel_note or 'nothing was added'}"

    def _draw_prediction(self, inp, pred):
        name = "prediction"
        labels = pred.labels.astype(np.uint8)
        existing = self.viewer.layers[name].data if name in self.viewer.layers else None
        full = place_slice(inp.layer_shape, inp.slice_index, labels, existing if inp.slice_index is not None else None)
        upsert_layer(self.viewer, "labels", full, name, **self._prediction_display(inp))

    def _show_prediction(self, inp, pred):
        self._draw_prediction(inp, pred)
        geom = {"scale": inp.scale, "translate": inp.translate}
        note = ""
        if self.show_probs.value and not pred.binary:
            note = "; probabilities are shown for binary models only"
        if self.show_probs.value and pred.binary:
            old = self.viewer.layers["probability"].data if "probability" in self.viewer.layers else None
            # the other slices' probabilities stay, as the other slices' labels do in "prediction"
            prob = place_slice(inp.layer_shape, inp.slice_index, pred.foreground.astype(np.float32),
                               np.asarray(old) if old is not None and inp.slice_index is not None else None)
            upsert_layer(self.viewer, "image", prob, "probability", **PROBABILITY_DISPLAY, **geom)
        self.status.value = (f"predicted in {pred.seconds:.2f} s on {pred.device} "
                             f"({pred.info.get('precision', 'float32')}, threshold {pred.threshold or 0.5:.2f}){note}")
        self.last_prediction, self._pred_input, self._shown = pred, inp, "prediction"
        self._update_instances()
        return pred

    # -- refine ----------------------------------------------------------------------------
    def _initial_mask(self, inp):
        choice = self.init.value
        if choice in INIT_CHOICES:
            return choice
        layer = self.viewer.layers[choice.removeprefix("layer: ")]
        data = np.asarray(layer.data)
        if inp.slice_index is not None and data.ndim == 3:
            data = data[inp.slice_index]
        if data.shape != inp.image.shape[-2:] and not inp.is_volume:
            raise InputError(f"mask layer {layer.name!r} has shape {data.shape}, image slice is {inp.image.shape[-2:]}")
        return data > 0

    def _session_of(self, inp) -> dict:
        imgs, gt = self.state.input_layers(self.viewer)
        return dict(zip(SESSION_PARTS, (
            tuple(inp.names), tuple(id(l.data) for l in imgs), inp.slice_index, inp.is_volume, id(self.state.loaded),
            self.state.device, (gt.name, id(gt.data)) if gt is not None else None, self.init.value)))

    def _refiner_plan(self):
        """The refiner to step (the current one), or the keyword arguments of a fresh one when
        there is none or any input, the model or the device changed since it started."""
        inp = self._input()
        session = self._session_of(inp)
        ref = self.state.refiner
        if ref is not None and self.state.refiner_session == session:
            return ref, inp, session
        if ref is not None and self.state.refiner_session is not None:
            changed = [k for k in SESSION_PARTS if self.state.refiner_session.get(k) != session[k]]
            msg = f"{', '.join(changed)} changed since the last step: starting a fresh refinement"
            kept = _slice_to_keep(ref, self.state.refiner_input)  # kept by _keep_refined_slice on adoption
            if kept is not None:
                msg += f"; slice {kept}'s refined mask is kept in '{REFINED_SLICES_LAYER}'"
            show_info(msg)
            self._restart_note = msg
        _, gt_layer = self.state.input_layers(self.viewer)
        self._gt_note = ""
        try:
            attach_ground_truth(inp, gt_layer)
        except InputError as exc:  # metrics need it, refinement does not
            self._gt_note = f"no Dice: {exc}"
            show_info(self._gt_note)
        loaded = self.state.loaded
        build = dict(model=loaded.model, image=inp.image, init=self._initial_mask(inp), ground_truth=inp.ground_truth,
                     device=self.state.device, batch_size=int(self.batch_size.value), amp=self._amp(),
                     pin_edits=bool(self.keep_painted.value), threshold=float(self.threshold.value),
                     focus=self._focus_value(), progressive_merge=bool(self.merge.value), **self._core_layout(inp))
        return build, inp, session

    def _keep_refined_slice(self, ref, inp) -> None:
        """When a refinement of one slice of a volume is replaced or dropped (the user moved to
        another slice, changed the model...; ``SegAttnState.refiner_replaced``), its current mask,
        painted corrections included, goes into that slice of a volume-shaped layer, so
        slice-by-slice work adds up instead of being lost. Reset empties the refiner first, so
        a reset slice is not kept."""
        index = _slice_to_keep(ref, inp)
        if index is None:
            return
        existing = None
        if REFINED_SLICES_LAYER in self.viewer.layers:
            existing = np.asarray(self.viewer.layers[REFINED_SLICES_LAYER].data)
        full = place_slice(inp.layer_shape, index, ref.current_mask.astype(np.uint8), existing)
        upsert_layer(self.viewer, "labels", full, REFINED_SLICES_LAYER, opacity=0.5, scale=inp.scale,
                     translate=inp.translate, metadata=inp.result_metadata)

    def _adopt_refiner(self, refiner, inp, session):
        self.state.set_refiner(refiner, inp, session)
        if "probability" in self.viewer.layers:  # one probability overlay at a time
            self.viewer.layers["probability"].visible = False
        self.plot.clear()
        self._show_history(defer=True)

    def ensure_refiner(self):
        """The refiner for the current inputs, built here (blocking; the buttons build it in the worker)."""
        from ..inference import FANetRefiner

        plan, inp, session = self._refiner_plan()
        if isinstance(plan, FANetRefiner):
            return plan
        refiner = FANetRefiner(**plan)
        self._adopt_refiner(refiner, inp, session)
        return refiner

    def _feedback_layer_name(self) -> str:
        return "feedback mask (paint, then Step)"

    def refine(self, max_iters: int, tol):
        if self.state.busy:
            show_error("another job is running; wait for it or cancel it")
            return None
        from ..inference import FANetRefiner

        self._restart_note = ""
        try:
            plan, inp, session = self._refiner_plan()
        except (InputError, ValueError) as exc:
            show_error(str(exc))
            self.status.value = f"error: {exc}"
            return None
        if isinstance(plan, FANetRefiner):
            # A correction painted on the feedback layer since the last step becomes the next feedback.
            name = self._feedback_layer_name()
            if name in self.viewer.layers:
                painted = off_its_slice(inp, np.asarray(self.viewer.layers[name].data)) > 0
                if painted.shape == plan.current_mask.shape and not np.array_equal(painted, plan.current_mask):
                    plan.set_mask(painted)
                    self._show_painted()
                    show_info("your painted correction is fed back in the next step")
        self._cancel.clear()
        self.state.busy = True
        self.status.value = (self._restart_note + "; " if self._restart_note else "") + "refining..."

        def on_yield(item):
            if isinstance(item, tuple) and item[0] == "refiner":
                self._adopt_refiner(item[1], inp, session)
            else:
                self._show_history(defer=True)

        return self._start(_refine_job, plan, max_iters, tol, self._cancel.is_set, on_yield=on_yield,
                           desc=REFINE_DESC, cancel_note="the iterations done are kept", total=max_iters + (0 if isinstance(plan, FANetRefiner) else 1),
                           layers=self._refinement_layer_specs(inp))

    def _refinement_layer_specs(self, inp) -> list:
        """The layers ``_show_history`` draws (the probability stack only when shown)."""
        mask_shape = (inp.image.shape[0], *inp.spatial) if inp.is_volume else inp.spatial
        mask_shape = on_its_slice(inp, np.empty(mask_shape, bool)).shape
        shown = self._refinement_displays(inp)
        specs = [("labels", REFINEMENT_LAYER, (1, *mask_shape), np.uint8, shown["stack"]),
                 ("labels", self._feedback_layer_name(), mask_shape, np.uint8, shown["feedback"])]
        if self.show_probs.value:
            specs.append(("image", "refinement probability", (1, *mask_shape), np.float32, shown["probability"]))
        return specs

    def _refinement_displays(self, inp) -> dict:
        """Display settings of the refinement stack, its probabilities and the feedback layer
        (their data through ``on_its_slice``: a slice of a volume stays at its depth)."""
        stack_geom = slice_result_geometry(inp, leading=1)
        return {"stack": {**REFINEMENT_DISPLAY, "colormap": label_colormap(REFINEMENT_COLORS),
                          "metadata": {"iteration_axis": 0}, **stack_geom},
                "probability": {**PROBABILITY_DISPLAY, **stack_geom},
                "feedback": {**FEEDBACK_DISPLAY, "colormap": label_colormap(FEEDBACK_COLORS),
                             **slice_result_geometry(inp)}}

    def reset(self, *_):
        """Forget the refinement: the next Step starts from the initial mask of the inputs chosen then."""
        if self.state.refiner is not None:
            self.state.refiner.reset()
        self.state.set_refiner(None)
        self.plot.clear()
        self.status.value = "reset: the next Step starts a fresh refinement from the initial mask"

    def _show_painted(self):
        """The pixels the user painted, on their own layer: cyan = painted foreground, magenta = background."""
        refiner, inp = self.state.refiner, self.state.refiner_input
        if refiner is None or inp is None or not refiner.edit_mask.any():
            if PAINTED_LAYER in self.viewer.layers and self.viewer.layers[PAINTED_LAYER].metadata.get("segattn"):
                self.viewer.layers[PAINTED_LAYER].data = np.zeros_like(self.viewer.layers[PAINTED_LAYER].data)
            return
        edit = refiner.edit_mask
        shown = np.where(edit, np.where(refiner.painted_values, 1, 2), 0).astype(np.uint8)
        layer = upsert_layer(self.viewer, "labels", on_its_slice(inp, shown), PAINTED_LAYER, opacity=0.8,
                             colormap=label_colormap(PAINTED_COLORS), **slice_result_geometry(inp))
        layer.visible = bool(self.keep_painted.value)
        layer.editable = False

    def _show_history(self, defer: bool = False):
        """The refinement on its layers, plot and status; ``defer``: one part per event-loop turn
        (``TurnQueue``), as a Step's results arrive while the user works in the viewer."""
        parts = (self._show_stack, self._show_stack_probabilities, self._show_newest_iteration,
                 self._show_feedback, self._show_history_summary)
        if defer:
            self._turns.add(*parts)
        else:
            for part in parts:
                part()

    def _history_context(self):
        refiner, inp = self.state.refiner, self.state.refiner_input
        return (None, None) if refiner is None or inp is None else (refiner, inp)

    def _show_stack(self):
        refiner, inp = self._history_context()
        if refiner is None:
            return
        stack = np.stack([refiner.initial_mask] + [r.mask for r in refiner.history]).astype(np.uint8)
        upsert_layer(self.viewer, "labels", on_its_slice(inp, stack, 1), REFINEMENT_LAYER, **self._refinement_displays(inp)["stack"])

    def _show_stack_probabilities(self):
        refiner, inp = self._history_context()
        if refiner is None or not self.show_probs.value or not refiner.history:
            return
        probs = np.stack([np.zeros_like(refiner.history[0].probabilities)] + [r.probabilities for r in refiner.history])
        upsert_layer(self.viewer, "image", on_its_slice(inp, probs, 1), "refinement probability",
                     **self._refinement_displays(inp)["probability"])

    def _show_newest_iteration(self):
        """Name the leading axis and jump the dims slider to the newest iteration."""
        refiner, inp = self._history_context()
        if refiner is None or REFINEMENT_LAYER not in self.viewer.layers:
            return
        if self.viewer.dims.ndim == self.viewer.layers[REFINEMENT_LAYER].data.ndim:
            step = list(self.viewer.dims.current_step)
            step[0] = len(refiner.history)
            self.viewer.dims.current_step = tuple(step)
            label_stack_axis(self.viewer)

    def _show_feedback(self):
        refiner, inp = self._history_context()
        if refiner is None:
            return
        upsert_layer(self.viewer, "labels", on_its_slice(inp, refiner.current_mask.astype(np.uint8)),
                     self._feedback_layer_name(),
                     **self._refinement_displays(inp)["feedback"])
        self._show_painted()

    def _show_history_summary(self):
        """Instances, the Dice plot and the status line."""
        refiner, inp = self._history_context()
        if refiner is None:
            return
        self._shown = "refinement"
        self._update_instances()
        init = (refiner.initial_metrics or {}).get("dice")
        dice = [r.metrics.get("dice") for r in refiner.history if r.metrics]
        if dice:
            xs = (["init"] if init is not None else []) + [str(i + 1) for i in range(len(dice))]
            self.plot.set_series("Dice", ([init] if init is not None else []) + dice, x_labels=xs)
        last = refiner.history[-1] if refiner.history else None
        if last is None:
            self.status.value = "initial mask" + (f" (Dice {init:.4f})" if init is not None else "")
            return
        text = f"{len(refiner.history)} iteration(s); last changed {last.changed_fraction:.4%}"
        if last.metrics:
            text += f", Dice {last.metrics['dice']:.4f}"
        if last.edit is not None:
            text += "; " + self._edit_report(refiner, last)
        if last.repeats == "fixed point":
            text += "; converged: another Step gives the same mask"
        elif last.repeats == "2-cycle":
            back = "init" if last.index < 2 else str(last.index - 1)
            text += (f"; alternating: this is iteration {back}'s mask again, so each Step flips the same "
                     f"{last.changed_pixels:,} pixel(s) back")
        if getattr(self, "_gt_note", ""):
            text += f"; {self._gt_note}"
        if getattr(self, "_restart_note", ""):
            text = f"{self._restart_note}. {text}"
        self.status.value = text

    @staticmethod
    def _edit_report(refiner, res) -> str:
        """How the model answered the user's painting in iteration ``res``."""
        n_edit = int(res.edit.sum())
        if refiner.pin_edits:
            disagree = f"the model disagreed with {res.pinned:,} of your {n_edit:,} painted pixel(s) (kept as painted)"
        else:
            painted = refiner.painted_values
            n = int(np.count_nonzero((res.mask != painted) & res.edit))
            disagree = f"the model overwrote {n:,} of your {n_edit:,} painted pixel(s)"
        where = "" if res.focus is None else " (the step was limited to the box around your new paint)"
        if res.merged_with is not None:
            where += f"; {res.dropped:,} changed pixel(s) not touching your new paint were dropped"
        return f"{res.changed_outside_edit:,} pixel(s) changed outside your edit{where}; {disagree}"
