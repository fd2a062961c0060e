"""FANetRefiner: history indexing, early stop, set_mask (human in the loop), reset, volumes.

The stand-in's output is ``dilate3x3(mask) & (x > 0.2)``, so with a one-pixel seed at the end
of a bright line of 6 pixels iteration k covers the first min(k + 2, 6) line pixels, by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_segattn.inference import FANetRefiner, InputError

H = W = 14


def line_image():
    img = np.zeros((H, W), np.float32)
    img[4, 1:7] = 1.0  # the line: 6 pixels
    img[10:12, 10:13] = 1.0  # a separate blob, unreachable from the seed
    seed = np.zeros((H, W), bool)
    seed[4, 1] = True
    return img, seed


def expected_line(k):
    m = np.zeros((H, W), bool)
    m[4, 1:1 + min(k + 2, 6)] = True
    return m


def test_history_indexing_and_early_stop(standin):
    img, seed = line_image()
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    hist = ref.run(max_iters=50, tol=0.0)
    # k = 0..4 each add one pixel; k = 5 reproduces k = 4 (changed 0) and stops the loop
    assert [r.index for r in hist] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(hist[0].input_mask, seed)  # iteration 0 is fed the initial mask
    for k, r in enumerate(hist):
        np.testing.assert_array_equal(r.mask, expected_line(k))
        if k:
            np.testing.assert_array_equal(r.input_mask, hist[k - 1].mask)
    assert [r.changed_fraction * H * W for r in hist] == pytest.approx([1, 1, 1, 1, 1, 0])
    assert hist[-1].probabilities.dtype == np.float32 and hist[-1].probabilities.shape == (H, W)


def test_a_settled_loop_is_named_fixed_point_or_2_cycle(standin):
    """The line stand-in grows to the line and stops (fixed point at the step that changes nothing);
    a stand-in that inverts its feedback alternates between two masks from its second step on.
    A step fed a user's edit is never called settled."""
    img, seed = line_image()
    grow = FANetRefiner(standin("fanet"), img, init=seed, device="cpu").run(max_iters=7, tol=None)
    assert [r.repeats for r in grow] == [None] * 5 + ["fixed point"] * 2
    flip = FANetRefiner(standin("invert"), img, init=seed, device="cpu")
    hist = flip.run(max_iters=4, tol=None)
    np.testing.assert_array_equal(hist[0].mask, ~seed)
    np.testing.assert_array_equal(hist[1].mask, seed)  # iteration 0's input again
    assert [r.repeats for r in hist] == [None, "2-cycle", "2-cycle", "2-cycle"]
    assert hist[1].row()["repeats"] == "2-cycle"
    flip.set_mask(hist[-1].mask)  # unchanged paint still counts as an edit step
    assert flip.step().repeats is None
    # run to convergence stops at the 2-cycle (it would never get under tol); as released, it does not
    assert len(FANetRefiner(standin("invert"), img, init=seed, device="cpu").run(max_iters=10, tol=0.0)) == 2
    assert len(FANetRefiner(standin("invert"), img, init=seed, device="cpu").run(max_iters=10, tol=None)) == 10


def test_no_early_stop_like_released(standin):
    img, seed = line_image()
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    assert len(ref.run(max_iters=8, tol=None)) == 8
    assert len(FANetRefiner(standin("fanet"), img, init=seed, device="cpu").run(max_iters=3)) == 3


def test_set_mask_changes_next_step(standin):
    img, seed = line_image()
    plain = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    edited = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    plain.step()
    edited.step()
    painted = edited.history[0].mask.copy()
    painted[10, 10] = True  # the user marks the missed blob
    edited.set_mask(painted)
    a, b = plain.step(), edited.step()
    assert not a.edited and b.edited
    np.testing.assert_array_equal(b.input_mask, painted)
    np.testing.assert_array_equal(a.mask, expected_line(1))
    expected = expected_line(1)
    expected[10:12, 10:12] = True  # dilate((10,10)) inside the blob
    np.testing.assert_array_equal(b.mask, expected)
    # the correction keeps propagating: the next step fills the blob
    assert edited.step().mask[10:12, 10:13].all()


def test_reset_starts_over(standin):
    img, seed = line_image()
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    first = ref.step().mask
    ref.run(3)
    ref.reset()
    assert ref.history == []
    np.testing.assert_array_equal(ref.current_mask, seed)
    np.testing.assert_array_equal(ref.step().mask, first)


def test_volume_slices_refined_independently(standin):
    img, seed = line_image()
    vol = np.stack([img, img, img], axis=-1)  # slices along the last axis
    init = np.stack([seed, np.zeros_like(seed), seed], axis=-1)
    ref = FANetRefiner(standin("fanet"), vol, slice_axis=-1, init=init, device="cpu", batch_size=2)
    r = ref.step()
    assert r.mask.shape == vol.shape
    np.testing.assert_array_equal(r.mask[..., 0], expected_line(0))
    assert not r.mask[..., 1].any()
    np.testing.assert_array_equal(r.mask[..., 2], expected_line(0))


def test_initial_masks_and_errors(standin):
    img, _ = line_image()
    assert not FANetRefiner(standin("fanet"), img, init="empty", device="cpu").step().mask.any()
    full = FANetRefiner(standin("fanet"), img, init="full", device="cpu").step().mask
    np.testing.assert_array_equal(full, img > 0.2)
    with pytest.raises(InputError, match="no feedback mask"):
        FANetRefiner(standin("plain"), img, device="cpu")
    ref = FANetRefiner(standin("fanet"), img, init="empty", device="cpu")
    with pytest.raises(InputError, match="shape"):
        ref.set_mask(np.ones((3, 3)))


def test_metrics_per_iteration(standin):
    metrics = pytest.importorskip("napari_segattn.metrics")
    if not hasattr(metrics, "binary_metrics"):
        pytest.skip("metrics package not written yet")
    img, seed = line_image()
    gt = img > 0  # line + blob: 12 pixels
    ref = FANetRefiner(standin("fanet"), img, init=seed, ground_truth=gt, device="cpu")
    ref.run(max_iters=10)
    # recall = covered line pixels / 12, precision = 1 (all predictions inside the line)
    assert [r.metrics["recall"] for r in ref.history] == pytest.approx([(min(k + 2, 6)) / 12 for k in range(6)])
    assert all(r.metrics["precision"] == pytest.approx(1.0) for r in ref.history)
    assert ref.initial_metrics["recall"] == pytest.approx(1 / 12)
    rows = ref.table()
    assert rows[0]["iteration"] == "init" and [r["iteration"] for r in rows[1:]] == list(range(6))


def test_otsu_initial_mask_is_the_data_packages(standin):
    data = pytest.importorskip("napari_segattn.data")
    if not hasattr(data, "otsu_mask"):
        pytest.skip("data package not written yet")
    rng = np.random.default_rng(1)
    img = rng.random((32, 32)).astype(np.float32) * 0.2
    img[8:20, 8:20] += 0.8
    ref = FANetRefiner(standin("fanet"), img, device="cpu")
    np.testing.assert_array_equal(ref.initial_mask, np.asarray(data.otsu_mask(img[None]), bool))
    assert ref.initial_mask[10:18, 10:18].all() and not ref.initial_mask[25:, 25:].any()


def test_pinned_edits_survive_every_later_step(standin):
    """With pin_edits a painted pixel keeps its value although the model disagrees; without it
    the model overwrites the correction (the stand-in erases anything outside x > 0.2)."""
    img, seed = line_image()
    for pin in (True, False):
        ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", pin_edits=pin)
        ref.step()
        painted = ref.current_mask
        painted[0, 12] = True  # added where the image is dark: the model would erase it
        painted[4, 1] = False  # the seed pixel erased: the model would grow it back
        ref.set_mask(painted)
        np.testing.assert_array_equal(ref.edit_mask, (np.arange(H * W).reshape(H, W) == 12)
                                      | (np.arange(H * W).reshape(H, W) == 4 * W + 1))
        hist = ref.run(3, tol=None)[1:]
        for r in hist:
            assert r.mask[0, 12] == pin and r.mask[4, 1] == (not pin)
            assert r.edit is not None and r.edit.sum() == 2
        # step 1 after the edit: the model wanted (0,12) off and (4,1) on, so both were pinned
        assert hist[-3].pinned == (2 if pin else 0)
        # outside the edit the line grows by one pixel per step: (4,3) -> (4,4) -> ...
        assert [r.changed_outside_edit for r in hist[-3:]] == [1, 1, 1]
        assert hist[-3].row()["edit_pixels"] == 2


def test_edits_accumulate_and_reset_clears_them(standin):
    img, seed = line_image()
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", pin_edits=True)
    m = ref.current_mask
    m[0, 0] = True
    ref.set_mask(m)
    m = ref.current_mask
    m[0, 1] = True
    ref.set_mask(m)
    assert ref.edit_mask.sum() == 2 and ref.painted_values[0, :2].all()
    assert ref.step().changed_outside_edit == 1  # dilate(seed) & line adds (4,2)
    ref.reset()
    assert not ref.edit_mask.any() and ref.step().edit is None


def test_an_edit_input_model_is_fed_the_feedback_code_of_what_was_painted(monkeypatch):
    """FANet(edit_input=True) is told which pixels the user painted (models.fanet.feedback_code);
    a released FANet keeps getting the plain 0/1 mask."""
    import torch

    from napari_segattn.models import build_model
    from napari_segattn.models.fanet import FANet, feedback_code

    fed = []
    forward = FANet._forward
    # the refiner runs a folded copy of the model, so record at the class
    monkeypatch.setattr(FANet, "_forward", lambda self, x, m: (fed.append(m.detach().clone()), forward(self, x, m))[1])
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    for edit_input in (True, False):
        net = build_model("fanet", in_channels=1, out_channels=1, width=4, mixpool="none",
                          mask_input=edit_input, edit_input=edit_input)
        fed.clear()
        ref = FANetRefiner(net, img, channel_axis=None, device="cpu", pin_edits=True)
        ref.step()
        painted = ref.current_mask
        painted[2:6, 2:6] = ~painted[2:6, 2:6]
        ref.set_mask(painted)
        ref.step()
        want = feedback_code(painted, ref.edit_mask, ref.painted_values) if edit_input else painted.astype(np.float32)
        np.testing.assert_array_equal(fed[-1][0, 0].numpy(), want)
        assert fed[0].min() >= 0 and fed[0].max() <= 1  # nothing painted yet: the plain mask
        assert (fed[-1].min() < 0) == edit_input


def test_set_threshold_rethresholds_the_last_iteration_without_running_the_model(standin):
    """Widget's threshold control (issue 14 item 10): with GrowFromMask the off-line bright
    pixels and the dilated seed's dark neighbours sit at sigmoid(-2) = 0.119 after one step."""
    img, seed = line_image()
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu")
    ref.step()
    np.testing.assert_array_equal(ref.history[0].mask, expected_line(0))
    calls = []
    ref.model.register_forward_hook(lambda *a: calls.append(1))
    low = np.zeros((H, W), bool)
    low[3:6, 0:3] = True  # dilate(seed): dark pixels at 0.119
    low |= img > 0  # every bright pixel: 0.119 or more
    assert ref.set_threshold(0.1) is True and ref.threshold == 0.1 and not calls
    np.testing.assert_array_equal(ref.history[0].mask, low)
    np.testing.assert_array_equal(ref.current_mask, low)  # fed back next
    assert ref.history[0].changed_fraction == pytest.approx(np.mean(low != seed))
    assert ref.set_threshold(0.1) is False  # nothing changes twice
    ref.step()
    assert calls and ref.threshold == 0.1
    # a correction painted since the last step stays the next feedback
    painted = np.zeros((H, W), bool)
    painted[0, 0] = True
    ref.set_mask(painted)
    assert ref.set_threshold(0.9) is False and ref.threshold == 0.9
    np.testing.assert_array_equal(ref.current_mask, painted)
    with pytest.raises(InputError, match="threshold"):
        ref.set_threshold(1.0)


def test_focus_limits_a_step_after_a_correction_to_the_box_around_it(standin):
    """FANetRefiner(focus=m): the step right after a correction changes only the box around the
    new paint widened by m pixels (FocalClick's local refinement); later steps without a new
    correction run over the whole image again. The stand-in grows the fed mask one pixel per
    step along bright lines, so where it may grow is known by hand."""
    img = np.zeros((H, W), np.float32)
    img[2, 1:13] = img[11, 1:13] = 1.0  # two lines, far apart
    seed = np.zeros((H, W), bool)
    seed[2, 1] = seed[11, 1] = True
    runs = {}
    for focus in (None, 2):
        ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", pin_edits=True, focus=focus)
        ref.step()  # no correction yet: both lines grow, focus or not
        assert ref.history[-1].focus is None and ref.history[-1].mask[[2, 11], 2].all()
        painted = ref.current_mask
        painted[11, 7] = True  # a click on the lower line
        ref.set_mask(painted)
        runs[focus] = r = ref.step()
        if focus is None:
            assert r.mask[2, 3] and r.mask[11, 3]  # everything grew
        else:
            assert r.focus == (slice(9, 14), slice(5, 10))
            changed = r.mask != r.input_mask
            outside = np.ones((H, W), bool)
            outside[r.focus] = False
            assert not changed[outside].any()  # the upper line and the far end of the lower one kept
            assert r.mask[11, 6] and r.mask[11, 8]  # the click grew inside the box
            assert not r.mask[2, 3] and not r.mask[11, 3]
            assert ref.set_threshold(0.9) is False or not (r.mask != ref.history[-1].mask)[outside].any()
            assert ref.step().focus is None and ref.history[-1].mask[2, 3]  # no new correction: whole image
    with pytest.raises(InputError, match="focus"):
        FANetRefiner(standin("fanet"), img, init=seed, device="cpu", focus=-1)


def test_progressive_merge_keeps_only_changes_connected_to_the_new_paint(standin):
    """progressive_merge=True (FocalClick): after a correction, a change of the model's output is
    kept only where its connected region touches the new paint. The stand-in grows both lines;
    only the growth of the clicked one survives, and how much was dropped is recorded."""
    img = np.zeros((H, W), np.float32)
    img[2, 1:13] = img[11, 1:13] = 1.0
    seed = np.zeros((H, W), bool)
    seed[2, 1] = seed[11, 1] = True
    ref = FANetRefiner(standin("fanet"), img, init=seed, device="cpu", pin_edits=True, progressive_merge=True)
    first = ref.step()  # no correction: no merge, both lines grow
    assert first.dropped == 0 and first.merged_with is None and first.mask[[2, 11], 2].all()
    painted = ref.current_mask
    painted[11, 7] = True  # a click on the lower line, away from its growing end
    ref.set_mask(painted)
    r = ref.step()
    changed = r.mask != r.input_mask
    # kept: the click's neighbours (11,6), (11,8); dropped: the growth at both lines' ends
    np.testing.assert_array_equal(np.argwhere(changed), [[11, 6], [11, 8]])
    assert r.dropped == 2 and r.merged_with[11, 7]
    assert ref.step().dropped == 0  # no new correction: whole-image growth again
