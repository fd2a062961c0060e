"""A terminal progress bar for the core's progress events (slices or windows), with rate and ETA.

tqdm draws it (rate, elapsed and remaining time); it stays silent when stderr is not a
terminal unless asked, so logs and pipes get no carriage returns.
"""

from __future__ import annotations

import sys

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable for ``predict(progress=...)``: one bar per run of events; a new total (the
    next stage, e.g. FANet's next iteration) starts a new bar."""

    def __init__(self, label: str, *, file=None, disable: bool | None = None) -> None:
        self.label, self.file, self.disable = label, file or sys.stderr, disable
        self.bar = None

    def __call__(self, ev) -> None:
        from tqdm import tqdm

        if self.bar is None or self.bar.total != ev.total:
            self.close()
            # squeeze="slice" measures statistics in partial passes of the windows, counted as windows
            unit = " windows" if getattr(ev, "stage", "") in ("windows", "statistics") else " slices"
            self.bar = tqdm(total=ev.total, desc=self.label, unit=unit, file=self.file, disable=self.disable,
                            dynamic_ncols=True, leave=True)
        stage = getattr(ev, "stage", "")
        if stage in ("windows", "statistics"):
            self.bar.set_postfix_str("slice statistics" if stage == "statistics" else "", refresh=False)
        self.bar.update(ev.done - self.bar.n)
        if ev.done >= ev.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
