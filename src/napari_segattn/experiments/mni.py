"""The MNI152 tissue task shared by the attention-shift and FU-net studies: one template volume,
so training and test slices alternate (even tissue slices train, odd ones test; neighbouring
slices are correlated, which flatters absolute scores but not the comparisons)."""

from __future__ import annotations

import numpy as np

from ..data import Normalization
from . import common

CLASS_NAMES = ["background", "GM", "WM"]


def load(data, factor: int, n_train: int | None, n_test: int | None):
    root = common.data_root(data, "mni152")
    images, labels, zs = common.mni_slices(root, factor)
    names = [f"mni152_t1[z={z}]" for z in zs]
    idx = list(range(len(images)))
    train_idx, test_idx = common.evenly(idx[0::2], n_train), common.evenly(idx[1::2], n_test)
    return images, labels, names, zs, train_idx, test_idx


def dataset(images, labels, names, idx, augmenter=None, seed=0):
    # Images are already z-scored over the volume (common.mni_slices), so no further normalisation.
    return common.make_dataset(images, labels, idx, names, Normalization("none"), augmenter=augmenter, seed=seed,
                               num_classes=3)


def dice_per_class(model, images, labels, idx) -> tuple[dict, list[dict]]:
    """Mean test Dice/IoU per tissue (one-vs-rest per slice, then the mean over slices)."""
    from ..inference import predict
    from ..metrics import segmentation_metrics

    rows = []
    for i in idx:
        pred = predict(model, images[i][0], device="auto").labels
        m = segmentation_metrics(pred, labels[i], 3)
        rows.append({"slice": i, "dice_GM": m["class_1"]["dice"], "dice_WM": m["class_2"]["dice"],
                     "iou_GM": m["class_1"]["iou"], "iou_WM": m["class_2"]["iou"]})
    return common.mean_rows(rows, ("dice_GM", "dice_WM", "iou_GM", "iou_WM")), rows


def to_gray(image: np.ndarray) -> np.ndarray:
    return common.gray_u8(image)
