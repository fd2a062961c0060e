"""Where the channels and slices of an input array are, and how to get back to them.

Models see a stack of 2D slices ``(Z, C, H, W)``. Users hand in ``(H, W)``, ``(C, H, W)``,
``(H, W, C)``, volumes in nibabel's ``(x, y, z)`` order, ... ; a :class:`Layout` records the
axes once so every result is returned in the caller's spatial order, never silently transposed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Layout", "InputError", "ChannelMismatchError"]


class InputError(ValueError):
    """An input array the model cannot take, with the reason in words."""


class ChannelMismatchError(InputError):
    """The image has a different number of channels than the model was built for."""


def _axis(axis: int | None, ndim: int, what: str) -> int | None:
    if axis is None:
        return None
    if not -ndim <= axis < ndim:
        raise InputError(f"{what}={axis} is out of range for an array with {ndim} dimension(s)")
    return axis % ndim


@dataclass(frozen=True)
class Layout:
    """Axis bookkeeping between a user array and the model's ``(Z, C, H, W)`` slice stack."""

    shape: tuple[int, ...]
    channel_axis: int | None
    slice_axis: int | None  # in the original array
    spatial_shape: tuple[int, ...]  # original spatial order, channel axis removed
    slice_pos: int | None  # position of the slice axis among the spatial axes

    @classmethod
    def infer(
        cls,
        shape: tuple[int, ...],
        *,
        channel_axis: int | None = None,
        slice_axis: int | None = None,
        in_channels: int | None = None,
    ) -> "Layout":
        ndim = len(shape)
        c = _axis(channel_axis, ndim, "channel_axis")
        s = _axis(slice_axis, ndim, "slice_axis")
        if c is not None and c == s:
            raise InputError(f"channel_axis and slice_axis both point at axis {c}")
        expected = 2 + (c is not None) + (s is not None)
        if ndim != expected:
            hint = ""
            if ndim == 3 and c is None and s is None:
                hint = (" A 3D array is ambiguous: pass channel_axis for a multi-channel 2D image "
                        "(e.g. RGB, -1) or slice_axis for a volume (e.g. 0).")
            elif ndim == 4 and (c is None or s is None):
                hint = " A 4D array needs both channel_axis and slice_axis."
            elif ndim < 2:
                hint = " Images need at least two spatial dimensions."
            raise InputError(
                f"expected a {expected}D array for channel_axis={channel_axis}, slice_axis={slice_axis}; "
                f"got shape {tuple(shape)}.{hint}"
            )
        n_ch = shape[c] if c is not None else 1
        if in_channels is not None and n_ch != in_channels:
            where = f"axis {c}" if c is not None else "no channel axis given"
            raise ChannelMismatchError(
                f"the model takes {in_channels} input channel(s) but the image has {n_ch} ({where}, shape "
                f"{tuple(shape)})" + ("; pass channel_axis" if c is None and in_channels > 1 else "")
            )
        spatial = tuple(n for i, n in enumerate(shape) if i != c)
        slice_pos = None
        if s is not None:
            slice_pos = s - (1 if c is not None and c < s else 0)
        return cls(tuple(shape), c, s, spatial, slice_pos)

    @property
    def is_volume(self) -> bool:
        return self.slice_pos is not None

    @property
    def n_slices(self) -> int:
        return self.spatial_shape[self.slice_pos] if self.is_volume else 1

    def channels_first(self, arr: np.ndarray) -> np.ndarray:
        """``(C, *spatial)`` in the original spatial order (what normalisation sees)."""
        arr = np.asarray(arr)
        return arr[None] if self.channel_axis is None else np.moveaxis(arr, self.channel_axis, 0)

    def to_stack(self, arr: np.ndarray) -> np.ndarray:
        """Original array -> ``(Z, C, H, W)``."""
        cf = self.channels_first(arr)
        if self.is_volume:
            return np.moveaxis(cf, 1 + self.slice_pos, 0)
        return cf[None]

    def spatial_to_stack(self, arr: np.ndarray) -> np.ndarray:
        """An array with the image's spatial shape (a mask, GT) -> ``(Z, H, W)``."""
        arr = np.asarray(arr)
        if arr.shape != self.spatial_shape:
            raise InputError(f"expected spatial shape {self.spatial_shape}, got {arr.shape}")
        return np.moveaxis(arr, self.slice_pos, 0) if self.is_volume else arr[None]

    def spatial_from_stack(self, stack: np.ndarray) -> np.ndarray:
        """``(Z, H, W)`` -> the image's spatial order."""
        return np.moveaxis(stack, 0, self.slice_pos) if self.is_volume else stack[0]

    def from_stack(self, stack: np.ndarray) -> np.ndarray:
        """``(Z, K, H, W)`` -> ``(K, *spatial)`` in the original spatial order."""
        kz = np.moveaxis(stack, 1, 0)  # (K, Z, H, W)
        return np.moveaxis(kz, 1, 1 + self.slice_pos) if self.is_volume else kz[:, 0]
