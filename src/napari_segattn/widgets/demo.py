"""``make demo``: napari with every widget docked, a sample and the demo model loaded."""

from __future__ import annotations

from importlib.resources import files

DEMO_CHECKPOINT = "demo_fanet_dsb2018.safetensors"
WIDGETS = ["Model", "Train", "Predict and refine", "Inspect", "Compare", "Batch predict"]


def demo_checkpoint_path():
    p = files("napari_segattn") / "sample_data" / DEMO_CHECKPOINT
    return p if p.is_file() else None


def launch_demo(sample: str | None = "dsb2018_nuclei", load_model: bool = True, block: bool = True, viewer=None):
    import napari

    viewer = viewer or napari.Viewer(title="napari-segattn demo")
    if sample:
        viewer.open_sample("napari-segattn", sample)
    docked = {}
    for name in WIDGETS:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-segattn", name, tabify=True)
        docked[name] = widget
    ckpt = demo_checkpoint_path()
    if load_model and ckpt is not None and sample == "dsb2018_nuclei":
        docked["Model"].load(path=str(ckpt))
    if block:
        napari.run()
    return viewer, docked
