"""FANet's iteration-0 feedback mask: grayscale, 5x5 Gaussian blur, Otsu (released ``utils.init_mask``).

The released code does ``cv2.imread(path, IMREAD_GRAYSCALE)`` → ``cv2.GaussianBlur(img, (5, 5), 0)``
→ ``cv2.threshold(blur, 0, 255, THRESH_BINARY + THRESH_OTSU)``. Two OpenCV details matter:

* with ``sigma = 0`` and an odd kernel size <= 7 OpenCV does *not* sample a Gaussian with the
  σ = 0.3·((k−1)/2 − 1) + 0.8 = 1.1 formula; it uses its fixed binomial table
  ``[1, 4, 6, 4, 1] / 16`` (``small_gaussian_tab`` in ``getGaussianKernel``). That is our default
  (``kernel="opencv"``); ``kernel="gaussian"`` samples the σ = 1.1 Gaussian instead.
* the blur runs on uint8 with reflect-101 borders and rounds back to uint8, and Otsu picks an
  integer level t with foreground = blur > t. scikit-image's ``threshold_otsu`` on a uint8 image
  maximises the same between-class variance over the same integer levels.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

# ITU-R BT.601 luma, what cv2.IMREAD_GRAYSCALE / COLOR_BGR2GRAY compute (here for RGB order).
LUMA_RGB = (0.299, 0.587, 0.114)
OPENCV_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def opencv_sigma(ksize: int) -> float:
    """σ OpenCV derives from the kernel size when σ <= 0 (used for kernels larger than 7)."""
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def gaussian_kernel_1d(ksize: int = 5, kind: str = "opencv") -> np.ndarray:
    if kind == "opencv" and ksize == 5:
        return OPENCV_BINOMIAL_5.copy()
    if kind not in ("opencv", "gaussian"):
        raise DataError(f"unknown blur kernel {kind!r}; use 'opencv' or 'gaussian'")
    sigma = opencv_sigma(ksize)
    x = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def to_gray_uint8(image: np.ndarray, channel_axis: int | None = 0, gray: str = "auto") -> np.ndarray:
    """HxW uint8 like ``cv2.imread(..., IMREAD_GRAYSCALE)`` would give for this image.

    Multi-channel: ``gray="luma"`` uses BT.601 weights on (R, G, B) (released behaviour for
    3-channel images); ``"mean"`` averages the channels (any channel count, e.g. MRI
    modalities); ``"auto"`` = luma for 3 channels, mean otherwise. Non-uint8 data is min–max
    rescaled to 0..255 and rounded, so Otsu sees 256 levels as in the released code.
    """
    x = np.asarray(image)
    if x.ndim == 3:
        if channel_axis is None:
            raise DataError(f"otsu_mask: got shape {x.shape}; give channel_axis for a multi-channel image")
        x = np.moveaxis(x, channel_axis, 0)
        mode = gray if gray != "auto" else ("luma" if x.shape[0] == 3 else "mean")
        if mode == "luma":
            if x.shape[0] != 3:
                raise DataError(f"otsu_mask: luma weights need 3 channels, got {x.shape[0]}")
            if x.dtype == np.uint8:
                # cv2.cvtColor's 8-bit fixed point: (9798 R + 19235 G + 3735 B + 2^14) >> 15
                # (verified bit-exact against OpenCV 4.14). imread(IMREAD_GRAYSCALE) lets the
                # PNG/JPEG decoder convert instead, which can differ by one grey level.
                # int32 holds 255 * 32768; row blocks keep the transient to a few MB (an 8k
                # slice in one piece took 2.5 GB in int64).
                return _by_rows(x, lambda c: ((9798 * c[0].astype(np.int32) + 19235 * c[1].astype(np.int32)
                                               + 3735 * c[2].astype(np.int32) + (1 << 14)) >> 15).astype(np.uint8),
                                np.uint8)
            weights = np.asarray(LUMA_RGB)
            g = _by_rows(x, lambda c: np.tensordot(weights, c.astype(np.float64), axes=1), np.float64)
        elif mode == "mean":
            g = _by_rows(x, lambda c: c.astype(np.float64).mean(axis=0), np.float64)
        else:
            raise DataError(f"unknown gray conversion {gray!r}; use 'auto', 'luma' or 'mean'")
        if image.dtype == np.uint8:
            return np.clip(np.floor(g + 0.5), 0, 255).astype(np.uint8)
        x = g
    elif x.ndim != 2:
        raise DataError(f"otsu_mask expects HxW or CxHxW, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind == "f" and not np.isfinite(x.min() + x.max()):  # NaN or Inf anywhere shows here
        raise DataError("otsu_mask: image contains NaN/Inf")
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return _by_rows(x[None], lambda c: np.rint((c[0].astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8),
                    np.uint8)


def _by_rows(x: np.ndarray, f, dtype, rows: int = 512) -> np.ndarray:
    """``f`` applied to blocks of rows of a ``C x H x W`` array, written into one ``H x W``
    result: the same values as ``f(x)`` with a temporary of ``rows`` rows, not of the image."""
    out = np.empty(x.shape[1:], dtype)
    for r in range(0, x.shape[1], rows):
        out[r:r + rows] = f(x[:, r:r + rows])
    return out


def blur5(gray_u8: np.ndarray, kind: str = "opencv") -> np.ndarray:
    """Separable 5x5 blur with OpenCV's default reflect-101 border, rounded back to uint8."""
    from scipy.ndimage import correlate1d

    if kind == "opencv":
        # The binomial [1, 4, 6, 4, 1] in integers: both passes stay exact in uint16 (at most
        # 255 * 16 * 16 = 65280), 2 bytes a pixel instead of float64's 8 (an 8k slice: 0.4 GB
        # of temporaries, not 1.5 GB); /256 rounded half up as OpenCV's fixed-point path does.
        k = (OPENCV_BINOMIAL_5 * 16).astype(np.uint16)
        x = correlate1d(gray_u8.astype(np.uint16), k, axis=0, mode="mirror")  # "mirror" == BORDER_REFLECT_101
        x = correlate1d(x, k, axis=1, mode="mirror", output=x)
        x += 128
        x >>= 8
        return x.astype(np.uint8)
    k = gaussian_kernel_1d(5, kind)
    x = gray_u8.astype(np.float64)
    x = correlate1d(x, k, axis=0, mode="mirror")
    x = correlate1d(x, k, axis=1, mode="mirror")
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def otsu_mask(image: np.ndarray, channel_axis: int | None = 0, *, gray: str = "auto", kernel: str = "opencv") -> np.ndarray:
    """Bool HxW foreground mask: gray → 5x5 blur → Otsu, foreground = blurred > threshold."""
    from skimage.filters import threshold_otsu

    g = to_gray_uint8(image, channel_axis if np.ndim(image) == 3 else None, gray)
    b = blur5(g, kernel)
    lo, hi = int(b.min()), int(b.max())
    if lo == hi:
        return np.zeros(b.shape, dtype=bool)  # one level: Otsu is undefined, nothing stands out
    # The histogram skimage would build for a uint8 image (one bin per level, min..max), counted
    # by row blocks: threshold_otsu(b) would first copy the image to intp (8 B a pixel).
    counts = sum(np.bincount(r.ravel(), minlength=256) for r in np.array_split(b, max(1, b.shape[0] // 512)))
    return b > threshold_otsu(hist=(counts[lo:hi + 1], np.arange(lo, hi + 1)))
