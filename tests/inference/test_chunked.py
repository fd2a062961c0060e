"""predict_to_zarr: block-wise writes equal in-memory tiled predict, resume after an interruption,
refuse foreign / read-only stores, and run blocks as tasks on a dask.distributed LocalCluster."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_tiling import blobs, local  # noqa: E402

from napari_segattn.inference import Cancelled, InputError, predict  # noqa: E402
from napari_segattn.inference.chunked import predict_to_zarr  # noqa: E402
from napari_segattn.inference.tiling import make_grid  # noqa: E402

zarr = pytest.importorskip("zarr")


def test_blocks_equal_in_memory_tiled_predict(tmp_path):
    m, img = local(), blobs((100, 130))
    ref = predict(m, img, device="cpu", tile=32)
    res = predict_to_zarr(m, img, tmp_path / "o.zarr", device="cpu", tile=32, chunk=16, block=48)
    g = res.open()
    assert res.blocks_total == 3 * 3 and g["done"][:].all() and g["labels"].chunks == (16, 16)
    np.testing.assert_array_equal(g["probabilities"][:], ref.probabilities)
    np.testing.assert_array_equal(g["labels"][:].astype(bool), ref.labels)


def test_slice_statistics_blocks_equal_in_memory_predict(tmp_path, monkeypatch):
    """squeeze='slice': each slice's InstanceNorm statistics are measured once and every block
    of it uses them, so the store equals in-memory predict(squeeze='slice') (a 2-slice volume,
    4 blocks a slice); with per-window statistics it is far from it. The job is pickled on its
    way to the blocks, as for a dask worker: the statistics find their layers in the copy."""
    import pickle

    from test_global_squeeze import _image, _local_in

    from napari_segattn.inference import chunked

    run_blocks = chunked._run_blocks
    monkeypatch.setattr(chunked, "_run_blocks", lambda job, *a: run_blocks(pickle.loads(pickle.dumps(job)), *a))
    m = _local_in()
    vol = np.stack([_image((96, 120), 0), 2 * _image((96, 120), 1) - 1])
    kw = dict(slice_axis=0, device="cpu", tile=48, overlap=0.5, amp=False)
    ref = predict(m, vol, squeeze="slice", **kw)
    res = predict_to_zarr(m, vol, tmp_path / "s.zarr", chunk=16, block=64, squeeze="slice", **kw)
    assert res.blocks_total == 2 * 4
    np.testing.assert_allclose(res.open()["probabilities"][:], ref.probabilities, atol=1e-6)
    own = predict_to_zarr(m, vol, tmp_path / "w.zarr", chunk=16, block=64, **kw)
    assert np.abs(own.open()["probabilities"][:] - ref.probabilities).max() > 0.05
    with pytest.raises(InputError):  # the mode is in the fingerprint: no resume with the other one
        predict_to_zarr(m, vol, tmp_path / "w.zarr", chunk=16, block=64, squeeze="slice", **kw)


def test_volume_from_zarr_input_written_slice_by_slice(tmp_path):
    m = local()
    vol = blobs((3, 60, 70), seed=1)
    src = zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=vol.shape, chunks=(1, 20, 20), dtype="f4")
    src[:] = vol
    ref = predict(m, vol, slice_axis=0, device="cpu", tile=32)
    res = predict_to_zarr(m, src, tmp_path / "o.zarr", slice_axis=0, device="cpu", tile=32, chunk=32, block=32)
    g = res.open()
    assert g["labels"].shape == vol.shape and g["labels"].chunks == (1, 32, 32)
    np.testing.assert_array_equal(g["probabilities"][:], ref.probabilities)


def test_interrupted_run_resumes_with_the_blocks_not_done(tmp_path):
    m, img = local(), blobs((96, 96), seed=2)
    out = tmp_path / "o.zarr"
    windows = []
    with pytest.raises(Cancelled):
        predict_to_zarr(m, img, out, device="cpu", tile=32, chunk=32, block=32, batch_size=1,
                        progress=lambda ev: windows.append(ev.done), cancel=lambda: len(windows) > 12)
    done = zarr.open_group(str(out), mode="r")["done"][:]
    assert 0 < done.sum() < done.size  # the store says which blocks are finished
    res = predict_to_zarr(m, img, out, device="cpu", tile=32, chunk=32, block=32)
    assert res.blocks_done_before == done.sum() and res.blocks_total == 9
    g = res.open()
    assert g["done"][:].all()
    ref = predict(m, img, device="cpu", tile=32)
    np.testing.assert_array_equal(g["probabilities"][:], ref.probabilities)


def test_a_different_result_is_refused_unless_overwrite(tmp_path):
    m, img = local(), blobs((64, 64), seed=3)
    out = tmp_path / "o.zarr"
    predict_to_zarr(m, img, out, device="cpu", tile=32)
    with pytest.raises(InputError, match="already holds a different result"):
        predict_to_zarr(m, img * 0.5, out, device="cpu", tile=32)
    with pytest.raises(InputError, match="already holds a different result"):
        predict_to_zarr(m, img, out, device="cpu", tile=32, overlap=0.5)
    res = predict_to_zarr(m, img * 0.5, out, device="cpu", tile=32, overwrite=True)
    assert res.blocks_done_before == 0
    ref = predict(m, img * 0.5, device="cpu", tile=32)
    np.testing.assert_array_equal(res.open()["probabilities"][:], ref.probabilities)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_store_is_refused(tmp_path):
    m, img = local(), blobs((64, 64), seed=3)
    out = tmp_path / "o.zarr"
    predict_to_zarr(m, img, out, device="cpu", tile=32)
    os.chmod(out, 0o500)
    try:
        with pytest.raises(InputError, match="read-only"):
            predict_to_zarr(m, img, out, device="cpu", tile=32, overwrite=True)
    finally:
        os.chmod(out, 0o700)


def test_read_only_store_is_refused_as_root_too(tmp_path, monkeypatch):
    m, img = local(), blobs((64, 64), seed=3)
    out = tmp_path / "o.zarr"
    predict_to_zarr(m, img, out, device="cpu", tile=32)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
    with pytest.raises(InputError, match="read-only"):
        predict_to_zarr(m, img, out, device="cpu", tile=32)


def test_block_must_be_a_multiple_of_the_chunk(tmp_path):
    with pytest.raises(InputError, match="not a multiple of the chunk 32x32"):
        predict_to_zarr(local(), blobs((100, 100)), tmp_path / "o.zarr", device="cpu", tile=32, chunk=32, block=48)
    assert not (tmp_path / "o.zarr").exists()  # refused before anything was written


def test_blocks_as_tasks_on_a_local_cluster_and_resume(tmp_path):
    distributed = pytest.importorskip("distributed")
    m, img = local(), blobs((96, 128), seed=4)
    out = tmp_path / "o.zarr"
    ref = predict(m, img, device="cpu", tile=32)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = predict_to_zarr(m, img, out, device="cpu", tile=32, chunk=32, block=32, client=client)
        assert res.info["distributed"] and res.blocks_total == 12
        g = zarr.open_group(str(out), mode="r+")
        np.testing.assert_array_equal(g["probabilities"][:], ref.probabilities)
        # a worker lost mid-run leaves blocks undone: forget three, the rerun computes only those
        g["done"][0, 5:8] = 0
        g["labels"][32:64, 32:128] = 0
        again = predict_to_zarr(m, img, out, device="cpu", tile=32, chunk=32, block=32, client=client)
        grid = make_grid((96, 128), (32, 32))
        assert again.blocks_done_before == 9
        assert again.windows == sum(len(grid.touching((slice(32, 64), slice(x, x + 32)))) for x in (32, 64, 96))
        np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["labels"][:].astype(bool), ref.labels)


def test_fanet_iterations_in_the_store_equal_the_in_memory_refiner_and_resume(tmp_path, standin):
    """iterations=4: each iteration over every block before the next (the mask grows across block
    borders), the same masks and probabilities as FANetRefiner's 4 tiled steps; a run cancelled in
    the middle of an iteration resumes to the same result."""
    from napari_segattn.inference import FANetRefiner

    img = np.zeros((90, 120), np.float32)
    img[10:80, 15:110] = 1.0
    seed = np.zeros(img.shape, bool)
    seed[30:34, 46:50] = True  # at the corner of four 48x48 blocks: growth must cross them
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", tile=32, overlap=0.25)
    for _ in range(4):
        last = ref.step()
    kw = dict(device="cpu", tile=32, overlap=0.25, chunk=16, block=48, mask=seed, iterations=4, batch_size=2)
    res = predict_to_zarr(standin("fanet"), img, tmp_path / "o.zarr", **kw)
    g = res.open()
    assert (g["done"][:] == 4).all() and res.windows == 4 * sum(
        len(make_grid(img.shape, (32, 32), 0.25).touching(r)) for r in
        [(slice(y, min(y + 48, 90)), slice(x, min(x + 48, 120))) for y in (0, 48) for x in (0, 48, 96)])
    np.testing.assert_array_equal(g["labels"][:].astype(bool), last.mask)
    np.testing.assert_array_equal(g["probabilities"][0], last.probabilities)

    events = []
    out = tmp_path / "cut.zarr"
    with pytest.raises(Cancelled):
        predict_to_zarr(standin("fanet"), img, out, progress=lambda ev: events.append(ev.done),
                        cancel=lambda: len(events) > 60, **kw)
    done = zarr.open_group(str(out), mode="r")["done"][:]
    assert 1 <= done.max() < 4  # stopped after iteration 0, before the end
    again = predict_to_zarr(standin("fanet"), img, out, **kw)
    assert again.blocks_done_before == 0 and 0 < again.windows < res.windows
    np.testing.assert_array_equal(again.open()["labels"][:].astype(bool), last.mask)


def test_iterations_refused_for_a_model_without_feedback(tmp_path):
    with pytest.raises(InputError, match="takes no feedback mask"):
        predict_to_zarr(local(), blobs((40, 40)), tmp_path / "o.zarr", device="cpu", iterations=3)
