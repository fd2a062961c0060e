"""npe2 reader: NIfTI volumes with their voxel spacing as the layer scale."""

from __future__ import annotations

from ._nifti_layers import is_nifti, read_nifti_layer


def napari_get_reader(path):
    paths = path if isinstance(path, list) else [path]
    if not paths or not all(is_nifti(p) for p in paths):
        return None
    return read_nifti


def read_nifti(path):
    """Layers for the files; a corrupt or truncated one is a one-line napari error notification
    (not a reader traceback) and yields napari's "empty file" sentinel, the others still open."""
    from .data import DataError

    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        try:
            layers.append(read_nifti_layer(p))
        except (DataError, ValueError) as exc:
            from napari.utils.notifications import show_error

            show_error(str(exc))
    return layers or [(None,)]
