"""Run the core's progress generators in napari thread workers (no second implementation).

The core yields events and checks a cancel flag; here we only connect those to napari's
progress bar, notifications and the widget callbacks, and keep the viewer responsive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info

__all__ = ["run_in_worker", "ActivityBar", "explain_exception", "JobProgress", "relay_steps", "ProgressLine"]


@dataclass(frozen=True)
class JobProgress:
    """Steps done of total over a whole job (slices, both sides of a compare): what the bar and
    the status line show."""

    done: int
    total: int
    stage: str


def relay_steps(gen, part: int, parts: int, stage: str = ""):
    """Run a core generator that yields ``done``/``total`` events as part ``part`` of ``parts``
    equal parts of a job, re-yielding JobProgress over the whole job; returns its result."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        yield JobProgress(part * ev.total + ev.done, parts * ev.total, stage or getattr(ev, "stage", ""))


def explain_exception(exc: BaseException) -> str:
    """One line for a notification; GPU OOM gets its advice."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return f"GPU out of memory: {str(exc).splitlines()[0]} -- try a smaller batch size or the CPU"
    return f"{type(exc).__name__}: {exc}"


class WorkerError(Exception):
    """Carries a worker's exception to the GUI thread.

    superqt treats a RuntimeError raised in a worker as "aborted thread" and emits no
    ``errored`` signal, and our core raises RuntimeError subclasses (TrainingError, GPU
    out-of-memory); wrapping keeps every failure visible to the user.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def _guard(gen_func):
    import inspect

    if inspect.isgeneratorfunction(gen_func) or inspect.isgeneratorfunction(getattr(gen_func, "__func__", None)):
        def guarded(*args, **kwargs):
            try:
                return (yield from gen_func(*args, **kwargs))
            except Exception as exc:
                raise WorkerError(exc) from exc
    else:
        def guarded(*args, **kwargs):
            try:
                return gen_func(*args, **kwargs)
            except Exception as exc:
                raise WorkerError(exc) from exc
    return guarded


def _relay_warning(show_warning_args: tuple) -> None:
    from napari.utils.notifications import notification_manager

    notification_manager.receive_warning(*show_warning_args)


def _once(func: Callable[[], None]) -> Callable[[], None]:
    """``func`` that runs on its first call only. After an error superqt may still emit
    ``finished`` after ``errored`` (which calls on_finish itself, as ``finished`` is not always
    emitted): a second on_finish marked the user's *next* job idle and overwrote its status."""
    done = []

    def wrapped(*_):
        if not done:
            done.append(True)
            func()
    return wrapped


def run_in_worker(
    gen_func: Callable[..., Iterator[Any]],
    *args,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    desc: str = "working",
    total: int = 0,
    cancel_note: str = "nothing was added",
    **kwargs,
):
    """Start ``gen_func(*args, **kwargs)`` in a thread; napari's progress bar via ``ActivityBar``.
    ``cancel_note``: what the notification says is left after a cancel. ``on_finish`` runs once
    per job, whether it returned, failed or was cancelled."""
    if on_finish is not None:
        on_finish = _once(on_finish)

    def _errored(exc: BaseException) -> None:
        from ..inference import Cancelled

        exc = getattr(exc, "original", exc)
        if isinstance(exc, Cancelled):  # the user asked for it: news, not a failure
            show_info(f"{desc} cancelled; {cancel_note}")
        else:
            show_error(f"{desc} failed: {explain_exception(exc)}")
        if on_error is not None:
            on_error(exc)
        if on_finish is not None:  # finished is not always emitted after an error
            on_finish()

    activity = ActivityBar(desc, total)
    # Passing our handler in _connect tells superqt not to re-raise in the GUI thread. No
    # ``_progress``: ActivityBar shows napari's bar, later and throttled (see there).
    worker = create_worker(_guard(gen_func), *args, _start_thread=False, _connect={"errored": _errored}, **kwargs)
    worker.activity = activity
    # napari's worker classes mean to relay warnings as notifications, but their mixin's
    # __init__ is never reached behind superqt's (PyQt's QRunnable does not chain it), so a
    # core warning raised in a job (a constant image, options a run ignores) was lost. Relayed
    # here; receive_warning drops a warning it has already shown, so a fixed napari is harmless.
    worker.warned.connect(_relay_warning)
    worker.started.connect(activity.start)
    worker.finished.connect(activity.close)
    worker.errored.connect(lambda _exc: activity.close())
    if isinstance(worker, GeneratorWorker):  # plain functions (build, load) yield nothing
        worker.yielded.connect(activity.on_yield)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
    if on_return is not None:
        worker.returned.connect(on_return)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    worker.start()
    return worker


class ActivityBar:
    """napari's activity-dialog progress bar for one job: shown once the job has run
    ``SHOW_AFTER_S``, updated at most every ``UPDATE_EVERY_S``.

    Not ``create_worker(_progress=...)``: napari builds that bar's widgets when the worker
    starts, and ``QtLabeledProgressBar.setValue`` calls ``QApplication.processEvents()`` on every
    update, so each yield also repainted the canvas inside our callback. On the loaded 2-core
    machine that was 250 ms of the GUI thread per job and 180-260 ms per refinement Step
    (``scripts/measure_stalls.py``). A Step or a Predict is over in a few seconds and the widgets'
    status lines already give count, ETA and Cancel; the bar is for jobs one leaves running.
    Events with ``done``/``total`` (slices, windows, IG steps) set it exactly; other yields count
    one step each, as napari's own bar counts them."""

    SHOW_AFTER_S = 3.0
    UPDATE_EVERY_S = 0.5

    def __init__(self, desc: str, total: int = 0) -> None:
        self.desc, self.total, self.done, self.stage = desc, int(total), 0, ""
        self.pbar = None
        self.ended, self._updated = False, 0.0

    def start(self) -> None:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(int(self.SHOW_AFTER_S * 1000), self._show)

    def _label(self) -> str:
        return f"{self.desc} ({self.stage})" if self.stage else self.desc

    def _show(self) -> None:
        import time

        from napari.utils import progress

        if self.ended or self.pbar is not None:
            return
        self._updated = time.perf_counter()  # napari's bar processes events while it is built
        bar = progress(total=self.total, desc=self._label())
        if self.ended:  # the job ended while the bar was being built
            bar.close()
            return
        self.pbar = bar
        bar.n = min(self.done, self.total) if self.total else 0
        bar.update(0)

    def on_yield(self, ev) -> None:
        import time

        done, total = getattr(ev, "done", None), getattr(ev, "total", None)
        if isinstance(done, int) and isinstance(total, int):
            self.done, self.total, self.stage = done, total, str(getattr(ev, "stage", "") or "")
        else:
            self.done += 1
        bar = self.pbar
        if bar is not None and time.perf_counter() - self._updated >= self.UPDATE_EVERY_S:
            # the bar's calls process events, so the job can end (``close``) in the middle of
            # this update: a cancelled IG run raised AttributeError on ``self.pbar.n`` here
            if bar.total != self.total:
                bar.total = self.total
                bar.set_description(self._label())
                if self.ended:
                    return
            bar.n = min(self.done, self.total) if self.total else self.done
            bar.update(0)
            self._updated = time.perf_counter()

    def close(self) -> None:
        self.ended = True
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None


def notify(msg: str) -> None:
    show_info(msg)


class ProgressLine:
    """"predict: 12/94 slices, 3 s, ETA 21 s" from done/total events, for a widget's status
    line (napari's activity bar shows a count only when opened, and no ETA)."""

    UNITS = {"windows": "windows", "statistics": "windows (measuring the slice's statistics)"}

    def __init__(self, what: str) -> None:
        import time

        self.what, self._clock = what, time.perf_counter
        self.t0 = self._clock()

    def __call__(self, ev) -> str | None:
        done, total = getattr(ev, "done", None), getattr(ev, "total", None)
        if not isinstance(done, int) or not isinstance(total, int) or total <= 0:
            return None
        elapsed = self._clock() - self.t0
        unit = self.UNITS.get(getattr(ev, "stage", ""), "slices")
        eta = f", ETA {elapsed / done * (total - done):.0f} s" if 0 < done < total else ""
        return f"{self.what}: {done}/{total} {unit}, {elapsed:.0f} s{eta}"
