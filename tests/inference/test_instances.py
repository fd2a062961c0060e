"""instance_labels on hand-made masks: object ids, counts, areas, the watershed split."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segattn.inference import InputError, instance_labels


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_connected_components_by_hand():
    m = np.zeros((12, 12), np.uint8)
    m[1:3, 1:4] = 1  # 6 px
    m[6:9, 6:9] = 1  # 9 px
    m[9, 9] = 1  # touches the square diagonally: same object (full connectivity) -> 10 px
    m[0, 11] = 1  # 1 px
    inst = instance_labels(m)
    assert inst.count == 3 and inst.labels.dtype == np.int32
    # ids 1..3 in scan order, one id per object, background 0
    assert inst.labels[0, 11] == 1 and inst.labels[1, 1] == 2 and inst.labels[9, 9] == inst.labels[6, 6] == 3
    assert (inst.labels[m == 0] == 0).all() and (inst.labels[m > 0] > 0).all()
    assert inst.areas.tolist() == [1, 6, 10] and inst.mean_area == pytest.approx(17 / 3)
    assert inst.summary() == "3 object(s), mean area 5.7 px"


def test_watershed_splits_two_touching_discs_but_not_a_bar():
    shape = (40, 60)
    two = _disc(shape, 20, 18, 10) | _disc(shape, 20, 34, 10)  # centres 16 px apart: a neck of half-width 6
    bar = np.zeros(shape, bool)
    bar[5:12, 5:55] = True  # a flat ridge: one object, not many
    assert instance_labels(two).count == 1
    split = instance_labels(two, split=True)
    assert split.count == 2 and split.split and "watershed" in split.summary()
    assert split.labels[20, 18] != split.labels[20, 34] and split.areas.sum() == two.sum()
    # each centre's side of the neck goes to its own disc
    assert (split.labels[:, :24][two[:, :24]] == split.labels[20, 18]).all()
    assert (split.labels[:, 29:][two[:, 29:]] == split.labels[20, 34]).all()
    assert instance_labels(bar, split=True).count == 1


def test_split_keeps_objects_too_thin_for_a_seed_and_works_in_3d():
    m = np.zeros((10, 10), bool)
    m[2, 2:8] = True  # a 1-px line: distance max 1 < depth 2, no h-maximum
    m[6:8, 6:8] = True
    inst = instance_labels(m, split=True)
    assert inst.count == 2 and inst.areas.sum() == m.sum()
    vol = np.zeros((4, 10, 10), bool)
    vol[0:2, 1:4, 1:4] = True
    vol[3, 6:9, 6:9] = True  # not touching the first across z
    assert instance_labels(vol).areas.tolist() == [18, 9]


def test_bad_input_is_refused_in_words():
    with pytest.raises(InputError, match="2D or 3D"):
        instance_labels(np.zeros(5))
    with pytest.raises(InputError, match="depth"):
        instance_labels(np.zeros((4, 4)), split=True, depth=0)
