"""Smoke runs of the four studies (1 epoch, tiny subsets) on the real shared data: the whole
pipeline runs, writes its files, and its numbers agree with independent computations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_segattn.cli import main
from napari_segattn.experiments import run_study


def _csv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_data):
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(name)
            cache[name] = (run_study(name, shared_data, out, scale="smoke", log=lambda s: None), out)
        return cache[name]

    return get


def test_fanet_ablation_rows_and_otsu_baseline(smoke, shared_data):
    from napari_segattn.data import isbi2012_em, otsu_mask
    from napari_segattn.experiments import common
    from napari_segattn.metrics import binary_metrics

    res, out = smoke("fanet-ablation")
    for f in ("table.csv", "per_iteration.csv", "per_image.csv", "error_maps.png", "results.json"):
        assert (out / f).is_file()
    iters = {(r["variant"], r["iteration"]) for r in res["per_iteration"]}
    assert iters == {(v, it) for v in ("B1", "MixPool", "MixPool-STE") for it in ("init", 0, 1)}
    # The "Otsu input mask" row is the released iteration-0 feedback: recompute it directly.
    ds = isbi2012_em(shared_data)
    i = res["split"]["test"][0]
    img, lab = common.downsample(ds.raw(i), ds.sample(i)["label"], 16)
    expect = binary_metrics(otsu_mask(np.repeat(img, 3, axis=0), channel_axis=0), lab.astype(bool))
    otsu = next(r for r in res["table"] if r["row"] == "Otsu input mask")
    assert otsu["dice"] == pytest.approx(expect["dice"], abs=1e-9)
    # the all-foreground floor is 2p / (1 + p) with p the foreground fraction
    floor = next(r for r in res["table"] if r["row"] == "all-foreground mask")
    p = lab.astype(bool).mean()
    assert floor["dice"] == pytest.approx(2 * p / (1 + p), abs=1e-9) and floor["recall"] == 1.0
    b2 = next(r for r in res["table"] if r["row"].startswith("B2"))
    mix0 = next(r for r in res["per_iteration"] if r["variant"] == "MixPool" and r["iteration"] == 0)
    assert b2["dice"] == mix0["dice"] and b2["paper_dice"] == 0.9540


def test_mistakes_rates_are_consistent(smoke):
    res, out = smoke("mistakes")
    assert [r["model"] for r in res["table"]] == ["unet", "aunet", "fpa", "rfna"]
    per_image = _csv(out / "per_image.csv")
    assert len(per_image) == 4 * 3
    for r in per_image:  # FN rate = FN/(FN+TP) = 1 - recall on every image with foreground
        assert float(r["fn_rate"]) == pytest.approx(1 - float(r["recall"]), abs=1e-5)
    for r in res["table"]:
        assert 0 <= r["pooled_fn_rate"] <= 1 and 0 <= r["pooled_fp_rate"] <= 1
    # membranes are the thin minority class
    assert 0.05 < res["foreground_fraction_test"] < 0.5
    for m in res["table"]:
        assert (out / f"error_map_{m['model']}.png").is_file()


def test_attention_shift_masses_partition_the_saliency(smoke):
    res, out = smoke("attention-shift")
    assert [r["alpha"] for r in res["dice_vs_alpha"]] == ["none", "8"]
    rows = _csv(out / "attention_shift.csv")
    for r in rows:  # every pixel is background, GM or WM, so the shares sum to 1
        assert sum(float(r[f"mass_{k}"]) for k in ("background", "GM", "WM")) == pytest.approx(1, abs=1e-6)
    assert {r["explained"] for r in rows} == {"GM", "WM"}  # target classes 1 and 2, named
    ref = [r for r in rows if r["alpha"] == "none"]
    assert all(abs(float(r[f"delta_{k}"])) < 1e-12 for r in ref for k in ("GM", "WM"))
    assert all(np.isfinite(r["saliency_relative_gap"]) for r in res["dice_vs_alpha"])
    assert (out / "saliency_maps.png").is_file()


def test_fu_net_compares_both_losses(smoke):
    res, out = smoke("fu-net")
    assert [(r["n_train"], r["method"].split()[0]) for r in res["table"]] == [(2, "BRU-net"), (2, "FU-net")]
    for r in res["table"]:
        assert 0 <= r["dice_GM"] <= 1 and 0 <= r["dice_WM"] <= 1


def test_cli_refuses_to_overwrite(tmp_path, shared_data, capsys):
    out = tmp_path / "fu"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert main(["experiment", "fu-net", "--smoke", "--data", str(shared_data), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == {}
    assert main(["experiment", "fu-net", "--data", str(tmp_path), "--smoke", "--out", str(tmp_path / "x")]) == 2


def test_corrections_benchmark_curves_and_paint_only_by_hand(smoke, shared_data):
    """The simulated-user study: per-round rows for every method and data set; the paint-only
    curve is recomputed here from the released model's first prediction with the same user."""
    from napari_segattn.data import paint_largest_errors
    from napari_segattn.metrics import binary_metrics

    res, out = smoke("corrections")
    for f in ("table.csv", "per_round.csv", "per_image.csv", "dice_vs_corrections_em.png", "results.json"):
        assert (out / f).is_file()
    methods = {"paint only", "released", "correction-aware"}
    assert {(r["dataset"], r["method"]) for r in res["table"]} == {(d, m) for d in ("em", "dsb") for m in methods}
    assert {r["round"] for r in res["per_round"]} == {0, 1, 2}
    img = _csv(out / "per_image.csv")
    # paint only: Dice never falls (painting ground truth into an error can only help), gain_outside 0
    for name in {r["image"] for r in img}:
        rows = sorted((r for r in img if r["image"] == name and r["method"] == "paint only"), key=lambda r: int(r["round"]))
        d = [float(r["dice"]) for r in rows]
        assert all(b >= a - 1e-12 for a, b in zip(d, d[1:])) and all(float(r["gain_outside"]) == 0 for r in rows)
    # one round of the simulated user by hand on a known mask
    truth = np.zeros((64, 64), bool)
    truth[10:30, 10:30] = True
    fixed, region = paint_largest_errors(np.zeros_like(truth), truth, 1, 20)
    assert region.sum() == 400 and binary_metrics(fixed, truth)["dice"] == 1.0
    # NoC@90 recomputed from the per-image curves (3 = not reached within the 2 rounds)
    for row in res["table"]:
        nocs = []
        for name in {r["image"] for r in img if r["dataset"] == row["dataset"]}:
            d = [float(r["dice"]) for r in sorted((r for r in img if r["image"] == name and r["method"] == row["method"]
                                                   and r["dataset"] == row["dataset"]), key=lambda r: int(r["round"]))]
            nocs.append(next((k for k, v in enumerate(d) if v >= 0.9), 3))
        assert row["noc90"] == pytest.approx(np.mean(nocs))
    # FANet's refinement before any correction: Otsu ("init", 0) and start_steps iterations per model,
    # the last of which is round 0 of the simulated user
    from napari_segattn.experiments.corrections import SCALE

    steps = SCALE["smoke"]["start_steps"]
    refinement = _csv(out / "refinement.csv")
    for (dname, method) in {(d, m) for d in ("em", "dsb") for m in methods - {"paint only"}}:
        rows = sorted((r for r in refinement if (r["dataset"], r["method"]) == (dname, method)),
                      key=lambda r: int(r["iteration"]))
        assert [int(r["iteration"]) for r in rows] == list(range(steps + 1))
        (start,) = [r for r in res["table"] if (r["dataset"], r["method"]) == (dname, method)]
        assert float(rows[-1]["dice"]) == pytest.approx(start["dice_0"])
    assert not any(r["method"] == "paint only" for r in refinement)


def test_corrections_clicks_focus_keeps_the_mask_outside_the_box(smoke, shared_data):
    """The click protocol (corrections-clicks): DSB only, 5 px clicks, model steps limited to the
    box around each click (focus 16 px) with whole-image references; a focused step never
    changes a pixel farther than 16 px from its click's box, which the per-image rows show as a
    gain outside the paint no larger in magnitude than the box allows."""
    res, out = smoke("corrections-clicks")
    assert res["brush"] == 5 and res["focus"] == 16 and res["merge"] and res["train_radius"] == [3, 12]
    methods = {"paint only", "released", "correction-aware", "released, trained as long",
               "released (whole image)", "correction-aware (whole image)"}
    assert {(r["dataset"], r["method"]) for r in res["table"]} == {("dsb", m) for m in methods}
    assert (out / "dice_vs_corrections_dsb.png").is_file()
    # the focus is a real restriction: a refiner with it changes nothing outside the click's box
    from napari_segattn.data import dsb2018_nuclei, paint_largest_errors
    from napari_segattn.inference import FANetRefiner
    from napari_segattn.models import build_model

    ds = dsb2018_nuclei(shared_data)
    img, truth = np.asarray(ds.raw(0), np.float32)[..., :128, :128], np.asarray(ds.label(0))[..., :128, :128] > 0
    net = build_model("fanet", in_channels=1, out_channels=1, width=4)
    ref = FANetRefiner(net, img, channel_axis=0 if img.ndim == 3 else None, device="cpu", pin_edits=True, focus=16)
    fed, region = paint_largest_errors(ref.step().mask, truth, 1, 5)
    ref.set_mask(fed)
    r = ref.step()
    ys, xs = np.nonzero(region)
    box = np.zeros(truth.shape, bool)
    box[max(0, ys.min() - 16):ys.max() + 17, max(0, xs.min() - 16):xs.max() + 17] = True
    assert not (r.mask != fed)[~box].any()


def test_corrections_wm_holds_out_odd_slices_with_white_matter(smoke, shared_data):
    """The white-matter protocol: MNI152 T1 at 2 mm, only slices with >= 8 % white matter, even
    ones train and odd ones are held out; the control (released, trained as long) is a method."""
    from napari_segattn.experiments import common, corrections, corrections_wm

    res, out = smoke("corrections-wm")
    methods = {"paint only", "released", "correction-aware", "released, trained as long"}
    assert {(r["dataset"], r["method"]) for r in res["table"]} == {("mni-wm", m) for m in methods}
    p = corrections_wm.SCALE["smoke"]
    (tr_i, tr_l), (va_i, va_l), test, _ = corrections._mni_wm(common.data_root(shared_data, "mni152"), p)
    images, labels, zs = common.mni_slices(common.data_root(shared_data, "mni152"), p["mni_factor"])
    held_out = {int(name.split("z=")[1]) for name, _, _ in test}
    assert len(held_out) == 4 and all(np.mean(t) >= 0.08 for _, _, t in test)
    train_z = {zs[i] for i, im in enumerate(images) if any(np.array_equal(im, t) for t in tr_i)}
    assert len(tr_i) == p["mni_train"] == len(train_z) and not held_out & train_z


def test_the_corrections_start_is_the_models_refined_mask():
    """Round 0 of the simulated user is FANet's test-time refinement (start_steps iterations
    from Otsu), the same refiner that then takes the corrections."""
    import torch

    from napari_segattn.experiments.corrections import SCALE, refined_start
    from napari_segattn.inference import FANetRefiner
    from napari_segattn.models import build_model

    assert SCALE["reduced"]["start_steps"] == SCALE["full"]["start_steps"] == 5
    torch.manual_seed(0)
    net = build_model("fanet", in_channels=1, out_channels=1, width=4)
    img = np.random.default_rng(0).random((1, 64, 64)).astype(np.float32)
    refiner, mask = refined_start(net, img, 3, pin_edits=True)
    by_hand = FANetRefiner(net, img, channel_axis=0, device="cpu")
    for _ in range(3):
        expected = by_hand.step().mask
    assert len(refiner.history) == 3 and refiner.pin_edits
    np.testing.assert_array_equal(mask, expected)


def test_feedback_weight_share_reads_the_first_blocks_feedback_channels():
    """0 as with_feedback_inputs leaves the new channels, the norm ratio once they carry weight,
    None for a model that takes no feedback inputs."""
    import torch

    from napari_segattn.experiments.corrections import feedback_weight_share
    from napari_segattn.models import build_model
    from napari_segattn.models.fanet import with_feedback_inputs

    torch.manual_seed(0)
    plain = build_model("fanet", in_channels=1, out_channels=1, width=4)
    widened = with_feedback_inputs(plain)
    assert feedback_weight_share(plain) is None and feedback_weight_share(widened) == 0.0
    conv = next(w for w in widened.encoders[0].parameters() if w.ndim == 4 and w.shape[1] == 3)
    with torch.no_grad():
        conv[:, 1:] = conv[:, :1]  # both feedback channels as large as the image channel
        image = conv[:, :1].pow(2).sum()
        others = sum(w[:, :1].pow(2).sum() for w in widened.encoders[0].parameters()
                     if w.ndim == 4 and w.shape[1] == 3 and w is not conv)
    expected = float((2 * image / (image + others)) ** 0.5)
    assert feedback_weight_share(widened) == pytest.approx(expected)
