"""Batch widget: predict every image of a folder, or every open image layer, with the loaded
model and save one mask each (``inference.batch``), with progress and Cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, SpinBox
from napari.utils.notifications import show_error, show_info

from .docking import dock_as_tab
from .inputs import InputError, gather_input
from .layers import upsert_layer, wrapped_label
from .state import get_state
from .workers import run_in_worker

__all__ = ["BatchWidget"]

FOLDER, LAYERS = "image files in a folder", "every open image layer"


def _files_job(model, inputs, out_dir, iterations, device, overwrite, cancel):
    """Worker: ``inference.batch.iter_predict_files`` (a generator function, so napari's
    worker yields its progress)."""
    from ..inference.batch import iter_predict_files

    return (yield from iter_predict_files(model, inputs, out_dir, iterations=iterations, device=device,
                                          overwrite=overwrite, cancel=cancel))


def _layers_job(model, layers, out_dir, iterations, device, overwrite, cancel):
    """Worker: each image layer predicted alone (a volume as a volume); masks written to
    ``out_dir`` when given. A layer that fails (``inp`` an exception: it could not even be
    gathered) is reported and the others go on, as in folder mode. Yields BatchProgress,
    returns [(layer name, labels or None, path or None, error or None)]."""
    from ..inference import Cancelled
    from ..inference.batch import BatchItem, BatchProgress, predict_labels
    from ..inference.files import write_array
    from .workers import explain_exception

    outs = [None] * len(layers)
    if out_dir is not None:
        outs = [Path(out_dir) / f"{name}.tif" for name, _ in layers]
        existing = [o.name for o in outs if o.exists()]
        if existing and not overwrite:
            raise InputError(f"{out_dir} already holds {', '.join(existing[:3])}; tick overwrite or choose "
                             "another folder")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    for k, ((name, inp), out) in enumerate(zip(layers, outs), 1):
        if cancel():
            raise Cancelled(f"batch cancelled after {k - 1} of {len(layers)} layers")
        labels = path = error = None
        try:
            if isinstance(inp, Exception):
                raise inp
            c, s = (1, 0) if inp.is_volume else (0, None)
            labels, _ = predict_labels(model, inp.image, channel_axis=c, slice_axis=s, iterations=iterations,
                                       device=device, cancel=cancel)
            path = write_array(out, labels.astype(np.uint8), overwrite=overwrite) if out is not None else None
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad layer must not cost the others' results
            error = explain_exception(exc)
        results.append((name, labels, path, error))
        share = 0.0 if labels is None else float(np.mean(labels > 0))
        yield BatchProgress(k, len(layers), BatchItem(Path(name), path, 0.0, share, error=error))
    return results


class BatchWidget(Container):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.source = ComboBox(label="predict", choices=[FOLDER, LAYERS], value=FOLDER)
        self.folder = FileEdit(label="image folder", mode="d")
        self.out = FileEdit(label="save masks to", mode="d")
        self.iterations = SpinBox(label="FANet iterations", value=10, min=1, max=100)
        self.overwrite = CheckBox(text="overwrite existing masks", value=False)
        self.run_button = PushButton(text="Run batch")
        self.cancel_button = PushButton(text="Cancel")
        self.status = wrapped_label(value="load a model in the Model widget, then choose a folder")
        self.extend([self.source, self.folder, self.out, self.iterations, self.overwrite, self.run_button,
                     self.cancel_button, self.status])
        self._cancel = threading.Event()
        self._worker = None
        self.source.changed.connect(self._source_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(lambda *_: self._cancel.set())
        self.state.busy_changed.connect(lambda busy: setattr(self.run_button, "enabled", not busy))
        self._source_changed(self.source.value)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets

    def _source_changed(self, source):
        self.folder.visible = source == FOLDER

    @staticmethod
    def _path(edit: FileEdit) -> Path | None:
        raw = str(edit.line_edit.value or "").strip()  # the text as typed ("" when cleared)
        return None if raw in ("", ".") else Path(raw)

    def _check(self):
        if self.state.busy:
            raise InputError("another job is running; wait for it or cancel it")
        if self.state.loaded is None:
            raise InputError("load or build a model in the Model widget first")

    def run(self, *_):
        try:
            self._check()
            job, args, total = self._folder_job() if self.source.value == FOLDER else self._layer_job()
        except InputError as exc:
            self.status.value = str(exc)
            show_error(str(exc))
            return None
        self._cancel.clear()
        self.state.busy = True
        self.status.value = f"0 of {total} done"

        def finish():
            self.state.busy = False
            self._worker = None

        self._worker = run_in_worker(job, *args, on_yield=self._progress, on_return=self._done,
                                     on_error=self._failed, on_finish=finish, desc="batch predict", total=total)
        return self._worker

    def _folder_job(self):
        from ..inference import InputError as CoreInputError
        from ..inference.batch import images_in, plan_outputs

        folder, out = self._path(self.folder), self._path(self.out)
        if folder is None:
            raise InputError("choose the image folder ('image folder' is empty)")
        if out is None:
            raise InputError("choose where to save the masks ('save masks to' is empty)")
        try:
            inputs = images_in(folder)
            plan_outputs(inputs, out, self.overwrite.value)  # refused here, before the worker starts
        except CoreInputError as exc:
            raise InputError(str(exc)) from None
        args = (self.state.loaded.model, inputs, out, int(self.iterations.value), self.state.device,
                self.overwrite.value, self._cancel.is_set)
        return _files_job, args, len(inputs)

    def _layer_job(self):
        # the user's images, not the plugin's own results (probabilities, saliency, attention maps)
        layers = [l for l in self.viewer.layers if isinstance(l, napari.layers.Image) and not l.metadata.get("segattn")]
        if not layers:
            raise InputError("there are no image layers open")
        inputs = []
        for layer in layers:
            try:
                inputs.append((layer.name, gather_input(self.viewer, [layer], scope="volume")))
            except Exception as exc:  # noqa: BLE001 - reported with the layer's name, the others still run
                inputs.append((layer.name, exc))
        self._geometry = {name: (inp.scale, inp.translate) for name, inp in inputs if not isinstance(inp, Exception)}
        loaded = self.state.loaded
        args = (loaded.model, inputs, self._path(self.out), int(self.iterations.value), self.state.device,
                self.overwrite.value, self._cancel.is_set)
        return _layers_job, args, len(inputs)

    def _progress(self, ev):
        item = ev.item
        what = (f"{item.source.name}: failed ({item.error})" if item.error else
                f"{item.source.name}: {100 * item.foreground:.1f} % foreground")
        self.status.value = f"{ev.done} of {ev.total} done; {what}"

    def _done(self, results):
        if results and isinstance(results[0], tuple):  # open layers: show each mask over its image
            for name, labels, _, error in results:
                if error is None:
                    scale, translate = self._geometry[name]
                    upsert_layer(self.viewer, "labels", labels.astype(np.uint8), f"{name} prediction", opacity=0.5,
                                 scale=scale, translate=translate)
            saved = [p for _, _, p, _ in results if p is not None]
            failed = [(name, error) for name, _, _, error in results if error is not None]
            msg = f"predicted {len(results) - len(failed)} layer(s)" + (
                f"; masks saved in {Path(saved[0]).parent}" if saved else "")
        else:
            failed = [(i.source.name, i.error) for i in results if i.error]
            msg = f"wrote {len(results) - len(failed)} mask(s) to {self._path(self.out)}"
        if failed:
            msg += f"; {len(failed)} failed: " + "; ".join(f"{name} ({error})" for name, error in failed[:3])
            msg += f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        self.status.value = msg
        show_info(msg)

    def _failed(self, exc):
        self.status.value = f"stopped: {exc}"
