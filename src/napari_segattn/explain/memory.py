"""How many IG interpolation steps to run per forward pass, so memory stays bounded."""

from __future__ import annotations

__all__ = ["ig_batch_size"]

#: pixels per forward/backward pass; about 1.5 GB of activations for the full FANet on CPU
PIXEL_BUDGET = 1 << 20


def ig_batch_size(shape, n_steps: int, budget: int = PIXEL_BUDGET) -> int:
    """captum's ``internal_batch_size`` for an image of spatial ``shape[-2:]``.

    Unbounded, captum pushes all ``n_steps`` interpolated images through at once: 8 steps of a
    512x512 FANet map took 12 GB (measured). One pass of ~1 MPixel keeps it near 1.5 GB.
    """
    pixels = int(shape[-1]) * int(shape[-2])
    return max(1, min(int(n_steps), budget // max(1, pixels)))
