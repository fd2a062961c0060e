"""segattn predict --tile/--overlap/--memory-budget, zarr in/out (resume, refusals), the progress bar."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from test_tiling import blobs, local  # noqa: E402

from napari_segattn.cli import main  # noqa: E402
from napari_segattn.cli.progress import ProgressBar  # noqa: E402
from napari_segattn.inference import predict  # noqa: E402
from napari_segattn.inference.tiling import TileProgress  # noqa: E402
from napari_segattn.models import save_model  # noqa: E402

zarr = pytest.importorskip("zarr")


@pytest.fixture
def local_ckpt(tmp_path):
    m = local()
    path = tmp_path / "local.safetensors"
    save_model(m, path)
    return str(path), m


def test_tile_flags_give_the_tiled_result(tmp_path, local_ckpt):
    ck, m = local_ckpt
    img = blobs((80, 100))
    tifffile.imwrite(tmp_path / "img.tif", img)
    out, probs = tmp_path / "l.tif", tmp_path / "p.tif"
    assert main(["predict", ck, str(tmp_path / "img.tif"), "--out", str(out), "--probabilities", str(probs),
                 "--tile", "32x40", "--overlap", "0.5", "--device", "cpu"]) == 0
    ref = predict(m, img, device="cpu", tile=(32, 40), overlap=0.5)
    np.testing.assert_array_equal(tifffile.imread(probs), ref.probabilities[0])
    np.testing.assert_array_equal(tifffile.imread(out), ref.labels.astype(np.uint8))


@pytest.mark.parametrize("flags,msg", [
    (["--tile", "200"], "window 200x200 is larger than the image slice 80x100"),
    (["--tile", "big"], "--tile 'big': give auto, 0"),
    (["--memory-budget", "lots"], "cannot read memory budget"),
    (["--overlap", "1.5", "--tile", "32"], "overlap must be in [0, 1)"),
    (["--block", "64"], "--block is for zarr output"),
])
def test_bad_tiling_flags_are_one_line_errors(tmp_path, local_ckpt, capsys, flags, msg):
    tifffile.imwrite(tmp_path / "img.tif", blobs((80, 100)))
    out = tmp_path / "l.tif"
    assert main(["predict", local_ckpt[0], str(tmp_path / "img.tif"), "--out", str(out), "--device", "cpu",
                 *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segattn predict: error:") and msg in err and "Traceback" not in err
    assert len(err.splitlines()) == 1 and not out.exists()


def test_zarr_in_zarr_out_resume_and_refusal(tmp_path, local_ckpt, capsys):
    ck, m = local_ckpt
    img = blobs((96, 128), seed=1)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=img.shape, chunks=(32, 32), dtype="f4")
    src[:] = img
    out = tmp_path / "out.zarr"
    args = ["predict", ck, str(tmp_path / "in.zarr"), "--out", str(out), "--tile", "32", "--chunk", "32",
            "--block", "64", "--device", "cpu"]
    assert main(args) == 0
    g = zarr.open_group(str(out), mode="r")
    ref = predict(m, img, device="cpu", tile=32)
    np.testing.assert_array_equal(g["probabilities"][:], ref.probabilities)
    assert g["done"][:].all()
    # an interrupted run: two blocks not marked done; the rerun finishes only those
    zarr.open_group(str(out), mode="r+")["done"][0, :2] = 0
    capsys.readouterr()
    assert main(args) == 0
    assert "(2 of 4 blocks were already done)" in capsys.readouterr().out
    # other settings: refused, store unchanged; --overwrite replaces it
    assert main(args[:-2] + ["--overlap", "0.5", "--device", "cpu"]) == 2
    assert "already holds a different result" in capsys.readouterr().err
    assert main(args + ["--overlap", "0.5", "--overwrite"]) == 0


def test_ome_zarr_level_is_predicted(tmp_path, local_ckpt):
    ck, m = local_ckpt
    full = blobs((64, 96), seed=2)
    g = zarr.open_group(str(tmp_path / "img.ome.zarr"), mode="w")
    g.create_array("0", shape=full.shape, chunks=(32, 32), dtype="f4")[:] = full
    g.create_array("1", shape=(32, 48), chunks=(32, 32), dtype="f4")[:] = full[::2, ::2]
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y"}, {"name": "x"}],
                               "datasets": [{"path": "0"}, {"path": "1"}]}]
    out = tmp_path / "l.tif"
    assert main(["predict", ck, str(tmp_path / "img.ome.zarr"), "--level", "1", "--out", str(out), "--device", "cpu",
                 "--tile", "0"]) == 0
    ref = predict(m, np.ascontiguousarray(full[::2, ::2]), device="cpu", tile=0)
    np.testing.assert_array_equal(tifffile.imread(out), ref.labels.astype(np.uint8))
    assert main(["predict", ck, str(tmp_path / "img.ome.zarr"), "--level", "2", "--out", str(out), "--overwrite"]) == 2


def test_progress_bar_shows_windows_per_second_and_eta():
    f = io.StringIO()
    with ProgressBar("predict", file=f, disable=False) as bar:
        for done in (0, 4, 8, 9):
            bar(TileProgress(done, 9))
    text = f.getvalue()
    assert "9/9" in text and "windows/s" in text and "<" in text  # tqdm's elapsed<remaining


def test_scheduler_runs_the_blocks_on_a_cluster(tmp_path, local_ckpt, capsys):
    distributed = pytest.importorskip("distributed")
    ck, m = local_ckpt
    img = blobs((64, 96), seed=5)
    tifffile.imwrite(tmp_path / "img.tif", img)
    out = tmp_path / "out.zarr"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        assert main(["predict", ck, str(tmp_path / "img.tif"), "--out", str(out), "--tile", "32", "--chunk", "32",
                     "--block", "32", "--device", "cpu", "--scheduler", cl.scheduler_address]) == 0
    g = zarr.open_group(str(out), mode="r")
    assert g["done"][:].all() and g["done"].shape == (1, 6)
    np.testing.assert_array_equal(g["probabilities"][:], predict(m, img, device="cpu", tile=32).probabilities)


def test_unreachable_scheduler_is_one_line(tmp_path, local_ckpt, capsys):
    pytest.importorskip("distributed")
    tifffile.imwrite(tmp_path / "img.tif", blobs((64, 96)))
    assert main(["predict", local_ckpt[0], str(tmp_path / "img.tif"), "--out", str(tmp_path / "o.zarr"),
                 "--scheduler", "tcp://127.0.0.1:9", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("segattn predict: error: cannot reach the dask scheduler at tcp://127.0.0.1:9")
    assert len(err.splitlines()) == 1


def test_fanet_zarr_output_runs_the_iterations_of_the_tif_output(tmp_path, capsys):
    """`segattn predict fanet.safetensors img --out X.zarr --iterations 3` writes what the
    in-memory path writes to a .tif for the same iterations and tiling."""
    import torch

    from napari_segattn.models import build_model

    torch.manual_seed(0)
    m = build_model("fanet", in_channels=1, out_channels=1, width=4)
    ck = tmp_path / "fanet.safetensors"
    save_model(m, ck)
    tifffile.imwrite(tmp_path / "img.tif", blobs((64, 80)))
    common = ["--iterations", "3", "--tile", "32", "--device", "cpu"]
    assert main(["predict", str(ck), str(tmp_path / "img.tif"), "--out", str(tmp_path / "l.tif"), *common]) == 0
    assert main(["predict", str(ck), str(tmp_path / "img.tif"), "--out", str(tmp_path / "l.zarr"), "--chunk", "16",
                 "--block", "32", *common]) == 0
    assert "after 3 FANet iterations" in capsys.readouterr().out
    g = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")
    assert (g["done"][:] == 3).all()
    np.testing.assert_array_equal(g["labels"][:], tifffile.imread(tmp_path / "l.tif"))


def test_squeeze_slice_flag_reaches_the_refiner_and_the_zarr_store(tmp_path):
    """--squeeze slice: the tiled FANet run equals FANetRefiner(squeeze="slice") (2 iterations),
    and the zarr output (statistics measured once per slice and iteration) holds the same labels."""
    import torch
    import zarr

    from napari_segattn.inference import FANetRefiner
    from napari_segattn.models import build_model

    torch.manual_seed(0)
    m = build_model("fanet", in_channels=1, out_channels=1, width=4)
    ck = tmp_path / "fanet.safetensors"
    save_model(m, ck)
    img = blobs((64, 80))
    tifffile.imwrite(tmp_path / "img.tif", img)
    flags = ["--tile", "32", "--overlap", "0.5", "--squeeze", "slice", "--iterations", "2", "--device", "cpu"]
    assert main(["predict", str(ck), str(tmp_path / "img.tif"), "--out", str(tmp_path / "l.tif"), *flags]) == 0
    ref = FANetRefiner(m.eval(), img, device="cpu", tile=32, overlap=0.5, squeeze="slice")
    ref.step()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "l.tif"), ref.step().mask.astype(np.uint8))
    assert main(["predict", str(ck), str(tmp_path / "img.tif"), "--out", str(tmp_path / "l.zarr"),
                 "--chunk", "16", "--block", "32", *flags]) == 0
    stored = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")["labels"][:]
    np.testing.assert_array_equal(stored, tifffile.imread(tmp_path / "l.tif"))
