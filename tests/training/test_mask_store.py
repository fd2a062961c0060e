"""FANet feedback mask store: our row-major RLE codec, staged commits, serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_segattn.training.mask_store import MaskStore, rle_decode, rle_encode

masks = st.tuples(st.integers(1, 23), st.integers(1, 37)).flatmap(lambda s: arrays(bool, s))


@settings(max_examples=200, deadline=None)
@given(masks)
def test_rle_round_trip_any_shape(mask):
    np.testing.assert_array_equal(rle_decode(rle_encode(mask), mask.shape), mask)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 5), (64, 48)])
@pytest.mark.parametrize("fill", ["empty", "full", "one"])
def test_rle_edge_cases(shape, fill):
    m = np.zeros(shape, bool)
    if fill == "full":
        m[:] = True
    elif fill == "one":
        m[shape[0] - 1, 0] = True
    code = rle_encode(m)
    expected = {"empty": [], "full": [0, m.size], "one": [(shape[0] - 1) * shape[1], 1]}[fill]
    assert code.tolist() == expected
    np.testing.assert_array_equal(rle_decode(code, shape), m)


def test_rle_is_row_major_not_transposed():
    # The released codec scans the transpose (spec §2.6); ours is plain C order.
    m = np.array([[0, 1, 1], [1, 0, 0]], bool)
    assert rle_encode(m).tolist() == [1, 3]
    assert rle_decode([1, 3], (2, 3)).tolist() == m.tolist()


def test_stage_commit_discard():
    s = MaskStore()
    a, b, c = (np.eye(4, dtype=bool), ~np.eye(4, dtype=bool), np.ones((4, 4), bool))
    s.put(0, a)
    s.stage(0, b)
    np.testing.assert_array_equal(s.get(0), a)  # staged masks are not visible yet
    s.discard()
    assert s.staged == 0
    np.testing.assert_array_equal(s.get(0), a)
    s.stage(0, c)
    assert s.commit() == 1
    np.testing.assert_array_equal(s.get(0), c)
    with pytest.raises(KeyError, match="sample 3"):
        s.get(3)


def test_nbytes_smaller_than_dense_for_blob_masks():
    s = MaskStore()
    yy, xx = np.mgrid[:256, :256]
    for i in range(4):
        s.put(i, (yy - 100 - 10 * i) ** 2 + (xx - 128) ** 2 < 40**2)
    assert s.dense_nbytes == 4 * 256 * 256
    # 80 rows with one run each, 16 bytes per run
    assert s.nbytes < s.dense_nbytes / 10


def test_state_dict_round_trip_is_plain_arrays_and_json_able():
    rng = np.random.default_rng(0)
    s = MaskStore()
    for i, shape in zip([3, 0, 7], [(5, 9), (1, 1), (12, 4)]):
        s.put(i, rng.random(shape) > 0.5)
    s.put(9, np.zeros((2, 2), bool))
    state = s.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    text = json.dumps({k: v.tolist() for k, v in state.items()})
    t = MaskStore()
    t.load_state_dict({k: np.array(v) for k, v in json.loads(text).items()})
    assert t.indices() == [0, 3, 7, 9]
    for i in s.indices():
        np.testing.assert_array_equal(t.get(i), s.get(i))


def test_from_otsu_uses_the_raw_images():
    from napari_segattn.data import Normalization, SegmentationDataset, otsu_mask

    rng = np.random.default_rng(1)
    imgs = [(rng.random((1, 20, 30)) * 255).astype(np.uint8) for _ in range(3)]
    labs = [np.zeros((20, 30), np.int64) for _ in range(3)]
    ds = SegmentationDataset(imgs, labs, normalization=Normalization("zscore"))
    s = MaskStore.from_otsu(ds)
    for i in range(3):
        np.testing.assert_array_equal(s.get(i), otsu_mask(imgs[i][0]))
