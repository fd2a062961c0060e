"""The one error type for bad input data, so callers (CLI, widgets) can show it as a user error."""

from __future__ import annotations


class DataError(ValueError):
    """Data that cannot be used as given; the message names the file/sample and says what to do."""


class SegattnWarning(UserWarning):
    """A result that is computed but may mislead (NaN metrics, a diverging run); the CLI prints it
    as ``segattn X: warning: ...``."""


def few(items, n: int = 5) -> str:
    """A short, readable list of the first ``n`` items (for messages about many files)."""
    items = [str(i) for i in items]
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more
