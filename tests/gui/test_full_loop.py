"""The whole loop a user runs, in one viewer: open sample -> train 1 epoch -> predict ->
refine 3 steps with a painted correction -> error map -> saliency -> compare iterations."""

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_full_user_loop_on_the_sample(make_napari_viewer, qtbot, tmp_path):
    from napari_segattn.widgets.demo import launch_demo
    from napari_segattn.widgets.state import get_state

    viewer, w = launch_demo(sample="dsb2018_nuclei", load_model=True, block=False, viewer=make_napari_viewer())
    state = get_state(viewer)
    idle = lambda: qtbot.waitUntil(lambda: not state.busy, timeout=300_000)  # noqa: E731
    assert state.loaded.name == "fanet"

    train = w["Train"]
    train.epochs.value, train.tile.value, train.batch_size.value = 1, 128, 4
    train.lr.value = 1e-4
    train.out_dir.value = str(tmp_path / "run")
    train.train_button.clicked.emit()
    idle()
    assert type(train.train_events[-1]).__name__ == "Finished"
    assert (tmp_path / "run" / "model.safetensors").exists()

    refine = w["Predict and refine"]
    refine.predict_button.clicked.emit()
    idle()
    assert viewer.layers["prediction"].data.shape == (512, 512)
    refine.step_button.clicked.emit()
    idle()
    fb = viewer.layers["feedback mask (paint, then Step)"]
    painted = fb.data.copy()
    painted[:40, :40] = 1
    fb.data = painted
    refine.step_button.clicked.emit()
    idle()
    refine.step_button.clicked.emit()
    idle()
    hist = state.refiner.history
    assert len(hist) == 3 and hist[1].edited and not hist[2].edited
    assert viewer.layers["refinement (0 = initial mask)"].data.shape == (4, 512, 512)

    inspect = w["Inspect"]
    inspect.error_button.clicked.emit()
    idle()
    em = viewer.layers["error map"].data
    assert set(np.unique(em)) <= {0, 1, 2, 3} and (em == 1).sum() > 0
    inspect.n_steps.value = 4
    inspect.saliency_button.clicked.emit()
    idle()
    assert viewer.layers["IG saliency class 1"].data.max() > 0

    compare = w["Compare"]
    compare.mode.value = "FANet iteration a vs b"
    compare.iter_a.value, compare.iter_b.value = 0, 3
    compare.n_steps.value = 4
    compare.compare_button.clicked.emit()
    idle()
    assert compare.result is not None and compare.result.label_a == "iter0" and compare.result.label_b == "iter3"
