"""``segattn evaluate CKPT --images DIR --masks DIR [--roi DIR]``: a metrics table over a folder.

Images and masks (and ROI masks) are paired by file name (without extension). FANet models are evaluated at
every feedback iteration 0..N-1 from the Otsu mask, one row per iteration as released test.py
(spec 2.7: iteration k = the k-th prediction; metrics averaged over images).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from ..tables import write_csv
from . import CLIError
from .argtypes import POSITIVE_INT, add_binarize
from .predict_cmd import add_common, load_cli_model, read_cli_image, refuse_existing, user_errors


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a checkpoint on a folder of images and masks")
    p.add_argument("checkpoint")
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", required=True, help="folder of ground-truth masks with the same file names")
    p.add_argument("--mask-suffix", default="", help="masks are named <image name><suffix>, e.g. _mask")
    add_binarize(p, "ground truth")
    p.add_argument("--roi", default=None, metavar="FOLDER",
                   help="region-of-interest masks with the images' file names: metrics count only pixels where "
                        "the ROI is > 0 (e.g. a retinal field of view)")
    p.add_argument("--iterations", type=POSITIVE_INT, default=10, help="FANet: feedback iterations (default 10)")
    p.add_argument("--out", default=None, help="write the per-image table as CSV")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=16)
    p.add_argument("--overwrite", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def pair_files(images: Path, masks: Path, mask_suffix: str = "") -> list[tuple[Path, Path]]:
    from ..inference.files import file_stem

    def listing(d: Path) -> dict[str, Path]:
        if not d.is_dir():
            raise CLIError(f"{d}: not a folder")
        return {file_stem(p): p for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")}

    imgs, msks = listing(images), listing(masks)
    if mask_suffix:
        msks = {k[: -len(mask_suffix)] if k.endswith(mask_suffix) else k: v for k, v in msks.items()}
    common = sorted(set(imgs) & set(msks), key=lambda s: (len(s), s))
    if not common:
        raise CLIError(f"no image in {images} has a mask of the same name in {masks}")
    missing = sorted(set(imgs) - set(msks))
    if missing:
        print(f"warning: {len(missing)} image(s) without a mask skipped (e.g. {missing[:3]})", file=sys.stderr)
    return [(imgs[k], msks[k]) for k in common]


def flatten(d, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}_" if isinstance(v, (dict, list, tuple, np.ndarray)) else f"{prefix}{k}"))
        return out
    if isinstance(d, (list, tuple, np.ndarray)):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}"))
        return out
    try:
        return {prefix.rstrip("_"): float(d)}
    except (TypeError, ValueError):
        return {}


def roi_files(roi_dir: Path, images: list[Path]) -> dict[Path, Path]:
    """The ROI mask of every image (same file name, any image suffix); a missing one is an error
    naming it, so no image is scored over its whole frame by accident."""
    from ..inference.files import file_stem

    if not roi_dir.is_dir():
        raise CLIError(f"--roi {roi_dir}: not a folder")
    by_stem = {file_stem(p): p for p in sorted(roi_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    missing = [p.name for p in images if file_stem(p) not in by_stem]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CLIError(f"--roi {roi_dir}: no ROI mask for {missing[0]}{more} (looked for {file_stem(missing[0])}.*)")
    return {p: by_stem[file_stem(p)] for p in images}


def read_roi(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """ROI > 0 as a bool mask of the ground truth's shape (an RGB(A) mask: its first channel)."""
    from ..inference.files import read_image

    f = read_image(path)
    roi = np.asarray(f.data)
    if roi.ndim == len(shape) + 1 and roi.shape[-1] in (3, 4) and f.kind == "raster":
        roi = roi[..., 0]
    if roi.shape != tuple(shape):
        raise CLIError(f"ROI {path.name} has shape {roi.shape}, the ground truth {tuple(shape)}")
    if not (roi > 0).any():
        raise CLIError(f"ROI {path.name} is empty (no pixel > 0): nothing would be scored")
    return roi > 0


def binarize_threshold(args, model) -> float | None:
    """``--binarize [T]`` as given, else the threshold the checkpoint was trained with (model.json
    ``training.data.binarize``), so a binary model needs no ``--binarize`` again."""
    if args.binarize is not None:
        return args.binarize
    info = (getattr(model, "segattn_checkpoint", None) or {}).get("training") or {}
    recorded = (info.get("data") or {}).get("binarize")
    return float(recorded) if recorded is not None else None


def ground_truth(mask_file, traits, binarize: float | None) -> np.ndarray:
    """Ground truth for the model: binary models take ``> binarize`` (None: values must be 0/1)."""
    gt = np.asarray(mask_file.data)
    if gt.ndim == 3 and gt.shape[-1] in (3, 4) and mask_file.kind == "raster":
        gt = gt[..., 0]
    if traits.binary:
        if binarize is not None and binarize is not False:
            return gt > float(binarize)
        vals = np.unique(gt)
        if not set(vals.tolist()) <= {0, 1}:
            raise CLIError(f"{mask_file.path.name} has values {vals[:6].tolist()}...; pass --binarize for > 0 "
                           "(--binarize 127 for JPEG masks)")
        return gt.astype(bool)
    if binarize is not None and binarize is not False:
        raise CLIError("--binarize is for one-logit (binary) models")
    return gt.astype(np.int64)


def run(args) -> int:
    from ..inference import FANetRefiner, model_traits, predict
    from ..inference.files import read_image
    from ..metrics import binary_metrics, segmentation_metrics

    refuse_existing([args.out], args.overwrite)
    model = load_cli_model(args.checkpoint)
    traits = model_traits(model)
    pairs = pair_files(Path(args.images), Path(args.masks), args.mask_suffix)
    rois = roi_files(Path(args.roi), [p for p, _ in pairs]) if args.roi else {}
    rows: list[dict] = []
    for img_path, mask_path in pairs:
        f, data, c, s = read_cli_image(str(img_path), model, args.channel_axis, args.slice_axis)
        with user_errors():
            gt = ground_truth(read_image(mask_path), traits, binarize_threshold(args, model))
            roi = read_roi(rois[img_path], gt.shape) if rois else None
            spacing = f.spacing if f.kind == "nifti" else None
            if traits.takes_mask:
                # with an ROI the refiner only predicts; the masks are scored here, inside the ROI
                ref = FANetRefiner(model, data, ground_truth=gt if roi is None else None, channel_axis=c,
                                   slice_axis=s, device=args.device, batch_size=args.batch_size, spacing=spacing)
                for r in ref.run(max_iters=args.iterations, tol=None):
                    m = r.metrics if roi is None else binary_metrics(r.mask, gt, spacing=spacing, roi=roi)
                    rows.append({"image": img_path.name, "iteration": r.index, **flatten(m)})
            else:
                pred = predict(model, data, channel_axis=c, slice_axis=s, device=args.device,
                               batch_size=args.batch_size)
                if gt.shape != pred.labels.shape:
                    raise CLIError(f"{mask_path.name} has shape {gt.shape}, prediction {pred.labels.shape}")
                if traits.binary:
                    m = binary_metrics(pred.labels, gt, spacing=spacing, roi=roi)
                else:
                    m = segmentation_metrics(pred.labels, gt, traits.out_channels, roi=roi)
                rows.append({"image": img_path.name, **flatten(m)})
        print(f"evaluated {img_path.name}" + (f" inside {rois[img_path].name}" if rois else ""), file=sys.stderr)
    summary = summarize(rows, by_iteration=traits.takes_mask)
    print_table(summary)
    if args.out:
        write_csv(args.out, rows + summary)
        print(f"wrote {args.out}")
    return 0


def summarize(rows: list[dict], by_iteration: bool) -> list[dict]:
    """Mean over images (per iteration for FANet), NaNs (e.g. HD95 of empty masks) ignored."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(r.get("iteration") if by_iteration else None, []).append(r)
    out = []
    for it, rs in groups.items():
        keys = [k for k in rs[0] if k not in ("image", "iteration")]
        row = {"image": "mean"}
        if by_iteration:
            row["iteration"] = it
        for k in keys:
            vals = [r[k] for r in rs if isinstance(r.get(k), float) and not math.isnan(r[k])]
            row[k] = float(np.mean(vals)) if vals else float("nan")
        out.append(row)
    return out


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    print("  ".join(f"{k:>10}" for k in keys))
    for r in rows:
        print("  ".join(f"{r[k]:>10.4f}" if isinstance(r[k], float) else f"{str(r[k]):>10}" for k in keys))


