"""Multi-seed studies: the summary tables and claims equal the numbers recomputed from each
seed's own files, finished seeds are reused, and training keeps the best validation epoch."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_segattn.cli import main
from napari_segattn.experiments import common, seeds


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_aggregate_rows_mean_sd_by_key_and_paper_columns_copied():
    a = [{"m": "x", "it": 0, "d": 0.5, "p": float("nan"), "paper_d": 0.9},
         {"m": "y", "it": 0, "d": 0.1, "p": 1.0, "paper_d": 0.8}]
    b = [{"m": "y", "it": 0, "d": 0.3, "p": 3.0, "paper_d": 0.8},
         {"m": "x", "it": 0, "d": 0.7, "p": 2.0, "paper_d": 0.9}]
    c = [{"m": "x", "it": 0, "d": 0.9, "p": 4.0, "paper_d": 0.9}]
    rows = seeds.aggregate_rows([a, b, c], ("m", "it"))
    assert [(r["m"], r["it"], r["n_seeds"]) for r in rows] == [("x", "0", 3), ("y", "0", 2)]
    x, y = rows
    assert x["d"] == pytest.approx(0.7) and x["d_sd"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert x["p"] == pytest.approx(3.0)  # the NaN cell is left out of the mean
    assert y["d"] == pytest.approx(0.2) and y["d_sd"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert x["paper_d"] == 0.9 and "paper_d_sd" not in x


def test_aggregate_rows_inf_propagates():
    rows = seeds.aggregate_rows([[{"k": "a", "hd95": "inf"}], [{"k": "a", "hd95": "2.0"}]], ("k",))
    assert rows[0]["hd95"] == float("inf") and np.isnan(rows[0]["hd95_sd"])


def test_cli_seeds_summary_matches_per_seed_files(tmp_path, shared_data, capsys):
    out = tmp_path / "fu"
    args = ["experiment", "fu-net", "--smoke", "--data", str(shared_data), "--out", str(out), "--seeds", "3", "4"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "holds in" in printed and "seeds [3, 4]" in printed
    per_seed = {s: _csv(out / f"seed-{s}" / "table.csv") for s in (3, 4)}
    for s in (3, 4):
        assert json.loads((out / f"seed-{s}" / "results.json").read_text())["seed"] == s
    summary = _csv(out / "summary_table.csv")
    assert len(summary) == len(per_seed[3]) == 2
    for row in summary:
        vals = [float(r["dice_GM"]) for s in (3, 4) for r in per_seed[s] if r["method"] == row["method"]]
        assert float(row["dice_GM"]) == pytest.approx(np.mean(vals), abs=1e-6)
        assert row["n_seeds"] == "2"
    # claims: FU-net minus BRU-net Dice of each seed, recomputed from that seed's table
    claims = {c["claim"]: c for c in _csv(out / "claims.csv")}
    c = claims["FU - BRU Dice GM, 2 slices"]
    for s in (3, 4):
        by = {r["method"].split()[0]: float(r["dice_GM"]) for r in per_seed[s]}
        assert float(c[f"seed_{s}"]) == pytest.approx(by["FU-net"] - by["BRU-net"], abs=1e-6)
    diffs = [float(c["seed_3"]), float(c["seed_4"])]
    assert float(c["mean"]) == pytest.approx(np.mean(diffs), abs=1e-6)
    assert c["holds_in"] == f"{sum(d > 0 for d in diffs)}/2"
    assert (out / "summary.json").is_file()

    # a second call reuses the finished seeds (nothing retrained, nothing overwritten) ...
    stamp = (out / "seed-3" / "results.json").stat().st_mtime_ns
    assert main(args[:-2] + ["3", "4"]) == 0
    assert "reusing" in capsys.readouterr().out
    assert (out / "seed-3" / "results.json").stat().st_mtime_ns == stamp
    # ... and refuses to mix scales or epoch counts in one folder
    assert main(["experiment", "fu-net", "--data", str(shared_data), "--out", str(out), "--seeds", "3"]) == 2
    assert "smoke" in capsys.readouterr().err
    assert main(args + ["--epochs", "2"]) == 2
    assert "1 epochs" in capsys.readouterr().err
    assert (out / "seed-3" / "results.json").stat().st_mtime_ns == stamp


def test_epochs_override_reaches_training(tmp_path, shared_data):
    from napari_segattn.experiments import run_study

    res = run_study("fu-net", shared_data, tmp_path, scale="smoke", epochs=2, log=lambda s: None)
    assert res["epochs"] == 2
    with pytest.raises(ValueError, match="epochs"):
        run_study("fu-net", shared_data, tmp_path / "x", scale="smoke", epochs=0, log=lambda s: None)


def test_summarise_names_a_missing_seed(tmp_path):
    with pytest.raises(FileNotFoundError, match="seed 9"):
        seeds.summarise("fu-net", tmp_path, [9])


def test_train_keeps_the_best_validation_epoch():
    """The returned model scores on the validation set exactly what its best epoch scored."""
    import torch

    from napari_segattn.data import Normalization
    from napari_segattn.training import TrainConfig
    from napari_segattn.training.losses import build_loss

    rng = np.random.default_rng(0)
    images = [rng.normal(size=(1, 16, 16)).astype(np.float32) for _ in range(6)]
    labels = [(im[0] > 0.3).astype(np.int64) for im in images]
    # validation labels are the opposite rule: the better the model learns the training rule,
    # the worse it validates, so the best epoch is an early one, not the last
    labels[4:] = [1 - lab for lab in labels[4:]]
    names = [f"s{i}" for i in range(6)]
    norm = Normalization("none")
    tr = common.make_dataset(images, labels, [0, 1, 2, 3], names, norm)
    va = common.make_dataset(images, labels, [4, 5], names, norm)
    cfg = TrainConfig(epochs=6, batch_size=2, lr=0.05, loss="dice", augment="none", seed=1)
    res = common.train("unet", {"in_channels": 1, "out_channels": 1, "width": 4}, tr, va, cfg, log=lambda s: None)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) < cfg.epochs - 1
    # the validation loss recomputed by hand (batch size 1, mean over the two images)
    loss_fn = build_loss("dice", 1)
    with torch.no_grad():
        val_loss = np.mean([float(loss_fn(res.model(torch.from_numpy(images[i][None])),
                                          torch.from_numpy(labels[i][None]))) for i in (4, 5)])
    assert val_loss == pytest.approx(min(losses), abs=1e-5)
