"""Model widget: choose input layers, build a registry model or load a checkpoint (the demo,
a recent run or a file), pick a device. Nothing here imports torch while the widget is built:
the registry and the devices are discovered in a worker, models are built and loaded in one."""

from __future__ import annotations

import json

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, Select, SpinBox, TextEdit
from napari.utils.notifications import show_error

from .docking import dock_as_tab
from .layers import layer_kind, wrapped_label
from .settings import plugin_defaults, recent_models, recent_runs, remember_model
from .state import LoadedModel, get_state
from .workers import run_in_worker

__all__ = ["ModelWidget", "LayerChoices"]


def _has_labels(layer) -> bool:
    """Any labelled pixel (an in-memory array is checked; a lazy one is taken as filled rather
    than read whole)."""
    data = layer.data
    return bool(np.any(data)) if isinstance(data, np.ndarray) else True


class LayerChoices:
    """Keeps image/labels pickers in sync with the viewer's layer list."""

    def __init__(self, viewer: napari.Viewer, images: Select | ComboBox, labels: ComboBox | None = None) -> None:
        self.viewer, self.images, self.labels = viewer, images, labels
        for ev in (viewer.layers.events.inserted, viewer.layers.events.removed, viewer.layers.events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    def _names(self, kind: str) -> list[str]:
        return [l.name for l in self.viewer.layers if layer_kind(l) == kind and not l.metadata.get("segattn")]

    def refresh(self, *_):
        """Offer the viewer's layers, keeping the user's choice where its layers still exist."""
        imgs = self._names("image")
        current = [v for v in (self.images.value or []) if v in imgs] if isinstance(self.images, Select) else None
        self.images.choices = imgs
        if isinstance(self.images, Select):
            self.images.value = current or imgs[:1]
        if self.labels is not None:
            keep = self.labels.value
            self.labels.choices = ["(none)"] + self._names("labels")
            # keep a real choice; otherwise offer the first labels layer with labels in it (users
            # rarely want none). An empty one is a layer about to be painted (an initial mask), not
            # ground truth: choosing it would change the running refinement's session silently.
            if keep in self.labels.choices and keep != "(none)":
                self.labels.value = keep
            else:
                # the first filled one only: every layer event lands here while none is chosen
                filled = next((n for n in self.labels.choices[1:] if _has_labels(self.viewer.layers[n])), None)
                if filled is not None:
                    self.labels.value = filled

    def image_layers(self):
        names = self.images.value if isinstance(self.images, Select) else [self.images.value]
        return [self.viewer.layers[n] for n in (names or []) if n in self.viewer.layers]

    def gt_layer(self):
        if self.labels is None or self.labels.value in (None, "(none)") or self.labels.value not in self.viewer.layers:
            return None
        return self.viewer.layers[self.labels.value]


#: the registry's names without importing torch (a test checks them against ``list_models()``);
#: the box is refilled from the registry itself once the background discovery has run
MODEL_NAMES = ["aunet", "brunet", "cbamunet", "cscunet", "d6unet", "d9unet", "fanet", "fbunet", "fpa", "gcnunet",
               "rfna", "unet", "wunet"]
DEMO_LABEL = "demo: FANet, DSB 2018 nuclei (shipped)"
OTHER_FILE = "(the checkpoint file below)"


def _discover():
    """Worker: the torch import (~2 s, more on a loaded machine) and device probing."""
    from ..devices import available_devices
    from ..models import get_spec, list_models

    tips = {n: f"{get_spec(n).summary}\n{get_spec(n).paper}" for n in list_models()}
    return tips, available_devices()


def _resolve_model_file(path: str) -> str:
    """A file as is; a run folder: its best model, else the last epoch's."""
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir():
        return path
    for p in (folder / "model.safetensors", folder / "last" / "model.safetensors"):
        if p.is_file():
            return str(p)
    raise FileNotFoundError(f"{folder} holds no model.safetensors (nor last/model.safetensors)")


def read_checkpoint(path: str) -> LoadedModel:
    """Load a checkpoint file or run folder into a LoadedModel (raises with the reason in words)."""
    from ..models import get_spec, load_model

    path = _resolve_model_file(path)
    model = load_model(path)
    name = model.segattn_config["name"]
    spec = get_spec(name)
    return LoadedModel(model=model.eval(), name=name, config=model.segattn_config["config"], source=path,
                       normalization=model.segattn_normalization, class_names=model.segattn_class_names,
                       takes_mask=spec.takes_mask, reverse_labels=spec.reverse_labels,
                       info=getattr(model, "segattn_checkpoint", {}))


def build_loaded(name: str, opts: dict) -> LoadedModel:
    """A freshly initialised registry model (raises on unknown options)."""
    from ..models import build_model, get_spec

    model = build_model(name, **opts)
    spec = get_spec(name)
    return LoadedModel(model=model, name=spec.name, config=model.segattn_config["config"], source="built",
                       takes_mask=spec.takes_mask, reverse_labels=spec.reverse_labels)


def known_models() -> list[tuple[str, str]]:
    """(label, path) for the dropdown: the shipped demo, recent models, recent run folders."""
    from pathlib import Path

    from .demo import demo_checkpoint_path

    out, seen = [], set()
    demo = demo_checkpoint_path()
    if demo is not None:
        out.append((DEMO_LABEL, str(demo)))
        seen.add(str(Path(str(demo)).resolve()))
    for p in [*recent_models(), *map(str, recent_runs())]:
        key = str(Path(p).resolve())
        if key not in seen:
            seen.add(key)
            out.append((f"recent: {_short(p)}", p))
    return out + [(OTHER_FILE, "")]


def _short(path: str) -> str:
    """``run-3/model.safetensors`` rather than the whole path (the tooltip has it)."""
    from pathlib import Path

    parts = Path(path).parts
    return str(Path(*parts[-3:])) if len(parts) > 3 else path


def _options_text(config: dict) -> str:
    """The options box's JSON: the config without the channel counts (those have their own fields)."""
    return json.dumps({k: v for k, v in config.items() if k not in ("in_channels", "out_channels")})


def _describe_source(source: str) -> str:
    from .demo import demo_checkpoint_path

    demo = demo_checkpoint_path()
    if demo is not None and source == str(demo):
        return "the shipped demo model"
    return "built here, untrained" if source == "built" else source


class ModelWidget(Container):
    """Inputs + architecture (or checkpoint) + device; the chosen model goes to the shared state."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        dock_as_tab(self)  # Plugins > SegAttn: scroll, and tab with the other SegAttn widgets
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.image_select = Select(label="image layer(s)", choices=[], allow_multiple=True)
        self.gt_combo = ComboBox(label="ground truth", choices=["(none)"])
        self.layers = LayerChoices(napari_viewer, self.image_select, self.gt_combo)
        self.arch = ComboBox(label="architecture", choices=MODEL_NAMES, value="unet")
        self.out_channels = SpinBox(label="classes (1 = binary)", value=1, min=1, max=64)
        self.arch_options = LineEdit(label="options (JSON)", value="{}")
        self.build_button = PushButton(text="Build untrained model")
        self.known = ComboBox(label="model", choices=known_models(),
                              tooltip="the shipped demo model and the models you trained or loaded lately")
        self.ckpt = FileEdit(label="checkpoint", filter="*.safetensors", mode="r")
        self.load_button = PushButton(text="Load")
        # after a crash or a closed viewer: the Train widget's run folder keeps the last epoch
        self.last_run_button = PushButton(text="Load last training run")
        preferred = plugin_defaults().device
        self.device = ComboBox(label="device", choices=self._initial_devices(preferred), value=preferred)
        self.info = TextEdit(label="details", value="no model yet")
        self.info.native.setReadOnly(True)
        self.loaded_line = wrapped_label(label="loaded", value="no model yet")
        self.status = wrapped_label(value="")
        self.extend([
            self.image_select, self.gt_combo, self.known, self.ckpt, self.load_button, self.last_run_button,
            self.arch, self.out_channels, self.arch_options, self.build_button, self.device, self.loaded_line,
            self.info, self.status,
        ])
        self._tips: dict[str, str] = {}
        self._options_for: str | None = None  # the model whose options the options box shows
        self._connect()
        self._publish_inputs()
        self._known_changed(self.known.value)
        if self.state.loaded is not None:
            self._show_model(self.state.loaded)
        self._discovery = run_in_worker(_discover, desc="finding models and devices", on_return=self._discovered)

    def _connect(self):
        self.arch.changed.connect(self._show_defaults)
        self.known.changed.connect(self._known_changed)
        self.ckpt.changed.connect(self._file_chosen)
        self.build_button.changed.connect(self._build_clicked)
        self.load_button.changed.connect(self._load_clicked)
        self.last_run_button.changed.connect(self._last_run_clicked)
        self.device.changed.connect(lambda v: self.state.set_device(v))
        self.state.set_device(self.device.value)
        self.state.model_changed.connect(self._show_model)
        self.state.busy_changed.connect(self._busy_changed)
        self.image_select.changed.connect(self._publish_inputs)
        self.gt_combo.changed.connect(self._publish_inputs)

    @staticmethod
    def _initial_devices(preferred: str):
        """auto and cpu (and the preferred device) until the worker has probed the GPUs."""
        extra = [(preferred, preferred)] if preferred not in ("auto", "cpu") else []
        return [("auto", "auto"), *extra, ("cpu", "cpu")]

    def _discovered(self, found):
        try:
            self._fill_registry(*found)
        except RuntimeError:  # the widget was closed before the worker returned
            pass

    def _fill_registry(self, tips, devices):
        self._tips = tips
        keep = self.arch.value
        self.arch.choices = sorted(tips)
        self.arch.value = keep if keep in tips else "unet"
        preferred, keep_dev = plugin_defaults().device, self.device.value
        self.device.choices = devices
        names = [n for _, n in devices]
        self.device.value = keep_dev if keep_dev in names and keep_dev != "auto" else (
            preferred if preferred in names else "auto")
        self._show_defaults(self.arch.value)

    def _busy_changed(self, busy: bool):
        """No new model while a job (training, a prediction) runs on the current one."""
        for w in (self.build_button, self.load_button, self.last_run_button):
            w.enabled = not busy

    def _publish_inputs(self, *_):
        gt = self.layers.gt_layer()
        self.state.set_inputs([l.name for l in self.layers.image_layers()], gt.name if gt is not None else None)

    def reset_choices(self, *_):
        """napari calls this on every layer event once docked. magicgui's default would put back
        the choices each picker was built with (empty here: every picker is filled by hand) and
        so forget what the user chose, in the layer pickers, the model list and the device; so it
        is not called, and the layer pickers are refreshed from the viewer instead."""
        self.layers.refresh()
        self._publish_inputs()

    # -- actions -------------------------------------------------------------------------
    def input_channels(self) -> int:
        from .inputs import _channels_first

        layers = self.layers.image_layers()
        return sum(_channels_first(l).shape[-3] for l in layers) if layers else 1

    def _build_options(self) -> dict:
        """The options box + channel fields, read on the GUI thread."""
        opts = json.loads(self.arch_options.value or "{}")
        if not isinstance(opts, dict):
            raise ValueError("options must be a JSON object, e.g. {\"dilation\": 6}")
        opts.setdefault("in_channels", self.input_channels())
        opts.setdefault("out_channels", int(self.out_channels.value))
        return opts

    def build(self, *_):
        """Build here and now (scripts, the demo); the button builds in a worker."""
        name = self.arch.value
        try:
            loaded = build_loaded(name, self._build_options())
        except Exception as exc:  # shown to the user, nothing changes
            return self._failed(f"cannot build {name}", exc)
        return self._adopt(loaded)

    def load(self, *_, path=None):
        """Load here and now (scripts, the demo); the button loads in a worker."""
        try:
            loaded = read_checkpoint(str(path or self.ckpt.value))
        except (ValueError, OSError) as exc:  # CheckpointError is a ValueError
            return self._failed("cannot load", exc)
        return self._adopt(loaded)

    def load_last_run(self, *_, folder=None):
        """The newest ``last/`` checkpoint in the runs folder (Settings > SegAttn defaults)."""
        path = self._last_run(folder)
        return None if path is None else self.load(path=path)

    def _last_run(self, folder=None):
        from pathlib import Path

        root = Path(folder) if folder else plugin_defaults().runs_path
        found = sorted(root.glob("*/last/model.safetensors"), key=lambda p: p.stat().st_mtime)
        if not found:
            show_error(f"no training run with a saved epoch in {root}")
            self.status.value = f"error: no run in {root}"
            return None
        return str(found[-1])

    def _build_clicked(self, *_):
        try:
            opts = self._build_options()
        except ValueError as exc:
            return self._failed(f"cannot build {self.arch.value}", exc)
        return self._in_worker(build_loaded, self.arch.value, opts, what=f"building {self.arch.value}")

    def _load_clicked(self, *_):
        path = str(self.ckpt.value or "").strip()
        if not path or path == ".":
            return self._failed("cannot load", ValueError("choose a model in the list or a checkpoint file"))
        return self._in_worker(read_checkpoint, path, what=f"loading {_short(path)}")

    def _last_run_clicked(self, *_):
        path = self._last_run()
        return None if path is None else self._in_worker(read_checkpoint, path, what=f"loading {_short(path)}")

    def _in_worker(self, func, *args, what: str):
        """Build/load off the GUI thread (torch import, weights, first allocation)."""
        if self.state.busy:
            show_error("another job is running; wait for it or cancel it")
            self.status.value = f"not {what}: another job is running"
            return None
        self.state.busy = True
        self.status.value = what + "..."
        # run_in_worker notifies the error; the status line keeps it
        return run_in_worker(func, *args, desc=what, on_return=self._adopt,
                             on_error=lambda exc: setattr(self.status, "value", f"error: {exc}"),
                             on_finish=lambda: setattr(self.state, "busy", False))

    def _failed(self, what: str, exc: BaseException):
        show_error(f"{what}: {exc}")
        self.status.value = f"error: {exc}"
        return None

    def _adopt(self, loaded: LoadedModel) -> LoadedModel:
        """Make ``loaded`` the shared model; remember it for the dropdown when it came from a file."""
        self.state.set_model(loaded)
        if loaded.source != "built":
            remember_model(loaded.source)
            self._refresh_known(select=loaded.source)
        # said on the status and "loaded" lines, not in a notification: napari's first toast of a
        # session costs the GUI thread ~250 ms (its dialog is created and shown), measured as the
        # whole stall of Load (scripts/measure_stalls.py --why)
        return loaded

    # -- display -------------------------------------------------------------------------
    def _refresh_known(self, select: str | None = None):
        """Re-read the demo/recent list; select ``select`` (the model just loaded) or keep the selection."""
        from pathlib import Path

        keep = select if select is not None else self.known.value
        with self.known.changed.blocked():
            self.known.choices = known_models()
            resolved = str(Path(keep).resolve()) if keep else keep  # remembered paths are resolved
            if keep in self.known.choices or resolved in self.known.choices:
                self.known.value = keep if keep in self.known.choices else resolved

    def _known_changed(self, path):
        """A model chosen in the list goes into the checkpoint field: Load loads it."""
        if path:
            with self.ckpt.changed.blocked():
                self.ckpt.value = path
        self.known.tooltip = path or "choose a checkpoint file (or a run folder) in the field below"

    def _file_chosen(self, *_):
        """A file browsed to by hand: the list says so rather than naming another model."""
        if str(self.ckpt.value) != str(self.known.value):
            with self.known.changed.blocked():
                self.known.value = ""
            self.known.tooltip = "the checkpoint file (or run folder) in the field below"

    def _show_defaults(self, name):
        self.arch.tooltip = self._tips.get(name) or name
        if self._options_for not in (None, name):  # another model's options would not build this one
            self.arch_options.value = "{}"
            self._options_for = None

    def _show_arch(self, loaded: LoadedModel):
        """The architecture box, classes and options follow the model in use."""
        if loaded.name not in self.arch.choices:
            self.arch.choices = sorted({*self.arch.choices, loaded.name})
        self._options_for = loaded.name
        self.arch.value = loaded.name
        self.out_channels.value = int(loaded.model.out_channels)
        self.arch_options.value = _options_text(loaded.config)

    def _show_model(self, loaded: LoadedModel | None):
        from ..models import count_parameters

        if loaded is None:
            self.info.value = self.loaded_line.value = "no model yet"
            return
        self._show_arch(loaded)
        n = count_parameters(loaded.model)
        self.loaded_line.value = f"{loaded.name}, {n:,} parameters, {_describe_source(loaded.source)}"
        lines = [f"{loaded.name}: {n:,} parameters", f"source: {loaded.source}", "config: " + json.dumps(loaded.config)]
        if loaded.normalization:
            lines.append("normalisation: " + json.dumps(loaded.normalization))
        if loaded.class_names:
            lines.append("classes: " + ", ".join(loaded.class_names))
        trained = (loaded.info or {}).get("training") or {}
        if trained:
            data = trained.get("data") or {}
            # 1-based as the training log prints it; files before "epochs_done" held a 0-based "epoch"
            epoch = trained.get("epochs_done", trained.get("epoch", -1) + 1)
            lines.append(f"trained: recipe {trained.get('recipe')}, epoch {epoch}"
                         + (f", {data.get('train_samples')} training / {data.get('val_samples')} validation samples"
                            f" (e.g. {', '.join(data.get('examples') or [])})" if data else ""))
        lines.insert(1, f"in: {loaded.model.in_channels} channel(s), out: {loaded.model.out_channels} "
                        f"({'binary' if loaded.model.out_channels == 1 else 'classes'})")
        if loaded.reverse_labels:
            lines.append("RFNA: trained on reversed labels; shown as foreground")
        self.info.value = "\n".join(lines)
        self.status.value = f"model ready: {loaded.name}"
