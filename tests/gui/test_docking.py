"""Issue 14 item 6b: docked through Plugins > SegAttn (napari's menu docks without tabify),
the widgets tab and scroll instead of stacking into a 2600 px column; building a widget
imports no torch on the GUI thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

NAMES = ["Model", "Train", "Predict and refine", "Inspect", "Compare", "Batch predict"]


def _dock_as_the_menu_does(viewer, name):
    """What Plugins > SegAttn > name runs (napari's _add_plugin_dock_widget): no tabify."""
    from napari.plugins import _npe2

    cls, _ = _npe2.get_widget_contribution("napari-segattn", name)
    widget = cls(viewer)
    return viewer.window.add_dock_widget(widget, name=f"{name} (SegAttn)"), widget


def test_menu_docked_widgets_are_tabs_that_scroll(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window
    main.resize(1600, 1000)
    docks = {}
    for name in NAMES:
        docks[name], _ = _dock_as_the_menu_does(viewer, name)
        qtbot.wait(20)
    qtbot.wait(100)
    for name, dock in docks.items():
        assert len(main.tabifiedDockWidgets(dock)) == len(NAMES) - 1, f"{name} is not in the SegAttn tab group"
        assert isinstance(dock.widget(), QScrollArea)
    assert type(docks["Model"].inner_widget()).__name__ == "ModelWidget"  # napari still finds our widget
    assert main.height() <= 1000, f"the window grew to {main.height()} px"
    # the tallest widget scrolls within the window instead of growing it
    train = docks["Train"]
    train.raise_()
    qtbot.wait(50)
    assert train.widget().widgetResizable() and train.height() < main.height()


_CONSTRUCT = textwrap.dedent("""
    import sys, threading, time, importlib.abc

    main_thread_torch = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" and threading.current_thread() is threading.main_thread():
                main_thread_torch.append(WIDGET)
            return None

    sys.meta_path.insert(0, Spy())
    import napari
    from napari_segattn import widgets
    viewer = napari.Viewer(show=False)
    for WIDGET in ["ModelWidget", "TrainWidget", "PredictRefineWidget", "InspectWidget", "CompareWidget"]:
        t0 = time.perf_counter()
        getattr(widgets, WIDGET)(viewer)
        print(WIDGET, round((time.perf_counter() - t0) * 1000), "ms")
    print("torch on the GUI thread while building:", main_thread_torch)
    sys.stdout.flush()
    import os; os._exit(0)  # skip Qt teardown
""")


def test_building_the_widgets_imports_no_torch_on_the_gui_thread():
    """Docking Model took 7-25 s and Train 18-20 s on a loaded machine: torch and the
    optimiser stack were imported while the widgets were built."""
    out = subprocess.run([sys.executable, "-c", _CONSTRUCT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    print(out.stdout)
    assert "torch on the GUI thread while building: []" in out.stdout, out.stdout
