"""Model widget: pick layers, build or load a model, bad checkpoints leave the state untouched."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segattn", "dsb2018_nuclei")
    return viewer


def _wait_idle(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: not w.state.busy, timeout=timeout)


def test_build_uses_layer_channels_and_sets_shared_state(viewer_with_sample, qtbot):
    from napari_segattn.widgets import ModelWidget
    from napari_segattn.widgets.state import get_state

    w = ModelWidget(viewer_with_sample)
    assert w.image_select.value == ["dsb2018_nuclei"]
    assert w.gt_combo.value == "dsb2018_nuclei_gt"
    w.arch.value = "fanet"
    w.arch_options.value = '{"in_channels": 1}'
    w.build_button.clicked.emit()
    _wait_idle(qtbot, w)
    state = get_state(viewer_with_sample)
    assert state.loaded is not None and state.loaded.name == "fanet" and state.loaded.takes_mask
    assert state.loaded.model.in_channels == 1
    assert "parameters" in w.info.value
    assert state.image_layer_names == ["dsb2018_nuclei"] and state.gt_layer_name == "dsb2018_nuclei_gt"


def test_bad_options_and_bad_checkpoint_keep_previous_model(viewer_with_sample, tmp_path, qtbot):
    from napari_segattn.widgets import ModelWidget
    from napari_segattn.widgets.state import get_state

    w = ModelWidget(viewer_with_sample)
    w.arch.value = "unet"
    w.build_button.clicked.emit()
    _wait_idle(qtbot, w)
    before = get_state(viewer_with_sample).loaded
    w.arch_options.value = '{"no_such_option": 3}'
    w.build_button.clicked.emit()
    _wait_idle(qtbot, w)
    assert get_state(viewer_with_sample).loaded is before
    assert "error" in w.status.value
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert w.load(path=str(bad)) is None
    assert get_state(viewer_with_sample).loaded is before
    assert "not a readable safetensors" in w.status.value


def test_load_checkpoint_shows_config(viewer_with_sample, tmp_path):
    from napari_segattn.models import build_model, save_model
    from napari_segattn.widgets import ModelWidget
    from napari_segattn.widgets.state import get_state

    path = save_model(build_model("unet", in_channels=1, out_channels=1), tmp_path / "u.safetensors",
                      normalization={"mode": "zscore", "per": "image"}, class_names=["background", "nucleus"])
    w = ModelWidget(viewer_with_sample)
    w.load(path=str(path))
    loaded = get_state(viewer_with_sample).loaded
    assert loaded.name == "unet" and loaded.class_names == ["background", "nucleus"]
    assert "zscore" in w.info.value and "nucleus" in w.info.value


def test_docked_widgets_keep_layer_choices_through_layer_events(make_napari_viewer):
    """napari calls reset_choices on docked widgets at every layer event (found by a new user:
    the pickers were emptied once docked); through the manifest, as `make demo` docks them."""
    import numpy as np

    from napari_segattn.widgets.demo import launch_demo
    from napari_segattn.widgets.state import get_state

    viewer = make_napari_viewer()
    viewer, docked = launch_demo(sample="dsb2018_nuclei", load_model=True, block=False, viewer=viewer)
    assert get_state(viewer).loaded is not None and get_state(viewer).loaded.name == "fanet"  # demo model
    model_w, refine_w = docked["Model"], docked["Predict and refine"]
    assert model_w.image_select.value == ["dsb2018_nuclei"]
    assert model_w.gt_combo.value == "dsb2018_nuclei_gt"
    viewer.add_labels(np.zeros((512, 512), np.int32), name="my mask")
    assert "dsb2018_nuclei" in model_w.image_select.choices and model_w.image_select.value == ["dsb2018_nuclei"]
    assert model_w.gt_combo.value == "dsb2018_nuclei_gt"
    assert "layer: my mask" in refine_w.init.choices
    assert get_state(viewer).image_layer_names == ["dsb2018_nuclei"]


def test_a_chosen_second_layer_survives_layer_events_and_the_plugins_own_results(make_napari_viewer, qtbot):
    """A new user chose the second image and ground truth, then added a layer (or pressed
    Predict, which adds its own): both pickers went back to the first layers and Step quietly
    refined the other image. magicgui's reset_choices had emptied them before the refresh."""
    from napari_segattn.widgets.demo import launch_demo
    from napari_segattn.widgets.state import get_state

    viewer = make_napari_viewer()
    viewer, docked = launch_demo(sample="dsb2018_nuclei", load_model=True, block=False, viewer=viewer)
    model_w, refine_w = docked["Model"], docked["Predict and refine"]
    state = get_state(viewer)
    image = viewer.layers["dsb2018_nuclei"].data
    viewer.add_image(image[::-1].copy(), name="second image")
    viewer.add_labels(np.zeros(image.shape, np.uint8), name="second gt")
    viewer.add_labels(np.zeros(image.shape, np.int32), name="my start")
    model_w.image_select.value = ["second image"]
    model_w.gt_combo.value = "second gt"
    refine_w.init.value = "layer: my start"
    model_w.device.value = "cpu"
    points = viewer.add_points(np.array([[10.0, 10.0]]), name="some points")
    viewer.layers.remove(points)
    assert model_w.image_select.value == ["second image"] and model_w.gt_combo.value == "second gt"
    assert state.image_layer_names == ["second image"] and state.gt_layer_name == "second gt"
    assert refine_w.init.value == "layer: my start" and model_w.device.value == "cpu"
    model_w.image_select.value = ["dsb2018_nuclei", "second image"]  # a two-layer choice stays two layers
    viewer.add_points(np.array([[1.0, 1.0]]), name="more points")
    assert state.image_layer_names == ["dsb2018_nuclei", "second image"]
    model_w.image_select.value = ["second image"]
    refine_w.predict_button.clicked.emit()  # adds the plugin's own result layers
    qtbot.waitUntil(lambda: not state.busy, timeout=120_000)
    assert "prediction" in viewer.layers
    assert model_w.image_select.value == ["second image"] and state.image_layer_names == ["second image"]
    assert state.gt_layer_name == "second gt"


def test_plugin_settings_set_widget_defaults(make_napari_viewer):
    from napari.settings import get_plugin_settings

    from napari_segattn.widgets import InspectWidget

    settings = get_plugin_settings("napari-segattn").defaults
    old = settings.ig_steps
    settings.ig_steps = 12
    try:
        assert InspectWidget(make_napari_viewer()).n_steps.value == 12
    finally:
        settings.ig_steps = old


def _choose_known(w, label_start):
    """Pick the dropdown entry whose label starts with ``label_start``, as a user would."""
    [value] = [v for lbl, v in w.known.choices_with_labels() if lbl.startswith(label_start)] \
        if hasattr(w.known, "choices_with_labels") else \
        [w.known.native.itemData(i) for i in range(w.known.native.count())
         if w.known.native.itemText(i).startswith(label_start)]
    w.known.value = value
    return value


def test_demo_model_from_the_dropdown_then_another_checkpoint_the_boxes_follow(viewer_with_sample, qtbot, tmp_path):
    """Issue 14 item 9: the architecture box stayed on unet after a load; the demo model was
    found only by typing a path inside the package; nothing said what was loaded."""
    from napari_segattn.models import build_model, save_model
    from napari_segattn.widgets import ModelWidget
    from napari_segattn.widgets.model_widget import OTHER_FILE

    w = ModelWidget(viewer_with_sample)
    assert w.arch.value == "unet"
    _choose_known(w, "demo")
    w.load_button.clicked.emit()
    _wait_idle(qtbot, w)
    assert w.state.loaded.name == "fanet"
    assert w.arch.value == "fanet" and '"width": 8' in w.arch_options.value
    assert "fanet" in w.loaded_line.value and "parameters" in w.loaded_line.value
    assert "shipped demo" in w.loaded_line.value
    # another model, browsed to as a file: the boxes follow it, and it joins the list
    path = save_model(build_model("unet", in_channels=1, out_channels=3), tmp_path / "three.safetensors")
    w.ckpt.value = str(path)
    assert w.known.native.currentText() == OTHER_FILE
    w.load_button.clicked.emit()
    _wait_idle(qtbot, w)
    assert w.arch.value == "unet" and w.out_channels.value == 3
    assert "unet" in w.loaded_line.value and str(path) in w.loaded_line.value
    labels = [w.known.native.itemText(i) for i in range(w.known.native.count())]
    assert any(l.startswith("recent:") and "three.safetensors" in l for l in labels)
    # a new viewer's Model widget offers it too (remembered in the plugin's settings)
    from napari_segattn.widgets.settings import recent_models

    assert recent_models()[0] == str(path.resolve())


def test_changing_architecture_after_a_load_drops_the_loaded_models_options(viewer_with_sample, qtbot):
    from napari_segattn.widgets import ModelWidget

    w = ModelWidget(viewer_with_sample)
    _choose_known(w, "demo")
    w.load_button.clicked.emit()
    _wait_idle(qtbot, w)
    w.arch.value = "unet"
    assert w.arch_options.value == "{}"
    w.build_button.clicked.emit()
    _wait_idle(qtbot, w)
    assert w.state.loaded.name == "unet" and "error" not in w.status.value


def test_model_names_without_torch_match_the_registry():
    from napari_segattn.models import list_models
    from napari_segattn.widgets.model_widget import MODEL_NAMES

    # other test modules register private stand-ins ("_tiny", "_standin_fanet") in this process
    assert MODEL_NAMES == [n for n in list_models() if not n.startswith("_")]
