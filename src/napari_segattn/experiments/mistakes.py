"""Paying Attention to Mistakes (FPA/RFNA) on a thin-foreground task: ISBI 2012 EM membranes.

The paper's claim (Table 5, BRATS2018 enhancing tumour): the attention baselines miss about 58 %
of the foreground (FN rate), FPA 49 %, RFNA 50 %, at FP rates below 1e-2 %. BRATS is not in
the shared data, so we test the same mechanism on membranes (foreground = mask == 0, about
22 % of pixels, 1-2 px wide after downsampling), comparing unet / aunet / fpa / rfna trained
with the PAM recipes (rfna: reversed labels + warm-up). Test metrics per image (IoU = Jaccard,
HD95 in pixels) and FP/FN rates pooled over the test pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..data import Normalization
from . import common

NAME = "mistakes"
MODELS = ("unet", "aunet", "fpa", "rfna")
# Table 5 (BRATS2018 enhancing tumour; the paper prints IoU and FN rate in %, here as fractions
# like ours; HD95 in mm = px on BRATS' 1 mm grid).
PAPER = {"aunet": {"iou": 0.6648, "hd95": 15.51, "fn_rate": 0.5842},
         "rfna": {"iou": 0.7115, "hd95": 21.76, "fn_rate": 0.5015},
         "fpa": {"iou": 0.7010, "hd95": 10.86, "fn_rate": 0.4939}}
SCALE = {
    "smoke": dict(factor=8, crop=None, epochs=1, n_train=4, width=8),
    "reduced": dict(factor=4, crop=64, epochs=40, n_train=None, width=32),
    "full": dict(factor=1, crop=None, epochs=100, n_train=None, width=32),
}
KEYS = ("dice", "iou", "hd95", "precision", "recall", "fp_rate", "fn_rate")
TABLES = {"table.csv": ("model",)}


def run(data: str | Path | None, out: str | Path, *, scale: str = "reduced", seed: int | None = None,
        epochs: int | None = None, log=print) -> dict:
    from ..explain import error_map
    from ..inference import predict
    from ..metrics import binary_metrics
    from ..training import build_augmenter, recipe_for

    p = common.scale_params(SCALE, scale, epochs)
    out = Path(out)
    root = common.data_root(data, "isbi2012_em")
    images, labels, names = common.em_arrays(root, p["factor"], p["crop"], foreground="membrane")
    split = common.em_split(len(images))
    train_idx = split["train"][: p["n_train"]] if p["n_train"] else split["train"]
    norm = Normalization("zscore", per="image")
    fg = float(np.mean([labels[i].mean() for i in split["test"]]))
    log(f"{NAME}: {len(train_idx)} train / 3 val / 3 test, {images[0].shape[-2]}x{images[0].shape[-1]}, "
        f"membrane fraction {fg:.3f}, {p['epochs']} epochs")

    table, per_image, seconds, tiles = [], [], {}, {}
    for name in MODELS:
        cfg = recipe_for(name)
        # RFNA's sawtooth warm-up covers the first 10 % of the epochs (10 of 100, NNTrain.py).
        warm = max(1, round(cfg.warmup_epochs * p["epochs"] / 100)) if cfg.warmup_epochs else 0
        cfg = dataclasses.replace(cfg, epochs=p["epochs"], warmup_epochs=warm, seed=cfg.seed if seed is None else seed,
                                  milestones=None)
        train_ds = common.make_dataset(images, labels, train_idx, names, norm, augmenter=build_augmenter(cfg), seed=cfg.seed)
        val_ds = common.make_dataset(images, labels, split["val"], names, norm)
        res = common.train(name, {"in_channels": 1, "out_channels": 1, "width": p["width"]}, train_ds, val_ds, cfg, log)
        seconds[name] = res.seconds
        rows, counts = [], np.zeros(4, dtype=np.int64)
        for i in split["test"]:
            pred = predict(res.model, images[i][0], device="auto").labels.astype(bool)
            gt = labels[i].astype(bool)
            m = binary_metrics(pred, gt)
            rows.append(m)
            per_image.append({"model": name, "image": names[i], **{k: m[k] for k in KEYS}})
            em = error_map(pred, gt)
            counts += [m["tp"], m["fn"], m["fp"], m["tn"]]
            if i == split["test"][0]:
                tiles[name] = em.labels
                tiles["image"] = common.gray_u8(images[i][0])
                tiles["gt"] = (gt * 255).astype(np.uint8)
        tp, fn, fp, tn = (int(c) for c in counts)
        row = {"model": name, **common.mean_rows(rows, KEYS),
               "pooled_fp_rate": fp / max(fp + tn, 1), "pooled_fn_rate": fn / max(fn + tp, 1),
               "train_seconds": res.seconds, "best_epoch": res.best_epoch}
        row.update({f"paper_{k}": v for k, v in PAPER.get(name, {}).items()})
        table.append(row)
        common.write_png(out / f"error_map_{name}.png", common.error_rgb(tiles[name]))
    common.write_csv(out / "table.csv", table)
    common.write_csv(out / "per_image.csv", per_image)
    common.write_png(out / "error_maps.png", common.panel(
        [tiles["image"], tiles["gt"]] + [common.error_rgb(tiles[m]) for m in MODELS]))
    common.plot(out / "fn_fp_rates.png", "bar",
                {"FN rate": [r["pooled_fn_rate"] for r in table], "FP rate": [r["pooled_fp_rate"] for r in table]},
                [r["model"] for r in table], title="EM membranes: pooled test FN / FP rate", xlabel="model",
                ylabel="rate")
    by = {r["model"]: r for r in table}
    result = {"study": NAME, "scale": scale, "seeds": {m: (recipe_for(m).seed if seed is None else seed) for m in MODELS},
              "epochs": p["epochs"], "size": list(images[0].shape[-2:]), "width": p["width"], "split": split,
              "foreground_fraction_test": fg, "table": table,
              "fpa_lowers_fn_vs_unet": by["fpa"]["pooled_fn_rate"] < by["unet"]["pooled_fn_rate"],
              "fpa_lowers_fn_vs_aunet": by["fpa"]["pooled_fn_rate"] < by["aunet"]["pooled_fn_rate"],
              "error_maps_png": f"columns: image, ground truth, then {list(MODELS)}; yellow TP, blue FN, red FP"}
    common.write_json(out / "results.json", result)
    return result


def claims(result: dict) -> list[dict]:
    """Table 5's FPA claims as signed differences (> 0: FPA better, as the paper reports)."""
    by = {r["model"]: r for r in result["table"]}

    def d(a, b, key):
        return common.as_float(by[a][key]) - common.as_float(by[b][key])

    return [
        {"claim": "FN rate aunet - fpa", "statement": "FPA misses less foreground than attention U-Net",
         "value": d("aunet", "fpa", "pooled_fn_rate"), "paper": PAPER["aunet"]["fn_rate"] - PAPER["fpa"]["fn_rate"]},
        {"claim": "FN rate unet - fpa", "statement": "FPA misses less foreground than plain U-Net",
         "value": d("unet", "fpa", "pooled_fn_rate"), "paper": None},
        {"claim": "IoU fpa - aunet", "statement": "FPA overlaps better than attention U-Net",
         "value": d("fpa", "aunet", "iou"), "paper": PAPER["fpa"]["iou"] - PAPER["aunet"]["iou"]},
        {"claim": "HD95 aunet - fpa", "statement": "FPA's boundary error (HD95, px) is smaller",
         "value": d("aunet", "fpa", "hd95"), "paper": PAPER["aunet"]["hd95"] - PAPER["fpa"]["hd95"]},
        {"claim": "FN rate aunet - rfna", "statement": "RFNA misses less foreground than attention U-Net",
         "value": d("aunet", "rfna", "pooled_fn_rate"), "paper": PAPER["aunet"]["fn_rate"] - PAPER["rfna"]["fn_rate"]},
    ]
