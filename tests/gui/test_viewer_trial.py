"""Issue 14 (a new user's trial of every widget) and the widget part of issue 12 (painted
pixels kept), driven through the widgets' own buttons and read back from napari layers."""

from __future__ import annotations

import numpy as np
import pytest

from test_workflow_widgets import _blobs, _build, _wait_idle

pytestmark = pytest.mark.gui


@pytest.fixture
def setup(make_napari_viewer):
    from napari_segattn.widgets import CompareWidget, InspectWidget, ModelWidget, PredictRefineWidget, TrainWidget
    from napari_segattn.widgets.state import get_state

    viewer = make_napari_viewer()
    img, gt = _blobs()
    viewer.add_image(img, name="cells")
    viewer.add_labels(gt, name="cells_gt")
    widgets = {cls.__name__: cls(viewer) for cls in (ModelWidget, TrainWidget, PredictRefineWidget, InspectWidget, CompareWidget)}
    return viewer, widgets, get_state(viewer), img, gt


def _choose(widgets, image, gt):
    mw = widgets["ModelWidget"]
    mw.image_select.value = [image]
    mw.gt_combo.value = gt


def test_step_after_changing_the_image_starts_a_fresh_refinement(setup, qtbot):
    """Bug 1: Step kept refining the previous image and drew its mask over the new one."""
    viewer, widgets, state, img, gt = setup
    _build(widgets, "fanet", in_channels=1)
    rw = widgets["PredictRefineWidget"]
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert len(state.refiner.history) == 1
    other, other_gt = _blobs(seed=7)
    viewer.add_image(other, name="other")
    viewer.add_labels(other_gt, name="other_gt")
    _choose(widgets, "other", "other_gt")
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    ref = state.refiner
    assert len(ref.history) == 1, "a new image must start a new refinement, not continue the old one"
    assert "starting a fresh refinement" in rw.status.value and "image layer(s)" in rw.status.value
    # the mask drawn is the new image's, scored against the new ground truth
    from napari_segattn.metrics import binary_metrics

    shown = viewer.layers["refinement (0 = initial mask)"].data[1].astype(bool)
    np.testing.assert_array_equal(shown, ref.history[0].mask)
    assert ref.history[0].metrics["dice"] == pytest.approx(float(binary_metrics(shown, other_gt > 0)["dice"]))
    # an image with NaNs: a clear message, the refinement the user had stays
    bad = other.copy()
    bad[3, 3] = np.nan
    viewer.add_image(bad, name="with nan")
    _choose(widgets, "with nan", "other_gt")
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert "NaN" in rw.status.value and state.refiner is ref and len(ref.history) == 1


def test_reset_then_step_uses_the_inputs_chosen_now(setup, qtbot):
    viewer, widgets, state, img, gt = setup
    _build(widgets, "fanet", in_channels=1)
    rw = widgets["PredictRefineWidget"]
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    first = state.refiner
    rw.reset_button.clicked.emit()
    assert first.history == [] and state.refiner is None
    rw.init.value = "empty"
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert state.refiner is not first and not state.refiner.initial_mask.any()


def test_train_then_cancel_keeps_the_users_settings(setup, qtbot, tmp_path):
    """Bug 2: Cancel put the recipe's batch size back over the user's."""
    viewer, widgets, state, img, gt = setup
    _build(widgets, "unet", in_channels=1)
    tw = widgets["TrainWidget"]
    assert tw.batch_size.value == 4  # the recipe's
    tw.batch_size.value = 3
    tw.epochs.value = 500
    tw.tile.value = 16
    tw.out_dir.value = str(tmp_path / "run")
    tw.train_button.clicked.emit()
    qtbot.waitUntil(lambda: len(tw.train_events) >= 2, timeout=60_000)
    tw.cancel_button.clicked.emit()
    _wait_idle(qtbot, state, timeout=60_000)
    assert tw.batch_size.value == 3 and tw.epochs.value == 500 and tw.tile.value == 16
    assert "will run 500 epoch(s)" in tw.recipe.value


def test_recipe_line_says_what_train_will_run(setup, qtbot):
    """Item 9: the recipe line said "500 epochs" while the epochs field said 20."""
    viewer, widgets, state, img, gt = setup
    _build(widgets, "fanet", in_channels=1)
    tw = widgets["TrainWidget"]
    assert tw.recipe.value.startswith(f"will run {tw.epochs.value} epoch(s)")
    assert "the paper trains 500 epochs" in tw.recipe.value
    tw.epochs.value = 7
    tw.lr.value = 0.003
    tw.loss.value = "dice"
    assert "will run 7 epoch(s)" in tw.recipe.value and "lr 0.003" in tw.recipe.value
    assert "loss dice" in tw.recipe.value


def test_compare_with_an_empty_checkpoint_field_names_the_field(setup, qtbot, tmp_path):
    """Bug 4: the message had an empty file name and 'No such device'."""
    from napari_segattn.models import build_model, save_model

    viewer, widgets, state, img, gt = setup
    cw = widgets["CompareWidget"]
    cw.compare_button.clicked.emit()
    assert "checkpoint a" in cw.status.value and "empty" in cw.status.value and not state.busy
    cw.ckpt_a.value = str(save_model(build_model("unet", in_channels=1), tmp_path / "a.safetensors"))
    cw.compare_button.clicked.emit()
    assert "checkpoint b" in cw.status.value and "empty" in cw.status.value


def test_predict_ignores_an_unrelated_ground_truth_of_another_shape(setup, qtbot):
    """Bug 5: Predict refused to run because of the ground-truth layer it does not use."""
    viewer, widgets, state, img, gt = setup
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="small labels")
    _choose(widgets, "cells", "small labels")
    _build(widgets, "unet", in_channels=1)
    widgets["PredictRefineWidget"].predict_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert viewer.layers["prediction"].data.shape == img.shape
    # where it is used, the message says which layer
    iw = widgets["InspectWidget"]
    iw.error_button.clicked.emit()
    assert "error map" not in viewer.layers and not state.busy and "'small labels'" in iw.status.value


def test_refinement_without_a_matching_ground_truth_runs_and_says_why_no_dice(setup, qtbot):
    viewer, widgets, state, img, gt = setup
    viewer.add_labels(np.zeros((10, 10), np.uint8), name="small labels")
    _choose(widgets, "cells", "small labels")
    _build(widgets, "fanet", in_channels=1)
    rw = widgets["PredictRefineWidget"]
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert len(state.refiner.history) == 1 and state.refiner.history[0].metrics is None
    assert "no Dice" in rw.status.value and "small labels" in rw.status.value


def test_painted_pixels_are_kept_shown_and_reported(setup, qtbot):
    """Issue 12: 'Keep painted pixels' (on by default) pins the paint; the status says how the
    model answered the edit; the painted pixels have their own layer."""
    viewer, widgets, state, img, gt = setup
    _build(widgets, "fanet", in_channels=1)
    rw = widgets["PredictRefineWidget"]
    assert rw.keep_painted.value is True
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    ref = state.refiner
    assert ref.pin_edits
    fb = viewer.layers["feedback mask (paint, then Step)"]
    painted = fb.data.copy()
    painted[:12, :12] = 1  # paint foreground
    painted[50:, 50:] = 0  # erase
    fb.data = painted
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    res = ref.history[-1]
    assert res.edit is not None
    edit = ref.edit_mask
    # kept: the mask equals the painting wherever the user painted
    np.testing.assert_array_equal(res.mask[edit], painted.astype(bool)[edit])
    shown = viewer.layers["painted (fixed)"].data
    np.testing.assert_array_equal(shown > 0, edit)
    assert ((shown == 1) == (edit & painted.astype(bool))).all()
    assert f"{res.changed_outside_edit:,} pixel(s) changed outside your edit" in rw.status.value
    assert f"disagreed with {res.pinned:,} of your {int(edit.sum()):,} painted" in rw.status.value
    # toggling mid-session applies to the next step
    rw.keep_painted.value = False
    assert ref.pin_edits is False and not viewer.layers["painted (fixed)"].visible
    rw.step_button.clicked.emit()
    _wait_idle(qtbot, state)
    assert "overwrote" in rw.status.value and len(ref.history) == 3


def test_dice_plot_starts_at_the_initial_mask_with_named_axes(setup, qtbot):
    viewer, widgets, state, img, gt = setup
    _build(widgets, "fanet", in_channels=1)
    rw = widgets["PredictRefineWidget"]
    rw.max_iters.value = 2
    rw.run_button.clicked.emit()
    _wait_idle(qtbot, state)
    ref = state.refiner
    plot = rw.plot
    assert plot.x_labels[0] == "init" and plot.x_labels[1:] == [str(i + 1) for i in range(len(ref.history))]
    ys = [y for _, y in plot.series["Dice"]]
    assert ys[0] == pytest.approx(ref.initial_metrics["dice"])
    (_, _), (y0, y1) = plot.ranges()
    assert 0.0 <= y0 <= min(ys) and max(ys) <= y1 <= 1.0 and y1 - y0 >= 0.05
    assert plot.x_label == "iteration" and plot.y_label == "Dice"
    assert viewer.dims.axis_labels[0] == "iteration"
    # refinement and feedback layers are told apart by colour
    ref_c = viewer.layers["refinement (0 = initial mask)"].colormap.map(np.array([1]))[0]
    fb_c = viewer.layers["feedback mask (paint, then Step)"].colormap.map(np.array([1]))[0]
    assert not np.allclose(ref_c, fb_c)


def _many_short_passes(monkeypatch, steps_per_pass=2):
    """IG passes of 2 steps each: a long run in many short passes, as a 512x512 map has."""
    import importlib

    sal = importlib.import_module("napari_segattn.explain.saliency")  # the module, not the function
    monkeypatch.setattr(sal, "ig_batch_size", lambda shape, n_steps: steps_per_pass)


def test_saliency_shows_steps_and_cancel_stops_it_without_a_layer(setup, qtbot, monkeypatch):
    """Bug 3: IG showed 0/1 for its whole run and could not be cancelled."""
    import time

    viewer, widgets, state, img, gt = setup
    _many_short_passes(monkeypatch)
    _build(widgets, "fpa", in_channels=1)
    iw = widgets["InspectWidget"]
    iw.run_mode.value = "full map"
    iw.n_steps.value = 500
    iw.saliency_button.clicked.emit()
    worker = iw.worker
    qtbot.waitUntil(lambda: "/500 IG steps" in iw.status.value, timeout=60_000)
    done = int(iw.status.value.split(": ")[1].split("/")[0])
    assert 0 < done < 500 and done % 2 == 0  # per pass of 2 steps, not 0/1
    assert worker.activity.total == 500 and 0 < worker.activity.done < 500  # napari's bar's counts
    t0 = time.perf_counter()
    iw.cancel_button.clicked.emit()
    _wait_idle(qtbot, state, timeout=30_000)
    # the widget is idle once the worker reports; its thread may need a moment more to end
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5_000)
    stopped_after = time.perf_counter() - t0
    print(f"saliency stopped {stopped_after * 1000:.0f} ms after Cancel")
    assert stopped_after < 5
    assert "cancelled" in iw.status.value
    assert not any(layer.name.startswith("IG saliency") for layer in viewer.layers)
    assert iw.saliency_button.enabled  # the widget is usable again


def test_saliency_preview_then_full_map_and_steps_from_the_gap(setup, qtbot):
    """Item 13: a labelled preview first, then the full map; steps raised until the gap fits."""
    viewer, widgets, state, img, gt = setup
    _build(widgets, "unet", in_channels=1)
    iw = widgets["InspectWidget"]
    assert iw.run_mode.value == "preview, then full map"
    iw.n_steps.value = 4
    iw.auto_steps.value = True
    iw.gap_tolerance.value = 5.0
    inserted = []
    viewer.layers.events.inserted.connect(
        lambda ev: inserted.append((ev.value.name, bool(ev.value.metadata.get("placeholder")))))
    iw.saliency_button.clicked.emit()
    _wait_idle(qtbot, state)
    # both result layers were made while IG ran (stall: one layer per event-loop turn), not in
    # the callback that shows the preview
    assert inserted == [("IG saliency class 1 (preview, 8 steps, 1/4 size)", True), ("IG saliency class 1", True)]
    prev = viewer.layers["IG saliency class 1 (preview, 8 steps, 1/4 size)"]
    full = viewer.layers["IG saliency class 1"]
    assert prev.data.shape == full.data.shape == img.shape
    # the preview is blocky at 1/4 size: each 4x4 block holds one value
    assert np.allclose(prev.data[:4, :4], prev.data[0, 0]) and not np.allclose(full.data[:4, :4], full.data[0, 0])
    m = iw.last_saliency[0]
    assert m.steps_tried[0][0] == 4 and m.n_steps == full.metadata["n_steps"][0]
    assert m.relative_gap <= 0.05 or (m.n_steps == 256 and "tolerance" in iw.status.value)
    assert f"{m.n_steps} steps" in iw.status.value
    # preview only: the full map is left as it was
    before = full.data.copy()
    iw.run_mode.value = "preview only"
    iw.saliency_button.clicked.emit()
    _wait_idle(qtbot, state)
    np.testing.assert_array_equal(viewer.layers["IG saliency class 1"].data, before)
    assert "preview" in iw.status.value


def test_compare_reports_steps_and_cancels(setup, qtbot, tmp_path, monkeypatch):
    from napari_segattn.models import build_model, save_model

    viewer, widgets, state, img, gt = setup
    _many_short_passes(monkeypatch)
    a = save_model(build_model("unet", in_channels=1), tmp_path / "a.safetensors")
    b = save_model(build_model("fpa", in_channels=1), tmp_path / "b.safetensors")
    cw = widgets["CompareWidget"]
    cw.ckpt_a.value, cw.ckpt_b.value = str(a), str(b)
    cw.n_steps.value = 500
    cw.compare_button.clicked.emit()
    qtbot.waitUntil(lambda: "/1000 steps" in cw.status.value, timeout=60_000)
    cw.cancel_button.clicked.emit()
    _wait_idle(qtbot, state, timeout=30_000)
    # the widget is idle once the cancel is reported; the thread itself ends a moment later
    qtbot.waitUntil(lambda: not cw.worker.is_running, timeout=10_000)
    assert "cancelled" in cw.status.value
    assert cw.result is None and "attention shift (b - a)" not in viewer.layers


def test_compare_is_readable(setup, qtbot, tmp_path):
    """Item 7: one scale for both maps, a diverging difference that shows structure, plain
    columns with units and a sentence of the numbers."""
    import torch

    from napari_segattn.models import build_model, save_model

    viewer, widgets, state, img, gt = setup
    torch.manual_seed(1)
    a = save_model(build_model("unet", in_channels=1), tmp_path / "plain.safetensors")
    torch.manual_seed(2)
    b = save_model(build_model("fpa", in_channels=1), tmp_path / "gated.safetensors")
    cw = widgets["CompareWidget"]
    cw.ckpt_a.value, cw.ckpt_b.value = str(a), str(b)
    cw.n_steps.value = 8
    cw.compare_button.clicked.emit()
    _wait_idle(qtbot, state)
    res = cw.result
    sa, sb = viewer.layers["saliency a:plain"], viewer.layers["saliency b:gated"]
    assert tuple(sa.contrast_limits) == tuple(sb.contrast_limits)  # one scale
    np.testing.assert_allclose([sa.data.mean(), sb.data.mean()], 1.0, rtol=1e-4)  # 1 = uniform share
    diff = viewer.layers["attention shift (b - a)"]
    lo, hi = diff.contrast_limits
    assert lo == pytest.approx(-hi) and 0 < hi < np.abs(diff.data).max()  # a percentile, not the extreme
    assert (np.abs(diff.data) > 0.25 * hi).mean() > 0.05  # structure shows, not a flat wash
    cm = diff.colormap.map(np.array([0.0, 0.5, 1.0]))
    assert cm[1, 3] == 0 and cm[0, 3] == cm[2, 3] == 1 and cm[0, 2] > cm[0, 0] and cm[2, 0] > cm[2, 2]
    cols = cw.table.column_headers
    assert "centroid shift (px)" in cols and any("(%)" in c for c in cols) and not any("mass_" in c for c in cols)
    j = res.regions.index("1")
    d = res.mass_delta[0, j]
    text = cw.summary.value
    assert text.startswith("b (gated) puts") and f"{abs(d) * 100:.0f} percentage points" in text
    assert ("more" if d >= 0 else "less") in text and f"moved {res.shift_px[0]:.1f} px" in text

def test_compare_side_by_side_puts_a_b_and_the_shift_in_cells_and_restores_the_layers(setup, qtbot, tmp_path):
    """Item 7's side-by-side view: napari's grid, one cell each for a, b and b - a over the
    image; unticked, the user's layers come back as they were (order, visibility, grid off)."""
    import torch

    from napari_segattn.models import build_model, save_model

    viewer, widgets, state, img, gt = setup
    torch.manual_seed(1)
    a = save_model(build_model("unet", in_channels=1), tmp_path / "plain.safetensors")
    b = save_model(build_model("unet", in_channels=1), tmp_path / "other.safetensors")
    cw = widgets["CompareWidget"]
    cw.ckpt_a.value, cw.ckpt_b.value = str(a), str(b)
    cw.n_steps.value = 4
    cw.compare_button.clicked.emit()
    _wait_idle(qtbot, state)
    before = [(l.name, l.visible) for l in viewer.layers]
    cw.side_by_side.value = True
    maps = ["saliency a:plain", "saliency b:other", "attention shift (b - a)"]
    from napari_segattn.widgets.side_by_side import grid_of

    grid = grid_of(viewer)
    assert grid.enabled and grid.actual_shape(viewer.layers) == (1, 3)
    cells = {}
    for i, layer in enumerate(viewer.layers):
        if layer.visible:
            cells.setdefault(grid.position(i, viewer.layers), []).append(layer.name)
    assert [cells[(0, c)][-1] for c in range(3)] == maps  # each map on top of its own cell ...
    assert all(cells[(0, c)][0].endswith(f"under {m}") for c, m in enumerate(maps))  # ... over the image
    np.testing.assert_array_equal(viewer.layers[f"image under {maps[0]}"].data, img)
    cw.side_by_side.value = False
    assert not grid.enabled and [(l.name, l.visible) for l in viewer.layers] == before


def test_whole_volume_predict_shows_count_and_eta(make_napari_viewer, qtbot):
    """Item 6b: whole-volume predict showed only a spinner; the status line counts slices."""
    import re

    from napari_segattn.widgets import ModelWidget, PredictRefineWidget
    from napari_segattn.widgets.state import get_state

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.normal(size=(24, 48, 48)).astype(np.float32), name="vol")
    mw, rw = ModelWidget(viewer), PredictRefineWidget(viewer)
    mw.arch.value = "unet"
    mw.build()
    rw.scope.value = "whole volume"
    rw.batch_size.value = 4
    seen = []  # what the status line showed, sampled as the event loop runs (a Label has no changed signal)
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: seen.append(rw.status.value))
    timer.start(1)
    rw.predict_button.clicked.emit()
    _wait_idle(qtbot, get_state(viewer))
    timer.stop()
    counts = [s for s in seen if re.search(r"\d+/24 slices", s)]
    assert counts, (seen, rw.status.value, get_state(viewer).image_layer_names)
    assert any("ETA" in s for s in counts) and viewer.layers["prediction"].data.shape == (24, 48, 48)
