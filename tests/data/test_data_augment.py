"""Augmenter: one geometric draw for image/label/extras, nearest for labels, TV smoothing semantics."""

import numpy as np
import pytest
from skimage.restoration import denoise_tv_bregman

from napari_segattn.data import Augmenter, DataError, tv_smooth


def blob_sample(h=48, w=40):
    yy, xx = np.mgrid[:h, :w]
    label = (((yy - 15) / 9.0) ** 2 + ((xx - 12) / 6.0) ** 2 <= 1).astype(np.int64)
    label[30:40, 25:35] = 2
    image = np.stack([label.astype(np.float32), (yy * w + xx).astype(np.float32)])
    return image, label


def test_flips_are_identical_for_image_label_and_extras():
    image, label = blob_sample()
    aug = Augmenter(flip=True, p_flip=0.5)
    seen = set()
    for s in range(40):
        im, lb, ex = aug(np.random.default_rng(s), image, label, label.astype(np.float32))
        assert np.array_equal(im[0], lb) and np.array_equal(ex, lb)
        # the coordinate channel says which flips happened
        fy, fx = im[1, 0, 0] >= image[1, -1, 0], im[1, 0, 0] % label.shape[1] != 0
        seen.add((bool(fy), bool(fx)))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def test_flip_combinations_are_fpa_all_flip_quarters():
    image, label = blob_sample(8, 8)
    aug = Augmenter(flip=True, p_flip=0.5)
    counts = {}
    for s in range(2000):
        im, _ = aug(np.random.default_rng(s), image, label)
        key = (bool(im[1, 0, 0] >= image[1, -1, 0]), bool(im[1, 0, 0] % 8 != 0))
        counts[key] = counts.get(key, 0) + 1
    for k, c in counts.items():
        assert abs(c / 2000 - 0.25) < 0.04, counts


def test_rotation_keeps_labels_integer_and_aligned():
    image, label = blob_sample()
    aug = Augmenter(flip=False, rotate=35, p_rotate=1.0)
    rotated_any = False
    for s in range(10):
        im, lb, ex = aug(np.random.default_rng(s), image, label, (label > 0))
        assert set(np.unique(lb)) <= {0, 1, 2} and lb.dtype == label.dtype
        assert ex.dtype == bool and np.array_equal(ex, lb > 0)  # nearest for every mask
        # bilinear image channel 0 agrees with the nearest-interpolated label almost everywhere
        assert np.mean(np.rint(im[0]) == lb) > 0.95
        rotated_any |= not np.array_equal(lb, label)
    assert rotated_any


def test_same_rng_state_same_augmentation_and_shape_check():
    image, label = blob_sample()
    aug = Augmenter(rotate=20, p_rotate=1.0, tv_alpha=8.0, tv_prob=0.5)
    a = aug(np.random.default_rng(7), image, label)
    b = aug(np.random.default_rng(7), image, label)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(DataError, match="extra 0"):
        aug(np.random.default_rng(0), image, label, np.zeros((3, 3)))


def test_tv_alpha_is_bregman_weight_on_unit_range():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    x[0, 0], x[-1, -1] = 0.0, 1.0  # exact [0, 1] range: no rescaling happens
    ours = tv_smooth(x.astype(np.float32)[None], 8.0)[0]
    ref = denoise_tv_bregman(x.astype(np.float32), weight=8.0, max_num_iter=100, eps=1e-3, isotropic=True)
    assert np.allclose(ours, ref, atol=1e-5)


def test_smaller_alpha_smooths_more_and_is_scale_invariant():
    rng = np.random.default_rng(1)
    x = (rng.random((1, 40, 40)) + np.linspace(0, 2, 40)[None, None]).astype(np.float32)

    def tv(a):
        return np.abs(np.diff(a, axis=-1)).sum() + np.abs(np.diff(a, axis=-2)).sum()

    tvs = [tv(tv_smooth(x, a)) for a in (20.0, 8.0, 1.0)]
    assert tvs[0] > tvs[1] > tvs[2] and tvs[0] < tv(x)
    scaled = tv_smooth(x * 1000.0 - 300.0, 8.0)
    assert np.allclose((scaled + 300.0) / 1000.0, tv_smooth(x, 8.0), atol=1e-4)


def test_tv_is_image_only_and_dict_roundtrip():
    image, label = blob_sample()
    aug = Augmenter(flip=False, tv_alpha=(1.0, 4.0), tv_prob=1.0)
    im, lb = aug(np.random.default_rng(0), image, label)
    assert np.array_equal(lb, label) and not np.allclose(im, image)
    assert Augmenter.from_dict(aug.to_dict()) == aug
    with pytest.raises(DataError, match="smaller alpha"):
        Augmenter(tv_alpha=0.0)
