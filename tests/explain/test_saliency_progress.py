"""Issue 14 items 3 and 13 in the core: IG reports progress per pass and stops within one pass
on cancel; a downscaled preview; the number of steps chosen from the completeness gap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segattn.explain.saliency import SaliencyProgress, coverage, iter_saliency, saliency, window_grid
from napari_segattn.inference import Cancelled


def _img(size=16, seed=0, hi=3.0):
    return (np.random.default_rng(seed).random((size, size)) * hi).astype(np.float32)


def test_progress_is_reported_once_per_step_pass(standin):
    events = []
    s = saliency(standin("pixel"), _img(), 1, n_steps=7, internal_batch_size=1, progress=events.append)
    assert [e.done for e in events] == list(range(1, 8)) and {e.total for e in events} == {7}
    assert all(isinstance(e, SaliencyProgress) for e in events) and s.n_steps == 7
    # 3 steps per pass: ceil(7 / 3) passes, the last one completes the total
    events.clear()
    saliency(standin("pixel"), _img(), 1, n_steps=7, internal_batch_size=3, progress=events.append)
    assert [e.done for e in events] == [3, 6, 7]


def test_progress_counts_windows_and_classes(standin):
    """per_window runs one IG per window and class: the total is known before the first pass."""
    events = []
    model = standin("unet", out_channels=3)
    s = saliency(model, np.random.default_rng(1).normal(size=(32, 32)).astype(np.float32), [0, 2],
                 method="per_window", window=16, stride=8, n_steps=4, internal_batch_size=4, progress=events.append)
    assert s.n_windows == 9
    assert len(events) == 2 * 9 and events[-1].done == events[-1].total == 2 * 9 * 4


def test_cancel_stops_within_one_pass(standin):
    events = []
    with pytest.raises(Cancelled):
        saliency(standin("pixel"), _img(), 1, n_steps=50, internal_batch_size=1, progress=events.append,
                 cancel=lambda: len(events) >= 3)
    assert len(events) == 3  # the 4th pass never started
    # the generator form stops the same way
    gen = iter_saliency(standin("pixel"), _img(), 1, n_steps=50, internal_batch_size=1, cancel=lambda: True)
    with pytest.raises(Cancelled):
        next(gen)


def test_written_out_ig_matches_captum(standin):
    """Same Gauss-Legendre quadrature and delta as captum's IntegratedGradients."""
    from captum.attr import IntegratedGradients

    from napari_segattn.inference.predict import prepare_stack
    from napari_segattn.inference.traits import model_traits

    model = standin("unet", out_channels=3).eval()
    img = np.random.default_rng(2).normal(size=(32, 32)).astype(np.float32)
    s = saliency(model, img, 2, window=32, stride=32, n_steps=16, internal_batch_size=5)
    _, _, stack = prepare_stack(model_traits(model), img, model=model)
    x = torch.from_numpy(stack)
    ig = IntegratedGradients(lambda z: torch.softmax(model(z), 1)[:, 2].sum(dim=(1, 2)))
    attr, delta = ig.attribute(x, baselines=torch.zeros_like(x), n_steps=16, return_convergence_delta=True)
    np.testing.assert_allclose(s.map, attr[0].sum(0).detach().numpy(), atol=1e-6)
    assert s.deltas[0] == pytest.approx(float(delta.sum()), abs=1e-5)


def test_steps_chosen_from_the_completeness_gap(standin):
    """The gap falls as steps double; the chosen count is the first under the tolerance."""
    model, img = standin("pixel"), _img()
    gaps = [saliency(model, img, 1, n_steps=n).relative_gap for n in (2, 4, 8)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[0] > 0.05 > gaps[2]
    s = saliency(model, img, 1, n_steps=2, gap_tolerance=0.05)
    assert [n for n, _ in s.steps_tried] == [2, 4, 8] and s.n_steps == 8
    assert s.relative_gap <= 0.05 and s.warning is None
    np.testing.assert_allclose([g for _, g in s.steps_tried], gaps, rtol=1e-5)
    # the cap reached above the tolerance: a warning that says the gap achieved
    capped = saliency(model, img, 1, n_steps=2, gap_tolerance=0.05, max_steps=4)
    assert capped.n_steps == 4 and capped.relative_gap > 0.05
    assert f"{capped.relative_gap:.0%}" in capped.warning and "4 steps" in capped.warning
    with pytest.raises(Exception, match="gap_tolerance"):
        saliency(model, img, 1, gap_tolerance=0)


def test_adaptive_progress_restarts_per_try(standin):
    events = []
    saliency(standin("pixel"), _img(), 1, n_steps=2, gap_tolerance=0.05, internal_batch_size=64,
             progress=events.append)
    assert [e.total for e in events] == [2, 4, 8]


def test_preview_is_downscaled_labelled_and_keeps_the_total(standin):
    """The pixel model's IG has a closed form, so the preview is that of the 1/4-size image,
    repeated over the 4x4 pixels each preview pixel stands for: on the full map's scale."""
    import torch.nn.functional as F

    img = _img(64)
    s = saliency(standin("pixel"), img, 1, n_steps=32, downscale=4, window=1, stride=1)
    assert s.map.shape == (64, 64) and s.downscale == 4 and s.preview
    assert s.describe() == "preview, 32 steps, 1/4 size"
    small = F.interpolate(torch.from_numpy(img)[None, None], size=(16, 16), mode="area")[0, 0].numpy()
    expected = (1 / (1 + np.exp(-10 * (small - 0.5))) - 1 / (1 + np.exp(5.0)))
    np.testing.assert_allclose(s.map[::4, ::4], expected, atol=2e-3)
    assert np.allclose(s.map[:4, :4], s.map[0, 0])  # one value per 4x4 block
    # on a smooth image (area averaging ~ point values) preview and full map agree in total
    ramp = np.repeat(np.linspace(0.0, 1.0, 64, dtype=np.float32)[:, None], 64, axis=1)
    full = saliency(standin("pixel"), ramp, 1, n_steps=32, window=1, stride=1)
    prev = saliency(standin("pixel"), ramp, 1, n_steps=32, window=1, stride=1, downscale=4)
    assert full.describe() == "32 steps" and not full.preview
    assert prev.map.sum() == pytest.approx(full.map.sum(), rel=0.02)


def test_preview_keeps_a_size_the_model_takes(standin):
    """A model that needs 16 pixels a side is previewed at the largest factor it still takes."""
    model = standin("pixel")
    model.size_problem = lambda h, w: "too small" if min(h, w) < 16 else None
    s = saliency(model, _img(40), 1, n_steps=4, downscale=4)
    assert s.downscale == 2 and s.map.shape == (40, 40)
    assert coverage((20, 20), window_grid((20, 20), *s.window[:1], s.stride)).min() >= 1


def test_the_gap_warning_does_not_suggest_the_baseline_already_in_use():
    """Found by a new user: with --baseline blur the warning still said "'blur' avoids that"."""
    from napari_segattn.explain.saliency import _gap_warning

    assert "'blur' avoids that" in _gap_warning(0.4, 16, None, "zeros")
    blur = _gap_warning(0.4, 16, None, "blur")
    assert "'blur' avoids that" not in blur and "already used 'blur'" in blur
    assert _gap_warning(0.001, 16, None, "blur") is None


def test_a_cancellable_run_on_a_small_image_is_cut_into_passes(standin):
    """Found by a new user: on a 128x128 image all 64 steps fit one pass, so the viewer showed no
    progress and Cancel did nothing. With a cancel callback there are at least PASSES_TO_CANCEL
    passes; without one (the CLI) the memory-sized batch stays; the map is the same."""
    from napari_segattn.explain.saliency import PASSES_TO_CANCEL

    events = []
    with_cancel = saliency(standin("pixel"), _img(), 1, n_steps=64, progress=events.append, cancel=lambda: False)
    assert len(events) >= PASSES_TO_CANCEL and events[-1].done == 64
    events.clear()
    plain = saliency(standin("pixel"), _img(), 1, n_steps=64, progress=events.append)
    assert len(events) < PASSES_TO_CANCEL
    np.testing.assert_allclose(with_cancel.map, plain.map, rtol=1e-5, atol=1e-7)
