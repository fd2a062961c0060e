import numpy as np
import pytest

from napari_segattn.data import DataError, Normalization


def test_zscore_per_channel():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(5, 2, (30, 40)), rng.normal(-100, 10, (30, 40))]).astype(np.float32)
    y = Normalization("zscore").apply(x)
    assert y.dtype == np.float32
    assert np.allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(y.std(axis=(1, 2)), 1, atol=1e-4)
    # channels last gives the same numbers
    y2 = Normalization("zscore").apply(np.moveaxis(x, 0, -1), channel_axis=-1)
    assert np.allclose(np.moveaxis(y2, -1, 0), y, atol=1e-6)


def test_zscore_nonzero_is_fpa_brats_formula():
    rng = np.random.default_rng(1)
    x = rng.uniform(10, 50, (2, 16, 16))
    x[:, :5] = 0  # background
    y = Normalization("zscore_nonzero").apply(x)
    for c in range(2):
        nz = x[c][x[c] != 0]
        assert np.allclose(y[c], (x[c] - nz.mean()) / nz.std(), atol=1e-5)
        assert np.allclose(y[c, :5], -nz.mean() / nz.std(), atol=1e-5)  # released: background not kept at 0
    yk = Normalization("zscore_nonzero", zero_background=True).apply(x)
    assert np.all(yk[:, :5] == 0) and np.allclose(yk[:, 5:], y[:, 5:])


def test_minmax_none_and_constant_channel():
    x = np.stack([np.linspace(3, 7, 20).reshape(4, 5), np.full((4, 5), 9.0)])
    y = Normalization("minmax").apply(x)
    assert y[0].min() == 0 and y[0].max() == pytest.approx(1)
    assert np.all(y[1] == 0) and np.all(np.isfinite(y))
    assert np.array_equal(Normalization("none").apply(x), x.astype(np.float32))
    assert np.all(Normalization("zscore").apply(x)[1] == 0)


def test_per_image_slice_axis_and_precomputed_stats():
    rng = np.random.default_rng(2)
    stack = rng.normal(0, 1, (1, 3, 8, 8)) + np.arange(3)[None, :, None, None] * 10  # C, Z, H, W
    per_slice = Normalization("zscore", per="image").apply(stack, channel_axis=0, slice_axis=1)
    assert np.allclose(per_slice.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    vol_norm = Normalization("zscore", per="volume")
    stats = vol_norm.statistics(stack, channel_axis=0)
    one = vol_norm.apply(stack[:, 2], channel_axis=0, stats=stats)
    assert np.allclose(one, vol_norm.apply(stack)[:, 2], atol=1e-6)


def test_dict_roundtrip_and_validation():
    n = Normalization("zscore_nonzero", per="volume", zero_background=True)
    assert Normalization.from_dict(n.to_dict()) == n
    assert Normalization.from_dict({}).mode == "none"
    with pytest.raises(DataError, match="mode"):
        Normalization("robust")
    with pytest.raises(DataError, match="per"):
        Normalization(per="dataset")
