"""napari's activity-dialog progress bar is shown only for jobs that last, and updated throttled
(widgets/workers.ActivityBar).

Measured before (scripts/measure_stalls.py, loaded 2-core machine): create_worker's bar was
built when each worker started (250 ms of the GUI thread) and its setValue ran
QApplication.processEvents() on every yield, repainting the canvas inside the callback: 180-260
ms of each refinement Step's longest stall."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.gui


class Ev:
    def __init__(self, done, total, stage=""):
        self.done, self.total, self.stage = done, total, stage


def _job(n, pause):
    for k in range(n):
        time.sleep(pause)
        yield Ev(k + 1, n, "windows")
    return "done"


def _bars():
    from napari.utils import progress

    return set(progress._all_instances)


def _viewer_with_bar_timing(make_napari_viewer, monkeypatch, *, show_after: float, every: float) -> set:
    """A viewer, ActivityBar's delays set for the test; returns the napari bars that exist now."""
    from napari_segattn.widgets.workers import ActivityBar

    monkeypatch.setattr(ActivityBar, "SHOW_AFTER_S", show_after)
    monkeypatch.setattr(ActivityBar, "UPDATE_EVERY_S", every)
    make_napari_viewer()
    return _bars()


def test_a_short_job_builds_no_napari_bar(make_napari_viewer, qtbot):
    from napari_segattn.widgets.workers import run_in_worker

    make_napari_viewer()
    before = _bars()
    seen = []
    worker = run_in_worker(_job, 5, 0.01, desc="short", total=5, on_yield=lambda ev: seen.append(_bars() - before))
    qtbot.waitUntil(lambda: worker.activity.ended, timeout=10_000)  # after the last yield's signal
    assert not any(seen) and _bars() == before  # no bar at any yield, none left behind
    assert (worker.activity.done, worker.activity.total) == (5, 5)  # counted all the same


def test_a_long_job_gets_the_bar_with_exact_counts_then_closes_it(make_napari_viewer, qtbot, monkeypatch):
    from napari_segattn.widgets.workers import run_in_worker

    before = _viewer_with_bar_timing(make_napari_viewer, monkeypatch, show_after=0.05, every=0.0)
    shown = []

    def yielded(ev):
        new = _bars() - before
        if new:
            bar = next(iter(new))
            shown.append((bar.n, bar.total, bar.desc))

    worker = run_in_worker(_job, 40, 0.02, desc="long job", total=1, on_yield=yielded)
    qtbot.waitUntil(lambda: worker.activity.ended, timeout=20_000)
    assert shown, "a job running past SHOW_AFTER_S shows napari's bar"
    n, total, desc = shown[-1]
    assert total == 40 and 0 < n <= 40 and "long job (windows)" in desc  # the events' done/total, not yields of 1
    assert _bars() == before  # closed with the job


def test_updates_are_throttled(make_napari_viewer, qtbot, monkeypatch):
    from napari_segattn.widgets.workers import run_in_worker

    before = _viewer_with_bar_timing(make_napari_viewer, monkeypatch, show_after=0.0, every=10.0)
    values = []
    worker = run_in_worker(_job, 30, 0.01, desc="throttled", total=30,
                           on_yield=lambda ev: values.extend(b.n for b in _bars() - before))
    qtbot.waitUntil(lambda: worker.activity.ended, timeout=20_000)
    # shown at the first yields, then not updated again within UPDATE_EVERY_S: it never
    # followed the job's 30 steps (napari's own bar is set at every yield)
    assert values and max(values) <= 3, values


@pytest.mark.parametrize("fails", [False, True])
def test_on_finish_runs_once_per_job_whether_it_returns_or_fails(qtbot, fails):
    """After an error the handler calls on_finish and superqt may emit ``finished`` too: a
    second on_finish marked the user's next job idle (a Step after a failed Predict was reported
    finished before it ran)."""
    from qtpy.QtWidgets import QApplication

    from napari_segattn.widgets.workers import run_in_worker

    calls, errors = [], []

    def job():
        yield Ev(1, 1)
        if fails:
            raise ValueError("broken input")
        return "done"

    worker = run_in_worker(job, on_finish=lambda: calls.append(1), on_error=errors.append, desc="test job")
    qtbot.waitUntil(lambda: not worker.is_running and bool(calls), timeout=10_000)
    end = time.time() + 0.5  # let any late signal arrive
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    assert calls == [1]
    assert [type(e) for e in errors] == ([ValueError] if fails else [])


def test_a_job_that_ends_while_its_bar_updates_raises_nothing():
    """Found by a new user: cancelling IG saliency raised AttributeError in on_yield every time;
    the bar's set_description processes events, in which the job's end closed the bar."""
    from napari_segattn.widgets.workers import ActivityBar

    class Bar:  # napari's progress as far as ActivityBar uses it; its calls let the job end
        def __init__(self, activity):
            self.activity, self.total, self.n, self.closed = activity, 1, 0, False

        def set_description(self, _):
            self.activity.close()

        def update(self, _):
            assert not self.closed, "updated after close"

        def close(self):
            self.closed = True

    activity = ActivityBar("IG saliency", total=1)
    activity.pbar = bar = Bar(activity)
    activity._updated = -1e9
    activity.on_yield(Ev(1, 48, "IG steps"))  # a new total: set_description, where the job ends
    assert bar.closed and activity.pbar is None
