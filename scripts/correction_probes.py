"""Single-seed probes of correction-aware training options (docs/reproduction.md §5d, issue 12).

One released FANet per data set and seed is trained once and saved; each variant is fine-tuned
from it, so variants differ only in the fine-tune. Three readings:

  train    fine-tune variants and run the study's simulated user from each model's own start
  common   every model continues from the released model's refined mask (same start for all)
  fill     DSB: one 5 px click into each error component >= 30 px, one step; share of the rest fixed
  refine   the released model's Dice per test-time iteration 0 (Otsu)..10, before any correction
  drop     DSB: one found nucleus at a time removed from the released model's mask (a made missed
           object), one 5 px click into it, one step; share of it restored

  python scripts/correction_probes.py train dsb 0 study zone10 nb10 --dir /tmp/probes
  python scripts/correction_probes.py common dsb 0 paint released study nb10 --dir /tmp/probes
  python scripts/correction_probes.py fill 0 released study zone10 --dir /tmp/probes

Data sets: dsb (the clicks protocol, corrections-clicks), mni-wm (corrections-wm), em
(corrections' EM half). Reduced scales, as the studies.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
from napari_segattn.data import Normalization, paint_largest_errors
from napari_segattn.data.corrections import _brush
from napari_segattn.experiments import common, corrections, corrections_clicks, corrections_wm
from napari_segattn.inference import FANetRefiner
from napari_segattn.metrics import binary_metrics
from napari_segattn.models import load_model, save_model
from napari_segattn.models.fanet import with_feedback_inputs
from napari_segattn.training import build_augmenter, recipe_for

DATA = {"dsb": (corrections_clicks.SCALE, "dsb2018_nuclei", corrections._dsb),
        "mni-wm": (corrections_wm.SCALE, "mni152", corrections._mni_wm),
        "em": (corrections.SCALE, "isbi2012_em", corrections._em)}
_CA = dict(feedback="corrections", correction_prob=0.5)
_EDIT_ONLY = {"mask_input": False, "edit_input": True}
#: variant -> TrainConfig changes on top of the study's fine-tune (``_model``: the new inputs)
VARIANTS = {
    "study": _CA,
    "val": dict(_CA, val_feedback="corrections"),
    "lr10": dict(_CA, val_feedback="corrections", feedback_lr_scale=10.0),
    "zone": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0),
    "zone10": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0, feedback_lr_scale=10.0),
    "zone10r": dict(_CA, correction_loss_weight=1.0, feedback_lr_scale=10.0),
    "zone10e": dict(_CA, _model=_EDIT_ONLY, val_feedback="corrections", correction_loss_weight=1.0,
                    feedback_lr_scale=10.0),
    "nb": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0, correction_loss_margin=16),
    "nb10": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0, correction_loss_margin=16,
                 feedback_lr_scale=10.0),
    "m4": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0, correction_loss_margin=4,
               feedback_lr_scale=10.0),
    "m8": dict(_CA, val_feedback="corrections", correction_loss_weight=1.0, correction_loss_margin=8,
               feedback_lr_scale=10.0),
    "control": dict(val_feedback="corrections"),  # the released model fine-tuned as long, no corrections
}


def _setup(dname: str, seed: int, data: str):
    sizes, folder, load = DATA[dname]
    p = common.scale_params(sizes, "reduced", None)
    (tr_i, tr_l), (va_i, va_l), test, n_epochs = load(common.data_root(data, folder), p)
    return p, (tr_i, tr_l), (va_i, va_l), test, n_epochs


def _model_kw(p: dict, variant: str) -> dict:
    kw = {"in_channels": 1, "out_channels": 1, "width": p["width"]}
    if variant in ("released", "control"):
        return kw
    return {**kw, **VARIANTS[variant].get("_model", {"mask_input": True, "edit_input": True})}


def _path(directory: Path, dname: str, seed: int, variant: str) -> Path:
    return directory / f"{variant}-{dname}-{seed}.safetensors"


def _save(model, directory: Path, dname: str, seed: int, variant: str) -> None:
    model.segattn_normalization = Normalization("zscore", per="image").to_dict()
    save_model(model, _path(directory, dname, seed, variant))


def _load(directory: Path, dname: str, seed: int, variant: str):
    return load_model(_path(directory, dname, seed, variant)).eval()


def _own_start(model, test, p) -> dict:
    runs = [corrections.correction_rounds(model, im, tr, p["rounds"], brush=p["brush"], start_steps=p["start_steps"],
                                          focus=p["focus"], progressive_merge=p["merge"]) for _, im, tr in test]
    d = np.array([[r["dice"] for r in rows] for rows in runs])
    return {"dice0": float(d[:, 0].mean()), "noc95": float(np.mean([corrections._noc(x, 0.95) for x in d])),
            "outside": float(np.mean([sum(r["gain_outside"] for r in rows[1:]) for rows in runs]))}


def _data_and_recipe(args):
    """The study's data sets and the released model's recipe (corrections.run's)."""
    p, (tr_i, tr_l), (va_i, va_l), test, n_epochs = _setup(args.dataset, args.seed, args.data)
    norm = Normalization("zscore", per="image")
    base = dataclasses.replace(recipe_for("fanet"), epochs=n_epochs, seed=args.seed, batch_size=4, lr=1e-3,
                               val_batch_size=2)
    train_ds = common.make_dataset(tr_i, tr_l, range(len(tr_i)), [f"t{k}" for k in range(len(tr_i))], norm,
                                   augmenter=build_augmenter(base), seed=args.seed)
    val_ds = common.make_dataset(va_i, va_l, range(len(va_i)), [f"v{k}" for k in range(len(va_i))], norm)
    return p, train_ds, val_ds, test, n_epochs, base


def _released(args, p, train_ds, val_ds, base):
    """The released FANet of this data set and seed: trained once, then read back."""
    if _path(args.dir, args.dataset, args.seed, "released").exists():
        return _load(args.dir, args.dataset, args.seed, "released")
    released = common.train("fanet", _model_kw(p, "released"), train_ds, val_ds, base, lambda s: None).model
    _save(released, args.dir, args.dataset, args.seed, "released")
    return released


def refine(args) -> None:
    """FANet's test-time refinement before any correction: mean Dice of the Otsu mask (0) and of
    iterations 1..10 on the held-out images (the paper iterates up to 10 times)."""
    p, train_ds, val_ds, test, _, base = _data_and_recipe(args)
    released = _released(args, p, train_ds, val_ds, base)
    curves = []
    for _, image, truth in test:
        trace: list = []
        corrections.refined_start(released, image, 10, trace)
        curves.append([float(binary_metrics(m, truth > 0)["dice"]) for m in trace])
    print("released", json.dumps({"dice_per_iteration": np.mean(curves, axis=0).round(4).tolist()}), flush=True)


def train(args) -> None:
    p, train_ds, val_ds, test, n_epochs, base = _data_and_recipe(args)
    released = _released(args, p, train_ds, val_ds, base)
    print("released", _own_start(released, test, p), flush=True)
    fine_tune = dataclasses.replace(base, lr=base.lr * p["ca_lr_scale"],
                                    epochs=max(1, round(n_epochs * p["ca_epoch_scale"])),
                                    correction_radius=tuple(p["train_radius"]))
    for variant in args.models:
        changes = {k: v for k, v in VARIANTS[variant].items() if k != "_model"}
        inputs = VARIANTS[variant].get("_model", {"mask_input": True, "edit_input": True})
        start = copy.deepcopy(released) if variant == "control" else with_feedback_inputs(released, **inputs)
        res = common.train("fanet", _model_kw(p, variant), train_ds, val_ds,
                           dataclasses.replace(fine_tune, **changes), lambda s: None, model=start)
        _save(res.model, args.dir, args.dataset, args.seed, variant)
        row = {**_own_start(res.model, test, p), "best_epoch": res.best_epoch,
               "share": corrections.feedback_weight_share(res.model)}
        print(variant, json.dumps(row), flush=True)


def _monotone(fed: np.ndarray, out: np.ndarray, painted_values: np.ndarray) -> np.ndarray:
    """A step may only move pixels the way the new paint went: after foreground paint only
    additions, after background paint only removals (both after mixed paint)."""
    grow, shrink = bool(painted_values.any()), bool((~painted_values).any())
    keep = (out & ~fed & grow) | (~out & fed & shrink)
    return np.where(keep, out, fed)


def _flood(out: np.ndarray, p: np.ndarray, region: np.ndarray, values: np.ndarray, band: float) -> np.ndarray:
    """The new paint's value spread to the pixels the model is unsure of (within ``band`` of 0.5,
    on the other side) that connect to it: a foreground click takes in the connected
    not-quite-foreground, a background click drops the connected barely-foreground."""
    from scipy import ndimage

    res = out.copy()
    for value, paint, flip in ((True, region & values, ~out & (p > 0.5 - band)),
                               (False, region & ~values, out & (p < 0.5 + band))):
        if paint.any():
            lab, _ = ndimage.label(flip | paint)
            ids = np.unique(lab[paint])
            res[np.isin(lab, ids[ids > 0]) & flip] = value
    return res


def common_start(args) -> None:
    p, _, _, test, _ = _setup(args.dataset, args.seed, args.data)
    released = _load(args.dir, args.dataset, args.seed, "released")
    starts = [corrections.refined_start(released, im, p["start_steps"])[1] for _, im, _ in test]
    for name in args.models:
        model = None if name == "paint" else _load(args.dir, args.dataset, args.seed, name)
        dices, outside = [], []
        for (_, image, truth), start in zip(test, starts):
            truth = truth > 0
            dice = lambda m: float(binary_metrics(m, truth)["dice"])  # noqa: E731
            refiner = None if model is None else FANetRefiner(
                model, image, init=start, channel_axis=0, device="cpu", pin_edits=True, focus=p["focus"],
                progressive_merge=p["merge"])
            mask, curve, gained = start.copy(), [dice(start)], 0.0
            for _ in range(p["rounds"]):
                fed, region = paint_largest_errors(mask, truth, 1, p["brush"])
                if refiner is None:
                    mask = fed
                else:
                    refiner.set_mask(fed)
                    mask = refiner.step().mask
                    if args.flood:
                        flooded = _flood(mask, refiner.history[-1].probabilities, region, truth, args.flood)
                        box = refiner.history[-1].focus
                        if box is not None:  # as the step itself: only inside the focus box
                            inside = np.zeros(mask.shape, bool)
                            inside[box] = True
                            flooded = np.where(inside, flooded, mask)
                        mask = flooded
                        mask = np.where(refiner.edit_mask, refiner.painted_values, mask)
                        refiner._next_mask = mask  # probe only: the flooded mask is the next feedback
                    if args.monotone:
                        mask = _monotone(fed, mask, truth[region])
                curve.append(dice(mask))
                gained += dice(mask) - dice(fed)
            dices.append(curve)
            outside.append(gained)
        print(name, json.dumps({"noc95": float(np.mean([corrections._noc(c, 0.95) for c in dices])),
                                "outside": float(np.mean(outside)), "outside_per_image": outside}), flush=True)


def fill(args) -> None:
    from scipy import ndimage

    p, _, _, test, _ = _setup("dsb", args.seed, args.data)
    for name in args.models:
        model = _load(args.dir, "dsb", args.seed, name)
        missed, extra = [], []
        for _, image, truth in test:
            truth = truth > 0
            mask = corrections.refined_start(model, image, p["start_steps"], pin_edits=True)[1]
            lab, n = ndimage.label(mask != truth)
            for k in range(1, n + 1):
                comp = lab == k
                if comp.sum() < 30:
                    continue
                click = _brush(comp, 5) & comp
                fed = mask.copy()
                fed[click] = truth[click]
                refiner = corrections.refined_start(model, image, p["start_steps"], pin_edits=True)[0]
                refiner.set_mask(fed)
                out = refiner.step().mask
                rest = comp & ~click
                (missed if truth[comp].all() else extra).append(float((out[rest] == truth[rest]).mean()))
        print(name, json.dumps({"missed": [len(missed), float(np.mean(missed)) if missed else None],
                                "extra": [len(extra), float(np.mean(extra)) if extra else None]}), flush=True)


def drop(args) -> None:
    """Object-level errors made on purpose: from the released model's refined DSB mask, remove one
    correctly found nucleus at a time (as if missed), click 5 px at its interior point, one step
    with the study's local update; the share of the removed nucleus outside the click restored,
    and the pixels changed elsewhere."""
    from scipy import ndimage

    p, _, _, test, _ = _setup("dsb", args.seed, args.data)
    released = _load(args.dir, "dsb", args.seed, "released")
    starts = [corrections.refined_start(released, im, p["start_steps"])[1] for _, im, _ in test]
    for name in args.models:
        model = _load(args.dir, "dsb", args.seed, name)
        restored, elsewhere = [], []
        for (_, image, truth), start in zip(test, starts):
            truth = truth > 0
            lab, n = ndimage.label(start)
            for k in range(1, n + 1):
                obj = lab == k
                if obj.sum() < 30 or (obj & truth).sum() < 0.9 * obj.sum():
                    continue
                click = _brush(obj, 5) & obj
                fed = start & ~obj
                fed[click] = True
                refiner = FANetRefiner(model, image, init=start & ~obj, channel_axis=0, device="cpu", pin_edits=True,
                                       focus=p["focus"], progressive_merge=p["merge"])
                refiner.set_mask(fed)
                out = refiner.step().mask
                rest = obj & ~click
                restored.append(float(out[rest].mean()))
                elsewhere.append(int(np.count_nonzero((out != fed) & ~obj)))
        print(name, json.dumps({"objects": len(restored), "restored": float(np.mean(restored)),
                                "changed_elsewhere_px": float(np.mean(elsewhere))}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, func in (("train", train), ("common", common_start), ("refine", refine)):
        sp = sub.add_parser(name)
        sp.add_argument("dataset", choices=sorted(DATA))
        sp.add_argument("seed", type=int)
        sp.add_argument("models", nargs="*" if name == "refine" else "+")
        sp.set_defaults(func=func)
        if name == "common":
            sp.add_argument("--monotone", action="store_true",
                            help="a step only moves pixels the way the new paint went (grow after foreground paint)")
            sp.add_argument("--flood", type=float, default=0.0,
                            help="after a step, the new paint's value spreads to connected pixels within this of p=0.5")
    for name, func in (("fill", fill), ("drop", drop)):
        sp = sub.add_parser(name)
        sp.add_argument("seed", type=int)
        sp.add_argument("models", nargs="+")
        sp.set_defaults(func=func)
    for sp in sub.choices.values():
        sp.add_argument("--dir", type=Path, default=Path("correction-probes"))
        sp.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    args.func(args)


if __name__ == "__main__":
    main()
