"""Windows resize in the whole slice's geometry (models/geometry.py): the PAM U-Nets' bilinear
``align_corners=True`` upsampling depends on the map's size, which kept tiled ``unet`` at Dice
0.993 against whole-slice inference even with the slice's statistics (trained width-8 unet, DSB
512², 256² windows); with the slice's geometry it is 0.9999 (docs/large-images.md)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_segattn.models.base import SegmentationModel
from napari_segattn.models.geometry import padded_windows, resize_align_corners, windows_of_slice
from napari_segattn.models.registry import _REGISTRY, register_model


def test_without_a_window_it_is_plain_interpolate():
    y = torch.randn(2, 3, 7, 9)
    np.testing.assert_array_equal(resize_align_corners(y, (14, 18)), F.interpolate(y, size=(14, 18), mode="bilinear",
                                                                                   align_corners=True))
    with windows_of_slice([(0, 0), (0, 0)], (28, 36)), padded_windows(1, (28, 36)):  # the window is the slice
        torch.testing.assert_close(resize_align_corners(y, (14, 18)),
                                   F.interpolate(y, size=(14, 18), mode="bilinear", align_corners=True))


def test_a_window_gets_the_whole_maps_values():
    """A 64x64 slice, coarse maps at 1/4 and the upsampled one at 1/2: two windows of 32x32 at
    (16, 32) and (0, 16) upsample their crop of the coarse map to exactly the whole map's values
    wherever the bilinear sources lie inside the crop; plain interpolation of the crop does not."""
    coarse = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    whole = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=True)
    offsets = [(16, 32), (0, 16)]
    crops = torch.cat([coarse[..., oy // 4:oy // 4 + 8, ox // 4:ox // 4 + 8] for oy, ox in offsets])
    with windows_of_slice(offsets, (64, 64)), padded_windows(1, (32, 32)):
        fine = resize_align_corners(crops, (16, 16))
    plain = F.interpolate(crops, size=(16, 16), mode="bilinear", align_corners=True)
    for b, (oy, ox) in enumerate(offsets):
        ref = whole[0, :, oy // 2:oy // 2 + 16, ox // 2:ox // 2 + 16]
        inner = (slice(None), slice(2, 14), slice(2, 14))  # sources inside the window's crop
        torch.testing.assert_close(fine[b][inner], ref[inner])
        assert (plain[b][inner] - ref[inner]).abs().max() > 1e-2


def test_a_micro_batch_must_match_the_windows_it_is_told():
    with windows_of_slice([(0, 0)], (64, 64)), padded_windows(1, (32, 32)), pytest.raises(RuntimeError, match="batch"):
        resize_align_corners(torch.zeros(2, 1, 8, 8), (16, 16))


class LocalUpsampler(SegmentationModel):
    """conv -> stride-2 conv -> align_corners upsampling -> conv: local but for the resizing's
    geometry, so tiled must equal whole once windows resize in the slice's geometry."""

    stride = 2

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels)
        g = torch.Generator().manual_seed(0)
        self.a = torch.nn.Conv2d(in_channels, 6, 3, padding=1)
        self.down = torch.nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.head = torch.nn.Conv2d(12, out_channels, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def _forward(self, x):
        f = torch.relu(self.a(x))
        up = resize_align_corners(torch.relu(self.down(f)), f.shape[-2:])
        return self.head(torch.cat([f, up], dim=1))


if "_local_upsampler" not in _REGISTRY:
    register_model("_local_upsampler", summary="test stand-in", paper="-")(LocalUpsampler)


@pytest.mark.parametrize("hw", [(96, 128), (95, 127)])
def test_tiled_equals_whole_with_the_slice_geometry(monkeypatch, hw):
    """Also on a slice that is not a multiple of the stride (95x127): the grid covers the slice
    padded as the whole forward pads it, so every window starts on the stride grid."""
    import napari_segattn.models.geometry as geometry
    from napari_segattn.inference import predict

    model = LocalUpsampler().eval()
    model.segattn_config = {"name": "_local_upsampler", "config": {}}
    model.segattn_normalization = None
    img = np.random.default_rng(0).standard_normal(hw).astype(np.float32)
    kw = dict(device="cpu", amp=False, tile=64, overlap=0.5)
    whole = predict(model, img, device="cpu", amp=False, tile=0).probabilities
    tiled = predict(model, img, **kw).probabilities
    assert np.abs(tiled - whole).max() < 2e-3  # what is left: zero padding at window borders
    monkeypatch.setattr(geometry, "windows_of_slice", lambda *a, **k: contextlib.nullcontext())
    plain = predict(model, img, **kw).probabilities  # each window its own geometry, as before
    assert np.abs(plain - whole).max() > 0.1


def test_zarr_output_pads_the_same_way(tmp_path):
    """The zarr output blends the same stride-padded grid block by block: it equals in-memory
    tiled inference on a slice that is not a multiple of the stride."""
    from napari_segattn.inference import predict
    from napari_segattn.inference.chunked import predict_to_zarr

    model = LocalUpsampler().eval()
    model.segattn_config = {"name": "_local_upsampler", "config": {}}
    model.segattn_normalization = None
    img = np.random.default_rng(1).standard_normal((95, 127)).astype(np.float32)
    kw = dict(device="cpu", amp=False, tile=64, overlap=0.5)
    ref = predict(model, img, **kw).probabilities
    res = predict_to_zarr(model, img, tmp_path / "p.zarr", chunk=16, block=48, **kw)
    np.testing.assert_allclose(res.open()["probabilities"][:], ref, atol=1e-6)
