"""``segattn saliency CKPT IMAGE --class K --out DIR``: patch-wise IG maps (Attention Shift).

For each class: ``saliency_class{K}.png`` (blue-white-red, symmetric around 0), the float map
as ``.tif`` and, for NIfTI input, ``.nii.gz`` on the source grid (the map in its slice, zeros
elsewhere), plus ``saliency.json`` with the settings and the completeness gap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from . import CLIError
from .argtypes import NONNEGATIVE_INT, POSITIVE_INT, float_range
from .predict_cmd import add_common, load_cli_model, read_cli_image, refuse_existing, user_errors


def add_saliency_options(p) -> None:
    p.add_argument("--method", default="fast", choices=["fast", "per_window", "abs_windows"])
    p.add_argument("--window", type=POSITIVE_INT, default=None, help="window size (default: the model's stride)")
    p.add_argument("--stride", type=POSITIVE_INT, default=8)
    p.add_argument("--steps", type=POSITIVE_INT, default=50, help="IG integration steps")
    p.add_argument("--baseline", default="zeros", choices=["zeros", "blur", "mean"])
    p.add_argument("--gap-tolerance", type=float_range(0.0, 1.0), default=None, metavar="T",
                   help="double --steps (up to --max-steps) until IG's relative completeness gap is below T "
                        "(e.g. 0.05); else warn with the gap reached")
    p.add_argument("--max-steps", type=POSITIVE_INT, default=256, help="cap for --gap-tolerance (default 256)")
    p.add_argument("--preview", type=POSITIVE_INT, default=1, metavar="F",
                   help="explain the image shrunk F times (seconds on a CPU) and spread the map back; "
                        "labelled as a preview in saliency.json (default 1: full size)")
    p.add_argument("--internal-batch-size", type=POSITIVE_INT, default=None,
                   help="IG steps per forward pass (default: about 1 MPixel per pass, to bound memory)")
    p.add_argument("--slice", type=NONNEGATIVE_INT, default=None, help="slice index of a volume (default: the middle)")


def add_parser(sub) -> None:
    p = sub.add_parser("saliency", help="Integrated-Gradients saliency maps per class")
    p.add_argument("checkpoint")
    p.add_argument("image")
    p.add_argument("--class", dest="classes", type=int, nargs="+", required=True,
                   help="class index(es); one-logit models: 1 = foreground, 0 = background")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true")
    add_saliency_options(p)
    add_common(p)
    p.set_defaults(func=run)


def take_slice(f, data, c, s, index):
    """A 2D (channel) image from a volume: ``(image, channel_axis, spacing, place)`` where
    ``place(map2d)`` puts a 2D map back into a zero volume of the spatial shape."""
    if s is None:
        return data, c, (tuple(f.spacing[:2]) if f.spacing else None), None
    nd = data.ndim
    s = s % nd
    c = None if c is None else c % nd
    n = data.shape[s]
    idx = n // 2 if index is None else index
    if not 0 <= idx < n:
        raise CLIError(f"--slice {idx} is outside 0..{n - 1}")
    img = np.take(data, idx, axis=s)
    c2 = None if c is None else (c if c < s else c - 1)
    spatial_shape = tuple(d for i, d in enumerate(data.shape) if i != c)
    s_sp = s - (1 if c is not None and c < s else 0)
    spacing = None
    if f.spacing and len(f.spacing) == len(spatial_shape):
        spacing = tuple(v for i, v in enumerate(f.spacing) if i != s_sp)

    def place(m2):
        vol = np.zeros(spatial_shape, np.float32)
        sl = [slice(None)] * len(spatial_shape)
        sl[s_sp] = idx
        vol[tuple(sl)] = m2
        return vol

    return img, c2, spacing, place


def write_maps(out: Path, stem: str, m2: np.ndarray, f, place, overwrite: bool) -> list[Path]:
    from ..inference.files import colorize_signed, write_array

    paths = [write_array(out / f"{stem}.tif", m2, overwrite=overwrite, labels=False),
             write_array(out / f"{stem}.png", colorize_signed(m2), overwrite=overwrite)]
    if f.kind == "nifti" and place is not None:
        paths.append(write_array(out / f"{stem}.nii.gz", place(m2), f, overwrite=overwrite, labels=False))
    return paths


def saliency_kwargs(args) -> dict:
    # internal_batch_size None: saliency() picks explain.memory.ig_batch_size for the image
    return dict(method=args.method, window=args.window, stride=args.stride, n_steps=args.steps,
                baseline=args.baseline, internal_batch_size=args.internal_batch_size or None,
                gap_tolerance=getattr(args, "gap_tolerance", None), max_steps=getattr(args, "max_steps", 256),
                downscale=getattr(args, "preview", 1))


def run(args) -> int:
    from ..explain import saliency
    from ..inference.files import file_stem

    out = Path(args.out)
    stems = [f"saliency_class{k}" for k in args.classes]
    refuse_existing([out / f"{st}{e}" for st in stems for e in (".tif", ".png")] + [out / "saliency.json"],
                    args.overwrite)
    model = load_cli_model(args.checkpoint)
    f, data, c, s = read_cli_image(args.image, model, args.channel_axis, args.slice_axis)
    img, c2, _, place = take_slice(f, data, c, s, args.slice)
    with user_errors():
        try:
            sal = saliency(model, img, list(args.classes), channel_axis=c2, device=args.device,
                           **saliency_kwargs(args))
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        out.mkdir(parents=True, exist_ok=True)
        for k, st, m2 in zip(args.classes, stems, sal.map):
            write_maps(out, st, m2, f, place, args.overwrite)
    info = {"image": file_stem(args.image), "classes": sal.target_classes, "method": sal.method,
            "window": list(sal.window), "stride": sal.stride, "n_windows": sal.n_windows, "n_steps": sal.n_steps,
            "baseline": sal.baseline, "completeness_gap": sal.completeness_gap, "relative_gap": sal.relative_gap,
            "deltas": sal.deltas, "output_difference": sal.output_difference, "seconds": sal.seconds,
            "slice": args.slice, "preview_downscale": getattr(sal, "downscale", args.preview),
            "steps_tried": getattr(sal, "steps_tried", None)}
    info["warning"] = sal.warning
    (out / "saliency.json").write_text(json.dumps(info, indent=2) + "\n")
    if sal.warning:
        print(f"warning: {sal.warning}", file=sys.stderr)
    print(f"wrote {len(stems)} saliency map(s) to {out} (completeness gap {sal.completeness_gap:.3g}, "
          f"relative {sal.relative_gap:.3g})")
    return 0
