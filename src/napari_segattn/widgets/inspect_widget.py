"""Inspect widget: where the model fails (TP/FN/FP error map), where it looks (IG saliency),
and its own attention maps -- for the current slice or the whole volume, in workers."""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from napari.utils.notifications import show_error

from .inputs import InputError, gather_input, scope_of, scope_picker
from .docking import dock_as_tab
from .layers import (ERROR_LEGEND, label_stack_axis, on_its_slice, place_slice, prepare_layers, slice_result_geometry,
                     upsert_layer, wrapped_label)
from .settings import plugin_defaults
from .state import get_state
from .workers import JobProgress, relay_steps, run_in_worker

__all__ = ["InspectWidget", "error_colormap", "PREVIEW_STEPS", "PREVIEW_DOWNSCALE", "RUN_MODES"]

#: the preview: few IG steps on a downscaled image, seconds on a CPU
PREVIEW_STEPS = 8
PREVIEW_DOWNSCALE = 4
RUN_MODES = ("preview, then full map", "full map", "preview only")


def error_colormap():
    from napari.utils.colormaps import DirectLabelColormap

    from ..explain import ERROR_COLORS

    return DirectLabelColormap(color_dict=dict(ERROR_COLORS))


@dataclass(frozen=True)
class PreviewDone:
    """The preview maps, yielded so they are shown while the full map is computed."""

    maps: list


def _run_one(fn, img2d, z: int, n: int):
    """``fn(img2d)``; when it is a core generator, relay its step progress over all ``n`` slices."""
    result = fn(img2d)
    if not inspect.isgenerator(result):
        yield 1
        return result
    return (yield from relay_steps(result, z, n, f"slice {z + 1}/{n}" if n > 1 else ""))


def _slices_generator(fn, inp, cancel):
    """Run ``fn(image2d)`` on the current slice or every slice of a volume, yielding progress."""
    from ..inference import Cancelled

    if not inp.is_volume:
        return [(yield from _run_one(fn, inp.image, 0, 1))]
    out = []
    n = inp.image.shape[0]
    for z in range(n):
        if cancel():
            raise Cancelled("cancelled between slices")
        out.append((yield from _run_one(fn, inp.image[z], z, n)))
    return out


def _saliency_job(fn, inp, cancel, mode: str):
    """Preview (yielded as PreviewDone) and/or full map (returned) as ``mode`` says."""
    full = None
    if mode != "full map":
        yield PreviewDone((yield from _slices_generator(lambda im: fn(im, preview=True), inp, cancel)))
    if mode != "preview only":
        full = yield from _slices_generator(lambda im: fn(im, preview=False), inp, cancel)
    return full


ATTENTION_LAYER = "attention maps (axis 0 = stage)"


def _rate(value: float, undefined: str) -> str:
    """A rate as a percentage, or why it has none (an empty ground truth has no FN rate)."""
    return f"– ({undefined})" if not np.isfinite(value) else f"{value:.2%}"


class InspectWidget(Container):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.scope = scope_picker()
        self.error_button = PushButton(text="Error map (TP/FN/FP)")
        self.legend = wrapped_label(value=ERROR_LEGEND)
        self.counts = wrapped_label(value="")
        self.target_class = SpinBox(label="saliency class", value=1, min=0, max=63)
        self.method = ComboBox(label="IG accumulation", choices=["fast", "abs_windows", "per_window"], value="fast")
        defaults = plugin_defaults()
        self.n_steps = SpinBox(label="IG steps", value=defaults.ig_steps, min=2, max=500)
        self.baseline = ComboBox(label="IG baseline", choices=["zeros", "blur", "mean"], value=defaults.ig_baseline)
        self.run_mode = ComboBox(label="IG run", choices=list(RUN_MODES), value=RUN_MODES[0],
                                 tooltip=f"preview: {PREVIEW_STEPS} steps on a 1/{PREVIEW_DOWNSCALE} size image, "
                                         "seconds on a CPU")
        self.auto_steps = CheckBox(text="raise steps until the completeness gap is below", value=False)
        self.gap_tolerance = FloatSpinBox(label="gap tolerance (%)", value=5.0, min=0.1, max=50.0, step=0.5)
        self.saliency_button = PushButton(text="IG saliency")
        self.attention_button = PushButton(text="Attention maps")
        self.cancel_button = PushButton(text="Cancel")
        self.status = wrapped_label(value="")
        self.extend([self.scope, self.error_button, self.legend, self.counts, self.target_class, self.method,
                     self.n_steps, self.baseline, self.run_mode, self.auto_steps, self.gap_tolerance,
                     self.saliency_button, self.attention_button, self.cancel_button,
                     self.status])
        self._cancel = threading.Event()
        self.error_button.changed.connect(self.show_error_map)
        self.saliency_button.changed.connect(self.show_saliency)
        self.attention_button.changed.connect(self.show_attention)
        self.cancel_button.changed.connect(lambda *_: self._cancel.set())
        self.state.busy_changed.connect(self._busy_changed)
        # the stage slider says which stage it shows (attention maps stack the stages on axis 0)
        napari_viewer.dims.events.current_step.connect(lambda *_: label_stack_axis(self.viewer))
        self.last_error_map = None
        self.worker = None
        self.last_saliency = self.last_preview = None

    def _busy_changed(self, busy):
        for w in (self.error_button, self.saliency_button, self.attention_button):
            w.enabled = not busy

    def _input(self, need_gt=False):
        if self.state.busy:
            raise InputError("another job is running; wait for it or cancel it")
        if self.state.loaded is None:
            raise InputError("load or build a model in the Model widget first")
        imgs, gt = self.state.input_layers(self.viewer)
        if need_gt and gt is None:
            raise InputError("choose a ground-truth labels layer in the Model widget for an error map")
        # the ground truth is read (and its shape checked) only for the error map, which uses it
        return gather_input(self.viewer, imgs, gt if need_gt else None, scope=scope_of(self.scope))

    def _context(self, need_gt: bool = False):
        """(input, model, device, FANet feedback mask) for a job, or None after telling the user."""
        try:
            inp = self._input(need_gt=need_gt)
        except InputError as exc:
            show_error(str(exc))
            self.status.value = f"error: {exc}"
            return None
        return inp, self.state.loaded.model, self.state.device, self._feedback_mask(inp)

    def _refinement_of(self, inp):
        """The running refinement when it is of this very input (same layers, same slice), else
        None: a refinement of slice 45 says nothing about slice 10 of the same shape."""
        ref, ref_inp = self.state.refiner, self.state.refiner_input
        if ref is None or ref_inp is None or inp.is_volume or ref_inp.is_volume:
            return None
        if list(ref_inp.names) != list(inp.names) or ref_inp.slice_index != inp.slice_index:
            return None
        return ref if ref.current_mask.shape == inp.image.shape[-2:] else None

    def _feedback_mask(self, inp):
        """FANet is inspected at its current feedback mask when a refinement of this input runs."""
        ref = self._refinement_of(inp)
        return None if ref is None else ref.current_mask

    def _run(self, fn, inp, on_done, desc, job=_slices_generator, job_args=(), on_yield=None, layers=()):
        """``layers``: specs of result layers to create while the job runs (``layers.prepare_layers``)."""
        self._cancel.clear()
        n = inp.image.shape[0] if inp.is_volume else 1
        self.status.value = f"computing {desc} ({n} slice{'s' if n > 1 else ''})... Cancel stops between slices"
        self.state.busy = True

        def yielded(ev):
            if isinstance(ev, JobProgress):
                unit = ev.stage or "IG steps"  # the event names its unit ("IG steps"; once only)
                self.status.value = f"{desc}: {ev.done}/{ev.total} {unit}... Cancel stops within one step"
            if on_yield is not None:
                on_yield(ev)

        def errored(exc):
            from ..inference import Cancelled

            self.status.value = f"{desc} cancelled; no layer was added" if isinstance(exc, Cancelled) else f"error: {exc}"

        discard = prepare_layers(self.viewer, layers)

        def finished():
            discard()
            self.state.busy = False

        self.worker = run_in_worker(job, fn, inp, self._cancel.is_set, *job_args, on_return=on_done, desc=desc,
                                    total=n, on_yield=yielded, on_error=errored, on_finish=finished)
        return self.worker

    # -- error map ---------------------------------------------------------------------------
    def show_error_map(self, *_):
        from ..explain import error_map
        from ..inference import predict

        ctx = self._context(need_gt=True)
        if ctx is None:
            return None
        inp, model, dev, mask = ctx
        ref = self._refinement_of(inp)
        # the mask the user sees: the refinement's current mask when one of this input runs (one
        # more model pass would score another mask, at predict's default threshold)
        shown = None if ref is None else ref.current_mask.astype(np.uint8)
        what = (f"the refinement's current mask (iteration {len(ref.history)})" if ref is not None else
                f"{self.state.loaded.name}'s prediction (threshold 0.5)")

        def one(img2d):
            if shown is not None:
                return shown
            return predict(model, img2d, channel_axis=0, device=dev, mask=mask).labels

        def done(labels_list):
            pred = np.stack(labels_list) if inp.is_volume else labels_list[0]
            gt = inp.ground_truth
            num_classes = None if self.state.loaded.model.out_channels == 1 else self.state.loaded.model.out_channels
            em = error_map(pred if num_classes else pred > 0, gt if num_classes else gt > 0, num_classes=num_classes)
            self.last_error_map = em
            # multi-class: show the one-vs-rest map of the class chosen below (saliency class)
            ci = em.classes.index(int(self.target_class.value)) if int(self.target_class.value) in em.classes else 0
            labels = em.labels if em.binary else em.labels[ci]
            full = place_slice(inp.layer_shape, inp.slice_index, labels)
            upsert_layer(self.viewer, "labels", full, "error map", **error_display)
            c, r = em.counts[ci], em.rates[ci]
            self.status.value = f"error map of {what} against {self.state.gt_layer_name}"
            self.counts.value = (f"TP {c['TP']:,}  FN {c['FN']:,}  FP {c['FP']:,}  |  "
                                 f"FN rate {_rate(r['fn_rate'], 'no foreground in the ground truth')}  "
                                 f"FP rate {_rate(r['fp_rate'], 'no background in the ground truth')}")

        error_display = dict(colormap=error_colormap(), opacity=0.7, scale=inp.scale, translate=inp.translate,
                             metadata=inp.result_metadata)
        return self._run(one, inp, done, "error map",
                         layers=[("labels", "error map", inp.layer_shape, np.uint8, error_display)])

    # -- saliency ---------------------------------------------------------------------------
    def _saliency_kwargs(self, dev, mask, preview: bool) -> dict:
        """Core arguments: the preview's few steps and downscale, or the user's full settings."""
        kw = dict(method=self.method.value, baseline=self.baseline.value, channel_axis=0, device=dev, mask=mask,
                  cancel=self._cancel.is_set)
        if preview:
            return kw | dict(n_steps=PREVIEW_STEPS, downscale=PREVIEW_DOWNSCALE)
        kw["n_steps"] = int(self.n_steps.value)
        if self.auto_steps.value:
            kw["gap_tolerance"] = float(self.gap_tolerance.value) / 100.0
        return kw

    @staticmethod
    def _saliency_layer_name(k: int, describe: str, preview: bool) -> str:
        """The full map keeps its plain name, a preview says how it was made."""
        return f"IG saliency class {k}" + (f" ({describe})" if preview else "")

    def _show_saliency_maps(self, inp, k: int, maps) -> None:
        """One layer per kind of map (``_saliency_layer_name``)."""
        arr = np.stack([np.abs(m.map) for m in maps]) if inp.is_volume else np.abs(maps[0].map)
        full = place_slice(inp.layer_shape, inp.slice_index, arr.astype(np.float32))
        hi = float(np.percentile(arr, 99.5)) or 1.0
        name = self._saliency_layer_name(k, maps[0].describe(), maps[0].preview)
        upsert_layer(self.viewer, "image", full, name, colormap="inferno",
                     blending="additive", opacity=0.7, contrast_limits=(0.0, hi), scale=inp.scale,
                     translate=inp.translate, metadata={"completeness_gap": [m.relative_gap for m in maps],
                                                        "n_steps": [m.n_steps for m in maps]})
        gap = max(m.relative_gap for m in maps)
        warn = next((m.warning for m in maps if m.warning), None)
        self.status.value = (f"IG class {k} ({maps[0].describe()}): {len(maps)} map(s), completeness gap {gap:.2%} "
                             f"({maps[0].seconds:.1f} s/slice)" + (f". {warn}" if warn else ""))

    def show_saliency(self, *_):
        from ..explain import iter_saliency
        from ..explain.saliency import describe_run, preview_factor

        ctx = self._context()
        if ctx is None:
            return None
        inp, model, dev, mask = ctx
        k = int(self.target_class.value)

        def one(img2d, preview):
            return iter_saliency(model, img2d, k, **self._saliency_kwargs(dev, mask, preview))

        def shown(ev):
            if isinstance(ev, PreviewDone):
                self.last_preview = ev.maps
                self._show_saliency_maps(inp, k, ev.maps)

        def done(maps):
            if maps is not None:  # None: preview only
                self.last_saliency = maps
                self._show_saliency_maps(inp, k, maps)

        # the result layers, made while IG runs: the preview's (its name from the settings it runs
        # with; made anew if the run names it otherwise) and the full map's
        display = dict(colormap="inferno", blending="additive", opacity=0.7, scale=inp.scale, translate=inp.translate)
        mode, specs = self.run_mode.value, []
        if mode != "full map":
            factor = preview_factor(model, tuple(inp.image.shape[-2:]), PREVIEW_DOWNSCALE)
            name = self._saliency_layer_name(k, describe_run(PREVIEW_STEPS, factor), factor > 1)
            specs.append(("image", name, inp.layer_shape, np.float32, display))
        if mode != "preview only":
            specs.append(("image", self._saliency_layer_name(k, "", False), inp.layer_shape, np.float32, display))
        return self._run(one, inp, done, "IG saliency", job=_saliency_job, job_args=(mode,), on_yield=shown,
                         layers=specs)

    # -- attention maps ------------------------------------------------------------------------
    def show_attention(self, *_):
        from ..explain import attention_maps

        ctx = self._context()
        if ctx is None:
            return None
        inp, model, dev, mask = ctx

        def one(img2d):
            return attention_maps(model, img2d, mask, channel_axis=0, device=dev)

        def done(per_slice):
            if not per_slice or not per_slice[0]:
                note = ""
                if ATTENTION_LAYER in self.viewer.layers and self.viewer.layers[ATTENTION_LAYER].metadata.get("segattn"):
                    self.viewer.layers.remove(ATTENTION_LAYER)  # another model's maps, not this one's
                    note = " (the maps shown before were another model's and are removed)"
                self.status.value = f"{self.state.loaded.name} exposes no attention maps{note}"
                return
            names = [f"{a.kind}: {a.name}" for a in per_slice[0]]
            # one layer, stage on the first axis: the dims slider steps through the stages
            if inp.is_volume:
                arr = np.stack([np.stack([a.map for a in s]) for s in per_slice], axis=1)  # (S, Z, H, W)
            else:
                arr = np.stack([a.map for a in per_slice[0]])  # (S, H, W)
            upsert_layer(self.viewer, "image", on_its_slice(inp, arr.astype(np.float32), 1), ATTENTION_LAYER, colormap="viridis", blending="translucent", opacity=0.45,
                         metadata={"stages": names}, **slice_result_geometry(inp, leading=1))
            label_stack_axis(self.viewer)
            self.status.value = f"{len(names)} attention map(s): " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
            self.last_attention = names

        return self._run(one, inp, done, "attention maps")
