"""Every row of docs/bad-input.md, run: CLI rows through ``main([...])``, API rows by their call.

The tables are parsed from the docs page, so the documented message is the tested one and a row
added there without a check here fails. Hypothesis adds shapes, dtypes and NaN placement.
"""

from __future__ import annotations

import json
import re
import shlex
import warnings
from pathlib import Path

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_segattn.cli import main
from napari_segattn.data import DataError, read_image
from napari_segattn.data.errors import SegattnWarning
from napari_segattn.devices import DeviceError
from napari_segattn.explain import saliency
from napari_segattn.explain.shift import attention_shift
from napari_segattn.inference import FANetRefiner, InputError, predict
from napari_segattn.models import CheckpointError, build_model, load_model, save_model
from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.registry import _REGISTRY, register_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-input.md"


def _table(heading: str) -> list[list[str]]:
    """Rows (cells without the outer pipes) of the table under ``## heading``."""
    text = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]


def _code(cell: str) -> str:
    m = re.fullmatch(r"`(.*)`", cell)
    assert m, f"expected one `code` span, got {cell!r}"
    return m.group(1)


CLI_ROWS = [pytest.param(_code(r[2]), _code(r[3]), id=f"cli{r[0]}-{r[1]}") for r in _table("Command line")]
API_ROWS = {_code(r[2]): (r[3].strip("`"), _code(r[4])) for r in _table("Python API")}


class NaNOutput(SegmentationModel):
    """A model whose weights are finite but whose output is NaN (an overflow stand-in)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        self.w = torch.nn.Parameter(torch.ones(()))

    def _forward(self, x):
        return x.mean(1, keepdim=True) * self.w * float("nan")


if "_nan_output" not in _REGISTRY:
    register_model("_nan_output", summary="test stand-in", paper="-",
                   defaults={"in_channels": 1, "out_channels": 1})(NaNOutput)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("bad")
    f: dict = {"dir": d}
    torch.manual_seed(0)
    f["unet_model"] = build_model("unet", in_channels=1, out_channels=1, width=4)
    f["unet"] = save_model(f["unet_model"], d / "unet.safetensors")
    f["fanet_model"] = build_model("fanet", in_channels=1, out_channels=1, width=4)
    f["fanet"] = save_model(f["fanet_model"], d / "fanet.safetensors")
    nan = build_model("unet", in_channels=1, out_channels=1, width=4)
    with torch.no_grad():
        nan.enc0[0][0].weight.fill_(float("nan"))
    f["nan_ckpt"] = save_model(nan, d / "nan.safetensors")
    f["badnorm_ckpt"] = save_model(f["unet_model"], d / "badnorm.safetensors", normalization={"mode": "banana"})
    # the released config with an absurd width, beside ordinary weights (a hand-edited file)
    huge = d / "huge.safetensors"
    huge.write_bytes(f["unet"].read_bytes())
    from safetensors.torch import load_file, save_file

    meta = json.loads(f["unet"].with_suffix(".json").read_text())
    meta["config"]["width"] = 3_000_000
    save_file(load_file(str(huge)), str(huge), metadata={"segattn_config": json.dumps(meta)})
    f["huge_ckpt"] = huge
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32)) * 255).astype(np.uint8)
    f["img_array"] = img
    iio.imwrite(d / "img.png", img)
    f["img"] = d / "img.png"
    for h, w in [(0, 0), (0, 64), (1, 1), (2, 2), (8, 8)]:
        tifffile.imwrite(d / f"i{h}x{w}.tif", np.zeros((h, w), np.float32))
        f[f"tif_{h}x{w}"] = d / f"i{h}x{w}.tif"
    png = f["img"].read_bytes()
    (d / "trunc.png").write_bytes(png[: len(png) // 2])
    (d / "text.png").write_text("not an image\n")
    (d / "empty.png").write_bytes(b"")
    f.update(trunc_png=d / "trunc.png", text_png=d / "text.png", empty_png=d / "empty.png")
    for name, src in (("trunc_dir", "trunc.png"), ("text_dir", "text.png")):
        (d / name).mkdir()
        (d / name / "a.png").write_bytes((d / src).read_bytes())
        f[name] = d / name
    (d / "mask_dir").mkdir()
    iio.imwrite(d / "mask_dir" / "a.png", (img > 128).astype(np.uint8))
    f["mask_dir"] = d / "mask_dir"
    nib.save(nib.Nifti1Image(rng.random((16, 16, 4)).astype(np.float32), np.eye(4)), d / "v.nii.gz")
    vb = (d / "v.nii.gz").read_bytes()
    (d / "trunc.nii.gz").write_bytes(vb[: len(vb) // 2])
    (d / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + b"garbage" * 50)
    f.update(trunc_nii=d / "trunc.nii.gz", corrupt_nii=d / "corrupt.nii.gz")
    (d / "a_file").write_text("x")
    f["file_path"] = d / "a_file"
    tifffile.imwrite(d / "rgb.tif", np.stack([img] * 3, axis=-1))
    f["rgb_tif"] = d / "rgb.tif"
    return f


@pytest.mark.parametrize("command, message", CLI_ROWS)
def test_cli_row(files, tmp_path, capsys, command, message):
    out = tmp_path / "out.tif"
    argv = [a.format(**{k: str(v) for k, v in files.items()}, out=out) for a in shlex.split(command)]
    assert argv[0] == "segattn"
    assert main(argv[1:]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert err.startswith(f"segattn {argv[1]}: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    assert message in err, err
    assert not out.exists()


def _api_calls(f: dict) -> dict:
    unet, fanet, img = f["unet_model"], f["fanet_model"], f["img_array"]
    gt = (img > 128).astype(np.uint8)
    good = np.ones((32, 32), np.float32)
    nan_map = good.copy()
    nan_map[3, 4] = np.nan
    nan_output_model = build_model("_nan_output")

    def disk_full():
        import errno

        import safetensors.torch

        path = f["dir"] / "existing.safetensors"
        save_model(unet, path)
        before = path.read_bytes()
        real = safetensors.torch.save_file

        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")

        safetensors.torch.save_file = full
        try:
            save_model(unet, path)
        finally:
            safetensors.torch.save_file = real
            assert path.read_bytes() == before  # the previous checkpoint is intact

    return {
        "predict(unet, img, threshold=nan)": lambda: predict(unet, img, threshold=float("nan"), device="cpu"),
        "predict(unet, img, threshold=1.5)": lambda: predict(unet, img, threshold=1.5, device="cpu"),
        "predict(unet, img, threshold=0)": lambda: predict(unet, img, threshold=0, device="cpu"),
        "predict(unet, zeros(2, 2))": lambda: predict(unet, np.zeros((2, 2), np.float32), device="cpu"),
        "predict(unet, zeros(0, 5))": lambda: predict(unet, np.zeros((0, 5), np.float32), device="cpu"),
        "predict(unet, img, batch_size=0)": lambda: predict(unet, img, batch_size=0, device="cpu"),
        "predict(nan_output_model, img)": lambda: predict(nan_output_model, img, device="cpu"),
        "FANetRefiner(fanet, zeros(0, 0))": lambda: FANetRefiner(fanet, np.zeros((0, 0), np.float32), device="cpu"),
        "FANetRefiner(fanet, img).run(0)": lambda: FANetRefiner(fanet, img, device="cpu").run(0),
        "FANetRefiner(fanet, img).run(-2)": lambda: FANetRefiner(fanet, img, device="cpu").run(-2),
        "saliency(unet, img, window=0)": lambda: saliency(unet, img, 1, window=0),
        "saliency(unet, img, stride=-4)": lambda: saliency(unet, img, 1, stride=-4),
        "saliency(unet, img, n_steps=0)": lambda: saliency(unet, img, 1, n_steps=0),
        'load_model(unet_path, map_location="banana")': lambda: load_model(f["unet"], map_location="banana"),
        "load_model(nan_ckpt)": lambda: load_model(f["nan_ckpt"]),
        "load_model(badnorm_ckpt)": lambda: load_model(f["badnorm_ckpt"]),
        "load_model(huge_ckpt)": lambda: load_model(f["huge_ckpt"]),
        'save_model(unet, file_path / "m.safetensors")': lambda: save_model(unet, f["file_path"] / "m.safetensors"),
        "save_model(unet, existing_path)  # disk full": disk_full,
        "read_image(trunc_png)": lambda: read_image(f["trunc_png"]),
        "attention_shift(nan_map, map, gt)": lambda: attention_shift(nan_map, good, gt),
        "attention_shift(zeros, map, gt)": lambda: attention_shift(np.zeros_like(good), good, gt),
    }


ERRORS = {"InputError": InputError, "CheckpointError": CheckpointError, "DataError": DataError,
          "DeviceError": DeviceError, "SegattnWarning": SegattnWarning}


def test_api_rows_match_the_docs(files):
    assert set(_api_calls(files)) == set(API_ROWS)


@pytest.mark.parametrize("call", list(API_ROWS))
def test_api_row(files, call):
    kind, message = API_ROWS[call]
    fn = _api_calls(files)[call]
    if issubclass(ERRORS[kind], Warning):
        with pytest.warns(ERRORS[kind], match=re.escape(message)):
            fn()
    else:
        with pytest.raises(ERRORS[kind]) as info:
            fn()
        assert type(info.value) is ERRORS[kind] or isinstance(info.value, ERRORS[kind])
        assert message in str(info.value)


# -- properties -------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(0, 40), w=st.integers(0, 40))
def test_any_size_predicts_or_is_refused_in_words(files, h, w):
    """For any 2D size, predict either returns labels of that shape or an InputError naming it."""
    torch.set_num_threads(1)
    img = np.full((h, w), 100, np.uint8)
    try:
        pred = predict(files["unet_model"], img, device="cpu")
    except InputError as exc:
        assert f"{h}x{w}" in str(exc)
        assert files["unet_model"].size_problem(h, w) is not None
    else:
        assert pred.labels.shape == (h, w)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(["uint8", "uint16", "int16", "int32", "float32", "float64", "bool"]),
       cells=st.sets(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=5),
       value=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_dtype_and_nan_placement(files, dtype, cells, value):
    """Any numeric dtype predicts; any NaN/inf anywhere is refused with its count."""
    img = (np.arange(256).reshape(16, 16) % 7).astype(dtype)
    if not cells or img.dtype.kind != "f":
        assert predict(files["unet_model"], img, device="cpu").labels.shape == (16, 16)
        return
    for y, x in cells:
        img[y, x] = value
    with pytest.raises(InputError, match=f"contains {len(cells)} NaN/inf value"):
        predict(files["unet_model"], img, device="cpu")


def _train_args(d: Path, *extra: str) -> list[str]:
    (d / "img").mkdir(parents=True)
    (d / "msk").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        iio.imwrite(d / "img" / f"s{i}.png", (rng.random((16, 16)) * 255).astype(np.uint8))
        iio.imwrite(d / "msk" / f"s{i}.png", (rng.random((16, 16)) > 0.5).astype(np.uint8))
    return ["train", "--model", "unet", "--images", str(d / "img"), "--masks", str(d / "msk"), "--model-options",
            '{"width": 4}', "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--val-fraction", "0",
            "--out", str(d / "run"), *extra]


def test_train_lr_explosion_warns(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(_train_args(tmp_path, "--lr", "1e6")) == 0
    err = capsys.readouterr().err
    assert "segattn train: warning: the weights grew" in err and "try a smaller --lr" in err


def test_train_ordinary_lr_does_not_warn(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(_train_args(tmp_path, "--lr", "1e-3", "--epochs", "3")) == 0
    assert "diverging" not in capsys.readouterr().err


def test_train_disk_full_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    import safetensors.torch

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(_train_args(tmp_path)) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]  # after the progress bar
    assert err.startswith("segattn train: error: cannot write ")
    assert "No space left on device (it needs about" in err and "MiB free on" in err
    assert not list((tmp_path / "run").glob("*.tmp")) and not list((tmp_path / "run").glob(".*.tmp"))


def test_train_disk_full_in_epoch_2_keeps_epoch_1(tmp_path, capsys, monkeypatch):
    """The resume checkpoint of epoch 1 survives a full disk while writing epoch 2's, and says so."""
    import errno

    import safetensors.torch

    from napari_segattn.training.checkpoint import find_state_dir

    real, calls = safetensors.torch.save_file, []

    def full_on_second_last(tensors, filename, *a, **k):
        if "last.tmp" in str(filename):
            calls.append(filename)
            if len(calls) > 2:  # epoch 1 writes two files into last.tmp/, epoch 2 fails
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(safetensors.torch, "save_file", full_on_second_last)
    assert main(_train_args(tmp_path, "--epochs", "2")) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err.startswith("segattn train: error: cannot write the resume checkpoint ")
    assert err.endswith(f"the previous {tmp_path / 'run' / 'last'} is intact"), err
    state = find_state_dir(tmp_path / "run")
    assert state is not None and json.loads((state / "training_state.json").read_text())["epoch"] == 0
    assert not (tmp_path / "run" / "last.tmp").exists()


def test_train_resume_without_last_says_so(tmp_path, capsys):
    args = _train_args(tmp_path, "--resume")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(args) == 0
        err = capsys.readouterr().err
        assert "segattn train: warning: resume: " in err
        assert "has no complete last/ checkpoint; training starts from scratch" in err
        assert main(args) == 0  # said before any data is read
        assert "nothing left to train: " in capsys.readouterr().out
