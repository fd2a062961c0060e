"""``segattn shift --a CKPT --b CKPT IMAGE --gt GT --out DIR``: attention shift between models.

Both models are explained with the same IG settings on the same (slice of the) image; writes
``shift.csv`` and ``shift.json`` (saliency mass per ground-truth region, centroid shift in
pixels and mm) and per class the unit-mass difference map ``difference_class{K}`` (.tif,
.png, and .nii.gz for NIfTI input) plus both saliency maps as .tif.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import CLIError
from .predict_cmd import add_common, load_cli_model, read_cli_image, refuse_existing, user_errors
from .saliency_cmd import add_saliency_options, saliency_kwargs, take_slice, write_maps


def add_parser(sub) -> None:
    p = sub.add_parser("shift", help="attention shift between two checkpoints (saliency mass, centroid)")
    p.add_argument("--a", required=True, help="first checkpoint (e.g. trained without smoothing)")
    p.add_argument("--b", required=True, help="second checkpoint")
    p.add_argument("image")
    p.add_argument("--gt", required=True, help="ground-truth label image/volume (regions)")
    p.add_argument("--class", dest="classes", type=int, nargs="+", default=None,
                   help="classes to explain (default: every class; one-logit models: 1)")
    p.add_argument("--class-names", nargs="+", default=None, help="names of labels 0, 1, ...")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    add_saliency_options(p)
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..explain import attention_shift, saliency
    from ..inference import model_traits
    from ..inference.files import read_image, write_array

    out = Path(args.out)
    refuse_existing([out / "shift.csv", out / "shift.json"], args.overwrite)
    ma, mb = load_cli_model(args.a), load_cli_model(args.b)
    ta, tb = model_traits(ma), model_traits(mb)
    if ta.num_classes != tb.num_classes:
        raise CLIError(f"the models predict different classes ({ta.num_classes} vs {tb.num_classes})")
    classes = args.classes or ([1] if ta.binary else list(range(ta.out_channels)))
    f, data, c, s = read_cli_image(args.image, ma, args.channel_axis, args.slice_axis)
    img, c2, spacing, place = take_slice(f, data, c, s, args.slice)
    with user_errors():
        gt_file = read_image(args.gt)
        gt = np.asarray(gt_file.data)
        if gt.shape != tuple(d for i, d in enumerate(data.shape) if c is None or i != c % data.ndim):
            raise CLIError(f"ground truth shape {gt.shape} does not match the image {data.shape}")
        if s is not None:
            s_sp = s % data.ndim - (1 if c is not None and c % data.ndim < s % data.ndim else 0)
            gt = np.take(gt, img_index(data, s, args.slice), axis=s_sp)
        names = args.class_names or getattr(ma, "segattn_class_names", None)
        try:
            kw = saliency_kwargs(args)
            sa = saliency(ma, img, classes, channel_axis=c2, device=args.device, **kw)
            sb = saliency(mb, img, classes, channel_axis=c2, device=args.device, **kw)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        res = attention_shift(sa, sb, gt.astype(np.int64), class_names=names, spacing=spacing)
        out.mkdir(parents=True, exist_ok=True)
        res.to_csv(out / "shift.csv")
        res.to_json(out / "shift.json")
        for i, k in enumerate(classes):
            write_maps(out, f"difference_class{k}", res.difference[i], f, place, args.overwrite)
            write_array(out / f"saliency_a_class{k}.tif", sa.map[i], overwrite=args.overwrite, labels=False)
            write_array(out / f"saliency_b_class{k}.tif", sb.map[i], overwrite=args.overwrite, labels=False)
    for row in res.rows():
        mm = f", {row['shift_mm']:.2f} mm" if "shift_mm" in row else ""
        masses = "  ".join(f"{r}: {row[f'mass_a:{r}']:.3f}->{row[f'mass_b:{r}']:.3f}" for r in res.regions)
        print(f"class {row['class']}: centroid shift {row['shift_px']:.2f} px{mm}; saliency mass {masses}")
    print(f"wrote shift.csv, shift.json and difference maps to {out}")
    return 0


def img_index(data, s, index) -> int:
    n = data.shape[s]
    return n // 2 if index is None else index
