"""The shared real data sets load with the right shapes, labels and spacing (../shared/data)."""

import imageio.v3 as iio
import numpy as np
import pytest
from scipy.spatial import cKDTree

from napari_segattn.data import (
    dsb2018_nuclei,
    isbi2012_em,
    load_mni152,
    mni152,
    mni152_tissue_labels,
    otsu_mask,
    read_image,
    read_volume,
    sct_spine,
)
from napari_segattn.metrics import binary_metrics


def test_isbi2012_em_pairs(shared_data):
    ds = isbi2012_em(shared_data)
    assert len(ds) == 30 and ds.shape == (512, 512) and ds.num_channels == 1 and ds.num_classes == 2
    raw_mask = iio.imread(shared_data / "isbi2012_em" / "masks" / "7.png")
    s = ds.sample(ds.names.index("7.png"))
    assert np.array_equal(s["label"], (raw_mask == 255).astype(np.int64))
    # 255 = cell interior dominates ssTEM membranes
    assert 0.7 < np.mean([ds.sample(i)["label"].mean() for i in range(30)]) < 0.85


# Thresholded foreground counts measured with OpenCV 4.14 running the released FANet
# init_mask (imread grayscale, GaussianBlur((5, 5), 0), THRESH_OTSU): thresholds 133, 121, 131.
OPENCV_OTSU_COUNTS = {"0.png": 145275, "1.png": 146067, "2.png": 146902}


@pytest.mark.parametrize("name", sorted(OPENCV_OTSU_COUNTS))
def test_otsu_matches_released_opencv_on_em_images(shared_data, name):
    img = read_image(shared_data / "isbi2012_em" / "images" / name)
    assert int(otsu_mask(img).sum()) == OPENCV_OTSU_COUNTS[name]


def test_mni152_tissue_labels(shared_data):
    m = load_mni152(shared_data)
    assert m["t1"].shape == (189, 233, 197) and m["spacing"] == (1.0, 1.0, 1.0)
    lab = m["labels"]
    d = shared_data / "mni152"
    gm = read_volume(d / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")[0] / 255.0
    wm = read_volume(d / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")[0] / 255.0
    # independent formulation: background is a third "class" with constant score just under 0.5
    ref = np.argmax(np.stack([np.full(gm.shape, 0.5 - 1e-9), gm, wm]), axis=0)
    assert np.array_equal(lab, ref)
    vols_ml = [(lab == k).sum() / 1000 for k in (1, 2)]  # 1 mm^3 voxels
    assert 800 < vols_ml[0] < 1400 and 450 < vols_ml[1] < 900
    ds = mni152(shared_data)
    assert ds.num_classes == 3 and ds.spacing == (1.0, 1.0) and ds.shape == (233, 197)
    assert all(ds.sample(i)["label"].any() for i in (0, len(ds) - 1))


def test_mni152_tissue_labels_rules():
    gm = np.array([0.6, 0.3, 0.5, 0.4, 0.9])
    wm = np.array([0.3, 0.6, 0.5, 0.4, 0.95])
    assert mni152_tissue_labels(gm, wm).tolist() == [1, 2, 1, 0, 2]
    assert mni152_tissue_labels(np.array([128, 127], np.uint8), np.array([0, 0], np.uint8)).tolist() == [1, 0]


def _brute_hd95(a, b, spacing):
    def surf(m):
        p = np.pad(m, 1)
        inner = np.ones_like(p)
        for ax in range(m.ndim):
            inner &= np.roll(p, 1, ax) & np.roll(p, -1, ax)
        return m & ~inner[tuple(slice(1, -1) for _ in range(m.ndim))]

    pa, pb = np.argwhere(surf(a)) * spacing, np.argwhere(surf(b)) * spacing
    return np.percentile(np.concatenate([cKDTree(pb).query(pa)[0], cKDTree(pa).query(pb)[0]]), 95)


def test_sct_spine_volumes_with_spacing(shared_data):
    t2 = sct_spine(shared_data, "t2")
    assert len(t2) == 52 and t2.shape == (55, 60) and t2.spacing == (1.0, 1.0) and t2.num_classes == 2
    t2s = sct_spine(shared_data, "t2s")
    assert len(t2s) == 9 and t2s.shape == (54, 49) and t2s.spacing == (0.5, 0.5)
    assert t2s.volumes[0]["spacing"] == pytest.approx((7.5, 0.5, 0.5), rel=1e-6)
    assert t2s.names[4] == "t2s.nii.gz[z=4]"
    # HD95 in mm on the anisotropic grid: manual GM mask vs itself shifted by one voxel
    seg, sp, _, _ = read_volume(shared_data / "sct_spine" / "t2s_gmseg_manual.nii.gz")
    seg = seg > 0
    for axis in (0, 2):
        moved = np.roll(seg, 1, axis=axis)
        m = binary_metrics(moved, seg, spacing=sp)
        assert m["hd95_mm"] == pytest.approx(_brute_hd95(moved, seg, np.asarray(sp)), rel=1e-9)
    assert binary_metrics(np.roll(seg, 1, axis=2), seg, spacing=sp)["hd95_mm"] == pytest.approx(0.5)


def test_dsb2018_nuclei(shared_data):
    ds = dsb2018_nuclei(shared_data)
    raw = read_image(shared_data / "dsb2018_nuclei" / "mask2d.tif")
    assert len(np.unique(raw)) - 1 == 125
    assert len(ds) == 1 and ds.shape == (512, 512)
    assert np.array_equal(ds.sample(0)["label"], (raw > 0).astype(np.int64))
