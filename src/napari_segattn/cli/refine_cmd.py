"""``segattn refine CKPT IMAGE [--gt GT] [--iterations 10]``: FANet's feedback loop to files.

Writes ``initial_mask``, ``iter_00`` ... ``iter_NN`` masks (same format as the input; PNG
inputs give TIFF masks) and ``metrics.csv`` (changed fraction, and metrics when --gt is given;
the row ``init`` scores the initial Otsu mask, row k the k-th prediction as released test.py).
"""

from __future__ import annotations

from pathlib import Path

from . import CLIError
from .argtypes import POSITIVE_INT, add_binarize, float_range
from ..tables import write_csv
from .evaluate_cmd import binarize_threshold, ground_truth
from .predict_cmd import add_common, load_cli_model, read_cli_image, refuse_existing, user_errors


def add_parser(sub) -> None:
    p = sub.add_parser("refine", help="FANet test-time feedback iterations, per-iteration masks + metrics")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("--gt", default=None, help="ground-truth mask for per-iteration metrics")
    add_binarize(p, "ground truth")
    p.add_argument("--iterations", type=POSITIVE_INT, default=10)
    p.add_argument("--init", default="otsu", choices=["otsu", "empty", "full"], help="initial feedback mask")
    p.add_argument("--tol", type=float_range(0.0, 1.0, low_open=False, high_open=False), default=None,
                   help="stop once the changed-pixel fraction is <= TOL (default: never, as released)")
    p.add_argument("--out", default=None, help="output folder (default: <image>_refine)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--overwrite", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..inference import FANetRefiner, model_traits
    from ..inference.files import file_stem, read_image, write_array

    model = load_cli_model(args.checkpoint)
    traits = model_traits(model)
    if not traits.takes_mask:
        raise CLIError(f"{traits.name!r} takes no feedback mask; refine is for FANet-style models")
    if args.iterations < 1:
        raise CLIError("--iterations must be >= 1")
    f, data, c, s = read_cli_image(args.image, model, args.channel_axis, args.slice_axis)
    out = Path(args.out) if args.out else Path(args.image).with_name(file_stem(args.image) + "_refine")
    ext = ".nii.gz" if f.kind == "nifti" else ".tif"
    names = [out / f"initial_mask{ext}"] + [out / f"iter_{k:02d}{ext}" for k in range(args.iterations)]
    refuse_existing(names + [out / "metrics.csv"], args.overwrite)
    with user_errors():
        gt = ground_truth(read_image(args.gt), traits, binarize_threshold(args, model)) if args.gt else None
        ref = FANetRefiner(model, data, init=args.init, ground_truth=gt, channel_axis=c, slice_axis=s,
                           device=args.device, batch_size=args.batch_size,
                           spacing=f.spacing if f.kind == "nifti" else None)
        write_array(names[0], ref.initial_mask, f, overwrite=args.overwrite)
        for r in ref.iter_run(max_iters=args.iterations, tol=args.tol):
            write_array(names[r.index + 1], r.mask, f, overwrite=args.overwrite)
            extra = "" if r.metrics is None else "  " + "  ".join(
                f"{k}={v:.4f}" for k, v in r.metrics.items() if k in ("dice", "iou", "precision", "recall"))
            print(f"iteration {r.index}: changed {r.changed_fraction:.5f}{extra}")
    rows = ref.table() if gt is not None else [r.row() for r in ref.history]
    write_csv(out / "metrics.csv", rows)
    print(f"wrote {len(ref.history)} iteration mask(s) and metrics.csv to {out}")
    return 0
