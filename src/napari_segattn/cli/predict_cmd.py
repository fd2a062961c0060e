"""``segattn predict CKPT IMAGE --out OUT``: an image or a whole volume to a label file.

Also holds the helpers the other inspection commands share (checkpoint loading, reading an
image with its axes, turning core errors into one-line ``CLIError``s).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from . import CLIError
from .argtypes import NONNEGATIVE_INT, POSITIVE_INT


def add_tiling(p) -> None:
    """--tile / --overlap / --memory-budget, shared by the commands that predict."""
    p.add_argument("--tile", default="auto", metavar="N|HxW|auto|0",
                   help="sliding-window size; auto (default): whole slices that fit --memory-budget, windows "
                        "otherwise; 0: always whole")
    p.add_argument("--overlap", type=float, default=0.25, help="window overlap in [0, 1) (default 0.25)")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="activation memory one forward pass may use, e.g. 800M, 4G (default 1G)")
    p.add_argument("--squeeze", choices=["window", "slice"], default="window",
                   help="tiled FANet / PAM U-Nets: SE and InstanceNorm statistics of each window (default, fast) "
                        "or of the whole slice (closer to whole-slice inference: FANet Dice >= 0.999; "
                        "~3-10x the windows' cost)")


def tiling_args(args) -> dict:
    """``tile``/``overlap``/``memory_budget`` for the core from the parsed flags."""
    t = str(args.tile).lower()
    if t == "auto":
        tile = "auto"
    else:
        try:
            parts = [int(v) for v in t.split("x")]
        except ValueError:
            raise CLIError(f"--tile {args.tile!r}: give auto, 0, a size (512) or HxW (512x256)") from None
        if len(parts) not in (1, 2):
            raise CLIError(f"--tile {args.tile!r}: give auto, 0, a size (512) or HxW (512x256)")
        tile = parts[0] if len(parts) == 1 else tuple(parts)
    from ..inference.tiling import parse_bytes

    with user_errors():
        budget = parse_bytes(args.memory_budget)
    return {"tile": tile, "overlap": args.overlap, "memory_budget": budget, "squeeze": args.squeeze}


def add_common(p, *, device=True) -> None:
    p.add_argument("--channel-axis", type=int, default=None, help="axis of the channels (default: guessed)")
    p.add_argument("--slice-axis", type=int, default=None,
                   help="axis to cut a volume along (default: z for NIfTI, 0 for 3D TIFF)")
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="segment an image or volume with a checkpoint")
    p.add_argument("checkpoint", help="model file (.safetensors)")
    p.add_argument("image", nargs="+",
                   help="image or volume (.nii/.nii.gz, .tif, .png; .zarr / OME-Zarr, read window by window); "
                        "several files or a folder of images are predicted with one model load")
    p.add_argument("--out", required=True,
                   help="label file to write (.nii.gz keeps the input's header; .tif; .png); a .zarr store is "
                        "written block by block, with the probabilities and resumable (docs/large-images.md). "
                        "With several inputs or a folder: an output folder, one <name>.tif (<name>.nii.gz for "
                        "NIfTI) per input")
    p.add_argument("--probabilities", default=None,
                   help="also write the probabilities (.tif/.nii.gz, float32); with several inputs: a folder, "
                        "one <name>.tif (<name>.nii.gz) per input")
    add_tiling(p)
    p.add_argument("--level", type=NONNEGATIVE_INT, default=0, help="OME-Zarr input: the resolution level to predict on (0 = full)")
    p.add_argument("--chunk", type=POSITIVE_INT, default=None, help="zarr output: in-plane chunk size (default 512)")
    p.add_argument("--block", type=POSITIVE_INT, default=None,
                   help="zarr output: in-plane size of one unit of work, a multiple of --chunk (default 2048)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="zarr output: run the blocks as tasks on this dask.distributed scheduler "
                        "(e.g. tcp://host:8786); the workers must see the input and the output path")
    p.add_argument("--iterations", type=POSITIVE_INT, default=None,
                   help="FANet: feedback iterations from the Otsu mask (default 10, as released test.py; "
                        "also for .zarr output, each iteration over the whole image before the next)")
    p.add_argument("--init", default="otsu", choices=["otsu", "empty", "full"],
                   help="FANet: initial feedback mask (default otsu, as released)")
    p.add_argument("--threshold", type=float, default=0.5, metavar="T",
                   help="labels where the foreground probability > T (default 0.5, as released); multi-class: "
                        "a pixel takes its best non-background class k where p_k / (p_k + p_background) > T "
                        "(0.5 = argmax)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--no-amp", action="store_true", help="no float16 autocast on CUDA (plain float32)")
    prec.add_argument("--bf16", action="store_true",
                      help="bfloat16 autocast, also on CPU: 2-4x faster on CPUs with AMX/AVX512-BF16, "
                           "slower on others; probabilities change by up to a few 1e-2 (docs/performance.md)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_common(p)
    p.set_defaults(func=run)


@contextlib.contextmanager
def user_errors():
    """Core errors the user can fix, as CLIError (one line, exit 2)."""
    from ..data import DataError
    from ..devices import DeviceError
    from ..inference import GPUMemoryError, InputError
    from ..models import CheckpointError

    try:
        yield
    except (CheckpointError, InputError, DataError, GPUMemoryError, DeviceError, FileExistsError,
            FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None


def load_cli_model(path: str):
    from ..models import load_model

    from pathlib import Path

    p = Path(path)
    if p.is_dir():  # a training run folder: its best model, as the Model widget accepts
        if not (p / "model.safetensors").is_file():
            raise CLIError(f"{path} is a folder without model.safetensors; pass a .safetensors checkpoint "
                           "or a training run folder")
        p = p / "model.safetensors"
    with user_errors():
        return load_model(str(p), map_location="cpu")


def read_cli_image(path: str, model, channel_axis=None, slice_axis=None, level: int = 0):
    """``(ImageFile, data, channel_axis, slice_axis)`` for this model (zarr data stays lazy)."""
    from ..inference.files import guess_axes, read_image

    with user_errors():
        try:
            f = read_image(path, level)
            data, c, s = guess_axes(f, int(getattr(model, "in_channels", 1)), channel_axis, slice_axis)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    return f, data, c, s


def refuse_existing(paths, overwrite: bool) -> None:
    """Check every output before any work: never overwrite without --overwrite, nor start work
    whose outputs cannot be written (``refuse_unwritable``)."""
    existing = [str(p) for p in paths if p is not None and Path(p).exists()]
    if existing and not overwrite:
        raise CLIError(f"output exists: {', '.join(existing)}; pass --overwrite to replace")
    refuse_unwritable(paths)


def refuse_unwritable(paths) -> None:
    """A folder that cannot be written is said now, not after the model has run (or a whole
    training epoch)."""
    for folder in sorted({_existing_folder(Path(p)) for p in paths if p is not None}):
        why = _cannot_write(folder)
        if why:
            raise CLIError(f"cannot write the output into {folder}: {why}; choose another --out (nothing was run)")


def _existing_folder(path: Path) -> Path:
    """The folder an output will be created in, or its nearest existing ancestor (the rest is made)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _cannot_write(folder: Path) -> str | None:
    """Why nothing can be created in ``folder`` (a real try: permission bits say nothing for root
    or for /proc and /sys), or None."""
    import tempfile

    if not folder.is_dir():
        return "it is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def progress_printer(label: str):
    def show(ev) -> None:
        if sys.stderr.isatty():
            print(f"\r{label}: {ev.done}/{ev.total}", end="" if ev.done < ev.total else "\n", file=sys.stderr)

    return show


def run(args) -> int:
    from ..inference.checks import check_threshold
    from .batch import expand_inputs, is_batch, refuse_inputs

    with user_errors():
        check_threshold(args.threshold, "--threshold")
    if is_batch(args.image):
        return _run_batch(args, expand_inputs(args.image))
    refuse_inputs([args.out, args.probabilities], args.image)
    image = args.image[0]
    from ..inference.files import matching_suffix

    to_zarr = matching_suffix(args.out) == ".zarr"
    if not to_zarr:
        refuse_existing([args.out, args.probabilities], args.overwrite)
        _no_zarr_flags(args)
    tiling = tiling_args(args)
    model = load_cli_model(args.checkpoint)
    traits = model_traits_checked(args, model)
    f, data, c, s = read_cli_image(image, model, args.channel_axis, args.slice_axis, args.level)
    if to_zarr:
        return _run_zarr(args, model, traits, f, data, c, s, tiling)
    out = _predict_one(args, model, traits, tiling, f, data, c, s, args.out, args.probabilities)
    print(f"wrote {out}" + (f" and {args.probabilities}" if args.probabilities else ""))
    return 0


def _no_zarr_flags(args) -> None:
    for flag in ("scheduler", "chunk", "block"):
        if getattr(args, flag) is not None:
            raise CLIError(f"--{flag} is for zarr output (--out something.zarr)")


def model_traits_checked(args, model):
    from ..inference import model_traits

    traits = model_traits(model)
    if args.iterations is not None and not traits.takes_mask:
        raise CLIError(f"--iterations is for FANet-style models; {traits.name!r} takes no feedback mask")
    return traits


def _run_batch(args, images: list[Path]) -> int:
    """Several inputs: the model loaded once, one label file per input in the --out folder."""
    from ..inference.files import file_stem, matching_suffix
    from .batch import label_suffix, refuse_inputs

    out_dir = Path(args.out)
    if matching_suffix(out_dir) == ".zarr":
        raise CLIError("zarr output (--out X.zarr) takes one input; with several inputs --out is a folder")
    if (out_dir.exists() and not out_dir.is_dir()) or (not out_dir.exists() and matching_suffix(out_dir) in
                                                       (".tif", ".tiff", ".png", ".nii", ".nii.gz", ".jpg")):
        raise CLIError(f"with {len(images)} inputs --out is the folder to write into, not a file ({out_dir})")
    _no_zarr_flags(args)
    prob_dir = Path(args.probabilities) if args.probabilities else None
    if prob_dir is not None and prob_dir.resolve() == out_dir.resolve():
        raise CLIError("--probabilities must be another folder than --out (the file names are the same)")
    outs = [out_dir / f"{file_stem(p)}{label_suffix(p)}" for p in images]
    probs = [prob_dir / o.name if prob_dir is not None else None for o in outs]
    refuse_inputs(outs + probs, images)
    refuse_existing(outs + probs, args.overwrite)
    tiling = tiling_args(args)
    model = load_cli_model(args.checkpoint)
    traits = model_traits_checked(args, model)
    print(f"predicting {len(images)} input(s) into {out_dir}" + (f" (probabilities into {prob_dir})" if prob_dir else ""),
          file=sys.stderr)
    failed = []
    for image, out, prob in zip(images, outs, probs):
        try:  # one unreadable or unsuitable file is reported and skipped; the others still run
            f, data, c, s = read_cli_image(str(image), model, args.channel_axis, args.slice_axis, args.level)
            if f.kind == "zarr":
                raise CLIError(f"a zarr input is predicted alone (segattn predict CKPT {image} --out X.zarr)")
            written = _predict_one(args, model, traits, tiling, f, data, c, s, out, prob)
        except CLIError as exc:
            failed.append(image.name)
            print(f"segattn predict: skipped {image.name} ({exc})", file=sys.stderr)
            continue
        print(f"wrote {written}" + (f" and {prob}" if prob else ""))
    if failed:
        raise CLIError(f"{len(failed)} of {len(images)} input(s) failed and were skipped: {', '.join(failed[:5])}"
                       + (f" and {len(failed) - 5} more" if len(failed) > 5 else ""))
    return 0


def _predict_one(args, model, traits, tiling, f, data, c, s, out, probabilities):
    """Labels (and probabilities) of one image into ``out``; returns the path written."""
    from ..inference import FANetRefiner, predict
    from ..inference.files import write_array
    from .progress import ProgressBar

    with user_errors():
        if traits.takes_mask:
            n = 10 if args.iterations is None else args.iterations
            ref = FANetRefiner(model, data, init=args.init, channel_axis=c, slice_axis=s, device=args.device,
                               batch_size=args.batch_size, amp=_amp(args), threshold=args.threshold, **tiling)
            with ProgressBar("FANet iterations") as bar:
                last = None
                for i, last in enumerate(ref.iter_run(max_iters=n, tol=None), 1):
                    bar(_Iter(i, n))
            labels, probs = last.mask, last.probabilities[None]
            print(f"FANet: {n} iteration(s); last changed fraction {last.changed_fraction:.5f}", file=sys.stderr)
        else:
            with ProgressBar("predict") as bar:
                pred = predict(model, data, channel_axis=c, slice_axis=s, device=args.device,
                               batch_size=args.batch_size, amp=_amp(args), threshold=args.threshold, progress=bar,
                               **tiling)
            labels, probs = pred.labels, pred.probabilities
        try:
            written = write_array(out, labels, f, overwrite=args.overwrite)
            if probabilities:
                # channels last so NIfTI keeps (x, y, z) for the spatial axes
                import numpy as np

                write_array(probabilities, np.moveaxis(probs, 0, -1) if probs.shape[0] > 1 else probs[0], f,
                            overwrite=args.overwrite, labels=False)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    return written


class _Iter:
    """A progress event for one FANet iteration (the refiner yields results, not counts)."""

    stage = "iterations"

    def __init__(self, done: int, total: int) -> None:
        self.done, self.total = done, total


def _run_zarr(args, model, traits, f, data, c, s, tiling) -> int:
    """``--out X.zarr``: block by block into the store, resumable, optionally on a dask cluster."""
    from ..inference.chunked import predict_to_zarr
    from .progress import ProgressBar

    if args.probabilities:
        raise CLIError("a .zarr --out holds the probabilities already (array 'probabilities'); drop --probabilities")
    iterations = (10 if args.iterations is None else args.iterations) if traits.takes_mask else 1
    client = None
    if args.scheduler:
        try:
            from distributed import Client

            client = Client(args.scheduler, timeout="3s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise CLIError(f"cannot reach the dask scheduler at {args.scheduler}: {exc}") from None
    try:
        with user_errors(), ProgressBar("predict") as bar:
            res = predict_to_zarr(model, data, args.out, channel_axis=c, slice_axis=s, device=args.device,
                                  batch_size=args.batch_size, amp=_amp(args),
                                  mask=args.init if traits.takes_mask else None, chunk=args.chunk, block=args.block,
                                  overwrite=args.overwrite, client=client, source_name=str(f.path.resolve()),
                                  iterations=iterations, threshold=args.threshold, progress=bar, **tiling)
    finally:
        if client is not None:
            client.close()
    resumed = f" ({res.blocks_done_before} of {res.blocks_total} blocks were already done)" if res.blocks_done_before else ""
    what = f"labels, probabilities after {iterations} FANet iterations" if traits.takes_mask else "labels, probabilities"
    print(f"wrote {res.path} ({what}){resumed}")
    return 0


def _amp(args) -> bool | str:
    return "bf16" if args.bf16 else not args.no_amp
