"""Predict on a dask / multiscale layer as a user does: the chosen level is read window by window
and the result layers are lazy (dask over a zarr store), matching the core's in-memory result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.gui


def _image(size=(96, 128), seed=0):
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(seed).standard_normal(size), 3.0)
    return ((x - x.min()) / (x.max() - x.min()) * 200).astype(np.float32)


@pytest.fixture
def viewer_and_widget(make_napari_viewer):
    from napari_segattn.models import build_model
    from napari_segattn.widgets import PredictRefineWidget
    from napari_segattn.widgets.state import LoadedModel, get_state

    viewer = make_napari_viewer()
    widget = PredictRefineWidget(viewer)
    state = get_state(viewer)
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1)
    model.segattn_normalization = {"mode": "zscore", "per": "image"}
    state.set_model(LoadedModel(model=model, name="unet", config={}, source="built",
                                normalization=model.segattn_normalization))
    state.set_device("cpu")
    return viewer, widget, state, model


def test_multiscale_dask_layer_is_predicted_on_the_chosen_level_lazily(viewer_and_widget, qtbot):
    import dask.array as da

    from napari_segattn.inference import predict

    viewer, widget, state, model = viewer_and_widget
    full = _image((96, 128))
    half = np.ascontiguousarray(full[::2, ::2])
    viewer.add_image([da.from_array(full, chunks=32), da.from_array(half, chunks=32)], multiscale=True, name="big")
    state.set_inputs(["big"], None)
    widget.level.value = 1
    widget.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
    pred, prob = viewer.layers["prediction"], viewer.layers["probability"]
    assert isinstance(pred.data, da.Array) and isinstance(prob.data, da.Array)  # lazy result layers
    assert pred.data.shape == half.shape and tuple(pred.scale) == (2.0, 2.0)  # on level 1's grid
    ref = predict(model, half, device="cpu")
    np.testing.assert_allclose(np.asarray(prob.data), ref.foreground, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(pred.data).astype(bool), ref.labels)
    assert "level 1" in widget.status.value and "prediction.zarr" in widget.status.value


def test_a_level_that_does_not_exist_is_a_notification(viewer_and_widget, qtbot, monkeypatch):
    import dask.array as da

    from napari_segattn.widgets import refine_widget

    viewer, widget, state, _ = viewer_and_widget
    viewer.add_image(da.from_array(_image(), chunks=32), name="lazy")
    state.set_inputs(["lazy"], None)
    errors = []
    monkeypatch.setattr(refine_widget, "show_error", errors.append)
    widget.level.value = 2
    widget.predict_button.clicked.emit()
    assert errors == ["layer 'lazy' is not multiscale; use level 0"] and not state.busy
    assert "prediction" not in viewer.layers


def test_threshold_on_a_lazy_prediction_stays_lazy(viewer_and_widget, qtbot):
    """Issue 14 item 10 on the zarr path: the shown mask follows the threshold, read block by
    block from the stored probabilities (the model is not run again)."""
    import dask.array as da

    viewer, widget, state, model = viewer_and_widget
    viewer.add_image(da.from_array(_image(), chunks=32), name="lazy")
    state.set_inputs(["lazy"], None)
    widget.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
    p = np.asarray(viewer.layers["probability"].data)
    assert ((p > 0.45) != (p > 0.5)).any()  # the change is visible
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    widget.threshold.value = 0.45
    pred = viewer.layers["prediction"]
    assert isinstance(pred.data, da.Array) and not calls
    np.testing.assert_array_equal(np.asarray(pred.data) > 0, p > 0.45)
    assert "threshold 0.45" in widget.status.value
    # instance labels need the mask in memory: said, no layer
    widget.instances.value = True
    assert "instances" not in viewer.layers and "lazy" in widget.objects.value


def test_threshold_on_a_lazy_multiclass_prediction(make_napari_viewer, qtbot):
    """Classes on the zarr path: the stored softmax is re-labelled block by block by
    class_labels (0.5 = argmax), without the model; it used to say nothing and keep the argmax."""
    import dask.array as da

    from napari_segattn.inference.masks import class_labels
    from napari_segattn.models import build_model
    from napari_segattn.widgets import PredictRefineWidget
    from napari_segattn.widgets.state import LoadedModel, get_state

    viewer = make_napari_viewer()
    widget = PredictRefineWidget(viewer)
    state = get_state(viewer)
    torch.manual_seed(0)
    model = build_model("unet", in_channels=1, out_channels=3)
    model.segattn_normalization = {"mode": "zscore", "per": "image"}
    state.set_model(LoadedModel(model=model, name="unet", config={}, source="built",
                                normalization=model.segattn_normalization))
    state.set_device("cpu")
    viewer.add_image(da.from_array(_image(), chunks=32), name="lazy")
    state.set_inputs(["lazy"], None)
    widget.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
    store = viewer.layers["prediction"].metadata["zarr_store"]
    import zarr

    probs = zarr.open_group(store, mode="r")["probabilities"][:]
    np.testing.assert_array_equal(np.asarray(viewer.layers["prediction"].data), probs.argmax(0))
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    widget.threshold.value = 0.7
    shown = viewer.layers["prediction"].data
    assert isinstance(shown, da.Array) and not calls
    np.testing.assert_array_equal(np.asarray(shown), class_labels(probs, 0.7))
    assert (np.asarray(shown) != probs.argmax(0)).any() and "threshold 0.70" in widget.status.value


def test_the_temporary_store_lives_as_long_as_a_layer_shows_it(viewer_and_widget, qtbot):
    """A lazy Predict left its /tmp/segattn-* store behind (a new-user trial): a store is removed
    once no layer reads it: replaced by the next prediction, or its layers removed."""
    import dask.array as da
    from pathlib import Path

    viewer, widget, state, model = viewer_and_widget
    viewer.add_image(da.from_array(_image(), chunks=32), name="lazy")
    state.set_inputs(["lazy"], None)
    widget.show_probs.value = True
    stores = []
    for _ in range(2):
        widget.predict_button.clicked.emit()
        qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
        stores.append(Path(viewer.layers["prediction"].metadata["zarr_store"]))
        np.asarray(viewer.layers["prediction"].data)  # still readable
    first, second = stores
    assert first != second and not first.parent.exists()  # replaced: nothing reads it
    assert second.exists() and "temporary" in widget.status.value
    viewer.layers.remove("prediction")
    assert second.exists()  # the probability layer still reads it
    np.asarray(viewer.layers["probability"].data)
    viewer.layers.remove("probability")
    assert not second.parent.exists()


def test_a_failed_lazy_predict_leaves_no_store(viewer_and_widget, qtbot, monkeypatch):
    import dask.array as da
    import glob
    import tempfile

    from napari_segattn.inference import chunked

    viewer, widget, state, model = viewer_and_widget
    viewer.add_image(da.from_array(_image(), chunks=32), name="lazy")
    state.set_inputs(["lazy"], None)
    pattern = tempfile.gettempdir() + "/segattn-*"
    before = set(glob.glob(pattern))

    def failing(model, image, out, **kw):
        from pathlib import Path

        Path(out).mkdir(parents=True)  # partly written
        yield None
        raise RuntimeError("disk full")

    monkeypatch.setattr(chunked, "iter_predict_to_zarr", failing)
    widget.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: not state.busy, timeout=60_000)
    assert "prediction" not in viewer.layers
    assert set(glob.glob(pattern)) == before
