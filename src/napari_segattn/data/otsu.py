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
                r, gg, b = (x[i].astype(np.int64) for i in range(3))
                return ((9798 * r + 19235 * gg + 3735 * b + (1 << 14)) >> 15).astype(np.uint8)
            g = np.tensordot(np.asarray(LUMA_RGB), x.astype(np.float64), axes=1)
        elif mode == "mean":
            g = x.astype(np.float64).mean(axis=0)
        else:
            raise DataError(f"unknown gray conversion {gray!r}; use 'auto', 'luma' or 'mean'")
        if image.dtype == np.uint8:
            return np.clip(np.floor(g + 0.5), 0, 255).astype(np.uint8)
        x = g
    elif x.ndim != 2:
        raise DataError(f"otsu_mask expects HxW or CxHxW, got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise DataError("otsu_mask: image contains NaN/Inf")
    lo, hi = x.min(), x.max()
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.rint((x - lo) / (hi - lo) * 255).astype(np.uint8)


def blur5(gray_u8: np.ndarray, kind: str = "opencv") -> np.ndarray:
    """Separable 5x5 blur with OpenCV's default reflect-101 border, rounded back to uint8."""
    from scipy.ndimage import correlate1d

    k = gaussian_kernel_1d(5, kind)
    x = gray_u8.astype(np.float64)
    x = correlate1d(x, k, axis=0, mode="mirror")  # scipy "mirror" == OpenCV BORDER_REFLECT_101
    x = correlate1d(x, k, axis=1, mode="mirror")
    # OpenCV's fixed-point 8-bit path rounds half up; the binomial weights make .5 ties common.
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def otsu_mask(image: np.ndarray, channel_axis: int | None = 0, *, gray: str = "auto", kernel: str = "opencv") -> np.ndarray:
    """Bool HxW foreground mask: gray → 5x5 blur → Otsu, foreground = blurred > threshold."""
    from skimage.filters import threshold_otsu

    g = to_gray_uint8(image, channel_axis if np.ndim(image) == 3 else None, gray)
    b = blur5(g, kernel)
    if b.min() == b.max():
        return np.zeros(b.shape, dtype=bool)  # one level: Otsu is undefined, nothing stands out
    return b > threshold_otsu(b)
