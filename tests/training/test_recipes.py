"""The papers' recipes (reference-implementations §1.5, §2.4, §5.3) and TrainConfig round trips."""

from __future__ import annotations

import dataclasses
import json

import pytest

from napari_segattn.training import TrainConfig, build_augmenter, recipe_for


def test_pam_baselines_follow_nntrain():
    for name in ("unet", "fpa", "cbamunet"):
        c = recipe_for(name)
        assert (c.optimizer, c.lr, c.betas, c.weight_decay) == ("adamw", 1e-2, (0.9, 0.999), 1e-5)
        assert (c.scheduler, c.gamma, c.batch_size, c.epochs, c.loss, c.augment) == ("multistep", 0.1, 4, 100, "dice", "flip")
        assert c.resolved_milestones() == [50, 75]
    assert recipe_for("rfna").warmup_epochs == 10 and recipe_for("fpa").warmup_epochs == 0


def test_fanet_and_brunet():
    f = recipe_for("fanet")
    assert (f.optimizer, f.lr, f.scheduler, f.plateau_patience, f.batch_size, f.epochs, f.loss, f.seed, f.mask_update) == (
        "adam", 1e-4, "plateau", 5, 2, 500, "bce_dice", 42, "on_improvement")
    assert f.val_batch_size == 2 and f.feedback == "released"  # train.py validates at batch 2
    b = recipe_for("brunet")
    assert (b.optimizer, b.lr, b.grad_clip_norm, b.batch_size, b.loss, b.select_class) == ("adam", 1e-3, 5.0, 2, "feedback_ce", 1)
    assert b.loss_options == {"beta": 3.0, "op": 100.0, "detach_weight": False}
    assert recipe_for("fbunet").loss == "ce"


def test_config_round_trips_through_json_and_replace():
    c = dataclasses.replace(recipe_for("fpa"), epochs=8, milestones=(2, 6))
    assert c.resolved_milestones() == [2, 6]
    back = TrainConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="scheduler"):
        dataclasses.replace(c, scheduler="cosine")


def test_build_augmenter():
    assert build_augmenter(recipe_for("brunet")) is None
    a = build_augmenter(recipe_for("fanet"))
    assert (a.p_flip, a.rotate, a.p_rotate) == (0.3, 35.0, 0.3)
    t = build_augmenter(dataclasses.replace(recipe_for("brunet"), tv_alpha=8.0))
    assert t.tv_alpha == 8.0 and t.flip is False


def test_milestones_stay_inside_the_run():
    """epochs=1 put both derived milestones at epoch 0: the run trained at 1e-4, not 1e-2."""
    assert dataclasses.replace(recipe_for("unet"), epochs=1).resolved_milestones() == []
    assert dataclasses.replace(recipe_for("unet"), epochs=2).resolved_milestones() == [1, 1]
    assert dataclasses.replace(recipe_for("unet"), epochs=3).resolved_milestones() == [1, 2]
    with pytest.raises(ValueError, match="each must be >= 1"):
        dataclasses.replace(recipe_for("unet"), milestones=(0, 5))
    with pytest.warns(UserWarning, match=r"milestone\(s\) \[50\] are at or past the last epoch"):
        dataclasses.replace(recipe_for("unet"), epochs=10, milestones=(5, 50)).resolved_milestones()


def test_one_epoch_trains_at_the_recipe_lr():
    import torch

    from napari_segattn.models import build_model
    from napari_segattn.training import Trainer
    from napari_segattn.training.events import Step

    from training_toys import toy_dataset

    ds = toy_dataset(n=4, size=16)
    cfg = dataclasses.replace(recipe_for("unet"), epochs=1, batch_size=2, augment="none")
    torch.manual_seed(0)
    model = build_model("_tiny", in_channels=1, out_channels=1)
    lrs = [e.lr for e in Trainer(model, ds, None, cfg, device="cpu").run() if isinstance(e, Step)]
    assert lrs == [1e-2, 1e-2]
