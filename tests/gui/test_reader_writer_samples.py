"""NIfTI reader/writer and sample data, headless (no viewer needed) and through npe2."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_segattn import _sample_data
from napari_segattn._reader import napari_get_reader
from napari_segattn._writer import write_labels_nifti


def test_reader_keeps_spacing_as_scale_and_axial_order(shared_data):
    path = shared_data / "sct_spine" / "t2s.nii.gz"
    reader = napari_get_reader(str(path))
    assert reader is not None
    (data, kwargs, kind), = reader(str(path))
    src = nib.load(str(path))
    assert kind == "image"
    assert data.shape == src.shape[::-1]  # (x, y, z) -> (z, y, x)
    np.testing.assert_allclose(kwargs["scale"], src.header.get_zooms()[::-1], rtol=1e-6)
    np.testing.assert_array_equal(data[3], np.asarray(src.dataobj)[:, :, 3].T)


def test_reader_opens_segmentations_as_labels(shared_data):
    path = str(shared_data / "sct_spine" / "t2s_gmseg_manual.nii.gz")
    (data, kwargs, kind), = napari_get_reader(path)(path)
    assert kind == "labels" and np.issubdtype(data.dtype, np.integer)
    assert set(np.unique(data)) <= {0, 1}


def test_reader_turns_a_corrupt_volume_into_one_notification(tmp_path, monkeypatch):
    """A truncated .nii.gz (zlib/EOFError before) is one error notification naming the file; the
    good file of the same drop still opens."""
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), good)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(good.read_bytes()[:40])
    assert napari_get_reader(str(bad))(str(bad)) == [(None,)]  # napari's "empty file" sentinel
    assert len(shown) == 1 and "cannot read NIfTI volume" in shown[0] and "bad.nii.gz" in shown[0]
    layers = napari_get_reader([str(bad), str(good)])([str(bad), str(good)])
    assert len(layers) == 1 and layers[0][0].shape == (3, 5, 4)


def test_reader_declines_other_files():
    assert napari_get_reader("image.png") is None


def test_writer_round_trips_on_the_source_grid(shared_data, tmp_path):
    path = str(shared_data / "sct_spine" / "t2s_gmseg_manual.nii.gz")
    (data, kwargs, _), = napari_get_reader(path)(path)
    edited = data.copy()
    edited[0, :5, :5] = 1
    out = write_labels_nifti(str(tmp_path / "edited.nii.gz"), edited, kwargs["metadata"])[0]
    back, src = nib.load(out), nib.load(path)
    np.testing.assert_allclose(back.affine, src.affine)
    assert back.header.get_zooms() == src.header.get_zooms()
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.moveaxis(edited, (0, 1, 2), (2, 1, 0)))


def test_samples_have_ground_truth_aligned_with_images():
    img, gt = _sample_data.dsb2018_nuclei()
    assert img[0].shape == gt[0].shape == (512, 512) and gt[2] == "labels"
    assert 0.05 < (gt[0] > 0).mean() < 0.6
    t1, tissue = _sample_data.mni152_brain()
    assert t1[0].shape == tissue[0].shape and set(np.unique(tissue[0])) == {0, 1, 2}
    assert tissue[1]["scale"] == pytest.approx((2.0, 2.0, 2.0))
    cord, gm = _sample_data.sct_spinal_cord_gm()
    assert cord[1]["scale"] == pytest.approx((7.5, 0.5, 0.5), rel=1e-5)


def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("napari-segattn")
    assert {w.display_name for w in pm.contributions.widgets} >= {"Model", "Train", "Predict and refine", "Inspect", "Compare"}


def test_saving_through_napari_keeps_the_source_grid_for_a_read_layer_and_a_prediction(
        shared_data, make_napari_viewer, qtbot, tmp_path):
    """Found by a new user: File > Save of a labels layer read from NIfTI wrote diag(spacing)
    with no origin or orientation (napari hands the writer the layer's attributes, the metadata
    one level down), and the plugin's prediction of a NIfTI volume had no grid to keep."""
    import json

    from napari_segattn.widgets import ModelWidget, PredictRefineWidget
    from napari_segattn.widgets.state import get_state

    viewer = make_napari_viewer()
    seg = shared_data / "sct_spine" / "t2s_gmseg_manual.nii.gz"
    image = shared_data / "sct_spine" / "t2s.nii.gz"
    viewer.open(str(seg), plugin="napari-segattn")
    viewer.layers.selection = {viewer.layers[0]}
    out = tmp_path / "edited.nii.gz"
    viewer.layers.save(str(out), selected=True, plugin="napari-segattn")
    src = nib.load(str(seg))
    assert not np.allclose(src.affine, np.diag([*src.header.get_zooms()[:3], 1.0]))  # an oblique, shifted grid
    np.testing.assert_allclose(nib.load(str(out)).affine, src.affine)

    viewer.open(str(image), plugin="napari-segattn")
    mw, rw = ModelWidget(viewer), PredictRefineWidget(viewer)
    state = get_state(viewer)
    mw.image_select.value = ["t2s"]
    mw.arch.value = "unet"
    mw.arch_options.value = json.dumps({"in_channels": 1})
    mw.build_button.clicked.emit()
    qtbot.waitUntil(lambda: state.loaded is not None and not state.busy, timeout=60_000)
    rw.scope.value = "whole volume"
    rw.predict_button.clicked.emit()
    qtbot.waitUntil(lambda: not state.busy, timeout=120_000)
    viewer.layers.selection = {viewer.layers["prediction"]}
    pred_out = tmp_path / "prediction.nii.gz"
    viewer.layers.save(str(pred_out), selected=True, plugin="napari-segattn")
    saved, src_image = nib.load(str(pred_out)), nib.load(str(image))
    np.testing.assert_allclose(saved.affine, src_image.affine)
    assert saved.shape == src_image.shape
    np.testing.assert_array_equal(np.asarray(saved.dataobj),
                                  np.moveaxis(viewer.layers["prediction"].data, (0, 1, 2), (2, 1, 0)))
    # the file says it holds labels (NIFTI_INTENT_LABEL), so it opens as labels though its name does not
    (_, _, kind), = napari_get_reader(str(pred_out))(str(pred_out))
    assert kind == "labels" and saved.header.get_intent()[0] == "label"
