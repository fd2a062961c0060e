"""segattn saliency / shift on stand-in checkpoints."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_segattn.cli import main
from napari_segattn.models import save_model


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def ckpt(tmp_path, standin):
    def write(name, scale=10.0):
        m = standin("pixel")
        m.scale.data.fill_(scale)
        path = tmp_path / f"{name}.safetensors"
        save_model(m, path)
        return str(path)

    return write


def test_saliency_command_2d(tmp_path, ckpt):
    img = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "img.tif", img)
    out = tmp_path / "sal"
    assert main(["saliency", ckpt("m"), str(tmp_path / "img.tif"), "--class", "1", "--out", str(out),
                 "--window", "4", "--stride", "4", "--device", "cpu"]) == 0
    m = tifffile.imread(out / "saliency_class1.tif")
    np.testing.assert_allclose(m, sigmoid(10 * (img - 0.5)) - sigmoid(-5.0), atol=1e-4)
    assert (out / "saliency_class1.png").exists()
    info = json.loads((out / "saliency.json").read_text())
    assert info["completeness_gap"] < 1e-3 and info["n_windows"] == 16
    assert main(["saliency", ckpt("m"), str(tmp_path / "img.tif"), "--class", "1", "--out", str(out)]) == 2


def test_saliency_nifti_slice_on_source_grid(tmp_path, ckpt):
    vol = np.random.default_rng(1).random((8, 12, 4)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "v.nii.gz")
    out = tmp_path / "sal"
    assert main(["saliency", ckpt("m"), str(tmp_path / "v.nii.gz"), "--class", "1", "--out", str(out),
                 "--slice", "1", "--window", "4", "--stride", "4", "--device", "cpu"]) == 0
    img = nib.load(out / "saliency_class1.nii.gz")
    data = np.asarray(img.dataobj)
    assert data.shape == vol.shape and np.allclose(img.affine, affine)
    np.testing.assert_allclose(data[:, :, 1], sigmoid(10 * (vol[:, :, 1] - 0.5)) - sigmoid(-5.0), atol=1e-4)
    assert not data[:, :, [0, 2, 3]].any()


def test_shift_command(tmp_path, ckpt):
    img = np.zeros((12, 12), np.float32)
    img[:, 6:] = 1.0
    gt = (img > 0).astype(np.uint8)
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "gt.tif", gt)
    out = tmp_path / "shift"
    assert main(["shift", "--a", ckpt("a", 10.0), "--b", ckpt("b", 10.0), str(tmp_path / "img.tif"),
                 "--gt", str(tmp_path / "gt.tif"), "--out", str(out), "--window", "4", "--stride", "4",
                 "--class-names", "bg", "fg", "--device", "cpu"]) == 0
    rows = list(csv.DictReader((out / "shift.csv").open()))
    assert rows[0]["class"] == "fg" and float(rows[0]["shift_px"]) == pytest.approx(0.0, abs=1e-9)
    # IG_p = sigmoid(10(x-0.5)) - sigmoid(-5): |.| equal on both halves, so half the mass in each region
    ig0, ig1 = abs(sigmoid(-5) - sigmoid(-5)), abs(sigmoid(5) - sigmoid(-5))
    assert float(rows[0]["mass_a:fg"]) == pytest.approx(ig1 / (ig0 + ig1))
    assert (out / "difference_class1.tif").exists() and (out / "shift.json").exists()


def test_saliency_gap_tolerance_and_preview_flags(tmp_path, ckpt):
    """--gap-tolerance doubles the steps until IG's relative gap is under it (recorded in
    saliency.json); --preview F explains a 1/F image and says so."""
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    tifffile.imwrite(tmp_path / "img.tif", img)
    out = tmp_path / "sal"
    assert main(["saliency", ckpt("m"), str(tmp_path / "img.tif"), "--class", "1", "--out", str(out),
                 "--steps", "2", "--gap-tolerance", "0.01", "--device", "cpu"]) == 0
    info = json.loads((out / "saliency.json").read_text())
    tried = info["steps_tried"]
    assert [n for n, _ in tried] == [2 * 2 ** k for k in range(len(tried))] and len(tried) > 1
    assert info["n_steps"] == tried[-1][0] and tried[-1][1] < 0.01 <= tried[-2][1]
    out2 = tmp_path / "prev"
    assert main(["saliency", ckpt("m"), str(tmp_path / "img.tif"), "--class", "1", "--out", str(out2),
                 "--preview", "2", "--device", "cpu"]) == 0
    assert json.loads((out2 / "saliency.json").read_text())["preview_downscale"] == 2
    assert tifffile.imread(out2 / "saliency_class1.tif").shape == (32, 32)
