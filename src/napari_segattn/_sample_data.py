"""Sample data for File > Open Sample: real images with ground truth, shipped small."""

from __future__ import annotations

from importlib.resources import files

import numpy as np

from ._nifti_layers import read_nifti_layer


def sample_path(name: str):
    return files("napari_segattn") / "sample_data" / name


def dsb2018_nuclei():
    """2018 DSB nuclei (512x512, CC0) with its binarised manual mask."""
    import tifffile

    img = tifffile.imread(str(sample_path("dsb2018_nuclei.tif")))
    gt = tifffile.imread(str(sample_path("dsb2018_nuclei_mask.tif"))).astype(np.int32)
    return [
        (img, {"name": "dsb2018_nuclei", "colormap": "gray"}, "image"),
        (gt, {"name": "dsb2018_nuclei_gt", "opacity": 0.4}, "labels"),
    ]


def mni152_brain():
    """MNI152 T1 at 2 mm with GM (1) / WM (2) labels: a 3D NIfTI volume with spacing."""
    t1 = read_nifti_layer(sample_path("mni152_t1_2mm.nii.gz"), "image")
    lab = read_nifti_layer(sample_path("mni152_tissue_2mm.nii.gz"), "labels")
    lab[1]["opacity"] = 0.4
    return [t1, lab]


def sct_spinal_cord_gm():
    """Spinal cord T2* (0.5 x 0.5 x 7.5 mm) with the manual grey-matter mask."""
    img = read_nifti_layer(sample_path("sct_t2s.nii.gz"), "image")
    lab = read_nifti_layer(sample_path("sct_t2s_gmseg.nii.gz"), "labels")
    lab[1]["opacity"] = 0.4
    return [img, lab]
