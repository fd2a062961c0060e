"""Reading images and volumes from disk, with one error type that names the file.

NIfTI volumes come back in (z, y, x[, c]) order with the spacing reversed to match, exactly as
the napari reader shows them (``_nifti_layers``), so a data set built from files and one built
from the layers of the same file agree voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif") + TIFF_SUFFIXES + NIFTI_SUFFIXES


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def file_stem(path: str | Path) -> str:
    """File name without its extension, treating ``.nii.gz`` as one extension."""
    name = Path(path).name
    low = name.lower()
    for suf in (".nii.gz", ".nii"):
        if low.endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


def _exists(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"cannot read {path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"cannot read {path}: the file is empty (0 bytes)")


def read_image(path: str | Path) -> np.ndarray:
    """The pixel array of a PNG/JPEG/TIFF/NIfTI file, dtype and channels as stored.

    NIfTI arrays are returned in (z, y, x[, c]) order (see :func:`read_volume`).
    """
    path = Path(path)
    _exists(path)
    if is_nifti(path):
        return read_volume(path)[0]
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            arr = tifffile.imread(str(path))
        else:
            import imageio.v3 as iio

            arr = iio.imread(path, plugin="pillow")
    except Exception as exc:  # the readers raise many types; the user needs the file name
        raise DataError(f"cannot read image {path}: {_reason(exc)} (corrupt, truncated or not an image file?)") from None
    arr = np.asarray(arr)
    if arr.ndim < 2 or arr.size == 0:
        raise DataError(f"{path}: expected an image, got an array of shape {arr.shape}")
    return arr


def load_nifti(path: str | Path):
    """``(array in nibabel's (x, y, z[, c]) order, nibabel image)``; a corrupt or truncated file
    (``zlib.error``, ``EOFError``, ``ImageFileError``) is a :class:`DataError` naming it. The one
    NIfTI read behind training, the CLI and the napari reader."""
    path = Path(path)
    _exists(path)
    try:
        import nibabel as nib

        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # nibabel reads lazily: decompression errors come here
    except Exception as exc:  # nibabel/gzip/zlib raise many types; the user needs the file name
        raise DataError(f"cannot read NIfTI volume {path}: {_reason(exc)} (corrupt or truncated?)") from None
    return data, img


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_volume(path: str | Path):
    """``(array, spacing, affine, header)`` for a volume file.

    NIfTI: array in (z, y, x[, c]) order, ``spacing`` the voxel size (z, y, x) in the file's
    units (usually mm), ``affine``/``header`` the source ones (affine maps the *file's* (x, y, z)
    voxel indices). Other formats (TIFF stacks): array as stored, ``spacing``/``affine``/``header``
    are ``None``.
    """
    path = Path(path)
    _exists(path)
    if not is_nifti(path):
        return read_image(path), None, None, None
    data, img = load_nifti(path)
    if data.ndim < 2:
        raise DataError(f"{path}: expected an image or volume, got shape {data.shape}")
    nd = min(data.ndim, 3)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:nd])
    vol = np.moveaxis(data, tuple(range(nd)), tuple(reversed(range(nd))))  # (x, y, z) -> (z, y, x)
    return vol, zooms[::-1], np.asarray(img.affine, dtype=np.float64), img.header.copy()
