"""What a user sees when refining and correcting on the nuclei sample (issue 12's measurement).

For each demo model (released FANet, correction-aware FANet) and with painted pixels pinned or
not: Dice and changed pixels per refinement iteration from Otsu; then a painted edit (the nucleus
of the first prediction that overlaps the largest true nucleus erased, a disc of radius 8 added
where the background is widest) and one Step: how much of the erased nucleus comes back, how
much of the added blob survives, and how many pixels outside the edit differ from the Step made
without the edit (the edit's influence on the rest of the image).

    .venv/bin/python scripts/measure_feedback.py [--iterations 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import label

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "napari_segattn" / "sample_data"
MODELS = {"released": "demo_fanet_dsb2018.safetensors", "correction-aware": "demo_fanet_corrections_dsb2018.safetensors"}


def the_edit(pred: np.ndarray, truth: np.ndarray):
    """(erased pixels, added pixels): deterministic, as the issue's trial did by hand."""
    gt_lab = label(truth, connectivity=1)
    biggest = np.argmax(np.bincount(gt_lab.ravel())[1:]) + 1
    pred_lab = label(pred, connectivity=1)
    hit = np.bincount(pred_lab[gt_lab == biggest], minlength=pred_lab.max() + 1)[1:]
    erased = pred_lab == (np.argmax(hit) + 1) if hit.any() else np.zeros_like(pred)
    dist = ndimage.distance_transform_edt(~(pred | truth))
    cy, cx = np.unravel_index(int(np.argmax(dist)), dist.shape)
    yy, xx = np.ogrid[: pred.shape[0], : pred.shape[1]]
    added = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 64) & ~pred
    return erased & pred, added


def measure(model, image, truth, iterations: int, pin: bool) -> dict:
    from napari_segattn.inference import FANetRefiner

    ref = FANetRefiner(model, image, ground_truth=truth, device="cpu", pin_edits=pin)
    hist = ref.run(iterations, tol=None)
    curve = [{"iteration": "init", "dice": ref.initial_metrics["dice"]}] + [
        {"iteration": r.index, "dice": r.metrics["dice"], "changed_pct": 100 * r.changed_fraction} for r in hist]
    base = hist[-1].mask
    erased, added = the_edit(base, truth)
    plain = FANetRefiner(model, image, device="cpu", init=base).step().mask  # the Step without the edit
    painted = base.copy()
    painted[erased] = False
    painted[added] = True
    ref.set_mask(painted)
    step = ref.step()
    edit = erased | added
    return {"curve": curve, "erased_px": int(erased.sum()), "added_px": int(added.sum()),
            "erased_back_pct": 100 * float(step.mask[erased].mean()),
            "added_kept_pct": 100 * float(step.mask[added].mean()),
            "differs_from_no_edit_outside_px": int(((step.mask != plain) & ~edit).sum()),
            "changed_outside_edit_px": step.changed_outside_edit, "pinned_px": step.pinned,
            "dice_after_edit_step": step.metrics["dice"]}


def main(argv=None) -> None:
    import tifffile
    import torch

    from napari_segattn.models import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    image = tifffile.imread(SAMPLES / "dsb2018_nuclei.tif")
    truth = tifffile.imread(SAMPLES / "dsb2018_nuclei_mask.tif") > 0
    out = {}
    for name, fname in MODELS.items():
        if not (SAMPLES / fname).is_file():
            print(f"{name}: {fname} not found, skipped")
            continue
        model = load_model(SAMPLES / fname)
        for pin in (False, True):
            r = out[f"{name}, pin_edits={pin}"] = measure(model, image, truth, args.iterations, pin)
            dice = ", ".join(f"{c['dice']:.4f}" for c in r["curve"])
            changed = ", ".join(f"{c['changed_pct']:.2f}" for c in r["curve"][1:])
            print(f"{name:17s} pin={pin!s:5s}  Dice init..{args.iterations - 1}: {dice}\n"
                  f"{'':24s} changed % per iteration: {changed}\n"
                  f"{'':24s} edit: {r['erased_back_pct']:.1f} % of the erased nucleus ({r['erased_px']} px) back, "
                  f"{r['added_kept_pct']:.1f} % of the added blob ({r['added_px']} px) kept, "
                  f"{r['differs_from_no_edit_outside_px']} px outside the edit differ from the Step without it, "
                  f"Dice {r['dice_after_edit_step']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
