"""Intensity normalisation, stored with the model so inference normalises exactly as training did."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import DataError

MODES = ("zscore", "zscore_nonzero", "minmax", "none")
PER = ("image", "volume")


@dataclass(frozen=True)
class Normalization:
    """Per-channel intensity normalisation.

    ``mode``:
      * ``"zscore"``: (x − mean) / std over all pixels of the channel.
      * ``"zscore_nonzero"``: mean/std over the channel's *non-zero* voxels only, then applied to
        every voxel (FPA's BRATS preprocessing, ``preprocessing_brats.py``: the zero background
        becomes −mean/std). ``zero_background=True`` keeps zeros at 0 instead (nnU-Net style).
      * ``"minmax"``: (x − min) / (max − min), to [0, 1].
      * ``"none"``: only the cast to float32.

    ``per`` says over what unit the statistics are taken: ``"image"`` (each 2D sample) or
    ``"volume"`` (the whole 3D volume/stack a sample was sliced from; FPA normalises per volume).
    :meth:`apply` normalises whatever array it is given as one unit; pass ``slice_axis`` to get
    per-slice statistics from a stack when ``per == "image"``.
    """

    mode: str = "zscore"
    per: str = "image"
    zero_background: bool = False
    eps: float = 1e-8

    def __post_init__(self):
        if self.mode not in MODES:
            raise DataError(f"unknown normalisation mode {self.mode!r}; use one of {MODES}")
        if self.per not in PER:
            raise DataError(f"unknown normalisation unit per={self.per!r}; use one of {PER}")

    def statistics(self, array: np.ndarray, channel_axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(offset, scale)`` per channel (float64, shape (C,)) so that out = (x − offset) / scale."""
        x = np.asarray(array)
        if channel_axis is None:
            x = x[None]
            channel_axis = 0
        x = np.moveaxis(x, channel_axis, 0)
        c = x.shape[0]
        offset = np.zeros(c)
        scale = np.ones(c)
        if self.mode == "none":
            return offset, scale
        for i in range(c):
            ch = x[i]
            if self.mode == "zscore_nonzero":
                ch = ch[ch != 0]
            if ch.size == 0:
                continue  # all-zero channel: leave as is (its non-zero set is empty)
            ch = ch.astype(np.float64, copy=False)
            if self.mode in ("zscore", "zscore_nonzero"):
                offset[i], spread = ch.mean(), ch.std()
            else:
                offset[i], spread = ch.min(), ch.max() - ch.min()
            scale[i] = spread if spread > self.eps else 1.0  # a constant channel maps to 0, not NaN
        return offset, scale

    def apply(
        self,
        array: np.ndarray,
        channel_axis: int | None = 0,
        slice_axis: int | None = None,
        stats: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Normalised float32 copy of ``array`` (statistics per channel).

        ``slice_axis``: with ``per == "image"``, normalise each slice along this axis on its own.
        ``stats``: precomputed ``(offset, scale)`` from :meth:`statistics` (e.g. of the whole
        volume a slice came from).
        """
        x = np.asarray(array)
        if self.per == "image" and slice_axis is not None and stats is None:
            ax = slice_axis % x.ndim
            ch = None if channel_axis is None else channel_axis % x.ndim
            if ch is not None and ch > ax:
                ch -= 1
            parts = [self.apply(np.take(x, k, axis=ax), ch) for k in range(x.shape[ax])]
            return np.stack(parts, axis=ax) if parts else x.astype(np.float32)
        offset, scale = self.statistics(x, channel_axis) if stats is None else stats
        if channel_axis is None:
            shape = (1,) * x.ndim
        else:
            shape = [1] * x.ndim
            shape[channel_axis % x.ndim] = -1
        off = np.asarray(offset, dtype=np.float64).reshape(shape)
        sc = np.asarray(scale, dtype=np.float64).reshape(shape)
        out = ((x.astype(np.float64) - off) / sc).astype(np.float32)
        if self.mode == "zscore_nonzero" and self.zero_background:
            out[x == 0] = 0.0
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Normalization":
        if not d:
            return cls(mode="none")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)
