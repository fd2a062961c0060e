"""Inspect widget: where the model fails (TP/FN/FP error map), where it looks (IG saliency),
and its own attention maps -- for the current slice or the whole volume, in workers."""

from __future__ import annotations

import threading

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox
from napari.utils.notifications import show_error

from .inputs import InputError, gather_input, scope_of, scope_picker
from .docking import dock_as_tab
from .layers import ERROR_LEGEND, place_slice, upsert_layer, wrapped_label
from .settings import plugin_defaults
from .state import get_state
from .workers import run_in_worker

__all__ = ["InspectWidget", "error_colormap"]


def error_colormap():
    from napari.utils.colormaps import DirectLabelColormap

    from ..explain import ERROR_COLORS

    return DirectLabelColormap(color_dict=dict(ERROR_COLORS))


def _slices_generator(fn, inp, cancel):
    """Run ``fn(image2d)`` on the current slice or every slice of a volume, yielding progress."""
    if not inp.is_volume:
        result = fn(inp.image)
        yield 1
        return [result]
    out = []
    for z in range(inp.image.shape[0]):
        if cancel():
            raise RuntimeError("cancelled")
        out.append(fn(inp.image[z]))
        yield 1
    return out


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
        self.saliency_button = PushButton(text="IG saliency")
        self.attention_button = PushButton(text="Attention maps")
        self.cancel_button = PushButton(text="Cancel")
        self.status = wrapped_label(value="")
        self.extend([self.scope, self.error_button, self.legend, self.counts, self.target_class, self.method,
                     self.n_steps, self.baseline, self.saliency_button, self.attention_button, self.cancel_button,
                     self.status])
        self._cancel = threading.Event()
        self.error_button.changed.connect(self.show_error_map)
        self.saliency_button.changed.connect(self.show_saliency)
        self.attention_button.changed.connect(self.show_attention)
        self.cancel_button.changed.connect(lambda *_: self._cancel.set())
        self.state.busy_changed.connect(self._busy_changed)
        self.last_error_map = None

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

    def _feedback_mask(self, inp):
        """FANet is inspected at its current feedback mask when a refinement is running."""
        ref = self.state.refiner
        if ref is not None and not inp.is_volume and ref.current_mask.shape == inp.image.shape[-2:]:
            return ref.current_mask
        return None

    def _run(self, fn, inp, on_done, desc):
        self._cancel.clear()
        n = inp.image.shape[0] if inp.is_volume else 1
        self.status.value = f"computing {desc} ({n} slice{'s' if n > 1 else ''})... Cancel stops between slices"
        self.state.busy = True
        total = inp.image.shape[0] if inp.is_volume else 1
        return run_in_worker(_slices_generator, fn, inp, self._cancel.is_set, on_return=on_done, desc=desc,
                             total=total, on_finish=lambda: setattr(self.state, "busy", False))

    # -- error map ---------------------------------------------------------------------------
    def show_error_map(self, *_):
        from ..explain import error_map
        from ..inference import predict

        ctx = self._context(need_gt=True)
        if ctx is None:
            return None
        inp, model, dev, mask = ctx

        def one(img2d):
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
            upsert_layer(self.viewer, "labels", full, "error map", colormap=error_colormap(), opacity=0.7,
                         scale=inp.scale, translate=inp.translate)
            c, r = em.counts[ci], em.rates[ci]
            self.status.value = f"error map of {self.state.loaded.name} against {self.state.gt_layer_name}"
            self.counts.value = (f"TP {c['TP']:,}  FN {c['FN']:,}  FP {c['FP']:,}  |  "
                                 f"FN rate {r['fn_rate']:.2%}  FP rate {r['fp_rate']:.2%}")

        return self._run(one, inp, done, "error map")

    # -- saliency ---------------------------------------------------------------------------
    def show_saliency(self, *_):
        from ..explain import saliency

        ctx = self._context()
        if ctx is None:
            return None
        inp, model, dev, mask = ctx
        k = int(self.target_class.value)
        kwargs = dict(method=self.method.value, n_steps=int(self.n_steps.value), baseline=self.baseline.value,
                      channel_axis=0, device=dev, mask=mask)

        def one(img2d):
            return saliency(model, img2d, k, **kwargs)

        def done(maps):
            arr = np.stack([np.abs(m.map) for m in maps]) if inp.is_volume else np.abs(maps[0].map)
            full = place_slice(inp.layer_shape, inp.slice_index, arr.astype(np.float32))
            hi = float(np.percentile(arr, 99.5)) or 1.0
            upsert_layer(self.viewer, "image", full, f"IG saliency class {k}", colormap="inferno",
                         blending="additive", opacity=0.7, contrast_limits=(0.0, hi), scale=inp.scale,
                         translate=inp.translate, metadata={"completeness_gap": [m.relative_gap for m in maps]})
            gap = max(m.relative_gap for m in maps)
            self.last_saliency = maps
            self.status.value = f"IG class {k}: {len(maps)} map(s), completeness gap {gap:.2%} ({maps[0].seconds:.1f} s/slice)"

        return self._run(one, inp, done, "IG saliency")

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
                self.status.value = f"{self.state.loaded.name} exposes no attention maps"
                return
            names = [f"{a.kind}: {a.name}" for a in per_slice[0]]
            # one layer, stage on the first axis: the dims slider steps through the stages
            if inp.is_volume:
                arr = np.stack([np.stack([a.map for a in s]) for s in per_slice], axis=1)  # (S, Z, H, W)
            else:
                arr = np.stack([a.map for a in per_slice[0]])  # (S, H, W)
            n = 3 if inp.is_volume else 2
            upsert_layer(self.viewer, "image", arr.astype(np.float32), "attention maps (axis 0 = stage)",
                         colormap="viridis", blending="translucent", opacity=0.45,
                         scale=[1.0] + list(inp.scale[-n:]), translate=[0.0] + list(inp.translate[-n:]),
                         metadata={"stages": names})
            self.status.value = f"{len(names)} attention map(s): " + ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
            self.last_attention = names

        return self._run(one, inp, done, "attention maps")
