"""Simulated-user correction benchmark (issue 12; the protocol of RITM, nnInteractive, micro-sam).

Each round a simulated user paints the ground truth into the largest error component of the
current mask, with a brush of radius 20 px around its most interior point (where RITM's user
clicks; ``data.paint_largest_errors``); then, for a model, one FANet step runs from the
painted mask with the painted pixels pinned (``FANetRefiner(pin_edits=True)``). Compared, on
held-out images of two data sets:

* ``paint only``: no model; the paint accumulates on the released model's first prediction;
* ``released``: FANet trained as released (fed its own stored predictions);
* ``correction-aware``: the released model with the mask and the user's edit as extra input
  channels (``mask_input=True, edit_input=True``, zero-initialised), fine-tuned with
  ``feedback="corrections"`` for half the epochs again at a tenth of the learning rate;
* ``released, trained as long`` (reduced and full scales): the control, the released model
  fine-tuned just as long at that rate with its own feedback, so that the correction-aware
  model's longer training is not taken for a better use of corrections.

Round 0 is each model's mask after ``start_steps`` feedback iterations from Otsu (FANet's
test-time refinement; paint only starts from the released model's). Per round k = 0..10: Dice; the *gain outside the paint* (Dice after the model's step minus
Dice of the painted mask it was fed: what the model added beyond the user's own pixels);
NoC@90 / NoC@95 (corrections until Dice >= 0.90 / 0.95; 11 = not reached in 10).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np

from ..data import Normalization, paint_largest_errors
from . import common

NAME = "corrections"
VARIANTS = {
    "released": ({"mixpool": "all"}, {"feedback": "released"}),
    # The released model, given the mask and the user's edit as input channels (zero weights at
    # first: models.fanet.with_feedback_inputs) and fine-tuned with simulated corrections for half
    # as many epochs again at lr/10. Trained from scratch instead (mixpool none), it reached a
    # lower Dice before any correction (DSB seed 0: 0.926 vs 0.938) and needed more corrections;
    # with MixPool from scratch it learned to grow whatever it was fed (all-ones in -> all-ones out).
    "correction-aware": ({"mask_input": True, "edit_input": True}, {"feedback": "corrections"}),
}
# SCALE's ``control``: also fine-tune the released model as the correction-aware one is (same
# epochs and learning rate, released feedback), so a better start from longer training is not
# taken for a better use of corrections.
CONTROL = "released, trained as long"
# EM: full resolution, trained on 256x256 tiles, tested on the 3 held-out 512x512 slices.
# DSB: the one 512x512 image in a 4x4 grid of 128x128 tiles, 10 train / 2 val / 4 held-out test.
# start_steps: the models' masks before any correction are FANet's test-time iterative refinement,
# 5 feedback iterations from Otsu. With one, the correction-aware model was measured at a point it
# is not trained for (it learns to refine its own masks: 0-2 passes): EM seeds 1 / 2, Dice after
# 1..5 iterations 0.930 -> 0.945 / 0.927 -> 0.949, the released model's 0.942 -> 0.940 / 0.947.
_COMMON = dict(em_tile=256, brush=20, train_radius=(8, 48), datasets=("em", "dsb"), ca_lr_scale=0.1,
               ca_epoch_scale=0.5, ca_correction_prob=0.5, focus=None, merge=False)
SCALE = {
    "smoke": dict(_COMMON, width=4, rounds=2, epochs=1, em_train=1, em_test_crop=128, dsb_epochs=1, start_steps=2),
    "reduced": dict(_COMMON, width=16, rounds=10, epochs=8, em_train=None, em_test_crop=None, dsb_epochs=60,
                    start_steps=5, control=True),
    "full": dict(_COMMON, width=32, rounds=20, epochs=200, em_train=None, em_test_crop=None, dsb_epochs=500,
                 start_steps=5, control=True),
}
TABLES = {"per_round.csv": ("dataset", "method", "round"), "table.csv": ("dataset", "method"),
          "refinement.csv": ("dataset", "method", "iteration")}
TARGETS = (0.90, 0.95)


def _em(root: Path, p: dict):
    from ..data import tile_pairs

    images, labels, names = common.em_arrays(root, 1, None, foreground="interior")
    split = common.em_split(len(images))
    train_idx = split["train"][: p["em_train"]] if p["em_train"] else split["train"]

    def tiles(idx):
        out_i, out_l = [], []
        for i in idx:
            ti, tl = tile_pairs(images[i], labels[i], p["em_tile"])
            out_i += ti
            out_l += tl
        return out_i, out_l

    crop = p["em_test_crop"]
    test = [(names[i], common.center_crop(images[i], crop), common.center_crop(labels[i], crop)) for i in split["test"]]
    return tiles(train_idx), tiles(split["val"]), test, p["epochs"]


def _dsb(root: Path, p: dict):
    from ..data import dsb2018_nuclei, tile_pairs

    ds = dsb2018_nuclei(root)
    ti, tl = tile_pairs(ds.raw(0).astype(np.float32), ds.label(0), 128)
    # a fixed interleaved split of the 16 tiles (row-major 4x4 grid): test tiles 5, 7, 8, 14
    test_idx, val_idx = [5, 7, 8, 14], [2, 11]
    train_idx = [k for k in range(len(ti)) if k not in test_idx + val_idx]
    pick = lambda idx: ([ti[k] for k in idx], [tl[k] for k in idx])  # noqa: E731
    test = [(f"dsb tile {k}", ti[k], tl[k]) for k in test_idx]
    return pick(train_idx), pick(val_idx), test, p["dsb_epochs"]


def _variants(p: dict) -> list[str]:
    return [*VARIANTS, CONTROL] if p.get("control") else list(VARIANTS)


def _methods(p: dict) -> dict[str, tuple[str | None, dict]]:
    """method name -> (model variant or None for paint only, the refiner's local-update options:
    ``focus`` margin, progressive ``merge``). With either, the models also run unrestricted on the
    whole image, as references."""
    local = {"focus": p["focus"], "progressive_merge": p["merge"]}
    out = {"paint only": (None, {}), **{v: (v, local) for v in _variants(p)}}
    if p["focus"] is not None or p["merge"]:
        out.update({f"{v} (whole image)": (v, {}) for v in VARIANTS})
    return out


def _mni_wm(root: Path, p: dict):
    """White matter vs the rest on MNI152 T1 slices (``mni_factor``: 2 = 2 mm; ``experiments.mni``'s interleaved
    split: even tissue slices train, odd ones are held out): ``mni_train`` even slices, 2 odd
    ones for validation and 4 odd ones, evenly spread and distinct, for the simulated user."""
    images, labels, zs = common.mni_slices(root, p["mni_factor"])
    # slices with white matter on >= 8 % of the slice: at the ends of the brain it is a speck, and
    # those slices made the Dice a count of specks (validation Dice 0.36 after 100 epochs)
    keep = [i for i, lab in enumerate(labels) if (lab == 2).mean() >= 0.08]
    images, zs = [images[i] for i in keep], [zs[i] for i in keep]
    wm = [(labels[i] == 2).astype(np.int64) for i in keep]
    even, odd = list(range(len(images)))[0::2], list(range(len(images)))[1::2]
    train_idx = common.evenly(even, p["mni_train"])
    test_idx = common.evenly(odd, 4)
    val_idx = common.evenly([i for i in odd if i not in test_idx], 2)
    pick = lambda idx: ([images[i] for i in idx], [wm[i] for i in idx])  # noqa: E731
    test = [(f"mni152 z={zs[i]}", images[i], wm[i]) for i in test_idx]
    return pick(train_idx), pick(val_idx), test, p["mni_epochs"]


def refined_start(model, image: np.ndarray, steps: int = 1, trace: list | None = None, **refiner_kw):
    """The model's mask before any correction: ``steps`` feedback iterations from the Otsu mask
    (FANet's test-time iterative refinement, up to 10 in the paper). Returns ``(refiner, mask)``;
    ``trace`` gets the Otsu mask and each iteration's."""
    from ..inference import FANetRefiner

    refiner = FANetRefiner(model, image, channel_axis=0, device="auto", **refiner_kw)
    if trace is not None:
        trace.append(refiner.current_mask)
    mask = None
    for _ in range(max(1, int(steps))):
        mask = refiner.step().mask
        if trace is not None:
            trace.append(mask)
    return refiner, mask


def feedback_weight_share(model) -> float | None:
    """How much the first layers listen to the fed-back mask and edit: the L2 norm of the first
    block's weights on those input channels over the norm on the image channels (0 when they are
    as ``with_feedback_inputs`` made them; None for a model without them). A correction can only
    propagate through weights of some size."""
    weights = model.feedback_input_weights() if hasattr(model, "feedback_input_weights") else []
    if not weights:
        return None
    fed = sum(float(w[:, i:].detach().pow(2).sum()) for w, i in weights)
    image = sum(float(w[:, :i].detach().pow(2).sum()) for w, i in weights)
    return (fed / image) ** 0.5 if image else None


def correction_rounds(model, image: np.ndarray, truth: np.ndarray, rounds: int, *, brush: int | None = 20,
                      start: np.ndarray | None = None, focus: int | None = None, progressive_merge: bool = False,
                      start_steps: int = 1):
    """One simulated user on one image: per round ``k`` the Dice, the pixels painted so far and
    the gain outside the paint. ``model=None``: paint only, starting from ``start``; a model
    starts from ``refined_start`` after ``start_steps`` iterations (round 0's ``start_dice``: the
    Dice of the Otsu mask and of each iteration, FANet's refinement curve). ``focus``,
    ``progressive_merge``: the refiner's local update after each correction (FANetRefiner)."""
    from ..metrics import binary_metrics

    truth = np.asarray(truth, bool)
    dice = lambda m: float(binary_metrics(m, truth)["dice"])  # noqa: E731
    trace: list[np.ndarray] = []
    if model is None:
        mask = np.asarray(start, bool)
        refiner = None
    else:
        refiner, mask = refined_start(model, image, start_steps, trace, pin_edits=True, focus=focus,
                                      progressive_merge=progressive_merge)
    rows = [{"round": 0, "dice": dice(mask), "painted": 0, "gain_outside": 0.0,
             **({"start_dice": [dice(m) for m in trace]} if trace else {})}]
    painted_total = np.zeros(truth.shape, bool)
    for k in range(1, rounds + 1):
        fed, region = paint_largest_errors(mask, truth, 1, brush)
        painted_total |= region
        if refiner is None:
            mask = fed
        else:
            refiner.set_mask(fed)
            mask = refiner.step().mask
        rows.append({"round": k, "dice": dice(mask), "painted": int(painted_total.sum()),
                     "gain_outside": dice(mask) - dice(fed)})
    return rows


def _noc(dices: list[float], target: float) -> int:
    return next((k for k, d in enumerate(dices) if d >= target), len(dices))


def run(data: str | Path | None, out: str | Path, *, scale: str = "reduced", seed: int | None = None,
        epochs: int | None = None, log=print, sizes: dict | None = None, name: str = NAME) -> dict:
    """``sizes``: another scale table of the same keys (``corrections_clicks.SCALE``)."""
    from ..training import build_augmenter, recipe_for

    p = common.scale_params(sizes or SCALE, scale, None)  # --epochs overrides both data sets' counts below
    seed = 0 if seed is None else int(seed)
    out = Path(out)
    norm = Normalization("zscore", per="image")
    per_round, per_image, table, refinement = [], [], [], []
    seconds, best_epoch, weight_share = {}, {}, {}
    loaders = {"em": ("isbi2012_em", _em), "dsb": ("dsb2018_nuclei", _dsb), "mni-wm": ("mni152", _mni_wm)}
    for dname in p["datasets"]:
        folder, load = loaders[dname]
        (tr_i, tr_l), (va_i, va_l), test, n_epochs = load(common.data_root(data, folder), p)
        n_epochs = epochs or n_epochs
        base = dataclasses.replace(recipe_for("fanet"), epochs=n_epochs, seed=seed, batch_size=4, lr=1e-3,
                                   val_batch_size=2)
        train_ds = common.make_dataset(tr_i, tr_l, range(len(tr_i)), [f"t{k}" for k in range(len(tr_i))], norm,
                                       augmenter=build_augmenter(base), seed=seed)
        val_ds = common.make_dataset(va_i, va_l, range(len(va_i)), [f"v{k}" for k in range(len(va_i))], norm)
        log(f"{name}/{dname}: {len(train_ds)} train / {len(val_ds)} val tiles, {len(test)} held-out test images "
            f"{test[0][1].shape[-2:]}, width {p['width']}, {n_epochs} epochs, seed {seed}")
        models = {}
        for variant in _variants(p):
            model_kw, cfg_kw = VARIANTS[variant] if variant in VARIANTS else VARIANTS["released"]
            start = None
            cfg = dataclasses.replace(base, **cfg_kw)
            if variant != "released":  # fine-tuned from the released model (see VARIANTS, CONTROL)
                from ..models.fanet import with_feedback_inputs

                start = (with_feedback_inputs(models["released"], **model_kw) if variant == "correction-aware"
                         else copy.deepcopy(models["released"]))
                if variant == "correction-aware":
                    cfg = dataclasses.replace(cfg, correction_prob=p["ca_correction_prob"])
                cfg = dataclasses.replace(cfg, lr=base.lr * p["ca_lr_scale"],
                                          epochs=max(1, round(n_epochs * p["ca_epoch_scale"])),
                                          correction_radius=tuple(p["train_radius"]))
            res = common.train("fanet", {"in_channels": 1, "out_channels": 1, "width": p["width"], **model_kw},
                               train_ds, val_ds, cfg, log, model=start)
            models[variant] = res.model
            share = feedback_weight_share(res.model)
            if share is not None:
                weight_share[f"{dname}/{variant}"] = share
                log(f"{name}/{dname}/{variant}: feedback-input weights / image weights (first block) {share:.3f}")
            seconds[f"{dname}/{variant}"] = res.seconds
            best_epoch[f"{dname}/{variant}"] = res.best_epoch
        methods = _methods(p)
        curves: dict[str, list[list[dict]]] = {m: [] for m in methods}
        for image_name, image, truth in test:
            for method, (variant, local) in methods.items():
                if variant is None:  # paint only, on the released model's prediction
                    start = refined_start(models["released"], image, p["start_steps"])[1]
                    rows = correction_rounds(None, image, truth, p["rounds"], brush=p["brush"], start=start)
                else:
                    rows = correction_rounds(models[variant], image, truth, p["rounds"], brush=p["brush"],
                                             start_steps=p["start_steps"], **local)
                curves[method].append(rows)
                for r in rows:
                    per_image.append({"dataset": dname, "method": method, "image": image_name,
                                      **{k: v for k, v in r.items() if k != "start_dice"}})
        for method, runs in curves.items():
            if "start_dice" in runs[0][0]:  # FANet's refinement before any correction: init (Otsu), 1..start_steps
                for it, d in enumerate(np.mean([rows[0]["start_dice"] for rows in runs], axis=0)):
                    refinement.append({"dataset": dname, "method": method, "iteration": it, "dice": float(d)})
            for k in range(p["rounds"] + 1):
                per_round.append({"dataset": dname, "method": method, "round": k,
                                  "dice": float(np.mean([r[k]["dice"] for r in runs])),
                                  "gain_outside": float(np.mean([r[k]["gain_outside"] for r in runs]))})
            dices = [[r["dice"] for r in rows] for rows in runs]
            total = float(np.mean([d[-1] - d[0] for d in dices]))
            outside = float(np.mean([sum(r["gain_outside"] for r in rows[1:]) for rows in runs]))
            table.append({"dataset": dname, "method": method, "dice_0": float(np.mean([d[0] for d in dices])),
                          f"dice_{p['rounds']}": float(np.mean([d[-1] for d in dices])),
                          "gain": total, "gain_outside_paint": outside,
                          "share_outside": outside / total if total else float("nan"),
                          **{f"noc{int(t * 100)}": float(np.mean([_noc(d, t) for d in dices])) for t in TARGETS}})
    common.write_csv(out / "per_round.csv", per_round)
    common.write_csv(out / "per_image.csv", per_image)
    common.write_csv(out / "table.csv", table)
    common.write_csv(out / "refinement.csv", refinement)
    rounds = list(range(p["rounds"] + 1))
    for dname in p["datasets"]:
        common.plot(out / f"dice_vs_corrections_{dname}.png", "line",
                    {m: [r["dice"] for r in per_round if r["dataset"] == dname and r["method"] == m]
                     for m in _methods(p)},
                    rounds, title=f"Simulated user on {dname}: Dice after k corrections", xlabel="corrections k",
                    ylabel="Dice")
    result = {"study": name, "scale": scale, "seed": seed, "epochs": epochs or p["epochs"],
              "dsb_epochs": epochs or p["dsb_epochs"], "width": p["width"], "rounds": p["rounds"], "brush": p["brush"],
              "train_radius": list(p["train_radius"]),
              "focus": p["focus"], "merge": p["merge"], "ca_lr_scale": p["ca_lr_scale"], "ca_epoch_scale": p["ca_epoch_scale"],
              "ca_correction_prob": p["ca_correction_prob"], "start_steps": p["start_steps"],
              "train_seconds": seconds, "best_epoch": best_epoch, "feedback_weight_share": weight_share, "table": table,
              "refinement": refinement, "per_round": per_round}
    common.write_json(out / "results.json", result)
    return result


def claims(result: dict) -> list[dict]:
    """Signed differences, > 0 where the issue's target holds."""
    rows = {(r["dataset"], r["method"]): r for r in result["table"]}
    out = []
    for dname in sorted({d for d, _ in rows}):
        ca, rel, paint = rows[(dname, "correction-aware")], rows[(dname, "released")], rows[(dname, "paint only")]
        out += [
            {"claim": f"{dname}: NoC@90 paint only - correction-aware", "statement":
             "the correction-aware FANet needs fewer corrections than painting alone", "value":
             paint["noc90"] - ca["noc90"], "paper": None},
            {"claim": f"{dname}: NoC@90 released - correction-aware", "statement":
             "... and fewer than the released FANet feedback", "value": rel["noc90"] - ca["noc90"], "paper": None},
            {"claim": f"{dname}: NoC@95 paint only - correction-aware", "statement": "the same at Dice 0.95",
             "value": paint["noc95"] - ca["noc95"], "paper": None},
            {"claim": f"{dname}: NoC@95 released - correction-aware", "statement": "the same at Dice 0.95",
             "value": rel["noc95"] - ca["noc95"], "paper": None},
            *([{"claim": f"{dname}: NoC@95 released trained as long - correction-aware", "statement":
                "... and fewer than the released FANet fine-tuned as long (the control)",
                "value": rows[(dname, CONTROL)]["noc95"] - ca["noc95"], "paper": None}]
              if (dname, CONTROL) in rows else []),
            {"claim": f"{dname}: correction-aware gain outside the paint", "statement":
             "the correction-aware FANet improves pixels the user did not paint", "value":
             ca["gain_outside_paint"], "paper": None},
            {"claim": f"{dname}: released gain outside the paint", "statement":
             "(reference) the released FANet improves pixels the user did not paint", "value":
             rel["gain_outside_paint"], "paper": None},
        ]
    return out
