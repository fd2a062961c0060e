"""FU-net (Jafari et al. 2019): BRU-net with and without the feedback-weighted loss on a
small training set. The paper (Table 1, MB/SN in T1 brain MRI) finds the feedback weight
(β = 3) helps most with few training images, especially for the small structure (SN). The
private MRI data are not available; we use MNI152 GM/WM slices with 5 and 10 training slices.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import common, mni

NAME = "fu-net"
# Table 1: mean DC (MB, SN) for BRU-net vs FU-net.
PAPER = {"200/100": {"brunet": (0.8775, 0.7164), "funet": (0.8929, 0.7563)},
         "100/200": {"brunet": (0.8550, 0.7005), "funet": (0.8710, 0.7575)},
         "50/250": {"brunet": (0.8088, 0.6387), "funet": (0.8182, 0.7087)}}
SCALE = {
    "smoke": dict(factor=6, sizes=(2,), n_test=1, epochs=1),
    "reduced": dict(factor=3, sizes=(5, 10), n_test=12, epochs=100),
    "full": dict(factor=1, sizes=(5, 10), n_test=None, epochs=500),
}
TABLES = {"table.csv": ("n_train", "method")}
LOSSES = {"BRU-net (ce)": "ce", "FU-net (feedback_ce, beta 3)": "feedback_ce"}


def run(data: str | Path | None, out: str | Path, *, scale: str = "reduced", seed: int | None = None,
        epochs: int | None = None, log=print) -> dict:
    from ..training import recipe_for

    p = common.scale_params(SCALE, scale, epochs)
    out = Path(out)
    images, labels, names, zs, train_all, test_idx = mni.load(data, p["factor"], None, p["n_test"])
    rec = recipe_for("brunet")
    table = []
    for n in p["sizes"]:
        train_idx = common.evenly(train_all, n)
        # Validation (best-model selection in the recipe) is not used: weights after the last epoch.
        for label, loss in LOSSES.items():
            opts = rec.loss_options if loss == "feedback_ce" else {}
            cfg = dataclasses.replace(rec, loss=loss, loss_options=opts, epochs=p["epochs"],
                                      select_on="val_loss", select_class=None, seed=0 if seed is None else seed)
            train_ds = mni.dataset(images, labels, names, train_idx, seed=cfg.seed)
            log(f"{NAME}: {label}, {n} training slices, {cfg.epochs} epochs")
            res = common.train("brunet", {"in_channels": 1, "out_channels": 3}, train_ds, None, cfg, log)
            mean, _ = mni.dice_per_class(res.model, images, labels, test_idx)
            table.append({"n_train": n, "method": label, **mean, "train_seconds": res.seconds})
            log("  " + "  ".join(f"{k}={v:.4f}" for k, v in mean.items()))
    common.write_csv(out / "table.csv", table)
    xs = [f"{r['n_train']}" for r in table if r["method"] == next(iter(LOSSES))]
    series = {f"{m.split(' ')[0]} {c}": [r[f"dice_{c}"] for r in table if r["method"] == m]
              for m in LOSSES for c in ("GM", "WM")}
    common.plot(out / "dice.png", "bar", series, xs, title="MNI152 GM/WM: BRU-net vs FU-net (test Dice)",
                xlabel="training slices", ylabel="Dice")
    result = {"study": NAME, "scale": scale, "seed": 0 if seed is None else seed, "epochs": p["epochs"],
              "factor": p["factor"], "test_slices_z": [zs[i] for i in test_idx],
              "train_slices_z": {n: [zs[i] for i in common.evenly(train_all, n)] for n in p["sizes"]},
              "table": table, "paper_table1": PAPER}
    common.write_json(out / "results.json", result)
    return result


def claims(result: dict) -> list[dict]:
    """FU-net minus BRU-net Dice per tissue and training-set size (> 0: the feedback weight helps).
    The paper's nearest figure (Table 1, 50 training images) is for other structures, so it
    goes into the statement, not into a column to compare against."""
    fu, bru = list(LOSSES)[1], list(LOSSES)[0]
    by = {(r["n_train"], r["method"]): r for r in result["table"]}
    p50 = PAPER["50/250"]
    ref = (f"paper, 50 images: MB {p50['funet'][0] - p50['brunet'][0]:+.3f}, "
           f"SN {p50['funet'][1] - p50['brunet'][1]:+.3f}")
    return [{"claim": f"FU - BRU Dice {cls}, {n} slices",
             "statement": f"feedback weight helps {cls} with {n} training slices ({ref})",
             "value": float(by[(n, fu)][f"dice_{cls}"]) - float(by[(n, bru)][f"dice_{cls}"]), "paper": None}
            for n in sorted({k[0] for k in by}) for cls in ("GM", "WM")]
