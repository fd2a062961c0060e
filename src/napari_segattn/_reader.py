"""npe2 reader: NIfTI volumes with their voxel spacing as the layer scale."""

from __future__ import annotations

from ._nifti_layers import is_nifti, read_nifti_layer


def napari_get_reader(path):
    paths = path if isinstance(path, list) else [path]
    if not paths or not all(is_nifti(p) for p in paths):
        return None
    return read_nifti


def read_nifti(path):
    paths = path if isinstance(path, list) else [path]
    return [read_nifti_layer(p) for p in paths]
