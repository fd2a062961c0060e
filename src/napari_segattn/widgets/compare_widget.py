"""Compare widget: the attention shift between two models (or FANet iteration a vs b),
as saliency maps, a normalised difference map and the per-region saliency-mass table."""

from __future__ import annotations

import threading

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, SpinBox, Table
from napari.utils.notifications import show_error, show_info

from .inputs import InputError, gather_input
from .docking import dock_as_tab
from .layers import upsert_layer, wrapped_label
from .side_by_side import SideBySide
from .state import get_state
from .workers import JobProgress, relay_steps, run_in_worker

__all__ = ["CompareWidget", "shift_colormap", "DIFF_LAYER"]

DIFF_LAYER = "attention shift (b - a)"


def shift_colormap():
    """Blue (a looks more) - transparent - red (b looks more): the image shows through where the
    two agree, instead of the grey wash PiYG's light middle gave at opacity 0.8."""
    from napari.utils.colormaps import Colormap

    colors = [[0.13, 0.40, 0.85, 1.0], [0.13, 0.40, 0.85, 0.0], [0.85, 0.15, 0.15, 0.0], [0.85, 0.15, 0.15, 1.0]]
    return Colormap(colors=colors, controls=[0.0, 0.5, 0.5, 1.0], name="shift: a blue, b red")


class CompareWidget(Container):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.mode = ComboBox(label="compare", choices=["two checkpoints", "FANet iteration a vs b"], value="two checkpoints")
        self.ckpt_a = FileEdit(label="checkpoint a", filter="*.safetensors", mode="r")
        self.ckpt_b = FileEdit(label="checkpoint b", filter="*.safetensors", mode="r")
        self.iter_a = SpinBox(label="iteration a", value=1, min=0, max=100)
        self.iter_b = SpinBox(label="iteration b", value=10, min=0, max=100)
        self.n_steps = SpinBox(label="IG steps", value=32, min=2, max=500)
        self.compare_button = PushButton(text="Compare (current slice)")
        self.cancel_button = PushButton(text="Cancel")
        self.side_by_side = CheckBox(label="side by side", value=False,
                                     tooltip="a, b and b - a in a grid, each over the image (napari's grid mode; "
                                             "off restores your layers)")
        self.summary = wrapped_label(value="")
        self.table = Table(value={"data": [], "columns": []})
        self.out = FileEdit(label="export table", mode="w", filter="*.csv")
        self.export_button = PushButton(text="Export CSV + JSON")
        self.status = wrapped_label(value="")
        self.extend([self.mode, self.ckpt_a, self.ckpt_b, self.iter_a, self.iter_b, self.n_steps,
                     self.compare_button, self.cancel_button, self.side_by_side, self.summary, self.table, self.out, self.export_button, self.status])
        self.compare_button.changed.connect(self.compare)
        self.export_button.changed.connect(self.export)
        self._cancel = threading.Event()
        self.cancel_button.changed.connect(lambda *_: self._cancel.set())
        self.worker = None
        self.mode.changed.connect(self._mode_changed)
        self._mode_changed(self.mode.value)
        self.result = None
        self._grid = SideBySide(napari_viewer)
        self._view = None  # (2D image, map layer names, geometry) of the last comparison
        self.side_by_side.changed.connect(self._side_by_side_changed)

    def _mode_changed(self, mode):
        ckpts = mode == "two checkpoints"
        for w in (self.ckpt_a, self.ckpt_b):
            w.visible = ckpts
        for w in (self.iter_a, self.iter_b):
            w.visible = not ckpts

    def _jobs(self, inp):
        """[(label, model, feedback mask or None)] for side a and side b."""
        from pathlib import Path

        from ..models import load_model

        if self.mode.value == "two checkpoints":
            out = []
            for side, edit in (("a", self.ckpt_a), ("b", self.ckpt_b)):
                path = str(edit.value or "").strip()
                if not path or path == "." or Path(path).is_dir():
                    raise InputError(f"choose a .safetensors file in 'checkpoint {side}' (the field is empty)")
                if not Path(path).is_file():
                    raise InputError(f"'checkpoint {side}': {path} does not exist")
                model = load_model(path).eval()
                # the file stem tells two checkpoints of one architecture apart
                out.append((f"{side}:{Path(path).stem}", model, None))
            return out
        ref = self.state.refiner
        if ref is None or not ref.history:
            raise InputError("run FANet refinement in the Predict & refine widget first")
        masks = [ref.initial_mask] + [r.mask for r in ref.history]  # index k = feedback of iteration k
        a, b = int(self.iter_a.value), int(self.iter_b.value)
        if max(a, b) >= len(masks):
            raise InputError(f"only iterations 0..{len(masks) - 1} exist; run more refinement steps")
        if masks[a].shape != inp.image.shape[-2:]:
            raise InputError("the refinement was run on another slice or a volume; compare works on one slice")
        model = self.state.loaded.model
        return [(f"iter{a}", model, masks[a]), (f"iter{b}", model, masks[b])]

    def compare(self, *_):
        from ..explain import attention_shift, iter_saliency

        if self.state.busy:
            show_error("another job is running; wait for it or cancel it")
            return None
        self._forget_result()  # a failed or new run must not leave the last run's numbers on show
        try:
            if self.state.loaded is None and self.mode.value != "two checkpoints":
                raise InputError("load a FANet model first")
            imgs, gt_layer = self.state.input_layers(self.viewer)
            inp = gather_input(self.viewer, imgs, gt_layer, scope="slice")
            if inp.ground_truth is None:
                raise InputError("choose a ground-truth labels layer in the Model widget: the shift is measured per region")
            jobs = self._jobs(inp)
        except Exception as exc:  # checkpoint errors and input errors alike
            show_error(str(exc))
            self.status.value = f"error: {exc}"
            return None
        n_steps, dev = int(self.n_steps.value), self.state.device
        self._cancel.clear()
        cancel = self._cancel.is_set

        def work():
            maps = []
            for i, (label, model, mask) in enumerate(jobs):
                k = list(range(1, max(2, model.out_channels)))
                gen = iter_saliency(model, inp.image, k if len(k) > 1 else k[0], channel_axis=0, n_steps=n_steps,
                                    device=dev, mask=mask, cancel=cancel)
                maps.append((yield from relay_steps(gen, i, len(jobs), f"side {label}")))
            names = self.state.loaded.class_names if self.state.loaded else None
            return maps, attention_shift(maps[0], maps[1], inp.ground_truth, names, labels=(jobs[0][0], jobs[1][0]))

        def done(res):
            maps, shift = res
            self.result = shift
            self._show(inp, jobs, maps, shift)

        def yielded(ev):
            if isinstance(ev, JobProgress):
                self.status.value = f"IG saliency {ev.stage}: {ev.done}/{ev.total} steps... Cancel stops within one step"

        def errored(exc):
            from ..inference import Cancelled

            self.status.value = "compare cancelled; no layer was added" if isinstance(exc, Cancelled) else f"error: {exc}"

        self.state.busy = True
        self.status.value = f"computing IG saliency ({n_steps} steps) for both sides..."
        self.worker = run_in_worker(work, on_return=done, desc="attention shift", total=2, on_yield=yielded,
                                    on_error=errored, on_finish=lambda: setattr(self.state, "busy", False))
        return self.worker

    def _forget_result(self):
        """Clear the summary, table and exportable result of the previous run (its layers stay
        until the next result replaces them)."""
        self.result = None
        self.summary.value = ""
        self.table.value = {"data": [], "index": [], "columns": []}

    def _show(self, inp, jobs, maps, shift):
        from ..explain.shift import relative_saliency, symmetric_limits

        names = [f"saliency {label}" for label, _, _ in jobs]
        for old in (self._view[1] if self._view is not None else []):  # the last pair's maps: replaced,
            if old not in names and old in self.viewer.layers and self.viewer.layers[old].metadata.get("segattn"):
                self.viewer.layers.remove(old)  # not piled up beside a difference layer of another pair

        geom = {"scale": inp.scale[-2:], "translate": inp.translate[-2:]}
        # both maps as multiples of a uniform map's share, on one contrast range
        rel = [relative_saliency(m.map) for m in maps]
        hi = max(float(np.percentile(r, 99.5)) for r in rel) or 1.0
        for (label, _, _), r in zip(jobs, rel):
            upsert_layer(self.viewer, "image", r, f"saliency {label}", colormap="inferno", blending="additive",
                         opacity=0.6, contrast_limits=(0.0, hi), metadata={"units": "x uniform share"}, **geom)
        diff = rel[1] - rel[0]  # = the unit-mass difference times the pixel count
        upsert_layer(self.viewer, "image", diff.astype(np.float32), DIFF_LAYER, colormap=shift_colormap(),
                     contrast_limits=symmetric_limits(diff, 99.0), opacity=1.0, blending="translucent",
                     metadata={"units": "x uniform share, b - a"}, **geom)
        self._view = (np.asarray(inp.image[0]), names + [DIFF_LAYER], geom)
        self._side_by_side_changed()
        cols, rows = shift.table()
        self.table.value = {"data": rows, "index": [str(r[0]) for r in rows], "columns": cols}
        self.table.native.resizeColumnsToContents()
        self.summary.value = shift.summary()
        self.status.value = (f"saliency shown as multiples of a uniform map's share (1 = uniform); "
                             f"{DIFF_LAYER}: red where b looks more, blue where a does")

    def _side_by_side_changed(self, *_):
        if self.side_by_side.value and self._view is not None and all(n in self.viewer.layers for n in self._view[1]):
            image, names, geom = self._view
            self._grid.show(image, names, geom)
        else:
            self._grid.hide()

    def export(self, *_):
        from pathlib import Path

        if self.result is None:
            show_error("nothing to export yet: run Compare first")
            return None
        path = Path(str(self.out.value or ""))
        if not path.name or path.is_dir():
            show_error("choose a file name for the table first")
            return None
        if path.suffix != ".csv":
            path = path.with_suffix(".csv")
        if path.exists():
            show_error(f"{path} exists; choose a new file name (nothing was overwritten)")
            return None
        self.result.to_csv(path)
        self.result.to_json(path.with_suffix(".json"))
        show_info(f"wrote {path} and {path.with_suffix('.json').name}")
        return path
