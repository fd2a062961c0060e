"""Prediction into a zarr store, block by block: bounded memory, resumable, parallel on dask.

The output is cut into *blocks* (a slice's in-plane region, a multiple of the store's chunks),
so no two blocks ever write the same chunk: blocks can run in any order, on threads or on
the workers of a dask.distributed cluster, without locks. Each block is blended exactly from
the windows of the slice's global window grid that touch it (``tiling.iter_blend_block``),
so the store holds the same numbers as an in-memory tiled ``predict``. With
``squeeze="slice"`` the slice-wide SE / InstanceNorm statistics (``inference.global_squeeze``)
are measured once per slice (and FANet iteration) before its blocks and travel with them.

Store layout (a zarr group): ``labels`` (the image's spatial shape, uint8), optionally
``probabilities`` (``(K, *spatial)`` float32), ``done`` (one uint8 per block: the number of
iterations whose data the block has written, set after the write: an interrupted run says which
blocks are finished and a rerun resumes with the rest), and ``attrs["segattn"]`` (model, input,
tiling and a fingerprint). A store that holds a different result (another fingerprint) is
refused unless ``overwrite``.

FANet's feedback iterations (``iterations`` > 1): every block of iteration i is finished before
iteration i + 1 starts, because a window near a block's border reads the mask of its
neighbours. Intermediate masks go to ``feedback`` (``(2, *spatial)`` uint8) in turn: iteration
i writes ``feedback[i % 2]`` and reads ``feedback[(i - 1) % 2]``, so a resumed iteration still
finds the mask it started from; the last iteration writes ``labels`` and ``probabilities``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .layout import InputError
from .masks import class_labels
from .tiling import (
    DEFAULT_OVERLAP,
    TileProgress,
    WindowGrid,
    _padded_reader,
    choose_window,
    iter_blend_block,
    make_grid,
    model_forward,
    stride_padded,
)

__all__ = ["ZarrPrediction", "iter_predict_to_zarr", "predict_to_zarr", "DEFAULT_CHUNK", "DEFAULT_BLOCK"]

#: in-plane chunk of the output arrays (slices are chunked one by one)
DEFAULT_CHUNK = 512
#: in-plane block (unit of work): larger blocks recompute fewer windows at their borders
DEFAULT_BLOCK = 2048


@dataclass
class ZarrPrediction:
    """Where the result was written and how much of it was done in this call."""

    path: Path
    blocks_total: int
    blocks_done_before: int  # finished by an earlier (interrupted) run and skipped
    windows: int  # windows computed in this call
    seconds: float
    info: dict = field(default_factory=dict)

    def open(self):
        import zarr

        return zarr.open_group(str(self.path), mode="r")


@dataclass
class _Job:
    """Everything one block needs; pickled to dask workers (the model goes along)."""

    model: object
    traits: object
    source: object  # tiling.RawWindows with its normalisation statistics filled in
    masks: np.ndarray | None
    grid: WindowGrid | None
    hw: tuple[int, int]
    layout: object
    path: str
    k: int
    threshold: float
    device: str
    amp: object
    batch_size: int
    with_probabilities: bool
    iteration: int = 0  # FANet feedback iteration of this job (0: from the initial masks)
    iterations: int = 1
    #: ``squeeze="slice"``: slice -> (indices into ``stat_layers(net)``, their statistics on the
    #: host), measured once per slice and iteration before its blocks run (small vectors)
    stats: dict | None = None

    @property
    def last(self) -> bool:
        return self.iteration == self.iterations - 1

    def spatial_index(self, z: int, sy: slice, sx: slice) -> tuple:
        """Index of a block in the output's spatial order (slice axis where the caller had it)."""
        if not self.layout.is_volume:
            return sy, sx
        idx = [sy, sx]
        idx.insert(self.layout.slice_pos, z)
        return tuple(idx)


def _block_regions(hw: tuple[int, int], block: tuple[int, int]) -> list[tuple[slice, slice]]:
    return [(slice(y, min(y + block[0], hw[0])), slice(x, min(x + block[1], hw[1])))
            for y in range(0, hw[0], block[0]) for x in range(0, hw[1], block[1])]


def _readers(job: _Job, z: int):
    """``(read, mread)`` of slice ``z``: its normalised windows and the feedback mask this
    iteration starts from (None for models without one)."""
    import zarr

    read = lambda sy, sx: job.source.read(z, sy, sx)  # noqa: E731
    mread = None
    if job.masks is not None and job.iteration == 0:
        mread = lambda sy, sx: job.masks[z][sy, sx]  # noqa: E731
    elif job.masks is not None:  # the previous iteration's mask, as stored (see the module doc)
        previous = zarr.open_group(job.path, mode="r")["feedback"]
        mread = lambda sy, sx: previous[((job.iteration - 1) % 2, *job.spatial_index(z, sy, sx))] > 0  # noqa: E731
    if job.grid is not None and job.grid.image != tuple(job.hw):  # windows past the border (tiling.stride_padded)
        read = _padded_reader(read, job.hw, "reflect")
        mread = mread and _padded_reader(mread, job.hw, "constant")
    return read, mread


def measure_slice_stats(job: _Job, slices, cancel=None) -> dict:
    """``squeeze="slice"``: the SE / InstanceNorm statistics of each slice in ``slices`` for
    this iteration (``inference.global_squeeze``), so every block of a slice uses the same ones
    and blocks stay independent."""
    import torch

    from ..devices import resolve_device
    from .global_squeeze import slice_stats, stat_layers
    from .predict import _eval_on, use_channels_last

    dev = resolve_device(job.device)
    out = {}
    with _eval_on(job.model, dev, use_channels_last(job.traits, dev), fold=True) as net:
        index = {id(layer): i for i, layer in enumerate(stat_layers(net))}
        for z in slices:
            read, mread = _readers(job, z)
            order, stats = slice_stats(net, read, mread, job.grid, getattr(job.model, "stride", 1),
                                       max(1, job.batch_size), cancel)
            out[z] = ([index[id(layer)] for layer in order], [s.to(torch.device("cpu")) for s in stats])
    return out


def _fixed_slice_stats(job: _Job, z: int, net, dev):
    """The context in which ``net`` uses slice ``z``'s measured statistics (none: nothing)."""
    import contextlib

    if job.stats is None:
        return contextlib.nullcontext()
    from .global_squeeze import fixed_stats, stat_layers

    indices, stats = job.stats[z]
    layers = stat_layers(net)
    return fixed_stats([layers[i] for i in indices], [s.to(dev) for s in stats])


def run_block(job: _Job, z: int, b: int, region: tuple[slice, slice], cancel=None) -> Iterator[int]:
    """Compute one block, write it, mark it done; yields windows done, returns the count."""
    import torch
    import zarr

    from ..devices import resolve_device
    from .predict import _eval_on, use_channels_last

    torch.set_num_threads(max(1, torch.get_num_threads()))
    dev = resolve_device(job.device)
    grid = job.grid if job.grid is not None else make_grid(job.hw, job.hw, 0.0)
    read, mread = _readers(job, z)
    cl = use_channels_last(job.traits, dev)
    n = 0
    with _eval_on(job.model, dev, cl, fold=True) as net, _fixed_slice_stats(job, z, net, dev):
        gen = iter_blend_block(model_forward(net, job.traits, dev, job.amp, cl), read, grid, job.k, region=region,
                               mask=mread, batch_size=job.batch_size, cancel=cancel)
        while True:
            try:
                n = next(gen)
                yield n
            except StopIteration as stop:
                probs = stop.value
                break
    if job.traits.binary:
        labels = (probs[0] > job.threshold).astype(np.uint8)
    else:
        labels = class_labels(probs, job.threshold)
    g = zarr.open_group(job.path, mode="r+")
    idx = job.spatial_index(z, *region)
    if job.last:
        g["labels"][idx] = labels
        if job.with_probabilities:
            g["probabilities"][(slice(None), *idx)] = probs
    else:
        g["feedback"][(job.iteration % 2, *idx)] = labels
    g["done"][z, b] = job.iteration + 1  # last: a block marked done has all its data on disk
    return n


def _block_task(job: _Job, z: int, b: int, region: tuple[slice, slice]) -> int:
    """A dask task: one block, blocking."""
    gen = run_block(job, z, b, region)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _fingerprint(model, meta: dict) -> str:
    h = hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode())
    for t in list(model.state_dict().values()):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _content_digest(image) -> str | None:
    """sha1 of an in-memory image (so a store is never resumed with another image of the same
    shape); lazy inputs are named by ``source_name`` (the CLI passes the path)."""
    if isinstance(image, np.ndarray):
        return "sha1:" + hashlib.sha1(np.ascontiguousarray(image).view(np.uint8).ravel()).hexdigest()
    store = getattr(image, "store", None)
    return None if store is None else str(store)


def _open_store(path: Path, fingerprint: str, meta: dict, shapes: dict, overwrite: bool):
    """Create the store, or reopen one holding this very result (resume); refuse others."""
    import zarr

    if path.exists():
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            raise InputError(f"{path} is read-only; choose another --out")
        try:
            old = zarr.open_group(str(path), mode="r")
            same = old.attrs.get("segattn", {}).get("fingerprint") == fingerprint
        except Exception:  # not a zarr group at all
            same = False
        if same and not overwrite:
            return zarr.open_group(str(path), mode="r+")
        if not overwrite:
            raise InputError(f"{path} already holds a different result (other model, input or settings); "
                             "pass --overwrite to replace it")
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif path.parent.exists() and not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot create {path}: {path.parent} is read-only")
    g = zarr.open_group(str(path), mode="w")
    for name, (shape, chunks, dtype) in shapes.items():
        g.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    g.attrs["segattn"] = {**meta, "fingerprint": fingerprint}
    return g


def iter_predict_to_zarr(
    model,
    image,
    out: str | os.PathLike,
    *,
    channel_axis: int | None = None,
    slice_axis: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    amp: bool | str = True,
    mask: np.ndarray | str | None = None,
    threshold: float = 0.5,
    tile="auto",
    overlap: float = DEFAULT_OVERLAP,
    memory_budget=None,
    chunk: int | None = None,
    block: int | None = None,
    probabilities: bool = True,
    overwrite: bool = False,
    cancel: Callable[[], bool] | None = None,
    client=None,
    source_name: str | None = None,
    iterations: int = 1,
    squeeze: str = "window",
) -> Iterator[TileProgress]:
    """Generator: predict ``image`` (numpy, zarr or dask; read window by window) into the zarr
    store ``out``; yields :class:`TileProgress` (windows), *returns* a :class:`ZarrPrediction`.

    ``chunk``: in-plane chunk of the output (default 512); ``block``: in-plane size of one
    unit of work, a multiple of ``chunk`` (default 2048 rounded to it; a whole slice when the
    slice runs whole). ``client``: a ``dask.distributed.Client``; blocks then run as tasks on
    its workers (which must see ``out`` and the input) and this generator only reports.
    ``iterations``: FANet feedback iterations from the initial mask (the released test loop),
    each over the whole image before the next. ``squeeze="slice"``: tiled windows use the SE and
    InstanceNorm statistics of the whole slice (as ``predict``), measured here once per slice and
    iteration before its blocks run (not counted in the progress).
    """
    from ..devices import resolve_device
    from .masks import initial_masks
    from .predict import prepare_source
    from .traits import model_traits

    t0 = time.perf_counter()
    if squeeze not in ("window", "slice"):
        raise InputError(f"squeeze must be 'window' or 'slice', got {squeeze!r}")
    traits = model_traits(model)
    layout, source = prepare_source(traits, image, channel_axis=channel_axis, slice_axis=slice_axis)
    hw, n = source.hw, layout.n_slices
    dev = resolve_device(device)
    per_forward = 1 if dev.type == "cpu" else batch_size
    window = choose_window(hw, model_name=traits.name, tile=tile, memory_budget=memory_budget, per_forward=per_forward,
                           overlap=overlap, stride=int(getattr(model, "stride", 1) or 1))
    chunk_hw = _pair_of(chunk or DEFAULT_CHUNK, hw, "chunk")
    if window is None:
        block_hw = hw  # the whole slice runs at once: one block per slice
        if block is not None:
            raise InputError("--block needs a tiled run (the slice fits the memory budget and runs whole); "
                             "give --tile as well")
    else:
        if block is None:
            block_hw = tuple(min(h, max(c, math.ceil(DEFAULT_BLOCK / c) * c)) for h, c in zip(hw, chunk_hw))
        else:
            block_hw = _pair_of(block, hw, "block")
            bad = [(b, c) for b, h, c in zip(block_hw, hw, chunk_hw) if b % c and b < h]
            if bad:
                raise InputError(f"block {block_hw[0]}x{block_hw[1]} is not a multiple of the chunk "
                                 f"{chunk_hw[0]}x{chunk_hw[1]}: two blocks would write one chunk")
    masks = None
    if traits.takes_mask:
        if mask is None or isinstance(mask, str):
            masks = np.concatenate([initial_masks(source.raw(z)[None], mask or "otsu") for z in range(n)])
        else:
            masks = layout.spatial_to_stack(np.asarray(mask)).astype(bool)
    elif mask is not None:
        raise InputError(f"model {traits.name!r} takes no feedback mask")
    if not 1 <= int(iterations) <= 255:
        raise InputError(f"iterations must be 1..255; got {iterations}")
    iterations = int(iterations)
    if iterations > 1 and not traits.takes_mask:
        raise InputError(f"iterations are FANet's feedback loop; {traits.name!r} takes no feedback mask")
    k = 1 if traits.binary else traits.out_channels
    regions = _block_regions(hw, block_hw)
    spatial = layout.spatial_shape
    out_chunks = list(chunk_hw)
    if layout.is_volume:
        out_chunks.insert(layout.slice_pos, 1)
    out_chunks = tuple(min(c, s) for c, s in zip(out_chunks, spatial))
    shapes = {"labels": (spatial, out_chunks, "u1"), "done": ((n, len(regions)), (1, 1), "u1")}
    if probabilities:
        shapes["probabilities"] = ((k, *spatial), (k, *out_chunks), "f4")
    if iterations > 1:
        shapes["feedback"] = ((2, *spatial), (1, *out_chunks), "u1")
    meta = {"model": traits.name, "config": getattr(model, "segattn_config", None), "input_shape": list(image.shape),
            "input_dtype": str(image.dtype), "channel_axis": channel_axis, "slice_axis": slice_axis,
            "source": source_name or _content_digest(image), "window": None if window is None else list(window), "overlap": overlap,
            "threshold": threshold, "block": list(block_hw), "chunks": list(out_chunks),
            "mask": mask if isinstance(mask, str) or mask is None else "array", "probabilities": probabilities}
    if iterations > 1:
        meta["iterations"] = iterations  # (absent for one pass: stores written before stay resumable)
    slice_wide = squeeze == "slice" and window is not None  # whole slices have their own statistics
    if slice_wide:
        meta["squeeze"] = squeeze  # (absent by default, as iterations)
    path = Path(out)
    store = _open_store(path, _fingerprint(model, meta), meta, shapes, overwrite)
    done = np.asarray(store["done"][:])
    source.prepare()  # whole-slice / whole-volume statistics once, before the blocks
    grid = None if window is None else make_grid(stride_padded(hw, model), window, overlap)
    job = _Job(model, traits, source, masks, grid, hw, layout, str(path), k, threshold, str(dev), amp, batch_size,
               probabilities)
    windows_of = lambda r: len(grid.touching(r)) if grid is not None else 1  # noqa: E731
    total = iterations * n * sum(windows_of(r) for r in regions)
    finished = sum(int(done[z, b]) * windows_of(r) for z in range(n) for b, r in enumerate(regions))
    computed = 0
    yield TileProgress(finished, total)
    for it in range(iterations):
        todo = [(z, b, r) for z in range(n) for b, r in enumerate(regions) if done[z, b] <= it]
        job_it = dataclasses.replace(job, iteration=it, iterations=iterations)
        if slice_wide and todo:
            job_it = dataclasses.replace(job_it, stats=measure_slice_stats(job_it, sorted({z for z, _, _ in todo}),
                                                                           cancel))
        for step in _run_blocks(job_it, todo, windows_of, client, cancel):
            yield TileProgress(finished + step, total)
        step = sum(windows_of(r) for _, _, r in todo)
        finished += step
        computed += step
    return ZarrPrediction(path, n * len(regions), int((done >= iterations).sum()), computed, time.perf_counter() - t0,
                          info={"window": None if window is None else list(window), "block": list(block_hw),
                                "chunks": list(out_chunks), "distributed": client is not None})


def _run_blocks(job: _Job, todo, windows_of, client, cancel) -> Iterator[int]:
    """One iteration's blocks, here or as dask tasks; yields windows finished in this call."""
    finished = 0
    if client is None:
        for (z, b, r) in todo:
            gen = run_block(job, z, b, r, cancel)
            while True:
                try:
                    w = next(gen)
                except StopIteration:
                    break
                yield finished + w
            finished += windows_of(r)
        return
    from distributed import as_completed

    from .predict import Cancelled

    futures = {client.submit(_block_task, job, z, b, r, pure=False): windows_of(r) for (z, b, r) in todo}
    try:
        for fut in as_completed(list(futures)):
            fut.result()  # re-raises a task's error here
            finished += futures[fut]
            yield finished
            if cancel is not None and cancel():
                raise Cancelled("prediction cancelled")
    finally:
        client.cancel([f for f in futures if not f.done()])


def _pair_of(v, hw, what: str) -> tuple[int, int]:
    t = (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(x) for x in v)
    if len(t) != 2 or min(t) < 1:
        raise InputError(f"{what} must be a positive size or (height, width); got {v!r}")
    return tuple(min(a, h) for a, h in zip(t, hw))  # type: ignore[return-value]


def predict_to_zarr(model, image, out, *, progress: Callable | None = None, **kwargs) -> ZarrPrediction:
    """Blocking :func:`iter_predict_to_zarr`."""
    from .predict import drive

    return drive(iter_predict_to_zarr(model, image, out, **kwargs), progress)
