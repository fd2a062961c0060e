"""Regenerate the user-guide screenshots from the real sample data (headless under Xvfb).

Run: make screenshots   (= xvfb-run -a .venv/bin/python scripts/make_screenshots.py)
Drives the widgets the way a user's clicks do and saves one PNG per step in docs/screenshots/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def main() -> int:
    from qtpy.QtWidgets import QApplication

    from napari_segattn.widgets.demo import launch_demo
    from napari_segattn.widgets.state import get_state

    OUT.mkdir(parents=True, exist_ok=True)
    viewer, docked = launch_demo(sample="dsb2018_nuclei", load_model=True, block=False)
    viewer.window._qt_window.resize(1500, 950)
    state = get_state(viewer)

    def settle(timeout: float = 600.0) -> None:
        t0 = time.time()
        while (state.busy or time.time() - t0 < 0.5) and time.time() - t0 < timeout:
            QApplication.processEvents()
            time.sleep(0.02)

    def shot(name: str, tab: str) -> None:
        native = docked[tab].native
        parent = native.parentWidget()
        while parent is not None and type(parent).__name__ != "QtViewerDockWidget":
            parent = parent.parentWidget()
        if parent is not None:  # bring this widget's tab to the front
            parent.raise_()
        settle()
        path = OUT / f"{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path)

    shot("01_model", "Model")
    refine = docked["Predict and refine"]
    refine.step_button.clicked.emit()
    settle()
    refine.step_button.clicked.emit()
    settle()
    shot("02_refine", "Predict and refine")
    # a painted correction (issue 12): one nucleus of the mask erased, a box of background added,
    # Step limited to the box around the paint and to changes touching it
    import numpy as np
    from scipy import ndimage

    fb = viewer.layers["feedback mask (paint, then Step)"]
    painted = fb.data.copy()
    objects, n = ndimage.label(painted > 0)
    if n:
        painted[objects == 1 + n // 2] = 0
    painted[20:44, 20:44] = 1
    fb.data = painted
    refine.focus.value = 24
    refine.merge.value = True
    refine.step_button.clicked.emit()
    settle()
    shot("02b_correction", "Predict and refine")
    inspect = docked["Inspect"]
    inspect.error_button.clicked.emit()
    settle()
    shot("03_error_map", "Inspect")
    for name in ("error map", "refinement (0 = initial mask)", "refinement probability", "feedback mask (paint, then Step)"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    inspect.n_steps.value = 16
    inspect.saliency_button.clicked.emit()
    settle()
    shot("04_saliency", "Inspect")
    viewer.layers["IG saliency class 1"].visible = False
    inspect.attention_button.clicked.emit()
    settle()
    shot("05_attention", "Inspect")
    viewer.layers["attention maps (axis 0 = stage)"].visible = False
    if "Compare" in docked:  # FANet iteration 1 vs 3 of this refinement, side by side
        compare = docked["Compare"]
        compare.mode.value = "FANet iteration a vs b"
        compare.iter_a.value, compare.iter_b.value = 1, 3
        compare.n_steps.value = 8
        compare.side_by_side.value = True
        compare.compare_button.clicked.emit()
        settle()
        shot("06_compare_side_by_side", "Compare")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
