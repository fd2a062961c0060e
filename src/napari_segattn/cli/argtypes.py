"""argparse ``type=`` callables that check the range, so ``--batch-size 0`` or ``--lr -1`` is
refused while parsing, with the allowed range in the message (``segattn train: error: argument
--lr: must be a number > 0, got '-1'``), instead of a torch/captum error or a silent result."""

from __future__ import annotations

import argparse
import math

__all__ = ["int_range", "float_range", "POSITIVE_INT", "NONNEGATIVE_INT", "POSITIVE_FLOAT", "add_binarize"]


def int_range(minimum: int, maximum: int | None = None):
    bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text!r}") from None
        if v < minimum or (maximum is not None and v > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {text!r}")
        return v

    parse.__name__ = f"integer {bound}"
    return parse


def float_range(low: float, high: float = math.inf, *, low_open: bool = True, high_open: bool = True):
    """A finite float in the interval (``low_open``/``high_open`` say which ends are excluded)."""
    if high == math.inf:
        bound = f"{'>' if low_open else '>='} {low:g}"
    else:
        bound = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}") from None
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"must be a number {bound}, got {text!r}")
        return v

    parse.__name__ = f"number {bound}"
    return parse


POSITIVE_INT = int_range(1)
NONNEGATIVE_INT = int_range(0)
POSITIVE_FLOAT = float_range(0.0)


def add_binarize(p, what: str = "labels") -> None:
    """``--binarize`` (labels > 0 are foreground) or ``--binarize T`` (labels > T, e.g. 127 for
    JPEG masks, whose compression noise 1..5 would otherwise count as foreground). Parsed value:
    None (not given), 0.0 or T."""
    p.add_argument("--binarize", nargs="?", const=0.0, default=None, metavar="T",
                   type=float_range(0.0, low_open=False),
                   help=f"{what} > T are foreground (T default 0; e.g. --binarize 127 for JPEG masks)")
