"""NIfTI <-> napari layer data, shared by the reader, the writer and the sample data.

nibabel returns arrays in (x, y, z) voxel order; napari users expect to scroll axial slices,
so we show (z, y, x) with the voxel spacing reversed to match, and keep the source affine and
header in the layer metadata so a labels layer is written back on exactly the source grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_LABEL_HINTS = ("seg", "label", "mask", "tissue", "manual")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def stem(path: str | Path) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(path).stem


def looks_like_labels(path: str | Path, data: np.ndarray, header=None) -> bool:
    """A Labels layer: the header's intent says labels (NIFTI_INTENT_LABEL, as our writers set
    it), or integer data whose file name says seg/label/mask."""
    if header is not None and header.get_intent()[0] == "label":
        return True
    integer = np.issubdtype(data.dtype, np.integer) or bool(np.all(np.mod(data[:: max(1, data.size // 100000)], 1) == 0))
    return integer and any(h in stem(path).lower() for h in _LABEL_HINTS)


def read_nifti_layer(path: str | Path, layer_type: str | None = None) -> tuple:
    """One napari LayerDataTuple for a 3D (or 4D, channels last) NIfTI file."""
    from .data.io import load_nifti

    data, img = load_nifti(path)  # DataError naming the file for a corrupt/truncated one
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if data.ndim < 3:
        raise ValueError(f"{Path(path).name}: expected a 3D/4D NIfTI volume, got shape {data.shape}")
    vol = np.moveaxis(data, (0, 1, 2), (2, 1, 0))  # (x, y, z, ...) -> (z, y, x, ...)
    scale = zooms[::-1]
    meta = {"nifti_affine": img.affine.copy(), "nifti_header": img.header.copy(), "nifti_axes": "zyx", "source": str(path)}
    if layer_type is None:
        layer_type = "labels" if looks_like_labels(path, data, img.header) else "image"
    kwargs: dict = {"name": stem(path), "metadata": meta}
    if vol.ndim == 4:  # modalities/time last in NIfTI: show as channels
        kwargs["channel_axis"] = 3
        kwargs["scale"] = scale
    else:
        kwargs["scale"] = scale
    if layer_type == "labels":
        vol = vol.astype(np.int32) if not np.issubdtype(vol.dtype, np.integer) else vol
        kwargs.pop("channel_axis", None)
    return (vol, kwargs, layer_type)


def nifti_grid(metadata: dict) -> dict:
    """The source grid keys of a layer's metadata, to hand on to layers computed from it (a
    prediction of a NIfTI volume is then saved on that volume's grid too)."""
    return {k: v for k, v in (metadata or {}).items() if k.startswith("nifti_")}


def write_nifti_labels(path: str | Path, data: np.ndarray, meta: dict) -> str:
    """Write a (z, y, x) labels array as NIfTI on the source grid when the layer came from one.

    ``meta``: what napari hands a writer, the layer's attributes, with the layer's own metadata
    under ``"metadata"`` (a bare metadata dict is accepted too). Without a source affine the
    layer's scale and translate make one."""
    import nibabel as nib

    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"NIfTI labels must be 3D (z, y, x); this layer has shape {data.shape}")
    arr = np.moveaxis(data, (0, 1, 2), (2, 1, 0))
    layer_meta = meta.get("metadata") if isinstance(meta.get("metadata"), dict) else meta
    affine = layer_meta.get("nifti_affine")
    header = layer_meta.get("nifti_header")
    if affine is None:
        scale = meta.get("scale") if meta.get("scale") is not None else (1.0, 1.0, 1.0)
        translate = meta.get("translate") if meta.get("translate") is not None else (0.0, 0.0, 0.0)
        affine = np.diag([*map(float, list(scale)[::-1]), 1.0])
        affine[:3, 3] = [float(t) for t in list(translate)[::-1]]
    if header is not None and tuple(header.get_data_shape()[:3]) != arr.shape:
        header = None  # a different grid: keep spacing via the affine only
    out_dtype = np.uint8 if arr.max(initial=0) < 256 and arr.min(initial=0) >= 0 else np.int32
    img = nib.Nifti1Image(arr.astype(out_dtype), affine, header=header.copy() if header is not None else None)
    img.set_data_dtype(out_dtype)
    img.header.set_slope_inter(1, 0)
    img.header.set_intent("label")  # NIFTI_INTENT_LABEL: opened as labels again, whatever the file's name
    path = str(path)
    if not is_nifti(path):
        path += ".nii.gz"
    nib.save(img, path)
    return path
