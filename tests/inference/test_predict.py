"""predict(): shapes and values for 2D, multi-channel, volumes, multi-class and RFNA reversal."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segattn.inference import (
    Cancelled,
    ChannelMismatchError,
    InputError,
    iter_predict,
    predict,
)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_2d_single_channel_values_and_labels(standin, rng):
    img = rng.random((17, 23)).astype(np.float32)
    pred = predict(standin("plain"), img, device="cpu")
    assert pred.probabilities.shape == (1, 17, 23) and pred.probabilities.dtype == np.float32
    np.testing.assert_allclose(pred.probabilities[0], sigmoid(10 * (img - 0.5)), rtol=1e-5, atol=1e-6)
    assert pred.labels.dtype == bool
    np.testing.assert_array_equal(pred.labels, img > 0.5)


def test_multichannel_channels_last(standin, rng):
    img = rng.random((12, 14, 3)).astype(np.float32)
    pred = predict(standin("plain", in_channels=3), img, channel_axis=-1, device="cpu")
    assert pred.probabilities.shape == (1, 12, 14)
    np.testing.assert_allclose(pred.foreground, sigmoid(10 * (img.mean(-1) - 0.5)), rtol=1e-5, atol=1e-6)


def test_volume_slice_axis_kept_in_place_and_batched(standin, rng):
    # nibabel-like (x, y, z) order with slices along the last axis, z=7 and batch 3 -> 3 batches
    vol = rng.random((9, 11, 7)).astype(np.float32)
    events = []
    pred = predict(standin("plain"), vol, slice_axis=2, batch_size=3, device="cpu", progress=events.append)
    assert pred.probabilities.shape == (1, 9, 11, 7)
    assert pred.labels.shape == vol.shape
    np.testing.assert_allclose(pred.probabilities[0], sigmoid(10 * (vol - 0.5)), rtol=1e-5, atol=1e-6)
    assert [(e.done, e.total) for e in events] == [(0, 7), (3, 7), (6, 7), (7, 7)]


def test_multichannel_volume(standin, rng):
    vol = rng.random((2, 5, 8, 6)).astype(np.float32)  # (C, Z, H, W)
    pred = predict(standin("plain", in_channels=2), vol, channel_axis=0, slice_axis=1, device="cpu")
    assert pred.probabilities.shape == (1, 5, 8, 6)
    np.testing.assert_allclose(pred.foreground, sigmoid(10 * (vol.mean(0) - 0.5)), rtol=1e-5, atol=1e-6)


def test_multiclass_softmax_and_argmax(standin, rng):
    img = rng.random((10, 10)).astype(np.float32)
    pred = predict(standin("plain", out_channels=3), img, device="cpu")
    assert pred.probabilities.shape == (3, 10, 10)
    np.testing.assert_allclose(pred.probabilities.sum(0), 1.0, atol=1e-5)
    expected = np.abs(img[None] * 2 - np.arange(3)[:, None, None]).argmin(0)
    np.testing.assert_array_equal(pred.labels, expected)
    assert pred.labels.dtype == np.uint8 and pred.threshold == 0.5


def test_class_labels_are_argmax_at_one_half_and_move_only_the_background_boundary(rng):
    """``class_labels``: at 0.5 exactly argmax (ties included: equal probabilities and the
    float32 rounding of a softmax); two classes: the binary rule p_1 > t; a higher threshold
    only turns pixels into background, never into another foreground class."""
    from napari_segattn.inference.masks import class_labels

    logits = rng.normal(size=(4, 64, 64)).astype(np.float32)
    logits[:, :4] = 0.0  # exact ties in the first rows
    p = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    np.testing.assert_array_equal(class_labels(p, 0.5), p.argmax(0))
    two = p[:2] / p[:2].sum(0, keepdims=True)
    for t in (0.3, 0.5, 0.8):
        np.testing.assert_array_equal(class_labels(two, t), (two[1] > t).astype(np.uint8))
    low, high = class_labels(p, 0.5), class_labels(p, 0.8)
    assert (high != low).sum() > 100 and ((high == low) | (high == 0)).all()
    with pytest.raises(ValueError, match="two classes"):
        class_labels(p[:1])


def test_multiclass_threshold_reaches_the_labels(standin, rng):
    from napari_segattn.inference.masks import class_labels

    img = rng.random((10, 10)).astype(np.float32)
    pred = predict(standin("plain", out_channels=3), img, device="cpu", threshold=0.7)
    np.testing.assert_array_equal(pred.labels, class_labels(pred.probabilities, 0.7))
    assert pred.threshold == 0.7


def test_rfna_reversal_gives_foreground(standin, rng):
    """RFNA predicts background: foreground probability = 1 - sigmoid, labels = sigmoid < 0.5."""
    img = rng.random((16, 16)).astype(np.float32)
    pred = predict(standin("rfna"), img, device="cpu")
    s = sigmoid(10 * (img - 0.5))
    np.testing.assert_allclose(pred.foreground, 1 - s, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.labels, s < 0.5)
    assert pred.reverse_labels


def test_fanet_uses_given_mask(standin):
    img = np.full((8, 8), 0.5, np.float32)
    mask = np.zeros((8, 8), bool)
    mask[4, 4] = True
    pred = predict(standin("fanet"), img, mask=mask, device="cpu")
    expected = np.zeros((8, 8), bool)
    expected[3:6, 3:6] = True  # dilate3x3(mask) & (x > 0.2)
    np.testing.assert_array_equal(pred.labels, expected)
    assert predict(standin("fanet"), img, mask="empty", device="cpu").labels.sum() == 0


def test_model_train_flag_restored(standin, rng):
    m = standin("plain")
    m.train()
    predict(m, rng.random((8, 8)), device="cpu")
    assert m.training


def test_clear_errors(standin, rng):
    m = standin("plain", in_channels=3)
    with pytest.raises(ChannelMismatchError, match="3 input channel"):
        predict(m, rng.random((8, 8, 2)), channel_axis=-1, device="cpu")
    with pytest.raises(InputError, match="pass channel_axis"):
        predict(m, rng.random((8, 8)), device="cpu")
    one = standin("plain")
    with pytest.raises(InputError, match="ambiguous"):
        predict(one, rng.random((4, 8, 8)), device="cpu")
    bad = rng.random((8, 8)).astype(np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict(one, bad, device="cpu")
    with pytest.raises(InputError, match="takes no feedback mask"):
        predict(one, rng.random((8, 8)), mask=np.ones((8, 8)), device="cpu")


def test_cancel_and_generator_form(standin, rng):
    vol = rng.random((6, 8, 8)).astype(np.float32)
    with pytest.raises(Cancelled):
        predict(standin("plain"), vol, slice_axis=0, batch_size=2, device="cpu", cancel=lambda: True)
    gen = iter_predict(standin("plain"), vol, slice_axis=0, batch_size=4, device="cpu")
    seen = []
    with pytest.raises(StopIteration) as stop:
        while True:
            seen.append(next(gen).done)
    assert seen == [0, 4, 6]
    assert stop.value.value.probabilities.shape == (1, 6, 8, 8)


@pytest.mark.parametrize("per", ["image", "volume"])
def test_normalisation_from_the_model(standin, rng, per):
    """z-score per slice (per="image") or over the whole volume (per="volume"), by hand."""
    vol = rng.random((3, 6, 5)).astype(np.float32) + np.array([0.0, 5.0, 10.0])[:, None, None]
    m = standin("plain")
    m.segattn_normalization = {"mode": "zscore", "per": per}
    pred = predict(m, vol, slice_axis=0, device="cpu")
    if per == "image":
        z = (vol - vol.mean(axis=(1, 2), keepdims=True)) / vol.std(axis=(1, 2), keepdims=True)
    else:
        z = (vol - vol.mean()) / vol.std()
    np.testing.assert_allclose(pred.foreground, sigmoid(10 * (z - 0.5)), rtol=1e-4, atol=1e-5)


def test_fanet_default_mask_is_otsu_of_the_raw_uint8_image(standin):
    from napari_segattn.data import otsu_mask

    img = np.zeros((24, 24), np.uint8)
    img[6:18, 6:18] = 200
    img[::3, ::5] += 20
    m = standin("fanet")
    m.segattn_normalization = {"mode": "minmax"}
    pred = predict(m, img, device="cpu")
    assert pred.info["feedback_mask"] == "otsu"
    # the stand-in keeps dilate(mask) & (x > 0.2) with x in [0, 1] after min-max
    x = img / img.max()
    grown = np.zeros_like(x, bool)
    om = otsu_mask(img)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(np.pad(om, 1), dy, 0), dx, 1)[1:-1, 1:-1]
    np.testing.assert_array_equal(pred.labels, grown & (x > 0.2))


def test_gpu_out_of_memory_becomes_advice(standin, rng, monkeypatch):
    import torch

    from napari_segattn.inference import GPUMemoryError

    m = standin("plain")

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(m, "_forward", boom)
    with pytest.raises(GPUMemoryError, match=r"batch_size=8 \(CLI: --batch-size 8\)"):
        predict(m, rng.random((4, 8, 8)), slice_axis=0, batch_size=16, device="cpu")


@pytest.mark.gpu
def test_cuda_pipelined_batches_equal_cpu(rng):
    """The CUDA path (pinned uploads, one batch in flight, fp16 autocast) against CPU fp32."""
    from napari_segattn.models import build_model

    model = build_model("unet", in_channels=1, out_channels=1, width=4)
    vol = rng.random((7, 32, 32)).astype(np.float32)
    cpu = predict(model, vol, slice_axis=0, batch_size=3, device="cpu")
    gpu = predict(model, vol, slice_axis=0, batch_size=3, device="cuda")
    np.testing.assert_allclose(gpu.probabilities, cpu.probabilities, atol=2e-3)


def test_amp_policy_cpu_is_exact_unless_bf16_is_asked_for(rng):
    """Default CPU inference is plain float32 (identical to amp=False); amp='bf16' autocasts and
    stays close; a wrong value is refused before any work."""
    import warnings

    from napari_segattn.models import build_model

    model = build_model("unet", in_channels=1, out_channels=1, width=4)
    img = rng.random((48, 48)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no autocast warnings on the plain path
        exact = predict(model, img, device="cpu", amp=False)
        default = predict(model, img, device="cpu")
    np.testing.assert_array_equal(default.probabilities, exact.probabilities)
    assert default.info["precision"] == "float32" and default.info["amp"] is False
    half = predict(model, img, device="cpu", amp="bf16")
    assert half.info["precision"] == "bfloat16" and half.probabilities.dtype == np.float32
    diff = np.abs(half.probabilities - exact.probabilities).max()
    assert 0 < diff < 0.05, diff  # really computed in bf16, and close
    with pytest.raises(ValueError, match="amp="):
        predict(model, img, device="cpu", amp="fp8")


def test_a_constant_image_is_predicted_with_a_warning_that_it_means_nothing(standin):
    """Found by a new user: a blank image came back 99.98 % foreground from the demo FANet
    (z-scoring makes it all zeros) with no word; a real image does not warn."""
    import warnings

    from napari_segattn.data.errors import SegattnWarning
    from napari_segattn.inference import predict

    with pytest.warns(SegattnWarning, match=r"the image is constant \(every pixel 24\.0\)"):
        predict(standin("plain"), np.full((16, 16), 24.0, np.float32), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", SegattnWarning)
        predict(standin("plain"), np.arange(256, dtype=np.float32).reshape(16, 16), device="cpu")
