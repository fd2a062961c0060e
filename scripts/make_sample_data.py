"""Build the package's small sample data from ../shared/data (only sets marked "may ship").

Run: .venv/bin/python scripts/make_sample_data.py
- dsb2018_nuclei: 2018 DSB nuclei image (CC0, via stardist BSD-3), 512x512, mask binarised.
- mni152: ICBM152 2009a T1 downsampled to 2 mm, with GM/WM labels (argmax, 0.5 floor).
- sct_t2s: Spinal Cord Toolbox t2s volume + grey-matter mask (MIT), anisotropic 0.5x0.5x7.5 mm.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT.parent / "shared" / "data"
DST = ROOT / "src" / "napari_segattn" / "sample_data"


def downsample2(vol: np.ndarray) -> np.ndarray:
    """2x2x2 block mean (crop to even size first)."""
    s = [d - d % 2 for d in vol.shape]
    v = vol[: s[0], : s[1], : s[2]].astype(np.float32)
    return v.reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))


def main() -> int:
    DST.mkdir(parents=True, exist_ok=True)
    img = tifffile.imread(SRC / "dsb2018_nuclei" / "img2d.tif")
    mask = tifffile.imread(SRC / "dsb2018_nuclei" / "mask2d.tif")
    assert img.max() < 256
    tifffile.imwrite(DST / "dsb2018_nuclei.tif", img.astype(np.uint8), compression="zlib")
    tifffile.imwrite(DST / "dsb2018_nuclei_mask.tif", (mask > 0).astype(np.uint8), compression="zlib")
    shutil.copy(SRC / "dsb2018_nuclei" / "LICENSE-stardist", DST / "LICENSE-dsb2018-stardist")

    mni = SRC / "mni152"
    t1 = nib.load(mni / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = nib.load(mni / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").get_fdata() / 255.0
    wm = nib.load(mni / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").get_fdata() / 255.0
    affine = t1.affine.copy()
    affine[:3, :3] *= 2.0
    t1_small = downsample2(t1.get_fdata()).round().clip(0, 255).astype(np.uint8)
    gm_s, wm_s = downsample2(gm), downsample2(wm)
    labels = np.zeros(gm_s.shape, np.uint8)
    tissue = np.maximum(gm_s, wm_s) >= 0.5
    labels[tissue & (gm_s >= wm_s)] = 1
    labels[tissue & (wm_s > gm_s)] = 2
    nib.save(nib.Nifti1Image(t1_small, affine), DST / "mni152_t1_2mm.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), DST / "mni152_tissue_2mm.nii.gz")
    shutil.copy(mni / "LICENSE-nilearn", DST / "LICENSE-mni152-nilearn")

    sct = SRC / "sct_spine"
    shutil.copy(sct / "t2s.nii.gz", DST / "sct_t2s.nii.gz")
    shutil.copy(sct / "t2s_gmseg_manual.nii.gz", DST / "sct_t2s_gmseg.nii.gz")
    shutil.copy(sct / "LICENSE", DST / "LICENSE-sct")
    total = sum(p.stat().st_size for p in DST.iterdir())
    print(f"wrote {DST} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
