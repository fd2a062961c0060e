"""Several inputs in one call (``predict``/``refine``): files and folders, one model load.

A folder stands for the image files in it (not its sub-folders; a ``.zarr`` store is one
input). Outputs are named after each input's stem in the output folder, so two inputs with the
same stem, or an output that would be an input, are refused before any work.
"""

from __future__ import annotations

from pathlib import Path

from . import CLIError

__all__ = ["is_batch", "expand_inputs", "refuse_inputs", "label_suffix"]


def is_batch(paths: list[str]) -> bool:
    """More than one input, or a folder of images."""
    from ..inference.batch import is_store

    return len(paths) > 1 or any(Path(p).is_dir() and not is_store(Path(p)) for p in paths)


def _images_in(folder: Path) -> list[Path]:
    from ..inference import InputError
    from ..inference.batch import images_in

    try:
        return images_in(folder)
    except InputError as exc:
        raise CLIError(str(exc)) from None


def expand_inputs(paths: list[str]) -> list[Path]:
    """The input files in order, folders expanded; refused: a missing path, two inputs whose
    outputs would share a name."""
    from ..inference.batch import is_store
    from ..inference.files import file_stem

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CLIError(f"{p}: no such file or folder")
        out += _images_in(p) if p.is_dir() and not is_store(p) else [p]
    seen: dict[str, Path] = {}
    for p in out:
        other = seen.setdefault(file_stem(p), p)
        if other != p:
            raise CLIError(f"{other} and {p} would write outputs of the same name ({file_stem(p)}); "
                           "predict them in separate calls")
    return out


def refuse_inputs(outputs, inputs) -> None:
    """An output path that is an input (or a folder holding one) is refused, even with --overwrite."""
    ins = {Path(p).resolve() for p in inputs}
    for o in outputs:
        if o is not None and Path(o).resolve() in ins:
            raise CLIError(f"the output {o} is an input; choose another --out (inputs are never overwritten)")


def label_suffix(image: Path) -> str:
    """The label file type written for an input (``inference.batch.label_suffix``)."""
    from ..inference.batch import label_suffix as suffix

    return suffix(image)
