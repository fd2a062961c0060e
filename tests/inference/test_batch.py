"""inference.batch: a folder predicted with one model, one mask per image, bad files reported
and skipped, outputs checked before any work, cancel between images."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_segattn.inference import Cancelled, InputError, predict
from napari_segattn.inference.batch import images_in, iter_predict_files, plan_outputs, predict_labels
from napari_segattn.inference.predict import drive


def _folder(tmp_path, n=3):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    imgs = [rng.random((20, 24)).astype(np.float32) for _ in range(n)]
    for k, im in enumerate(imgs):
        tifffile.imwrite(d / f"im{k}.tif", im)
    return d, imgs


def test_a_folder_is_predicted_into_one_mask_per_image_and_a_bad_file_is_skipped(tmp_path, standin):
    d, imgs = _folder(tmp_path)
    (d / "broken.tif").write_bytes(b"not a tiff")
    (d / "notes.txt").write_text("ignored: not an image")
    inputs = images_in(d)
    assert [p.name for p in inputs] == ["broken.tif", "im0.tif", "im1.tif", "im2.tif"]
    events = []
    items = drive(iter_predict_files(standin("plain"), inputs, tmp_path / "out", device="cpu"), events.append)
    assert [e.done for e in events] == [1, 2, 3, 4] and events[-1].total == 4
    bad, *good = items
    assert bad.output is None and bad.error  # reported, and the batch went on
    for item, im in zip(good, imgs):
        want = predict(standin("plain"), im, device="cpu").labels
        np.testing.assert_array_equal(tifffile.imread(item.output), want.astype(np.uint8))
        assert item.foreground == pytest.approx(float(want.mean()))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["im0.tif", "im1.tif", "im2.tif"]


def test_fanet_runs_its_iterations(tmp_path, standin):
    from napari_segattn.inference import FANetRefiner

    d, imgs = _folder(tmp_path, 1)
    labels, probs = predict_labels(standin("fanet"), imgs[0], iterations=3, device="cpu")
    ref = FANetRefiner(standin("fanet"), imgs[0], device="cpu")
    ref.run(3, tol=None)
    np.testing.assert_array_equal(labels, ref.history[-1].mask)
    assert len(ref.history) == 3 and probs.shape == (1, 20, 24)


def test_outputs_are_checked_before_any_work(tmp_path):
    d, _ = _folder(tmp_path)
    inputs = images_in(d)
    with pytest.raises(InputError, match="is an input"):
        plan_outputs(inputs, d, overwrite=True)  # into the input folder: would overwrite im0.tif
    out = tmp_path / "out"
    out.mkdir()
    (out / "im1.tif").write_bytes(b"the user's file")
    with pytest.raises(InputError, match="already holds im1.tif"):
        plan_outputs(inputs, out)
    assert (out / "im1.tif").read_bytes() == b"the user's file"
    (tmp_path / "other").mkdir()
    tifffile.imwrite(tmp_path / "other" / "im0.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(InputError, match="would both write im0.tif"):
        plan_outputs(inputs + [tmp_path / "other" / "im0.tif"], tmp_path / "o2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        images_in(tmp_path / "empty")


def test_cancel_between_images(tmp_path, standin):
    d, _ = _folder(tmp_path)
    events = []
    with pytest.raises(Cancelled, match="after 1 of 3"):
        drive(iter_predict_files(standin("plain"), images_in(d), tmp_path / "out", device="cpu",
                                 cancel=lambda: len(events) >= 1), events.append)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["im0.tif"]
