"""The ``segattn`` command line. Each ``*_cmd`` module in this package adds one sub-command.

A command module defines ``add_parser(subparsers)``; the parser it adds sets ``func``
(called with the parsed args, returning an exit code).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
import sys
import warnings

__all__ = ["main", "build_parser", "CLIError"]


class CLIError(Exception):
    """A user-facing error: printed as one clear line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is the one line ``segattn X: error: ...`` (exit 2) that every
    other user error prints; ``segattn X --help`` shows the usage. Sub-parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _user_error_types() -> tuple[type[BaseException], ...]:
    """The project's own error types: their messages are written for the user (one line)."""
    from ..data import DataError
    from ..devices import DeviceError
    from ..inference import GPUMemoryError, InputError
    from ..models import CheckpointError
    from ..training import TrainingError

    return (CLIError, DataError, InputError, CheckpointError, DeviceError, GPUMemoryError, TrainingError)


def _show_warning(message, category, filename, lineno, file=None, line=None, *, command: str = "") -> None:
    """Our own warnings as ``segattn X: warning: ...``; other libraries' keep Python's format."""
    from ..data.errors import SegattnWarning

    if issubclass(category, SegattnWarning):
        print(f"segattn {command}: warning: {message}", file=file or sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), end="", file=file or sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segattn",
        description="Attention in medical image segmentation: train, predict, refine, explain.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"{__name__}.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed in one line)
        return int(exc.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    old_show = warnings.showwarning
    warnings.showwarning = functools.partial(_show_warning, command=args.command)
    try:
        return int(args.func(args) or 0)
    except _user_error_types() as exc:
        msg = str(exc).strip().replace("\n", " ")
        print(f"segattn {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"segattn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stdout = None
        return 0
    finally:
        warnings.showwarning = old_show
