"""Cut one large 2D image into training tiles, so a single napari image can be split into
training and validation samples (a lone 512x512 image would otherwise give one sample)."""

from __future__ import annotations

import numpy as np

__all__ = ["tile_pairs"]


def tile_pairs(image: np.ndarray, labels: np.ndarray, tile: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Non-overlapping ``tile`` x ``tile`` crops of a ``(C, H, W)`` image and ``(H, W)`` labels.

    The last row/column of tiles is shifted inwards to end at the border, so every pixel is
    used and every tile has the full size. ``tile <= 0`` or larger than the image: one tile.
    """
    image, labels = np.asarray(image), np.asarray(labels)
    if image.shape[-2:] != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in size")
    h, w = labels.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return [image], [labels]
    th, tw = min(tile, h), min(tile, w)

    def starts(n: int, t: int) -> list[int]:
        s = list(range(0, n - t + 1, t))
        if s[-1] + t < n:
            s.append(n - t)
        return s

    imgs, labs = [], []
    for y in starts(h, th):
        for x in starts(w, tw):
            imgs.append(image[..., y:y + th, x:x + tw])
            labs.append(labels[y:y + th, x:x + tw])
    return imgs, labs
