"""Training-time augmentation: flips/rotation applied identically to image, label and extras, and
total-variation (split-Bregman) smoothing of the image only (Attention Shift paper, eq. 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import DataError


@dataclass
class Augmenter:
    """Random augmentation of one 2D sample.

    Geometry (same draw for image, label and every extra, e.g. FANet's stored feedback mask):
      * ``flip``: flip each axis in ``flip_axes`` (0 = vertical/H, 1 = horizontal/W) independently
        with probability ``p_flip``. With the defaults this is FPA's ``all_flip`` (each of the four
        flip combinations with probability 1/4); FANet used p = 0.3 per axis.
      * ``rotate``: ``False`` or a limit in degrees; the angle is uniform in [−limit, limit],
        applied with probability ``p_rotate`` (FANet: albumentations ``Rotate(limit=35, p=0.3)``).
        Border handling is reflect-101, albumentations' default. Images are interpolated
        bilinearly, labels and extras with nearest neighbour so they stay integer/binary.

    Texture (image only), the Attention Shift paper's TV smoothing:
      * ``tv_alpha``: ``None`` (off), a float α, or a ``(low, high)`` range sampled uniformly.
        α is scikit-image ``denoise_tv_bregman``'s ``weight``, which equals the paper's α in
        ``min_u ||u||_TV + α ∫(f − u)²`` — the weight of the *data-fidelity* term, so **a smaller
        α smooths more** (paper: α = 8 helped GM/WM, α = 1 over-smoothed). The objective is not
        scale-invariant (TV scales with intensity, fidelity with its square), so each channel is
        rescaled to [0, 1] by its min/max, smoothed, and mapped back: α means the same for uint8,
        z-scored or CT intensities. Applied with probability ``tv_prob``.
    """

    flip: bool = True
    p_flip: float = 0.5
    flip_axes: tuple = (0, 1)
    rotate: float | bool = False
    p_rotate: float = 0.3
    tv_alpha: float | tuple | None = None
    tv_prob: float = 0.5
    tv_isotropic: bool = True
    tv_max_iter: int = 100
    tv_eps: float = 1e-3
    _rot_mode: str = field(default="mirror", repr=False)

    def __post_init__(self):
        if self.tv_alpha is not None:
            lo, hi = self._alpha_range()
            if not (0 < lo <= hi):
                raise DataError(f"tv_alpha must be > 0 (got {self.tv_alpha!r}); smaller alpha smooths more")
        if self.rotate is not False and self.rotate is not None and float(self.rotate) < 0:
            raise DataError(f"rotate is a limit in degrees and must be >= 0 (got {self.rotate})")
        self.flip_axes = tuple(int(a) for a in self.flip_axes)

    def _alpha_range(self) -> tuple[float, float]:
        a = self.tv_alpha
        if isinstance(a, (tuple, list)):
            return float(a[0]), float(a[1])
        return float(a), float(a)

    def __call__(self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray, *extras: np.ndarray):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 2:
            image = image[None]
        label = np.asarray(label)
        extras = [np.asarray(e) for e in extras]
        h, w = image.shape[-2:]
        for name, a in [("label", label)] + [(f"extra {i}", e) for i, e in enumerate(extras)]:
            if a.shape != (h, w):
                raise DataError(f"augmenter: {name} has shape {a.shape}, image is {image.shape} (expected {(h, w)})")

        # Draw every random number in a fixed order, whether or not it is used, so two
        # augmenters with the same rng state make the same geometric choice.
        flips = rng.random(len(self.flip_axes)) < self.p_flip
        rot_on = rng.random() < self.p_rotate
        limit = float(self.rotate) if self.rotate not in (False, None) else 0.0
        angle = rng.uniform(-limit, limit)
        tv_on = rng.random() < self.tv_prob
        lo, hi = self._alpha_range() if self.tv_alpha is not None else (0.0, 0.0)
        alpha = rng.uniform(lo, hi) if hi > lo else lo

        if self.tv_alpha is not None and tv_on:
            image = tv_smooth(image, alpha, isotropic=self.tv_isotropic, max_num_iter=self.tv_max_iter, eps=self.tv_eps)
        if self.flip:
            for ax, on in zip(self.flip_axes, flips):
                if on:
                    image = np.flip(image, axis=ax + 1)
                    label = np.flip(label, axis=ax)
                    extras = [np.flip(e, axis=ax) for e in extras]
        if limit > 0 and rot_on and angle != 0.0:
            image = _rotate(image, angle, order=1, mode=self._rot_mode)
            label = _rotate(label, angle, order=0, mode=self._rot_mode)
            extras = [_rotate(e, angle, order=0, mode=self._rot_mode) for e in extras]
        out = (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label))
        return out + tuple(np.ascontiguousarray(e) for e in extras)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("_rot_mode", None)
        d["flip_axes"] = list(self.flip_axes)
        if isinstance(self.tv_alpha, tuple):
            d["tv_alpha"] = list(self.tv_alpha)
        return d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Augmenter":
        d = dict(d or {})
        if isinstance(d.get("tv_alpha"), list):
            d["tv_alpha"] = tuple(d["tv_alpha"])
        if "flip_axes" in d:
            d["flip_axes"] = tuple(d["flip_axes"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and not k.startswith("_")})


def _rotate(a: np.ndarray, angle: float, order: int, mode: str) -> np.ndarray:
    from scipy.ndimage import rotate

    axes = (a.ndim - 2, a.ndim - 1)
    dtype = a.dtype
    src = a.astype(np.float32) if a.dtype == bool else a
    out = rotate(src, angle, axes=axes, reshape=False, order=order, mode=mode)
    return out.astype(dtype) if dtype == bool or order == 0 else out


def tv_smooth(image: np.ndarray, alpha: float, *, isotropic: bool = True, max_num_iter: int = 100, eps: float = 1e-3) -> np.ndarray:
    """Split-Bregman TV smoothing of each channel of a CxHxW image, α on the [0, 1]-rescaled channel.

    Smaller ``alpha`` = stronger smoothing (α weights data fidelity; see :class:`Augmenter`).
    """
    from skimage.restoration import denoise_tv_bregman

    image = np.asarray(image, dtype=np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[None]
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        ch = image[c].astype(np.float64)
        lo, hi = float(ch.min()), float(ch.max())
        if hi - lo <= 0:
            out[c] = image[c]
            continue
        u = denoise_tv_bregman((ch - lo) / (hi - lo), weight=float(alpha), max_num_iter=max_num_iter, eps=eps, isotropic=isotropic)
        out[c] = (u * (hi - lo) + lo).astype(np.float32)
    return out[0] if squeeze else out
