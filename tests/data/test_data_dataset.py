"""SegmentationDataset: constructors, items, feedback masks, splits, and the data errors users hit."""

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
from torch.utils.data import DataLoader

from napari_segattn.data import Augmenter, DataError, Normalization, SegmentationDataset


def write_pairs(tmp_path, n=4, size=(16, 20), mask_values=(0, 255)):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(n):
        iio.imwrite(tmp_path / "img" / f"{i}.png", rng.integers(0, 256, size, dtype=np.uint8))
        m = np.where(rng.random(size) < 0.3, mask_values[1], mask_values[0]).astype(np.uint8)
        iio.imwrite(tmp_path / "msk" / f"{i}.png", m)
    return tmp_path / "img", tmp_path / "msk"


def test_from_folders_items_and_stem_matching(tmp_path):
    img_dir, msk_dir = write_pairs(tmp_path, n=12)
    ds = SegmentationDataset.from_folders(img_dir, msk_dir, binarize=True)
    assert len(ds) == 12 and ds.num_channels == 1 and ds.num_classes == 2 and ds.shape == (16, 20)
    assert ds.names[:3] == ["0.png", "1.png", "2.png"] and ds.names[-1] == "11.png"  # natural order
    item = ds[5]
    assert set(item) == {"image", "label", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 16, 20)
    assert item["label"].dtype == torch.int64 and item["index"] == 5
    raw_mask = iio.imread(msk_dir / "5.png")
    assert np.array_equal(item["label"].numpy(), (raw_mask > 0).astype(np.int64))
    raw = iio.imread(img_dir / "5.png").astype(np.float64)
    assert np.allclose(item["image"][0].numpy(), (raw - raw.mean()) / raw.std(), atol=1e-5)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 1, 16, 20) and batch["label"].shape == (4, 16, 20)


def test_folder_errors(tmp_path):
    img_dir, msk_dir = write_pairs(tmp_path, n=3)
    with pytest.raises(DataError, match="binarize"):
        SegmentationDataset.from_folders(img_dir, msk_dir)  # {0, 255} without binarize
    iio.imwrite(msk_dir / "1.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"img/1\.png.*\(16, 20\).*msk/1\.png.*\(8, 8\)"):
        SegmentationDataset.from_folders(img_dir, msk_dir, binarize=True)
    (msk_dir / "1.png").unlink()
    iio.imwrite(img_dir / "extra.png", np.zeros((16, 20), np.uint8))
    with pytest.raises(DataError, match="have no mask.*1.png.*extra.png"):
        SegmentationDataset.from_folders(img_dir, msk_dir, binarize=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        SegmentationDataset.from_folders(empty, msk_dir)


def test_nan_and_unreadable_files_are_named(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    img = np.ones((8, 8), np.float32)
    img[2, 3] = np.nan
    tifffile.imwrite(tmp_path / "i" / "a.tif", img)
    tifffile.imwrite(tmp_path / "m" / "a.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"a\.tif.*NaN"):
        SegmentationDataset.from_folders(tmp_path / "i", tmp_path / "m")
    tifffile.imwrite(tmp_path / "i" / "a.tif", np.ones((8, 8), np.float32))
    (tmp_path / "m" / "a.tif").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"m/a\.tif"):
        SegmentationDataset.from_folders(tmp_path / "i", tmp_path / "m")


def test_label_checks_from_arrays():
    img = np.zeros((6, 6), np.float32)
    with pytest.raises(DataError, match="integers"):
        SegmentationDataset.from_arrays(img, np.full((6, 6), 0.5))
    with pytest.raises(DataError, match=">= 0"):
        SegmentationDataset.from_arrays(img, -np.ones((6, 6), int))
    ds = SegmentationDataset.from_arrays(img, np.full((6, 6), 0.5), binarize=True)
    assert ds.sample(0)["label"].sum() == 36
    ds = SegmentationDataset.from_arrays(img, np.full((6, 6), 4), label_map={4: 1})  # BRATS ET
    assert ds.num_classes == 2 and ds.sample(0)["label"].max() == 1
    soft = np.linspace(0, 1, 36).reshape(6, 6) * 255
    assert SegmentationDataset.from_arrays(img, soft, binarize=127).sample(0)["label"].sum() == np.sum(soft > 127)


def test_from_arrays_layouts():
    rng = np.random.default_rng(0)
    lab2 = rng.integers(0, 3, (10, 12))
    ds = SegmentationDataset.from_arrays(rng.random((10, 12)), lab2, spacing=(0.5, 0.25), name="layer")
    assert len(ds) == 1 and ds.num_classes == 3 and ds.spacing == (0.5, 0.25) and ds.names == ["layer"]
    ds = SegmentationDataset.from_arrays(rng.random((10, 12, 3)), lab2)  # channels last, inferred
    assert ds.num_channels == 3 and ds.sample(0)["image"].shape == (3, 10, 12)
    with pytest.raises(DataError, match="channel_axis"):
        SegmentationDataset.from_arrays(rng.random((10, 10, 10)), np.zeros((10, 10), int))
    stack = rng.random((5, 10, 12))
    lab3 = rng.integers(0, 2, (5, 10, 12))
    ds = SegmentationDataset.from_arrays(stack, lab3, spacing=(3.0, 0.5, 0.25), name="vol")
    assert len(ds) == 5 and ds.spacing == (0.5, 0.25) and ds.names[2] == "vol[z=2]"
    assert np.array_equal(ds.sample(2)["label"], lab3[2])
    four = rng.random((5, 2, 10, 12))
    ds = SegmentationDataset.from_arrays(four, lab3, channel_axis=1)
    assert len(ds) == 5 and ds.num_channels == 2
    ds = SegmentationDataset.from_arrays([rng.random((10, 12)), rng.random((8, 9))], [lab2, np.zeros((8, 9), int)])
    assert len(ds) == 2 and ds.shape is None
    with pytest.raises(DataError, match="does not match"):
        SegmentationDataset.from_arrays(rng.random((10, 12)), np.zeros((10, 11), int))


def test_volume_normalisation_uses_whole_volume_stats():
    rng = np.random.default_rng(1)
    vol = rng.normal(100, 20, (6, 8, 8)) + np.arange(6)[:, None, None] * 10
    lab = np.zeros((6, 8, 8), int)
    ds = SegmentationDataset.from_arrays(vol, lab, normalization=Normalization("zscore", per="volume"))
    allv = np.stack([ds.sample(i)["image"][0] for i in range(6)])
    assert np.allclose(allv, (vol - vol.mean()) / vol.std(), atol=1e-4)
    ds = SegmentationDataset.from_arrays(vol, lab, normalization=Normalization("zscore", per="image"))
    assert np.allclose([ds.sample(i)["image"].mean() for i in range(6)], 0, atol=1e-5)


def test_from_volumes_modalities_spacing_and_skip_empty(tmp_path):
    rng = np.random.default_rng(2)
    shape = (10, 12, 7)  # (x, y, z) on disk
    affine = np.diag([0.8, 0.9, 3.0, 1.0])
    t1 = rng.uniform(1, 100, shape).astype(np.float32)
    t2 = rng.uniform(1, 50, shape).astype(np.float32)
    t1[:2] = 0  # background for zscore_nonzero
    seg = np.zeros(shape, np.uint8)
    seg[3:6, 4:8, 2:5] = 1
    for name, arr in [("t1", t1), ("t2", t2), ("seg", seg)]:
        nib.save(nib.Nifti1Image(arr, affine), tmp_path / f"{name}.nii.gz")
    ds = SegmentationDataset.from_volumes([tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"], tmp_path / "seg.nii.gz")
    assert len(ds) == 7 and ds.num_channels == 2 and ds.spacing == pytest.approx((0.9, 0.8))
    assert ds.shape == (12, 10) and ds.names[4] == "t1.nii.gz[z=4]"
    s = ds.sample(3)
    assert np.array_equal(s["label"], seg[:, :, 3].T)
    nz = t1[t1 != 0]
    assert np.allclose(s["image"][0], (t1[:, :, 3].T - nz.mean()) / nz.std(), atol=1e-4)  # FPA default
    ds = SegmentationDataset.from_volumes(tmp_path / "t1.nii.gz", tmp_path / "seg.nii.gz", skip_empty=True)
    assert [n.split("[")[1] for n in ds.names] == ["z=2]", "z=3]", "z=4]"] and ds.slice_index == [2, 3, 4]
    ds = SegmentationDataset.from_volumes(tmp_path / "t1.nii.gz", tmp_path / "seg.nii.gz", axis=2)
    assert len(ds) == 10 and ds.spacing == pytest.approx((3.0, 0.9)) and ds.names[0].endswith("[x=0]")
    nib.save(nib.Nifti1Image(seg[:, :, :5], affine), tmp_path / "short.nii.gz")
    with pytest.raises(DataError, match=r"t1\.nii\.gz.*\(7, 12, 10\).*short\.nii\.gz.*\(5, 12, 10\)"):
        SegmentationDataset.from_volumes(tmp_path / "t1.nii.gz", tmp_path / "short.nii.gz")


def feedback_ds(augment_feedback):
    rng = np.random.default_rng(3)
    img = rng.random((4, 12, 12)).astype(np.float32)
    lab = np.zeros((4, 12, 12), int)
    lab[:, :4, :6] = 1  # asymmetric, so a flip is visible
    ds = SegmentationDataset.from_arrays(img, lab, augmenter=Augmenter(flip=True, p_flip=1.0), seed=0)
    ds.feedback = lambda i: lab[i]
    ds.augment_feedback = augment_feedback
    return ds, lab


def test_feedback_is_unaugmented_by_default_as_released():
    ds, lab = feedback_ds(False)
    item = ds[1]
    assert item["feedback"].shape == (1, 12, 12) and item["feedback"].dtype == torch.float32
    assert np.array_equal(item["feedback"][0].numpy(), lab[1])  # stored mask as is (spec D4)
    assert not np.array_equal(item["label"].numpy(), lab[1])  # while the sample was flipped
    ds, lab = feedback_ds(True)
    item = ds[1]
    assert np.array_equal(item["feedback"][0].numpy(), item["label"].numpy())


def test_augmentation_is_reproducible_and_varies_by_epoch():
    img = np.random.default_rng(4).random((3, 16, 16)).astype(np.float32)
    lab = np.zeros((3, 16, 16), int)
    aug = Augmenter(rotate=30, p_rotate=1.0)

    def epoch_items(epoch):
        ds = SegmentationDataset.from_arrays(img, lab, augmenter=aug, seed=5)
        ds.set_epoch(epoch)
        return [ds[i]["image"].numpy() for i in range(3)]

    a, b, c = epoch_items(0), epoch_items(0), epoch_items(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    ds = SegmentationDataset.from_arrays(img, lab, augmenter=aug, seed=5)
    assert not np.array_equal(ds[0]["image"], ds[0]["image"])  # new draw on each access
    assert np.array_equal(ds.sample(0)["image"], ds.sample(0)["image"])  # sample(): no augmentation


def test_split_is_deterministic_disjoint_and_val_unaugmented():
    img = np.random.default_rng(5).random((20, 8, 8))
    ds = SegmentationDataset.from_arrays(img, np.zeros((20, 8, 8), int), augmenter=Augmenter())
    tr, va = ds.split(0.25, seed=3)
    tr2, va2 = ds.split(0.25, seed=3)
    assert tr.names == tr2.names and va.names == va2.names
    assert len(va) == 5 and len(tr) == 15 and not set(tr.names) & set(va.names)
    assert va.augmenter is None and tr.augmenter is ds.augmenter
    assert [it["index"] for it in va] == list(range(5))
    assert ds.split(0.25, seed=4)[1].names != va.names
    two = SegmentationDataset.concat([ds, ds.subset(range(4))])
    trg, vag = two.split(0.5, seed=0, by_group=True)
    assert {g for g in vag.groups}.isdisjoint(trg.groups)


def test_initial_otsu_masks_from_raw_images():
    img = np.zeros((2, 20, 20), np.float32)
    img[:, 5:15, 5:15] = 200
    ds = SegmentationDataset.from_arrays(img, np.zeros((2, 20, 20), int))
    masks = ds.initial_masks()
    assert len(masks) == 2 and masks[0].dtype == bool
    assert masks[0][7:13, 7:13].all() and not masks[0][:3].any()
