"""``segattn refine CKPT IMAGE [--gt GT] [--iterations 10]``: FANet's feedback loop to files.

Writes ``initial_mask``, ``iter_00`` ... ``iter_NN`` masks (same format as the input; PNG
inputs give TIFF masks) and ``metrics.csv`` (changed fraction, and metrics when --gt is given;
the row ``init`` scores the initial Otsu mask, row k the k-th prediction as released test.py)
into ``--out``: by default ``./<image>_refine`` in the current folder, never the data folder;
several inputs (or a folder) get one sub-folder per image.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import CLIError
from .argtypes import POSITIVE_INT, add_binarize, float_range
from ..tables import write_csv
from .evaluate_cmd import binarize_threshold, ground_truth
from .predict_cmd import add_common, load_cli_model, read_cli_image, refuse_existing, user_errors


def add_parser(sub) -> None:
    p = sub.add_parser("refine", help="FANet test-time feedback iterations, per-iteration masks + metrics")
    p.add_argument("checkpoint")
    p.add_argument("image", nargs="+", help="image(s) or a folder of images (one model load for all)")
    p.add_argument("--gt", default=None,
                   help="ground-truth mask for per-iteration metrics; with several inputs a folder of masks "
                        "with the images' file names")
    add_binarize(p, "ground truth")
    p.add_argument("--iterations", type=POSITIVE_INT, default=10)
    p.add_argument("--init", default="otsu", choices=["otsu", "empty", "full"], help="initial feedback mask")
    p.add_argument("--tol", type=float_range(0.0, 1.0, low_open=False, high_open=False), default=None,
                   help="stop once the changed-pixel fraction is <= TOL, or when the mask alternates between two "
                        "masks (a 2-cycle; default: never stop early, as released)")
    p.add_argument("--out", default=None,
                   help="output folder (default: ./<image name>_refine, or ./refine with several inputs, in "
                        "the current folder); several inputs get one sub-folder <image name>/ each")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--overwrite", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference import model_traits
    from ..inference.files import file_stem
    from .batch import expand_inputs, is_batch

    batch = is_batch(args.image)
    images = expand_inputs(args.image) if batch else [Path(args.image[0])]
    if batch:
        out = Path(args.out) if args.out else Path.cwd() / "refine"
        jobs = [(image, out / file_stem(image)) for image in images]
    else:
        out = Path(args.out) if args.out else Path.cwd() / (file_stem(images[0]) + "_refine")
        jobs = [(images[0], out)]
    _refuse_data_folder(out, images)
    gts = _ground_truths(args.gt, images, batch)
    plans = [_outputs(image, folder, args.iterations) for image, folder in jobs]
    refuse_existing([p for names in plans for p in names], args.overwrite)
    model = load_cli_model(args.checkpoint)
    traits = model_traits(model)
    if not traits.takes_mask:
        raise CLIError(f"{traits.name!r} takes no feedback mask; refine is for FANet-style models")
    if batch:
        print(f"refining {len(images)} input(s) into {out}/<image name>/", file=sys.stderr)
    for (image, folder), names, gt_path in zip(jobs, plans, gts):
        _refine_one(args, model, traits, image, folder, names, gt_path)
    return 0


def _refuse_data_folder(out: Path, images: list[Path]) -> None:
    """Masks and metrics.csv never land among the images (a later folder run would read them)."""
    holders = {p.resolve().parent for p in images}
    if out.resolve() in holders:
        raise CLIError(f"--out {out} is the folder of the input image(s); refine writes initial_mask, iter_NN "
                       "and metrics.csv, so choose another folder")


def _ground_truths(gt: str | None, images: list[Path], batch: bool) -> list[Path | None]:
    """One ground-truth file per input: ``--gt FILE`` for one image, ``--gt FOLDER`` (same names) for several."""
    if gt is None:
        return [None] * len(images)
    g = Path(gt)
    if not batch:
        return [g]
    if not g.is_dir():
        raise CLIError(f"--gt {gt}: with several inputs give a folder of masks with the images' file names")
    from .evaluate_cmd import roi_files

    try:
        found = roi_files(g, images)
    except CLIError as exc:
        raise CLIError(str(exc).replace("--roi", "--gt").replace("ROI mask", "ground-truth mask")) from None
    return [found[p] for p in images]


def _outputs(image: Path, folder: Path, iterations: int) -> list[Path]:
    from ..inference.files import NIFTI, matching_suffix

    ext = ".nii.gz" if matching_suffix(image) in NIFTI else ".tif"
    return ([folder / f"initial_mask{ext}"] + [folder / f"iter_{k:02d}{ext}" for k in range(iterations)]
            + [folder / "metrics.csv"])


def _refine_one(args, model, traits, image: Path, out: Path, names: list[Path], gt_path: Path | None) -> None:
    from ..inference import FANetRefiner
    from ..inference.files import read_image, write_array

    f, data, c, s = read_cli_image(str(image), model, args.channel_axis, args.slice_axis)
    with user_errors():
        gt = ground_truth(read_image(gt_path), traits, binarize_threshold(args, model)) if gt_path else None
        ref = FANetRefiner(model, data, init=args.init, ground_truth=gt, channel_axis=c, slice_axis=s,
                           device=args.device, batch_size=args.batch_size,
                           spacing=f.spacing if f.kind == "nifti" else None)
        write_array(names[0], ref.initial_mask, f, overwrite=args.overwrite)
        for r in ref.iter_run(max_iters=args.iterations, tol=args.tol):
            write_array(names[r.index + 1], r.mask, f, overwrite=args.overwrite)
            extra = "" if r.metrics is None else "  " + "  ".join(
                f"{k}={v:.4f}" for k, v in r.metrics.items() if k in ("dice", "iou", "precision", "recall"))
            print(f"{image.name} iteration {r.index}: changed {r.changed_fraction:.5f}{extra}")
    rows = ref.table() if gt is not None else [r.row() for r in ref.history]
    write_csv(names[-1], rows)
    print(f"wrote {len(ref.history)} iteration mask(s) and metrics.csv to {out}")
