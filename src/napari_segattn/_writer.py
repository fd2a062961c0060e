"""npe2 writer: a labels layer back to NIfTI, on the source volume's grid and header."""

from __future__ import annotations

from ._nifti_layers import write_nifti_labels


def write_labels_nifti(path: str, data, meta: dict) -> list[str]:
    return [write_nifti_labels(path, data, meta)]
