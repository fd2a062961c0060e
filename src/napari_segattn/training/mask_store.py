"""FANet's per-sample feedback masks, run-length encoded (FANet §III-B; released utils.py).

Our codec (not the released one, which scans the transpose and only works for square
images, reference-implementations §2.6): the mask is flattened **row-major** (C order);
the code is a 1-D int64 array ``[start₀, length₀, start₁, length₁, …]`` of the runs of
``True`` with 0-based starts, plus the shape. An empty mask is ``[]``. Any H×W works.

Released update policy (§2.5): masks predicted during an epoch are *staged* and replace
the stored ones only if validation loss improved (``commit``); otherwise ``discard``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rle_encode", "rle_decode", "MaskStore"]


def rle_encode(mask: np.ndarray) -> np.ndarray:
    """Runs of True in the row-major flattening of a 2-D bool mask: [start, length, ...]."""
    flat = np.asarray(mask, dtype=bool).ravel(order="C")
    # Pad with False so every run has a rising and a falling edge.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], flat, [False])).astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    out = np.empty(2 * len(starts), dtype=np.int64)
    out[0::2] = starts
    out[1::2] = ends - starts
    return out


def rle_decode(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: a bool array of ``shape``."""
    runs = np.asarray(runs, dtype=np.int64)
    flat = np.zeros(int(np.prod(shape)), dtype=bool)
    for s, n in zip(runs[0::2], runs[1::2]):
        flat[s : s + n] = True
    return flat.reshape(shape)


class MaskStore:
    """Feedback masks keyed by the dataset's sample ``index``, stored as RLE codes."""

    def __init__(self) -> None:
        self._codes: dict[int, tuple[tuple[int, int], np.ndarray]] = {}
        self._staged: dict[int, tuple[tuple[int, int], np.ndarray]] = {}

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_otsu(cls, dataset: Any) -> "MaskStore":
        """Epoch-0 masks: blur + Otsu of each raw image (FANet §III-B, released ``init_mask``)."""
        store = cls()
        if hasattr(dataset, "initial_masks"):
            for i, m in enumerate(dataset.initial_masks("otsu")):
                store.put(i, m)
            return store
        from ..data import otsu_mask

        for i in range(len(dataset)):
            item = dataset[i]
            image = np.asarray(item["image"])
            store.put(int(item.get("index", i)), otsu_mask(image[0] if image.shape[0] == 1 else image, channel_axis=0))
        return store

    @classmethod
    def initial(cls, dataset: Any) -> "MaskStore":
        """A data set's own feedback masks if it has them (``dataset.feedback(i)``), else Otsu."""
        fb = getattr(dataset, "feedback", None)
        if callable(fb):
            store = cls()
            for i in range(len(dataset)):
                store.put(i, np.asarray(fb(i)))
            return store
        return cls.from_otsu(dataset)

    # -- access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._codes)

    def __contains__(self, index: int) -> bool:
        return int(index) in self._codes

    def indices(self) -> list[int]:
        return sorted(self._codes)

    def get(self, index: int) -> np.ndarray:
        try:
            shape, runs = self._codes[int(index)]
        except KeyError:
            raise KeyError(f"no feedback mask stored for sample {index}") from None
        return rle_decode(runs, shape)

    def put(self, index: int, mask: np.ndarray) -> None:
        self._codes[int(index)] = _encode(mask)

    # -- staged updates (released: replace only when validation loss improved) ------------
    def stage(self, index: int, mask: np.ndarray) -> None:
        self._staged[int(index)] = _encode(mask)

    @property
    def staged(self) -> int:
        return len(self._staged)

    def commit(self) -> int:
        """Make the staged masks current; returns how many were replaced."""
        n = len(self._staged)
        self._codes.update(self._staged)
        self._staged.clear()
        return n

    def discard(self) -> None:
        self._staged.clear()

    def staged_codes(self) -> dict[int, tuple[tuple[int, int], np.ndarray]]:
        return dict(self._staged)

    def stage_codes(self, codes: dict[int, tuple[tuple[int, int], np.ndarray]]) -> None:
        """Stage already-encoded masks (gathered from other DDP ranks)."""
        for i, (shape, runs) in codes.items():
            hw = (int(shape[0]), int(shape[1]))
            self._staged[int(i)] = (hw, _compact(np.asarray(runs), hw))

    # -- memory -------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes held by the current codes (what RLE saves vs :attr:`dense_nbytes`)."""
        return sum(runs.nbytes for _, runs in self._codes.values())

    @property
    def dense_nbytes(self) -> int:
        return sum(h * w for (h, w), _ in self._codes.values())

    # -- serialisation (numpy arrays only; written to safetensors by the engine) ---------
    def state_dict(self) -> dict[str, np.ndarray]:
        idx = sorted(self._codes)
        runs = [self._codes[i][1] for i in idx]
        lengths = np.array([len(r) for r in runs], dtype=np.int64)
        return {
            "index": np.array(idx, dtype=np.int64),
            "shape": np.array([self._codes[i][0] for i in idx], dtype=np.int64).reshape(-1, 2),
            "offsets": np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
            "runs": np.concatenate(runs).astype(np.int64) if runs else np.zeros(0, dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        arrays = {k: np.asarray(v, dtype=np.int64) for k, v in state.items()}
        off = arrays["offsets"]
        self._codes = {
            int(i): ((int(h), int(w)), arrays["runs"][off[k] : off[k + 1]].copy())
            for k, (i, (h, w)) in enumerate(zip(arrays["index"], arrays["shape"].reshape(-1, 2)))
        }
        self._staged.clear()

    def staged_state_dict(self) -> dict[str, np.ndarray]:
        """The staged (not yet committed) masks, as :meth:`state_dict` arrays: a checkpoint written
        within an epoch keeps the masks predicted so far in that epoch."""
        tmp = MaskStore()
        tmp._codes = dict(self._staged)
        return tmp.state_dict()

    def load_staged_state_dict(self, state: dict[str, Any]) -> None:
        tmp = MaskStore()
        tmp.load_state_dict(state)
        self.stage_codes(tmp._codes)


def _encode(mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a feedback mask is H×W, got shape {mask.shape}")
    shape = (int(mask.shape[0]), int(mask.shape[1]))
    return shape, _compact(rle_encode(mask > 0), shape)


def _compact(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Store runs in the smallest unsigned type that holds H*W (uint16 up to 256x256):
    with int64 a fragmented mask costs 16 bytes a run and can exceed the dense mask."""
    n = shape[0] * shape[1]
    dtype = np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32 if n <= np.iinfo(np.uint32).max else np.int64
    return np.asarray(runs).astype(dtype)
