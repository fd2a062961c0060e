"""Model widget: choose input layers, build a registry model or load a checkpoint, pick a device."""

from __future__ import annotations

import json

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, LineEdit, PushButton, Select, SpinBox, TextEdit
from napari.utils.notifications import show_error, show_info

from .layers import layer_kind, wrapped_label
from .settings import plugin_defaults
from .state import LoadedModel, get_state

__all__ = ["ModelWidget", "LayerChoices"]


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
        imgs = self._names("image")
        current = [v for v in (self.images.value or []) if v in imgs] if isinstance(self.images, Select) else None
        self.images.choices = imgs
        if isinstance(self.images, Select):
            self.images.value = current or imgs[:1]
        if self.labels is not None:
            keep = self.labels.value
            self.labels.choices = ["(none)"] + self._names("labels")
            # keep a real choice; otherwise offer the first labels layer (users rarely want none)
            if keep in self.labels.choices and keep != "(none)":
                self.labels.value = keep
            elif len(self.labels.choices) > 1:
                self.labels.value = self.labels.choices[1]

    def image_layers(self):
        names = self.images.value if isinstance(self.images, Select) else [self.images.value]
        return [self.viewer.layers[n] for n in (names or []) if n in self.viewer.layers]

    def gt_layer(self):
        if self.labels is None or self.labels.value in (None, "(none)") or self.labels.value not in self.viewer.layers:
            return None
        return self.viewer.layers[self.labels.value]


class ModelWidget(Container):
    """Inputs + architecture (or checkpoint) + device; the chosen model goes to the shared state."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        from ..devices import available_devices
        from ..models import list_models

        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.image_select = Select(label="image layer(s)", choices=[], allow_multiple=True)
        self.gt_combo = ComboBox(label="ground truth", choices=["(none)"])
        self.layers = LayerChoices(napari_viewer, self.image_select, self.gt_combo)
        self.arch = ComboBox(label="architecture", choices=list_models(), value="unet")
        self.out_channels = SpinBox(label="classes (1 = binary)", value=1, min=1, max=64)
        self.arch_options = LineEdit(label="options (JSON)", value="{}")
        self.build_button = PushButton(text="Build untrained model")
        self.ckpt = FileEdit(label="checkpoint", filter="*.safetensors", mode="r")
        self.load_button = PushButton(text="Load checkpoint")
        # after a crash or a closed viewer: the Train widget's run folder keeps the last epoch
        self.last_run_button = PushButton(text="Load last training run")
        devices = [(lbl, name) for lbl, name in available_devices()]
        preferred = plugin_defaults().device
        self.device = ComboBox(label="device", choices=devices,
                               value=preferred if preferred in [n for _, n in devices] else "auto")
        self.info = TextEdit(label="model", value="no model yet")
        self.info.native.setReadOnly(True)
        self.status = wrapped_label(value="")
        self.extend([
            self.image_select, self.gt_combo, self.arch, self.out_channels, self.arch_options, self.build_button,
            self.ckpt, self.load_button, self.last_run_button, self.device, self.info, self.status,
        ])
        self.arch.changed.connect(self._show_defaults)
        self.build_button.changed.connect(self.build)
        self.load_button.changed.connect(self.load)
        self.last_run_button.changed.connect(self.load_last_run)
        self.device.changed.connect(lambda v: self.state.set_device(v))
        self.state.set_device(self.device.value)
        self.state.model_changed.connect(self._show_model)
        self.image_select.changed.connect(self._publish_inputs)
        self.gt_combo.changed.connect(self._publish_inputs)
        self._publish_inputs()
        self._show_defaults(self.arch.value)
        if self.state.loaded is not None:
            self._show_model(self.state.loaded)

    def _publish_inputs(self, *_):
        gt = self.layers.gt_layer()
        self.state.set_inputs([l.name for l in self.layers.image_layers()], gt.name if gt is not None else None)

    def reset_choices(self, *_):
        """napari calls this on every layer event once docked; magicgui's default would put
        back the (empty) choices the pickers were created with, so refresh from the viewer."""
        super().reset_choices()
        self.layers.refresh()
        self._publish_inputs()

    # -- actions -------------------------------------------------------------------------
    def input_channels(self) -> int:
        from .inputs import _channels_first

        layers = self.layers.image_layers()
        return sum(_channels_first(l).shape[-3] for l in layers) if layers else 1

    def build(self, *_):
        from ..models import build_model, get_spec

        try:
            opts = json.loads(self.arch_options.value or "{}")
            if not isinstance(opts, dict):
                raise ValueError("options must be a JSON object, e.g. {\"dilation\": 6}")
            opts.setdefault("in_channels", self.input_channels())
            opts.setdefault("out_channels", int(self.out_channels.value))
            model = build_model(self.arch.value, **opts)
        except Exception as exc:  # shown to the user, nothing changes
            show_error(f"cannot build {self.arch.value}: {exc}")
            self.status.value = f"error: {exc}"
            return None
        spec = get_spec(self.arch.value)
        loaded = LoadedModel(model=model, name=spec.name, config=model.segattn_config["config"], source="built",
                             takes_mask=spec.takes_mask, reverse_labels=spec.reverse_labels)
        self.state.set_model(loaded)
        show_info(f"built {spec.name} ({self.input_channels()} channel(s) in)")
        return loaded

    def load(self, *_, path=None):
        from ..models import CheckpointError, get_spec, load_model

        path = str(path or self.ckpt.value)
        from pathlib import Path

        folder = Path(path)
        if folder.is_dir():  # a run folder: its best model, else the last epoch's
            found = [p for p in (folder / "model.safetensors", folder / "last" / "model.safetensors") if p.is_file()]
            if not found:
                show_error(f"{folder} holds no model.safetensors (nor last/model.safetensors)")
                self.status.value = f"error: no model in {folder}"
                return None
            path = str(found[0])
        try:
            model = load_model(path)
        except (CheckpointError, OSError) as exc:
            show_error(str(exc))
            self.status.value = f"error: {exc}"
            return None
        name = model.segattn_config["name"]
        spec = get_spec(name)
        loaded = LoadedModel(model=model.eval(), name=name, config=model.segattn_config["config"], source=path,
                             normalization=model.segattn_normalization, class_names=model.segattn_class_names,
                             takes_mask=spec.takes_mask, reverse_labels=spec.reverse_labels,
                             info=getattr(model, "segattn_checkpoint", {}))
        self.state.set_model(loaded)
        return loaded

    def load_last_run(self, *_, folder=None):
        """The newest ``last/`` checkpoint in the runs folder (Settings > SegAttn defaults)."""
        from pathlib import Path

        root = Path(folder) if folder else plugin_defaults().runs_path
        found = sorted(root.glob("*/last/model.safetensors"), key=lambda p: p.stat().st_mtime)
        if not found:
            show_error(f"no training run with a saved epoch in {root}")
            self.status.value = f"error: no run in {root}"
            return None
        return self.load(path=str(found[-1]))

    # -- display -------------------------------------------------------------------------
    def _show_defaults(self, name):
        from ..models import get_spec

        spec = get_spec(name)
        self.arch.tooltip = f"{spec.summary}\n{spec.paper}"

    def _show_model(self, loaded: LoadedModel | None):
        from ..models import count_parameters

        if loaded is None:
            self.info.value = "no model yet"
            return
        n = count_parameters(loaded.model)
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
