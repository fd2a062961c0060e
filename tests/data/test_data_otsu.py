"""FANet's Otsu initial mask: OpenCV's 5x5 kernel, uint8 rounding, Otsu criterion."""

import numpy as np
import pytest

from napari_segattn.data import otsu_mask
from napari_segattn.data.otsu import blur5, gaussian_kernel_1d, opencv_sigma, to_gray_uint8


def brute_otsu_threshold(u8):
    """Integer t maximising the between-class variance, foreground = value > t (cv2 THRESH_OTSU)."""
    hist = np.bincount(u8.ravel(), minlength=256).astype(float)
    p = hist / hist.sum()
    levels = np.arange(256)
    best, best_t = -1.0, 0
    for t in range(255):
        w0, w1 = p[: t + 1].sum(), p[t + 1:].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (p[: t + 1] * levels[: t + 1]).sum() / w0
        m1 = (p[t + 1:] * levels[t + 1:]).sum() / w1
        v = w0 * w1 * (m0 - m1) ** 2
        if v > best:
            best, best_t = v, t
    return best_t


def test_kernel_is_opencv_small_gaussian_table():
    assert np.allclose(gaussian_kernel_1d(5), [1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16])
    assert opencv_sigma(5) == pytest.approx(1.1)
    g = gaussian_kernel_1d(5, "gaussian")
    assert g.sum() == pytest.approx(1) and g[2] == pytest.approx(1 / (1 + 2 * np.exp(-1 / 2.42) + 2 * np.exp(-4 / 2.42)))


def test_blur_matches_direct_reflect101_convolution():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    k = np.array([1, 4, 6, 4, 1], float) / 16
    pad = np.pad(img.astype(float), 2, mode="reflect")  # numpy "reflect" == OpenCV REFLECT_101
    direct = np.zeros(img.shape)
    for dy in range(5):
        for dx in range(5):
            direct += k[dy] * k[dx] * pad[dy: dy + 9, dx: dx + 11]
    assert np.array_equal(blur5(img), np.floor(direct + 0.5).astype(np.uint8))


def test_mask_equals_blur_then_brute_force_otsu():
    rng = np.random.default_rng(1)
    img = np.clip(rng.normal(60, 20, (64, 64)), 0, 255)
    img[20:44, 10:50] += 100
    img = np.clip(img, 0, 255).astype(np.uint8)
    b = blur5(img)
    m = otsu_mask(img)
    assert m.dtype == bool and np.array_equal(m, b > brute_otsu_threshold(b))
    assert m[25:40, 15:45].mean() > 0.99 and m[:15].mean() < 0.01


def test_multichannel_gray_conversion():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (3, 10, 12), dtype=np.uint8)
    g = to_gray_uint8(rgb)
    ref = np.floor(0.299 * rgb[0].astype(float) + 0.587 * rgb[1] + 0.114 * rgb[2] + 0.5)
    assert np.abs(g.astype(int) - ref).max() <= 1  # cvtColor's 15-bit fixed point
    four = rng.normal(0, 1, (4, 10, 12))
    assert np.array_equal(to_gray_uint8(four), to_gray_uint8(four.mean(axis=0)))
    assert otsu_mask(np.zeros((5, 5))).sum() == 0  # flat image: nothing stands out


def test_against_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    for _ in range(5):
        rgb = cv2.GaussianBlur(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), (9, 9), 3)
        g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        _, th = cv2.threshold(cv2.GaussianBlur(g, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert np.array_equal(otsu_mask(np.moveaxis(rgb, -1, 0)), th > 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_row_blocked_otsu_equals_the_one_piece_computation(dtype):
    """otsu_mask works in row blocks and integer blur (bounded memory at 8k); on an image taller
    than one block it gives exactly the one-piece float64 computation with skimage's Otsu."""
    from scipy.ndimage import correlate1d
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (80, 6, 3)).astype(np.float64)
    img = np.kron(small, np.ones((16, 7, 1))).astype(dtype)  # 1280 x 42 x 3: three row blocks
    if dtype == np.uint8:
        r, g, b = (img[..., i].astype(np.int64) for i in range(3))
        gray = ((9798 * r + 19235 * g + 3735 * b + (1 << 14)) >> 15).astype(np.uint8)
    else:
        lum = np.tensordot(img.astype(np.float64), [0.299, 0.587, 0.114], axes=([2], [0]))
        gray = np.rint((lum - lum.min()) / (lum.max() - lum.min()) * 255).astype(np.uint8)
    np.testing.assert_array_equal(to_gray_uint8(img, channel_axis=-1), gray)
    k = np.array([1, 4, 6, 4, 1]) / 16
    x = correlate1d(correlate1d(gray.astype(np.float64), k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
    blurred = np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(blur5(gray), blurred)
    np.testing.assert_array_equal(otsu_mask(img, channel_axis=-1), blurred > threshold_otsu(blurred))
    assert threshold_otsu(blurred) == brute_otsu_threshold(blurred)


def test_nan_anywhere_is_refused():
    img = np.zeros((700, 5), np.float32)
    img[650, 3] = np.nan
    with pytest.raises(Exception, match="NaN"):
        otsu_mask(img)
