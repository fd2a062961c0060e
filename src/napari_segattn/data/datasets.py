"""Loaders for the four real data sets in ``shared/data`` (see its README), reused by tests,
experiments and the sample-data builder. Nothing here is shipped data; paths are resolved at call time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dataset import SegmentationDataset
from .errors import DataError
from .io import read_image, read_volume
from .normalization import Normalization

MNI152_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
SCT_PAIRS = {"t2": ("t2.nii.gz", "t2_seg-manual.nii.gz"),
             "t1w": ("t1w.nii.gz", "t1w_seg-manual.nii.gz"),
             "t2s": ("t2s.nii.gz", "t2s_gmseg_manual.nii.gz")}


def shared_data_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$SEGATTN_SHARED_DATA``, else ``../shared/data`` next to the source checkout."""
    cands = [root] if root is not None else []
    if os.environ.get("SEGATTN_SHARED_DATA"):
        cands.append(os.environ["SEGATTN_SHARED_DATA"])
    here = Path(__file__).resolve()
    cands += [p / ".." / "shared" / "data" for p in here.parents[:5]]
    for c in cands:
        if Path(c).is_dir():
            return Path(c).resolve()
    raise DataError("shared data folder not found; pass root= or set SEGATTN_SHARED_DATA")


def mni152_tissue_labels(gm: np.ndarray, wm: np.ndarray, floor: float = 0.5) -> np.ndarray:
    """Hard labels 0 background / 1 GM / 2 WM: argmax of the two probability maps, kept only
    where the winning probability is >= ``floor`` (the template ships no CSF map).

    Integer maps are read as probabilities x 255 (the uint8 template files); ties go to GM.
    """
    gm, wm = np.asarray(gm), np.asarray(wm)
    if gm.shape != wm.shape:
        raise DataError(f"GM map {gm.shape} and WM map {wm.shape} differ in shape")

    def prob(a):
        return a.astype(np.float64) / 255.0 if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)

    g, w = prob(gm), prob(wm)
    labels = np.where(w > g, 2, 1).astype(np.uint8)
    labels[np.maximum(g, w) < floor] = 0
    return labels


def isbi2012_em(root=None, **kwargs) -> SegmentationDataset:
    """ISBI 2012 ssTEM: 30 pairs of 512x512 uint8 PNGs, masks {0, 255} → binarised (1 = cell interior)."""
    d = shared_data_root(root) / "isbi2012_em"
    kwargs.setdefault("binarize", True)
    return SegmentationDataset.from_folders(d / "images", d / "masks", **kwargs)


def load_mni152(root=None) -> dict:
    """MNI152 2009a T1 (z, y, x) with GM/WM hard labels, 1 mm spacing and the source affine."""
    d = shared_data_root(root) / "mni152"
    t1, spacing, affine, header = read_volume(d / MNI152_FILES["t1"])
    gm = read_volume(d / MNI152_FILES["gm"])[0]
    wm = read_volume(d / MNI152_FILES["wm"])[0]
    return {"t1": t1, "labels": mni152_tissue_labels(gm, wm), "spacing": spacing, "affine": affine, "header": header}


def mni152(root=None, *, axis: int = 0, skip_empty: bool = True, **kwargs) -> SegmentationDataset:
    """MNI152 T1 slices with background/GM/WM labels (3 classes; Attention Shift's tissue task)."""
    m = load_mni152(root)
    kwargs.setdefault("normalization", Normalization("zscore_nonzero", per="volume"))
    return SegmentationDataset.from_arrays(m["t1"], m["labels"], spacing=m["spacing"], name="mni152_t1",
                                           axis=axis, skip_empty=skip_empty, **kwargs)


def sct_spine(root=None, contrast: str = "t2", *, axis: int = 0, **kwargs) -> SegmentationDataset:
    """Spinal Cord Toolbox subject: ``t2``/``t1w`` + cord mask, or ``t2s`` + grey-matter mask."""
    if contrast not in SCT_PAIRS:
        raise DataError(f"unknown SCT contrast {contrast!r}; use one of {sorted(SCT_PAIRS)}")
    d = shared_data_root(root) / "sct_spine"
    img, seg = SCT_PAIRS[contrast]
    return SegmentationDataset.from_volumes(d / img, d / seg, axis=axis, **kwargs)


def dsb2018_nuclei(root=None, **kwargs) -> SegmentationDataset:
    """2018 DSB nuclei: one 512x512 uint16 image; 125 instance labels binarised (> 0)."""
    d = shared_data_root(root) / "dsb2018_nuclei"
    img = read_image(d / "img2d.tif")
    mask = read_image(d / "mask2d.tif")
    kwargs.setdefault("binarize", True)
    return SegmentationDataset.from_arrays(img, mask, name="dsb2018_nuclei", **kwargs)
