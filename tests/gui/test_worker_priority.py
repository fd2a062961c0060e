"""Worker threads run below the viewer's CPU priority (widgets/workers.yield_cpu_to_the_viewer).

On a busy 2-core machine the GUI thread otherwise gets the same share of a core as each of our
compute threads (tests/gui/test_layer_prep.py's demo-FANet Predict and first Step, with two
single-threaded studies running: 304-390 / 480-564 ms at the same priority, 235-283 / 369-450 ms
with the workers at nice 5)."""

from __future__ import annotations

import os
import sys

import pytest

pytestmark = [pytest.mark.gui,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")]


def _own_priority():
    import threading

    yield "started"
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _run(qtbot) -> int:
    from napari_segattn.widgets.workers import run_in_worker

    got = []
    worker = run_in_worker(_own_priority, on_return=got.append, desc="priority")
    qtbot.waitUntil(lambda: bool(got), timeout=10_000)
    worker.quit()
    return got[0]


def test_a_worker_runs_below_the_gui_thread(make_napari_viewer, qtbot, monkeypatch):
    from napari_segattn.widgets import workers

    make_napari_viewer()
    monkeypatch.delenv("SEGATTN_WORKER_NICE", raising=False)
    gui = os.getpriority(os.PRIO_PROCESS, 0)  # the main thread's (the process id is its thread id)
    assert _run(qtbot) == max(gui, workers.WORKER_NICENESS)  # below the viewer, never raised
    assert os.getpriority(os.PRIO_PROCESS, 0) == gui  # the viewer's own priority is untouched


def test_the_gui_thread_is_never_lowered(monkeypatch):
    from napari_segattn.widgets.workers import yield_cpu_to_the_viewer

    monkeypatch.setenv("SEGATTN_WORKER_NICE", "7")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    yield_cpu_to_the_viewer()  # called on the main thread: nothing changes
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
