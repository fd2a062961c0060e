"""segattn predict / evaluate / refine on stand-in checkpoints and small files."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_segattn.cli import main
from napari_segattn.models import save_model


@pytest.fixture
def ckpt(tmp_path, standin):
    def write(kind="plain", **kw):
        path = tmp_path / f"{kind}.safetensors"
        save_model(standin(kind, **kw), path)
        return str(path)

    return write


def test_predict_2d_tif_and_no_overwrite(tmp_path, ckpt, capsys):
    img = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "img.tif", img)
    out = tmp_path / "labels.tif"
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(out), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), (img > 0.5).astype(np.uint8))
    before = out.read_bytes()
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(out), "--overwrite"]) == 0


def test_predict_threshold_binary_and_multiclass(tmp_path, ckpt, capsys):
    """--threshold T: binary labels p > T; classes by class_labels (0.5 = argmax); out of (0, 1)
    refused in words before anything is read."""
    from napari_segattn.inference.masks import class_labels

    img = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "img.tif", img)
    out = tmp_path / "labels.tif"
    probs = tmp_path / "p.tif"
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(out), "--threshold", "0.8",
                 "--probabilities", str(probs)]) == 0
    p = tifffile.imread(probs)
    np.testing.assert_array_equal(tifffile.imread(out), (p > 0.8).astype(np.uint8))
    assert (p > 0.8).sum() < (p > 0.5).sum()
    multi = ckpt("plain", out_channels=3)
    assert main(["predict", multi, str(tmp_path / "img.tif"), "--out", str(out), "--overwrite",
                 "--probabilities", str(probs), "--threshold", "0.7"]) == 0
    p = np.moveaxis(tifffile.imread(probs), -1, 0)
    labels = tifffile.imread(out)
    np.testing.assert_array_equal(labels, class_labels(p, 0.7))
    assert (labels != p.argmax(0)).any()  # 0.7 is not the argmax
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(tmp_path / "x.tif"),
                 "--threshold", "1"]) == 2
    assert "--threshold must be in (0, 1)" in capsys.readouterr().err and not (tmp_path / "x.tif").exists()


def test_predict_nifti_volume_keeps_header(tmp_path, ckpt):
    vol = np.random.default_rng(1).random((10, 12, 5)).astype(np.float32)
    affine = np.diag([0.5, 0.5, 7.5, 1.0])
    affine[:3, 3] = [-3, 4, 10]
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "vol.nii.gz")
    out = tmp_path / "seg.nii.gz"
    probs = tmp_path / "prob.nii.gz"
    assert main(["predict", ckpt(), str(tmp_path / "vol.nii.gz"), "--out", str(out), "--probabilities",
                 str(probs), "--batch-size", "2", "--device", "cpu"]) == 0
    seg = nib.load(out)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), (vol > 0.5).astype(np.uint8))
    np.testing.assert_allclose(seg.affine, affine)
    assert seg.header.get_zooms() == (0.5, 0.5, 7.5)
    assert nib.load(probs).shape == vol.shape


def test_bad_checkpoint_and_fanet_only_flags(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((8, 8), np.float32))
    assert main(["predict", str(bad), str(tmp_path / "img.tif"), "--out", str(tmp_path / "o.tif")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(tmp_path / "o.tif"),
                 "--iterations", "3"]) == 2
    assert "FANet" in capsys.readouterr().err


def line_image():
    img = np.zeros((14, 14), np.float32)
    img[4, 1:7] = 1.0
    return img


def test_predict_fanet_iterations(tmp_path, ckpt):
    tifffile.imwrite(tmp_path / "img.tif", line_image())
    out = tmp_path / "o.tif"
    assert main(["predict", ckpt("fanet"), str(tmp_path / "img.tif"), "--out", str(out), "--init", "full",
                 "--iterations", "2", "--device", "cpu"]) == 0
    # from a full mask the stand-in keeps exactly the bright pixels
    np.testing.assert_array_equal(tifffile.imread(out), (line_image() > 0.2).astype(np.uint8))
    # --bf16 runs the same path in bfloat16 autocast: the stand-in's clear-cut pixels agree
    out16 = tmp_path / "o16.tif"
    assert main(["predict", ckpt("fanet"), str(tmp_path / "img.tif"), "--out", str(out16), "--init", "full",
                 "--iterations", "2", "--device", "cpu", "--bf16"]) == 0
    agree = (tifffile.imread(out16) == tifffile.imread(out)).mean()
    assert agree > 0.99, agree


def test_refine_writes_iterations_and_csv(tmp_path, ckpt):
    tifffile.imwrite(tmp_path / "img.tif", line_image())
    out = tmp_path / "ref"
    assert main(["refine", ckpt("fanet"), str(tmp_path / "img.tif"), "--init", "empty", "--iterations", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["initial_mask.tif", "iter_00.tif", "iter_01.tif",
                                                      "iter_02.tif", "metrics.csv"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["iteration"] for r in rows] == ["0", "1", "2"]
    assert all(float(r["changed_fraction"]) == 0 for r in rows)  # empty stays empty
    assert main(["refine", ckpt("plain"), str(tmp_path / "img.tif"), "--out", str(tmp_path / "x")]) == 2


def test_evaluate_folder(tmp_path, ckpt, capsys):
    metrics = pytest.importorskip("napari_segattn.metrics")
    if not hasattr(metrics, "binary_metrics"):
        pytest.skip("metrics package not written yet")
    rng = np.random.default_rng(2)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(3):
        img = (rng.random((16, 16)) * 255).astype(np.uint8)
        iio.imwrite(tmp_path / "images" / f"{i}.png", img)
        iio.imwrite(tmp_path / "masks" / f"{i}.png", ((img > 127) * 255).astype(np.uint8))
    # the stand-in thresholds at 0.5 on raw values 0..255, so everything > 0 is foreground
    out = tmp_path / "table.csv"
    args = ["evaluate", ckpt(), "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--out", str(out), "--device", "cpu"]
    assert main(args) == 2 and "--binarize" in capsys.readouterr().err
    assert main(args + ["--binarize"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["image"] for r in rows] == ["0.png", "1.png", "2.png", "mean"]
    assert float(rows[-1]["recall"]) == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(1, 20, 24), (20, 24, 1)])
def test_a_singleton_axis_is_the_channel_of_a_one_channel_model(tmp_path, ckpt, shape):
    """A (1, H, W) TIFF, as `segattn train` reads it (C x H x W), is a 2D image for a 1-channel
    model: the labels are H x W and a 2D ground truth fits `refine --gt` (was: a 1-slice volume,
    'ground truth has shape (20, 24); the image's spatial shape is (1, 20, 24)')."""
    img = np.random.default_rng(0).random((20, 24)).astype(np.float32)
    tifffile.imwrite(tmp_path / "img.tif", img.reshape(shape))
    tifffile.imwrite(tmp_path / "gt.tif", (img > 0.5).astype(np.uint8))
    out = tmp_path / "labels.tif"
    assert main(["predict", ckpt(), str(tmp_path / "img.tif"), "--out", str(out), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), (img > 0.5).astype(np.uint8))
    assert main(["refine", ckpt("fanet"), str(tmp_path / "img.tif"), "--gt", str(tmp_path / "gt.tif"),
                 "--iterations", "1", "--out", str(tmp_path / "ref"), "--device", "cpu"]) == 0
    assert tifffile.imread(tmp_path / "ref" / "iter_00.tif").shape == (20, 24)
