"""Several inputs per call (predict/refine), refine's output folder, and evaluate --roi."""

from __future__ import annotations

import csv

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_segattn.cli import main, predict_cmd, refine_cmd
from napari_segattn.models import save_model


@pytest.fixture
def ckpt(tmp_path, standin):
    def write(kind="plain"):
        path = tmp_path / f"{kind}.safetensors"
        save_model(standin(kind), path)
        return str(path)

    return write


def _images(folder, n=3, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    imgs = {}
    for k in range(n):
        imgs[f"im{k}"] = rng.random((12, 14)).astype(np.float32)
        tifffile.imwrite(folder / f"im{k}.tif", imgs[f"im{k}"])
    return imgs


def _count_loads(monkeypatch, module):
    calls = []
    real = module.load_cli_model
    monkeypatch.setattr(module, "load_cli_model", lambda p: calls.append(p) or real(p))
    return calls


def test_predict_a_folder_and_a_file_with_one_model_load(tmp_path, ckpt, capsys, monkeypatch):
    imgs = _images(tmp_path / "data")
    extra = tmp_path / "other.tif"
    tifffile.imwrite(extra, np.full((6, 6), 0.9, np.float32))
    loads = _count_loads(monkeypatch, predict_cmd)
    out = tmp_path / "pred"
    assert main(["predict", ckpt(), str(tmp_path / "data"), str(extra), "--out", str(out), "--device", "cpu",
                 "--probabilities", str(tmp_path / "prob")]) == 0
    assert len(loads) == 1
    assert sorted(p.name for p in out.iterdir()) == ["im0.tif", "im1.tif", "im2.tif", "other.tif"]
    for name, img in imgs.items():  # the stand-in thresholds raw values at 0.5
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}.tif"), (img > 0.5).astype(np.uint8))
    assert tifffile.imread(out / "other.tif").all()
    assert tifffile.imread(tmp_path / "prob" / "im0.tif").dtype == np.float32
    said = capsys.readouterr()
    assert f"predicting 4 input(s) into {out}" in said.err
    assert said.out.count("wrote ") == 4
    # a second run refuses to overwrite the outputs
    assert main(["predict", ckpt(), str(tmp_path / "data"), "--out", str(out)]) == 2
    assert "output exists" in capsys.readouterr().err


def test_predict_never_overwrites_its_inputs(tmp_path, ckpt, capsys):
    data = tmp_path / "data"
    _images(data, n=2)
    before = (data / "im0.tif").read_bytes()
    assert main(["predict", ckpt(), str(data), "--out", str(data), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"the output {data / 'im0.tif'} is an input" in err and "\n" not in err.strip()
    assert (data / "im0.tif").read_bytes() == before
    # the same for one file
    assert main(["predict", ckpt(), str(data / "im0.tif"), "--out", str(data / "im0.tif"), "--overwrite"]) == 2
    assert "is an input" in capsys.readouterr().err and (data / "im0.tif").read_bytes() == before


@pytest.mark.parametrize("case,message", [
    ("same_stem", "would write outputs of the same name (im0)"),
    ("out_is_file", "with 2 inputs --out is the folder to write into, not a file"),
    ("out_is_a_file_name", "with 2 inputs --out is the folder to write into, not a file"),
    ("empty_folder", "no images in this folder"),
    ("missing", "no such file or folder"),
])
def test_predict_batch_input_errors_are_one_line(tmp_path, ckpt, capsys, case, message):
    data = tmp_path / "data"
    _images(data, n=2)
    out = tmp_path / "out"
    inputs = [str(data / "im0.tif"), str(data / "im1.tif")]
    if case == "same_stem":
        iio.imwrite(tmp_path / "im0.png", np.zeros((6, 6), np.uint8))
        inputs = [str(data / "im0.tif"), str(tmp_path / "im0.png")]
    elif case == "out_is_file":
        out.write_text("x")
    elif case == "out_is_a_file_name":
        out = tmp_path / "labels.tif"
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        inputs = [str(tmp_path / "empty")]
    else:
        inputs.append(str(tmp_path / "nope.tif"))
    assert main(["predict", ckpt(), *inputs, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "labels.tif").exists()


def _line(folder, name):
    img = np.zeros((14, 14), np.float32)
    img[4, 1:7] = 1.0
    tifffile.imwrite(folder / f"{name}.tif", img)
    return img


def test_refine_a_folder_writes_one_subfolder_per_image_with_one_model_load(tmp_path, ckpt, capsys, monkeypatch):
    data, gts = tmp_path / "data", tmp_path / "gt"
    data.mkdir()
    gts.mkdir()
    for name in ("a", "b"):
        img = _line(data, name)
        iio.imwrite(gts / f"{name}.png", (img > 0.2).astype(np.uint8))
    loads = _count_loads(monkeypatch, refine_cmd)
    out = tmp_path / "ref"
    assert main(["refine", ckpt("fanet"), str(data), "--gt", str(gts), "--init", "full", "--iterations", "2",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert len(loads) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    for name in ("a", "b"):
        assert sorted(p.name for p in (out / name).iterdir()) == ["initial_mask.tif", "iter_00.tif", "iter_01.tif",
                                                                   "metrics.csv"]
        rows = list(csv.DictReader((out / name / "metrics.csv").open()))
        assert float(rows[-1]["dice"]) == pytest.approx(1.0)  # from a full mask: exactly the bright pixels
    assert sorted(p.name for p in data.iterdir()) == ["a.tif", "b.tif"]  # nothing written among the images
    assert f"refining 2 input(s) into {out}/<image name>/" in capsys.readouterr().err
    # a ground-truth folder without one of the images names it
    (gts / "b.png").unlink()
    assert main(["refine", ckpt("fanet"), str(data), "--gt", str(gts), "--out", str(tmp_path / "r2")]) == 2
    assert "no ground-truth mask for b.tif" in capsys.readouterr().err


def test_refine_never_writes_into_the_data_folder(tmp_path, ckpt, capsys, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _line(data, "a")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["refine", ckpt("fanet"), str(data / "a.tif"), "--iterations", "1", "--device", "cpu"]) == 0
    assert (work / "a_refine" / "iter_00.tif").exists()  # the default: in the current folder
    assert sorted(p.name for p in data.iterdir()) == ["a.tif"]
    assert main(["refine", ckpt("fanet"), str(data / "a.tif"), "--out", str(data)]) == 2
    assert "is the folder of the input image(s)" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["a.tif"]


def _roi_data(tmp_path):
    """The stand-in predicts img > 0.5. The ground truth agrees on the left half only; the ROI is
    that half, so inside it every metric is perfect and outside it the errors are not counted."""
    rng = np.random.default_rng(3)
    for d in ("images", "masks", "roi"):
        (tmp_path / d).mkdir()
    for k in range(2):
        img = rng.random((10, 12)).astype(np.float32)
        img[:, 6:] = 0.9  # predicted foreground ...
        gt = (img > 0.5).astype(np.uint8)
        gt[:, 6:] = 0  # ... that the ground truth calls background
        roi = np.zeros((10, 12), np.uint8)
        roi[:, :6] = 255
        tifffile.imwrite(tmp_path / "images" / f"f{k}.tif", img)
        iio.imwrite(tmp_path / "masks" / f"f{k}.png", gt)
        iio.imwrite(tmp_path / "roi" / f"f{k}.png", roi)


def test_evaluate_roi_scores_only_inside_it(tmp_path, ckpt, capsys):
    _roi_data(tmp_path)
    base = ["evaluate", ckpt(), "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "all.csv")]) == 0
    assert main(base + ["--roi", str(tmp_path / "roi"), "--out", str(tmp_path / "roi.csv")]) == 0
    whole = list(csv.DictReader((tmp_path / "all.csv").open()))
    inside = list(csv.DictReader((tmp_path / "roi.csv").open()))
    assert float(whole[-1]["dice"]) < 0.9 and float(whole[-1]["precision"]) < 0.9
    for r in inside:
        assert float(r["dice"]) == 1.0 and float(r["accuracy"]) == 1.0 and float(r["fp"]) == 0
    counts = sum(float(inside[0][k]) for k in ("tp", "fp", "fn", "tn"))
    assert counts == 10 * 6  # only the ROI's pixels are counted
    assert "evaluated f0.tif inside f0.png" in capsys.readouterr().err


def test_evaluate_roi_errors_name_the_file(tmp_path, ckpt, capsys):
    _roi_data(tmp_path)
    base = ["evaluate", ckpt(), "--images", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"),
            "--roi", str(tmp_path / "roi")]
    (tmp_path / "roi" / "f1.png").unlink()
    assert main(base) == 2
    err = capsys.readouterr().err.strip()
    assert f"--roi {tmp_path / 'roi'}: no ROI mask for f1.tif (looked for f1.*)" in err and "\n" not in err
    iio.imwrite(tmp_path / "roi" / "f1.png", np.zeros((10, 12), np.uint8))
    assert main(base) == 2
    assert "ROI f1.png is empty" in capsys.readouterr().err
    iio.imwrite(tmp_path / "roi" / "f1.png", np.full((5, 5), 255, np.uint8))
    assert main(base) == 2
    assert "ROI f1.png has shape (5, 5), the ground truth (10, 12)" in capsys.readouterr().err


def test_a_folder_with_an_unreadable_file_predicts_the_others_and_says_which_failed(tmp_path, ckpt, capsys):
    """Found by a new user: predict stopped at a corrupt file in the middle of a folder and never
    predicted the files after it (the Batch widget already skipped and reported such a file)."""
    imgs = _images(tmp_path / "data", n=2)
    (tmp_path / "data" / "im0b.png").write_bytes(b"not a png")  # sorts between im0 and im1
    out = tmp_path / "out"
    assert main(["predict", ckpt(), str(tmp_path / "data"), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["im0.tif", "im1.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / "im1.tif"), (imgs["im1"] > 0.5).astype(np.uint8))
    err = capsys.readouterr().err
    assert "skipped im0b.png (" in err and "1 of 3 input(s) failed and were skipped: im0b.png" in err


def test_a_colour_tiff_for_a_grey_model_is_refused_not_cut_into_strips(tmp_path, ckpt, capsys):
    """An (H, W, 3) TIFF given to a one-channel model was read as H slices of W x 3 pixels and
    'predicted' (exit 0); a PNG of the same image was refused."""
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((16, 16, 3), np.uint8))
    assert main(["predict", ckpt(), str(tmp_path / "rgb.tif"), "--out", str(tmp_path / "o.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert "rgb.tif is a colour image (shape (16, 16, 3))" in err and "\n" not in err
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("command", ["predict", "train"])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, ckpt, capsys, monkeypatch, command):
    """Found by a new user: an unwritable --out was found only after the model had run (predict:
    a traceback; train: after a whole epoch)."""
    _images(tmp_path / "data", n=1)
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    loads = _count_loads(monkeypatch, predict_cmd)
    if command == "predict":
        args = ["predict", ckpt(), str(tmp_path / "data" / "im0.tif"), "--out", str(blocker / "o.tif")]
    else:
        tifffile.imwrite(tmp_path / "gt.tif", np.zeros((12, 14), np.uint8))
        args = ["train", "--model", "unet", "--images", str(tmp_path / "data" / "im0.tif"), "--labels",
                str(tmp_path / "gt.tif"), "--epochs", "1", "--out", str(blocker / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot write the output into {blocker}: it is a file, not a folder" in err and "\n" not in err
    assert loads == []  # refused before the model was even read
