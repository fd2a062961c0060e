"""Row ``rle``: FANet's feedback-mask store (row-major RLE) vs dense bool arrays, in bytes.

Masks: the ISBI 2012 EM label PNGs (``> 0`` = foreground, cell interior), as the training
engine would store them; falls back to Otsu masks of a synthetic image without shared data.
Encode/decode times are given for context (they run once per sample per epoch).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from napari_segattn.training.mask_store import MaskStore

from ._common import variant

MASKS = Path("/work/shared/data/isbi2012_em/masks")


def _masks(quick: bool) -> tuple[list[np.ndarray], str]:
    files = sorted(MASKS.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else p.stem)
    if files:
        import imageio.v3 as iio

        files = files[:5] if quick else files
        return [np.asarray(iio.imread(f)) > 0 for f in files], f"ISBI 2012 EM masks ({len(files)} x 512x512)"
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    return [gaussian_filter(rng.standard_normal((512, 512)), 4) > 0 for _ in range(5)], "synthetic blobs (no shared data)"


def run(quick: bool, device: torch.device, options: dict | None = None) -> dict:
    masks, source = _masks(quick)
    store = MaskStore()
    t0 = time.perf_counter()
    for i, m in enumerate(masks):
        store.put(i, m)
    enc = (time.perf_counter() - t0) / len(masks)
    t0 = time.perf_counter()
    ok = all(np.array_equal(store.get(i), m) for i, m in enumerate(masks))
    dec = (time.perf_counter() - t0) / len(masks)
    dense = sum(m.size for m in masks)  # bool = one byte per pixel
    packed = sum(np.packbits(m).nbytes for m in masks)
    dtypes = sorted({str(store._codes[i][1].dtype) for i in store.indices()})
    return {
        "what": f"FANet mask store, {source}",
        "reference": "dense bool arrays (1 byte per pixel)",
        "config": {"masks": len(masks)},
        "reference_s": None,
        "variants": [
            variant(f"MaskStore (RLE, {'/'.join(dtypes)} runs)", None, None, run_dtype=dtypes[0], bytes=store.nbytes, dense_bytes=dense,
                    bytes_ratio=dense / store.nbytes, round_trip_exact=ok, encode_s_per_mask=enc,
                    decode_s_per_mask=dec),
            variant("for comparison: np.packbits (1 bit per pixel)", None, None, bytes=packed,
                    dense_bytes=dense, bytes_ratio=dense / packed),
        ],
        "gpu_peak_mb": None,
    }
