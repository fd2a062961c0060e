"""Predict a folder of images (or several arrays) with one model and save a mask per image.

The GUI's batch mode and ``segattn predict`` with several inputs share this: one model load,
one label file per input named after it (NIfTI stays NIfTI so its header is kept, the rest is
TIFF), nothing overwritten unless asked, an input never overwritten at all. A file that cannot
be read or predicted is reported and skipped; the others still run (a batch of 200 files
should not die on file 117).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .files import NIFTI, RASTER, TIFF, file_stem, matching_suffix
from .layout import InputError
from .predict import Cancelled

__all__ = ["BatchProgress", "BatchItem", "images_in", "label_suffix", "plan_outputs", "predict_labels",
           "iter_predict_files"]


@dataclass
class BatchProgress:
    """After each input: ``done`` of ``total`` inputs, and what happened to the last one."""

    done: int
    total: int
    item: "BatchItem"
    stage: str = "images"


@dataclass
class BatchItem:
    source: Path
    output: Path | None  # None: failed
    seconds: float
    foreground: float | None = None  # share of labelled pixels (a quick sanity number)
    error: str | None = None


def is_store(p: Path) -> bool:
    """A zarr store is a folder but one image."""
    return p.name.lower().endswith(".zarr") or any((p / m).exists() for m in (".zarray", ".zgroup", "zarr.json"))


def images_in(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder`` (not its sub-folders), sorted; zarr stores count."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found = [p for p in sorted(folder.iterdir())
             if not p.name.startswith(".") and ((p.is_file() and matching_suffix(p) in NIFTI + TIFF + RASTER)
                                                or (p.is_dir() and is_store(p)))]
    if not found:
        raise InputError(f"{folder}: no images in this folder (.nii/.nii.gz, .tif, .png, .jpg, .zarr)")
    return found


def label_suffix(image: Path) -> str:
    """The label file type written for an input: NIfTI stays NIfTI (its header kept), others TIFF."""
    return ".nii.gz" if matching_suffix(image) in NIFTI else ".tif"


def plan_outputs(inputs: list[Path], out_dir: str | Path, overwrite: bool = False) -> list[Path]:
    """One output path per input in ``out_dir``; refused before any work: two inputs with one
    name, an output that is an input, or (without ``overwrite``) an output that exists."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"the output folder {out_dir} is a file")
    outs = [out_dir / f"{file_stem(p)}{label_suffix(p)}" for p in inputs]
    seen: dict[Path, Path] = {}
    for p, o in zip(inputs, outs):
        other = seen.setdefault(o, p)
        if other != p:
            raise InputError(f"{other.name} and {p.name} would both write {o.name}")
    ins = {Path(p).resolve() for p in inputs}
    for o in outs:
        if o.resolve() in ins:
            raise InputError(f"the output {o} is an input; choose another output folder (inputs are never overwritten)")
    existing = [o.name for o in outs if o.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise InputError(f"{out_dir} already holds {', '.join(existing[:3])}{more}; tick overwrite or choose "
                         "another folder")
    return outs


def predict_labels(model, data, *, channel_axis=None, slice_axis=None, iterations: int = 10, device="auto",
                   cancel: Callable[[], bool] | None = None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, probabilities)`` of one image: ``predict`` for a plain model, ``iterations``
    FANet feedback steps from the Otsu mask (released test.py) for a feedback model."""
    from . import FANetRefiner, model_traits, predict

    if model_traits(model).takes_mask:
        ref = FANetRefiner(model, data, channel_axis=channel_axis, slice_axis=slice_axis, device=device, **kwargs)
        last = None
        for last in ref.iter_run(max_iters=iterations, tol=None, cancel=cancel):
            pass
        return last.mask, last.probabilities[None]
    pred = predict(model, data, channel_axis=channel_axis, slice_axis=slice_axis, device=device, cancel=cancel,
                   **kwargs)
    return pred.labels, pred.probabilities


def iter_predict_files(model, inputs: list[Path], out_dir: str | Path, *, iterations: int = 10, device="auto",
                       overwrite: bool = False, cancel: Callable[[], bool] | None = None,
                       **kwargs) -> Iterator[BatchProgress]:
    """Generator over the inputs: read, predict, write ``out_dir/<name>.tif`` (or .nii.gz);
    yields a :class:`BatchProgress` per input, *returns* the list of :class:`BatchItem`.
    Outputs are checked (:func:`plan_outputs`) before the first prediction."""
    from .files import guess_axes, read_image, write_array

    inputs = [Path(p) for p in inputs]
    outs = plan_outputs(inputs, out_dir, overwrite)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    in_channels = int(getattr(model, "in_channels", 1))
    items: list[BatchItem] = []
    for k, (src, out) in enumerate(zip(inputs, outs), 1):
        if cancel is not None and cancel():
            raise Cancelled(f"batch cancelled after {k - 1} of {len(inputs)} images")
        t0 = time.perf_counter()
        try:
            f = read_image(src)
            data, c, s = guess_axes(f, in_channels)
            labels, _ = predict_labels(model, data, channel_axis=c, slice_axis=s, iterations=iterations,
                                       device=device, cancel=cancel, **kwargs)
            written = write_array(out, labels, f, overwrite=overwrite)
            item = BatchItem(src, Path(written), time.perf_counter() - t0, float(np.mean(labels > 0)))
        except Cancelled:
            raise
        except Exception as exc:  # noqa: BLE001 -- one bad file is reported, the batch goes on
            item = BatchItem(src, None, time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
        items.append(item)
        yield BatchProgress(k, len(inputs), item)
    return items
