"""Batch widget, clicked as a user would: a folder predicted into masks (one bad file reported),
run twice (refused without overwrite, then replaced), cancelled mid-way, and every open image
layer predicted into a labels layer each."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

pytestmark = pytest.mark.gui


@pytest.fixture
def batch(make_napari_viewer, tmp_path):
    import torch

    from napari_segattn.models import build_model
    from napari_segattn.widgets import BatchWidget
    from napari_segattn.widgets.state import LoadedModel, get_state

    viewer = make_napari_viewer()
    state = get_state(viewer)
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1).eval()
    state.set_device("cpu")
    state.set_model(LoadedModel(model, "unet", {}, "built"))
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    imgs = [rng.random((32, 40)).astype(np.float32) for _ in range(3)]
    for k, im in enumerate(imgs):
        tifffile.imwrite(folder / f"im{k}.tif", im)
    w = BatchWidget(viewer)
    w.folder.value = str(folder)
    w.out.value = str(tmp_path / "masks")
    return viewer, w, state, model, imgs, tmp_path


def _wait(qtbot, state):
    qtbot.waitUntil(lambda: not state.busy, timeout=120_000)


def test_a_folder_becomes_one_mask_per_image_and_a_second_run_needs_overwrite(batch, qtbot):
    from napari_segattn.inference import predict

    viewer, w, state, model, imgs, tmp = batch
    (tmp / "imgs" / "broken.png").write_bytes(b"not a png")
    w.run_button.clicked.emit()
    _wait(qtbot, state)
    written = sorted(p.name for p in (tmp / "masks").iterdir())
    assert written == ["im0.tif", "im1.tif", "im2.tif"]
    for k, im in enumerate(imgs):
        want = predict(model, im, device="cpu").labels.astype(np.uint8)
        np.testing.assert_array_equal(tifffile.imread(tmp / "masks" / f"im{k}.tif"), want)
    assert "wrote 3 mask(s)" in w.status.value and "1 failed: broken.png" in w.status.value
    # run twice: refused (the user's files are kept), then replaced with overwrite ticked
    before = (tmp / "masks" / "im0.tif").read_bytes()
    w.run_button.clicked.emit()
    assert not state.busy and "already holds" in w.status.value
    assert (tmp / "masks" / "im0.tif").read_bytes() == before
    w.overwrite.value = True
    w.run_button.clicked.emit()
    _wait(qtbot, state)
    assert "wrote 3 mask(s)" in w.status.value


def test_empty_fields_are_named(batch):
    viewer, w, state, *_ = batch
    w.folder.line_edit.value = ""  # the user cleared the field
    w.run_button.clicked.emit()
    assert "'image folder' is empty" in w.status.value and not state.busy


def test_cancel_stops_between_images(batch, qtbot):
    viewer, w, state, model, imgs, tmp = batch
    worker = w.run()
    w.cancel_button.clicked.emit()  # right after the start: the worker stops at its next check
    _wait(qtbot, state)
    assert worker is not None
    assert len(list((tmp / "masks").glob("*.tif"))) < 3 and "stopped" in w.status.value


def test_every_open_image_layer_gets_its_labels_layer_and_file(batch, qtbot):
    from napari_segattn.inference import predict

    viewer, w, state, model, imgs, tmp = batch
    viewer.add_image(imgs[0], name="a", scale=(2, 2))
    viewer.add_image(np.stack([imgs[1], imgs[2]]), name="vol")
    w.source.value = "every open image layer"
    assert not w.folder.visible
    w.run_button.clicked.emit()
    _wait(qtbot, state)
    a = viewer.layers["a prediction"]
    np.testing.assert_array_equal(a.data, predict(model, imgs[0], device="cpu").labels.astype(np.uint8))
    assert tuple(a.scale) == (2, 2)
    vol = viewer.layers["vol prediction"].data
    assert vol.shape == (2, 32, 40)
    np.testing.assert_array_equal(vol[1], predict(model, imgs[2], device="cpu").labels.astype(np.uint8))
    assert sorted(p.name for p in (tmp / "masks").iterdir()) == ["a.tif", "vol.tif"]


def test_open_layers_skip_the_plugins_own_results_and_one_bad_layer_does_not_stop_the_rest(batch, qtbot):
    """Found by a new user: 'every open image layer' also predicted the plugin's own probability
    layers, and one RGB layer's channel error threw away the grey layer's finished result."""
    from napari_segattn.inference import predict

    viewer, w, state, model, imgs, tmp = batch
    viewer.add_image(np.zeros((16, 16, 3), np.uint8), name="colour", rgb=True)  # the model takes one channel
    viewer.add_image(imgs[0], name="grey")
    viewer.add_image(np.ones((32, 40), np.float32), name="probability", metadata={"segattn": True})
    w.source.value = "every open image layer"
    w.out.line_edit.value = ""  # show only, no files
    w.run_button.clicked.emit()
    _wait(qtbot, state)
    assert "probability prediction" not in viewer.layers and "colour prediction" not in viewer.layers
    np.testing.assert_array_equal(viewer.layers["grey prediction"].data,
                                  predict(model, imgs[0], device="cpu").labels.astype(np.uint8))
    assert w.status.value.startswith("predicted 1 layer(s); 1 failed: colour ("), w.status.value


def test_a_folder_with_many_bad_files_says_how_many_it_left_unlisted(batch, qtbot):
    viewer, w, state, model, imgs, tmp = batch
    for k in range(5):
        (tmp / "imgs" / f"broken{k}.png").write_bytes(b"not a png")
    w.run_button.clicked.emit()
    _wait(qtbot, state)
    assert "5 failed: broken0.png" in w.status.value and w.status.value.endswith("; and 2 more")
