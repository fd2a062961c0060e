"""Image / label files for the command line: read, guess the axes, write on the source grid.

NIfTI keeps nibabel's ``(x, y, z[, c])`` order; slices are taken along z (axis 2) and the
output label volume is written with the source affine and header, so it overlays exactly.
2D PNG/TIFF images are ``(H, W)`` or ``(H, W, C)``; 3D TIFF stacks are ``(Z, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageFile", "read_image", "read_zarr", "guess_axes", "write_array", "colorize_signed",
           "matching_suffix", "file_stem"]

NIFTI = (".nii.gz", ".nii")
TIFF = (".tif", ".tiff")
RASTER = (".png", ".jpg", ".jpeg", ".bmp")
ZARR = (".zarr",)


def matching_suffix(path: str | Path) -> str:
    name = str(path).lower()
    for suf in NIFTI + TIFF + RASTER + ZARR:
        if name.endswith(suf):
            return suf
    return Path(path).suffix.lower()


def file_stem(path: str | Path) -> str:
    name = Path(path).name
    suf = matching_suffix(name)
    return name[: len(name) - len(suf)] if suf and name.lower().endswith(suf) else Path(name).stem


@dataclass
class ImageFile:
    data: np.ndarray
    path: Path
    kind: str  # "nifti" | "tiff" | "raster" | "zarr" (data is then a lazy zarr array)
    spacing: tuple[float, ...] | None = None  # per array axis (spatial axes only for NIfTI)
    meta: dict[str, Any] = field(default_factory=dict)  # NIfTI: affine, header


def read_zarr(path: str | Path, level: int = 0):
    """A zarr array, a zarr group holding one array, or an OME-Zarr image (its ``multiscales``
    level ``level``), opened read-only and lazily (nothing is loaded)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node
    attrs = dict(node.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")  # NGFF 0.4 / 0.5
    if ms:
        datasets = ms[0]["datasets"]
        if not 0 <= level < len(datasets):
            raise ValueError(f"{Path(path).name} has {len(datasets)} resolution level(s); --level {level} is out of range")
        return node[datasets[level]["path"]]
    arrays = list(node.array_keys())
    if len(arrays) == 1:
        return node[arrays[0]]
    raise ValueError(f"{Path(path).name} is a zarr group with arrays {arrays} and no OME-Zarr multiscales; "
                     "give the array's path (store.zarr/NAME)")


def read_image(path: str | Path, level: int = 0) -> ImageFile:
    """Read with ``data.io`` (the reader training uses), so a truncated, empty or mislabelled
    file is one :class:`~napari_segattn.data.DataError` naming it, for every command; zarr
    stores open lazily."""
    from ..data import io as dio

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suf = matching_suffix(path)
    if suf in ZARR or (path.is_dir() and ((path / ".zarray").exists() or (path / "zarr.json").exists()
                                          or (path / ".zgroup").exists())):
        return ImageFile(read_zarr(path, level), path, "zarr")
    if suf in NIFTI:
        data, img = dio.load_nifti(path)
        zooms = tuple(float(z) for z in img.header.get_zooms()[: min(3, data.ndim)])
        return ImageFile(data, path, "nifti", zooms, {"affine": img.affine.copy(), "header": img.header.copy()})
    if suf in TIFF:
        return ImageFile(dio.read_image(path), path, "tiff")
    if suf in RASTER:
        return ImageFile(dio.read_image(path), path, "raster")
    raise ValueError(f"{path.name}: unsupported file type {suf!r}; use NIfTI (.nii/.nii.gz), TIFF, PNG or zarr")


def guess_axes(f: ImageFile, in_channels: int, channel_axis: int | None = None,
               slice_axis: int | None = None) -> tuple[np.ndarray, int | None, int | None]:
    """``(data, channel_axis, slice_axis)``; explicit axes win. A grey 2D image given to a
    3-channel model is repeated to 3 channels (cv2's colour read of a grey file, as FANet's
    released code does)."""
    data = f.data
    if channel_axis is not None or slice_axis is not None:
        return data, channel_axis, slice_axis
    if f.kind == "nifti":
        if data.ndim == 3:
            return data, None, 2
        if data.ndim == 4:
            return data, 3, 2
        if data.ndim == 2:
            return data, None, None
    if data.ndim == 2:
        if in_channels > 1:
            return np.repeat(data[..., None], in_channels, axis=-1), -1, None
        return data, None, None
    if data.ndim == 3:
        if in_channels > 1 and data.shape[-1] == in_channels:
            return data, -1, None
        if in_channels > 1 and data.shape[0] == in_channels:
            return data, 0, None
        if in_channels == 1:
            # a singleton axis is the one channel (how tifffile reads a (1, H, W) image that
            # training read as C x H x W), not a one-slice volume
            if data.shape[0] == 1:
                return data, 0, None
            if data.shape[-1] == 1:
                return data, -1, None
            # (H, W, 3|4) is a colour image in any file type (a TIFF too), never a stack of
            # 3-pixel-wide slices: cutting it along its first axis gave H strips of H x 3
            if data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4:
                raise ValueError(f"{f.path.name} is a colour image (shape {data.shape}) but the model takes one "
                                 "channel; convert it to grey")
            return data, None, 0  # a (Z, H, W) stack
    if data.ndim == 4 and in_channels > 1:
        if data.shape[-1] == in_channels:
            return data, -1, 0
        if data.shape[1] == in_channels:
            return data, 1, 0
    raise ValueError(f"cannot tell the axes of {f.path.name} (shape {data.shape}); give its axes (segattn: --channel-axis/--slice-axis; napari: open it, then predict the layer)")


def write_array(path: str | Path, arr: np.ndarray, like: ImageFile | None = None, *, overwrite: bool = False,
                labels: bool = True) -> Path:
    """Write labels (or a float map with ``labels=False``) by extension.

    NIfTI: on ``like``'s grid (affine + header) when shapes agree. PNG: 2D only; binary labels
    are written as {0, 255} to be visible, float maps must be colourised first.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if labels:
        arr = arr.astype(np.uint8) if arr.dtype == bool or (arr.size and arr.max() < 256 and arr.min() >= 0) \
            else arr.astype(np.int32)
    else:
        arr = arr.astype(np.float32)
    suf = matching_suffix(path)
    if suf in NIFTI:
        import nibabel as nib

        affine = np.eye(4)
        header = None
        if like is not None and like.kind == "nifti":
            affine = like.meta["affine"]
            hdr = like.meta["header"]
            if tuple(hdr.get_data_shape()[: arr.ndim]) == arr.shape:
                header = hdr.copy()
        img = nib.Nifti1Image(arr, affine, header=header)
        img.set_data_dtype(arr.dtype)
        img.header.set_slope_inter(1, 0)
        # NIFTI_INTENT_LABEL for labels (the float maps keep the source's intent): readers, ours
        # included, then open the file as labels whatever its name
        img.header.set_intent("label" if labels else "none")
        nib.save(img, str(path))
    elif suf in TIFF:
        import tifffile

        tifffile.imwrite(str(path), arr)
    elif suf == ".png":
        import imageio.v3 as iio

        if arr.ndim not in (2, 3):
            raise ValueError(f"PNG holds 2D images only; got shape {arr.shape}; use .tif or .nii.gz")
        if labels and arr.dtype == np.uint8 and arr.max(initial=0) <= 1:
            arr = arr * 255
        if not labels:
            raise ValueError("float maps must be colourised before writing PNG")
        iio.imwrite(str(path), arr)
    else:
        raise ValueError(f"unsupported output type {suf!r}; use .nii.gz, .tif or .png")
    return path


def colorize_signed(m: np.ndarray) -> np.ndarray:
    """Blue (negative) - white (0) - red (positive) RGB uint8, symmetric around 0."""
    m = np.asarray(m, dtype=np.float64)
    lim = np.abs(m).max()
    t = m / lim if lim > 0 else np.zeros_like(m)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    r = 1 - neg
    g = 1 - np.maximum(pos, neg)
    b = 1 - pos
    return (np.stack([r, g, b], axis=-1) * 255).round().astype(np.uint8)
