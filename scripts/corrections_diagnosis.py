"""Where a FANet's answer to a click is right and wrong (issue 12, the DSB click protocol).

Trains the released and the correction-aware FANet of ``corrections-clicks`` (seed 0, reduced
scale, ~4 CPU minutes), then replays the simulated user's 10 clicks on the 4 held-out tiles with
each model over the whole image and counts, per clicked error kind (FN: a missed nucleus, FP:
a false one), the pixels the model's step changed: those connected to the click and those
elsewhere, each right (now equal to the truth) or wrong; and how much of the rest of the
clicked error component (outside the 5 px click) the step fixed.

    .venv/bin/python scripts/corrections_diagnosis.py [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np


def train_models(seed: int):
    from napari_segattn.data import Normalization
    from napari_segattn.experiments import common, corrections, corrections_clicks
    from napari_segattn.models.fanet import with_feedback_inputs
    from napari_segattn.training import build_augmenter, recipe_for

    p = corrections_clicks.SCALE["reduced"]
    (tr_i, tr_l), (va_i, va_l), test, n_epochs = corrections._dsb(common.data_root(None, "dsb2018_nuclei"), p)
    norm = Normalization("zscore", per="image")
    base = dataclasses.replace(recipe_for("fanet"), epochs=n_epochs, seed=seed, batch_size=4, lr=1e-3,
                               val_batch_size=2)
    train = common.make_dataset(tr_i, tr_l, range(len(tr_i)), [f"t{k}" for k in range(len(tr_i))], norm,
                                augmenter=build_augmenter(base), seed=seed)
    val = common.make_dataset(va_i, va_l, range(len(va_i)), [f"v{k}" for k in range(len(va_i))], norm)
    quiet = lambda s: None  # noqa: E731
    kw = {"in_channels": 1, "out_channels": 1, "width": p["width"]}
    released = common.train("fanet", {**kw, "mixpool": "all"}, train, val, base, quiet).model
    aware_cfg = dataclasses.replace(base, feedback="corrections", correction_prob=0.5,
                                    correction_radius=tuple(p["train_radius"]))
    aware = common.train("fanet", {**kw, "mask_input": True, "edit_input": True}, train, val, aware_cfg, quiet,
                         model=with_feedback_inputs(released, mask_input=True, edit_input=True)).model
    return {"released": released, "correction-aware": aware}, test, p


def replay(model, test, p) -> dict:
    from scipy import ndimage

    from napari_segattn.data import paint_largest_errors
    from napari_segattn.data.corrections import error_regions
    from napari_segattn.inference import FANetRefiner

    counts: dict = {}
    add = lambda key, right, wrong: counts.__setitem__(key, np.add(counts.get(key, (0, 0)), (right, wrong)))  # noqa: E731
    full = np.ones((3, 3), bool)
    for _, image, truth in test:
        truth = np.asarray(truth, bool)
        refiner = FANetRefiner(model, image, channel_axis=0, device="cpu", pin_edits=True)
        mask = refiner.step().mask
        for _ in range(p["rounds"]):
            component = error_regions(mask, truth, 1)[0]
            kind = "FN" if (component & truth).any() else "FP"
            fed, click = paint_largest_errors(mask, truth, 1, p["brush"])
            refiner.set_mask(fed)
            new = refiner.step().mask
            changed = new != fed
            regions, _ = ndimage.label(changed, full)
            near = ndimage.binary_dilation(click, full)
            touching = np.isin(regions, np.unique(regions[near & changed])) & changed
            for where, sel in (("connected to the click", touching), ("elsewhere", changed & ~touching)):
                add((kind, where), int((sel & (new == truth)).sum()), int((sel & (new != truth)).sum()))
            rest = component & ~click
            add((kind, "rest of the clicked error"), int((rest & (new == truth)).sum()), int((rest & (new != truth)).sum()))
            mask = new
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    models, test, p = train_models(args.seed)
    for name, model in models.items():
        print(name)
        for (kind, where), (right, wrong) in sorted(replay(model, test, p).items()):
            label = "fixed / left" if where.startswith("rest") else "right / wrong"
            print(f"  {kind} {where:26s} {label}: {right:5d} / {wrong:5d}")


if __name__ == "__main__":
    main()
