"""Sliding-window inference: equal to MONAI's sliding_window_inference, agreeing with whole-image
inference, FANet's mask tiled with the image, lazy inputs read window by window, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from napari_segattn.inference import Cancelled, FANetRefiner, InputError, predict
from napari_segattn.inference.tiling import (
    BYTES_PER_PIXEL,
    TileProgress,
    choose_window,
    make_grid,
    parse_bytes,
    stack_probabilities,
)
from napari_segattn.inference.traits import model_traits
from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.registry import _REGISTRY, register_model


class LocalConv(SegmentationModel):
    """A purely local (translation-equivariant) net: two 5x5 convolutions, receptive field 9."""

    stride = 1

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(in_channels, 6, 5, padding=2)
        self.b = torch.nn.Conv2d(6, out_channels, 5, padding=2)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.3)
                conv.bias.zero_()

    def _forward(self, x):
        return 4.0 * self.b(torch.relu(self.a(x - 0.5)))


if "_local_conv" not in _REGISTRY:
    register_model("_local_conv", summary="test stand-in", paper="-")(LocalConv)


def local(in_channels=1, out_channels=1):
    m = LocalConv(in_channels, out_channels)
    m.segattn_config = {"name": "_local_conv", "config": {"in_channels": in_channels, "out_channels": out_channels}}
    m.segattn_normalization = None
    return m


def blobs(shape, seed=0):
    """Smooth blobs in [0, 1]: structure larger than the receptive field, like real images."""
    x = gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 3.0)
    return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)


def dice(a, b):
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * (a & b).sum() / s


@pytest.mark.parametrize("out_channels,overlap", [(1, 0.25), (1, 0.5), (3, 0.25)])
def test_tiled_equals_monai_sliding_window_inference(out_channels, overlap):
    from monai.inferers import sliding_window_inference

    model = local(out_channels=out_channels)
    img = blobs((70, 90))
    traits = model_traits(model)
    probs = stack_probabilities(model, traits, img[None, None], None, device=torch.device("cpu"), amp=False,
                                batch_size=3, tile=(32, 40), overlap=overlap, blend="monai")[0]

    def head(x):
        logits = model(x)
        return torch.sigmoid(logits) if out_channels == 1 else torch.softmax(logits, 1)

    with torch.no_grad():
        ref = sliding_window_inference(torch.from_numpy(img)[None, None], (32, 40), 3, head, overlap=overlap,
                                       mode="gaussian")[0].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-6)


def test_tiled_agrees_with_whole_for_a_local_model():
    model = local()
    img = blobs((160, 200), seed=1)
    whole = predict(model, img, device="cpu", tile=0)
    tiled = predict(model, img, device="cpu", tile=64, overlap=0.25)
    assert not whole.info["tiled"] and tiled.info["windows"] == 3 * 4
    # documented in docs/performance.md: the difference comes only from the zero padding of the
    # convolutions at window borders, which the Gaussian weights make small
    assert dice(whole.labels, tiled.labels) >= 0.999
    assert np.abs(whole.probabilities - tiled.probabilities).max() < 0.05
    assert 0.2 < whole.labels.mean() < 0.8  # a real segmentation, not all one class


def test_volume_slices_are_tiled_in_place():
    model = local()
    vol = blobs((40, 3, 50), seed=2)  # slices along axis 1
    pred = predict(model, vol, slice_axis=1, device="cpu", tile=24, overlap=0.25, batch_size=5)
    assert pred.probabilities.shape == (1, 40, 3, 50) and pred.info["windows"] == 3 * 2 * 3
    for z in range(3):
        alone = predict(model, np.ascontiguousarray(vol[:, z]), device="cpu", tile=24, overlap=0.25)
        np.testing.assert_array_equal(pred.probabilities[0, :, z], alone.probabilities[0])


def test_progress_counts_windows_and_cancel_stops_within_one_batch():
    model = local()
    img = blobs((64, 64))
    events = []
    predict(model, img, device="cpu", tile=32, overlap=0.5, batch_size=4, progress=events.append)
    assert all(isinstance(e, TileProgress) for e in events)
    assert [(e.done, e.total) for e in events] == [(0, 9), (4, 9), (8, 9), (9, 9)]

    calls = []
    orig = model._forward
    model._forward = lambda x: (calls.append(x.shape[0]), orig(x))[1]
    with pytest.raises(Cancelled):
        predict(model, img, device="cpu", tile=32, overlap=0.5, batch_size=4, cancel=lambda: len(calls) > 0)
    assert sum(calls) == 4  # one batch of 4 windows ran, then the cancel was seen


def test_fanet_mask_is_tiled_with_the_image(standin):
    # GrowFromMask grows the fed-back mask by one pixel inside the bright region per step, so a
    # wrongly placed mask window shows up as a shifted mask
    img = np.zeros((90, 120), np.float32)
    img[10:80, 15:110] = 1.0
    seed = np.zeros(img.shape, bool)
    seed[40:45, 50:55] = True
    whole = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", tile=0)
    tiled = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", tile=32, overlap=0.25)
    for _ in range(4):
        a, b = whole.step(), tiled.step()
        np.testing.assert_array_equal(a.mask, b.mask)
        assert np.abs(a.probabilities - b.probabilities).max() < 0.01
    expected = np.zeros(img.shape, bool)
    expected[36:49, 46:59] = True  # 4 steps of 3x3 dilation
    np.testing.assert_array_equal(tiled.history[-1].mask, expected)


def test_predict_fanet_tiled_matches_whole(standin):
    img = blobs((80, 100), seed=3)
    w = predict(standin("fanet"), img, device="cpu", tile=0, mask="full")
    t = predict(standin("fanet"), img, device="cpu", tile=40, mask="full")
    np.testing.assert_array_equal(w.labels, t.labels)


class CountingArray:
    """An array-like (as zarr/dask are) that records every read, to prove windows are read alone."""

    def __init__(self, data, chunks):
        self.data, self.shape, self.dtype, self.ndim, self.reads = data, data.shape, data.dtype, data.ndim, []
        self.chunks = chunks

    def __getitem__(self, idx):
        out = self.data[idx]
        self.reads.append(out.shape)
        return out


def test_lazy_input_is_read_window_by_window():
    model = local()
    img = blobs((96, 128), seed=4)
    lazy = CountingArray(img, chunks=(32, 32))
    ref = predict(model, img, device="cpu", tile=32)
    pred = predict(model, lazy, device="cpu", tile=32)
    np.testing.assert_array_equal(pred.probabilities, ref.probabilities)
    assert lazy.reads and max(int(np.prod(r)) for r in lazy.reads) <= 32 * 32


def test_zarr_and_dask_inputs_with_normalisation():
    import dask.array as da
    import zarr

    model = local(in_channels=2)
    model.segattn_normalization = {"mode": "zscore", "per": "image"}
    img = np.stack([blobs((64, 80), seed=5) * 100, blobs((64, 80), seed=6) * 3 + 7], axis=-1)
    ref = predict(model, img, channel_axis=-1, device="cpu", tile=0)
    z = zarr.create_array(store={}, shape=img.shape, chunks=(16, 16, 2), dtype="f4")
    z[:] = img
    for arr in (z, da.from_array(img, chunks=(20, 20, 2))):
        pred = predict(model, arr, channel_axis=-1, device="cpu", tile=0)
        # statistics reduced chunk by chunk (dask) agree with numpy's to float32 roundoff
        np.testing.assert_allclose(pred.probabilities, ref.probabilities, atol=1e-5)


def test_whole_when_it_fits_windows_when_it_does_not():
    bpp = BYTES_PER_PIXEL["unet"]
    assert choose_window((512, 512), model_name="unet", memory_budget=512 * 512 * bpp) is None
    # room for 480² windows; each axis gets the smallest multiple of 32 needing as few windows:
    # 2048 needs 6 windows of 480 at overlap 0.25, and 6 of 448 (432 would do) ; 1000 needs 3 of 416
    win = choose_window((2048, 1000), model_name="unet", memory_budget=512 * 512 * bpp - 1)
    assert win == (448, 416)
    assert len(make_grid((2048, 1000), win)) == 6 * 3 == len(make_grid((2048, 1000), (480, 480)))
    assert choose_window((2048, 200), model_name="unet", memory_budget="100M") == (256, 200)  # whole width
    # on a GPU a forward pass holds a batch of windows
    assert choose_window((4096, 4096), model_name="unet", memory_budget="1G", per_forward=4)[0] <= 416
    assert choose_window((4096, 4096), model_name="unet", tile=0) is None


@pytest.mark.parametrize("kwargs,match", [
    ({"tile": 100}, "larger than the image slice 64x80"),
    ({"tile": (32, 81)}, "larger than the image"),
    ({"tile": -3}, ">= 1 pixel"),
    ({"tile": 32, "overlap": 1.0}, r"overlap must be in \[0, 1\)"),
    ({"memory_budget": "1k"}, "allows only windows below 64x64"),
    ({"memory_budget": "lots"}, "cannot read memory budget"),
])
def test_bad_tiling_is_one_clear_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        predict(local(), blobs((64, 80)), device="cpu", **kwargs)


def test_parse_bytes_and_grid():
    assert parse_bytes("1.5G") == 3 * 2**29 and parse_bytes("800M") == 800 * 2**20 and parse_bytes(1000) == 1000
    assert parse_bytes("2GiB") == 2**31 and parse_bytes(None) is None
    g = make_grid((100, 64), (40, 64), 0.25)
    assert [(s[0].start, s[0].stop) for s in g.slices] == [(0, 40), (30, 70), (60, 100)]
    assert g.weights.shape == (40, 64) and g.weights.max() == 1.0 and g.weights.min() > 0
    assert g.touching((slice(0, 30), slice(0, 64))) == [0]


def test_a_window_below_the_model_stride_is_refused_before_any_work():
    """A new-user trial: --tile 8 on FANet (stride 16) padded every window to 16x16 and ran
    thousands of forwards with no word why."""
    from napari_segattn.models import build_model

    assert choose_window((512, 512), tile=8) == (8, 8)  # a stride-1 model takes any window
    with pytest.raises(InputError, match="smaller than the model's stride 16"):
        choose_window((512, 512), tile=(32, 8), stride=16)
    assert choose_window((512, 512), tile=16, stride=16) == (16, 16)
    assert choose_window((10, 12), tile=(10, 12), stride=16) == (10, 12)  # the whole (small) image
    fanet = build_model("fanet", in_channels=1, width=4)
    calls = []
    fanet.register_forward_hook(lambda *a: calls.append(1))
    with pytest.raises(InputError, match="stride 16"):
        predict(fanet, blobs((64, 80)), device="cpu", tile=8)
    assert not calls
