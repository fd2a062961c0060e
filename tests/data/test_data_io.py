"""Readers: formats, NIfTI axis order and spacing, and errors that name the file."""

import imageio.v3 as iio
import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_segattn.data import DataError, read_image, read_volume


def test_png_tiff_roundtrip(tmp_path):
    a = np.arange(48, dtype=np.uint8).reshape(6, 8)
    iio.imwrite(tmp_path / "a.png", a)
    tifffile.imwrite(tmp_path / "b.tif", a.astype(np.uint16) * 300)
    assert np.array_equal(read_image(tmp_path / "a.png"), a)
    b = read_image(tmp_path / "b.tif")
    assert b.dtype == np.uint16 and np.array_equal(b, a.astype(np.uint16) * 300)


def test_nifti_is_zyx_with_reversed_spacing(tmp_path):
    data = np.random.default_rng(0).integers(0, 100, (4, 5, 6)).astype(np.int16)  # (x, y, z)
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "v.nii.gz")
    vol, spacing, aff, header = read_volume(tmp_path / "v.nii.gz")
    assert vol.shape == (6, 5, 4)
    assert vol[3, 2, 1] == data[1, 2, 3]
    assert spacing == pytest.approx((2.0, 0.7, 0.5))
    assert np.allclose(aff, affine) and header is not None
    assert np.array_equal(read_image(tmp_path / "v.nii.gz"), vol)


def test_non_nifti_volume_has_no_spacing(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    vol, spacing, aff, hdr = read_volume(tmp_path / "s.tif")
    assert vol.shape == (3, 4, 5) and spacing is None and aff is None and hdr is None


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    badnii = tmp_path / "broken.nii.gz"
    badnii.write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="broken.nii.gz"):
        read_volume(badnii)
    with pytest.raises(DataError, match="nothere.tif"):
        read_image(tmp_path / "nothere.tif")
