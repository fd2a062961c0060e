"""FANet (MixPool on) trained for a few CPU epochs on real ISBI 2012 EM slices beats its Otsu init."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_fanet_on_isbi_em_improves_over_otsu(shared_data, tmp_path):
    import imageio.v3 as iio
    from skimage.transform import resize

    from napari_segattn.data import Normalization, SegmentationDataset
    from napari_segattn.metrics import binary_metrics
    from napari_segattn.models import build_model
    from napari_segattn.training import Trainer, Validation, recipe_for

    d = shared_data / "isbi2012_em"
    names = [f"{k}.png" for k in range(8)]
    imgs = [resize(iio.imread(d / "images" / n), (128, 128), preserve_range=True, anti_aliasing=True).astype(np.uint8)[None] for n in names]
    labs = [(resize(iio.imread(d / "masks" / n), (128, 128), order=0, preserve_range=True) > 127).astype(np.int64) for n in names]
    train = SegmentationDataset(imgs[:6], labs[:6], normalization=Normalization("minmax"))
    val = SegmentationDataset(imgs[6:], labs[6:], normalization=Normalization("minmax"))
    otsu = np.mean([binary_metrics(m, lab)["dice"] for m, lab in zip(val.initial_masks("otsu"), labs[6:])])

    torch.manual_seed(0)
    model = build_model("fanet", in_channels=1, out_channels=1, mixpool="all")
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=6, batch_size=2, lr=1e-3, augment="none")
    events = Trainer(model, train, val, cfg, device="cpu", out_dir=tmp_path).fit()
    dice = [e.metrics["dice"] for e in events if isinstance(e, Validation)]
    print(f"Otsu Dice {otsu:.4f}; FANet val Dice per epoch {[round(x, 4) for x in dice]}")
    assert max(dice) > otsu
