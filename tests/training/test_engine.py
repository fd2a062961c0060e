"""The training engine on tiny models and toy data (CPU, seconds)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_segattn.models import build_model, load_model
from napari_segattn.training import (
    Cancelled, Checkpoint, EpochStart, Resumed, Step, TrainConfig, Trainer, TrainingError, Validation, recipe_for,
)

from training_toys import toy_dataset

FAST = TrainConfig(epochs=3, batch_size=4, optimizer="adam", lr=1e-2, loss="dice", augment="none", seed=0)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_loss_decreases_and_dice_rises_on_a_learnable_toy_task():
    torch.manual_seed(0)
    model = build_model("_tiny", dropout=0.0)
    train, val = toy_dataset(12, seed=0), toy_dataset(4, seed=1)
    cfg = dataclasses.replace(FAST, epochs=25, loss="bce_dice")
    events = Trainer(model, train, val, cfg, device="cpu").fit()
    vals = [e for e in events if isinstance(e, Validation)]
    assert vals[-1].loss < 0.5 * vals[0].loss
    assert vals[-1].metrics["dice"] > 0.85 > vals[0].metrics["dice"]


def test_events_come_in_order(tmp_path):
    model = build_model("_tiny")
    train, val = toy_dataset(8), toy_dataset(2, seed=5)
    seen = []
    tr = Trainer(model, train, val, dataclasses.replace(FAST, epochs=2), device="cpu", out_dir=tmp_path, listeners=[seen.append])
    events = list(tr.run())
    assert seen == events  # listeners see each event before it is yielded
    kinds = [type(e).__name__ for e in events]
    # epoch 0 always improves (best written), epoch 1 may or may not
    assert kinds[:6] == ["EpochStart", "Step", "Step", "Validation", "Checkpoint", "Checkpoint"]
    assert kinds[6:9] == ["EpochStart", "Step", "Step"]
    assert kinds[-2:] == ["Checkpoint", "Finished"]
    assert events[-1].model_path == tmp_path / "model.safetensors"
    steps = [e for e in events if isinstance(e, Step)]
    assert [(s.epoch, s.step) for s in steps] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert steps[-1].eta_s == 0.0 and steps[0].eta_s > 0
    ck = [e for e in events if isinstance(e, Checkpoint)]
    assert {c.kind for c in ck} == {"best", "last"}
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "last" / "training_state.json").exists()
    loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.segattn_checkpoint["training"]["recipe"] == "generic"
    assert loaded.segattn_normalization == train.normalization.to_dict()


def test_cancel_stops_within_one_step_and_keeps_the_last_checkpoint(tmp_path):
    model = build_model("_tiny")
    tr = Trainer(model, toy_dataset(8), toy_dataset(2, seed=5), dataclasses.replace(FAST, epochs=5),
                 device="cpu", out_dir=tmp_path)
    events = []
    for e in tr.run():
        events.append(e)
        if isinstance(e, Step) and (e.epoch, e.step) == (1, 0):
            state_before = (tmp_path / "last" / "training_state.json").read_text()
            tr.cancel()  # e.g. from the GUI thread
    assert isinstance(events[-1], Cancelled)
    assert (events[-1].epoch, events[-1].step) == (1, 1)
    assert isinstance(events[-2], Step) and (events[-2].epoch, events[-2].step) == (1, 0)
    assert events[-1].last_checkpoint == tmp_path / "last"
    assert (tmp_path / "last" / "training_state.json").read_text() == state_before
    assert json.loads(state_before)["epoch"] == 0
    load_model(tmp_path / "last" / "model.safetensors")


@pytest.mark.parametrize("name,recipe", [("_tiny", "pam"), ("_tiny_fb", "fanet"), ("_tiny_rev", "rfna")])
def test_resume_equals_an_uninterrupted_run(tmp_path, name, recipe):
    from napari_segattn.data import Augmenter

    cfg = dataclasses.replace(recipe_for(recipe), epochs=4, batch_size=2, warmup_epochs=min(1, recipe_for(recipe).warmup_epochs))

    def data():
        return toy_dataset(6, augmenter=None), toy_dataset(2, seed=5)

    torch.manual_seed(0)
    full = build_model(name)
    init = _weights(full)
    t_full = Trainer(full, *data(), cfg, device="cpu", out_dir=tmp_path / "a")
    t_full.fit()

    # interrupted after epoch 1 (cancelled when epoch 2 starts), then a fresh process-like resume
    part = build_model(name)
    part.load_state_dict(init)
    t = Trainer(part, *data(), cfg, device="cpu", out_dir=tmp_path / "b")
    for e in t.run():
        if isinstance(e, EpochStart) and e.epoch == 2:
            t.cancel()
    resumed = build_model(name)  # different initial weights: all must come from the checkpoint
    t2 = Trainer(resumed, *data(), cfg, device="cpu", out_dir=tmp_path / "b", resume=True)
    events = t2.fit()
    assert [e.epoch for e in events if isinstance(e, EpochStart)] == [2, 3]
    a, b = _weights(full), _weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    assert t2.best_epoch == t_full.best_epoch
    if name == "_tiny_fb":
        for i in t_full.mask_store.indices():
            np.testing.assert_array_equal(t2.mask_store.get(i), t_full.mask_store.get(i))


def test_rfna_trains_on_reversed_labels_but_reports_foreground_metrics():
    torch.manual_seed(0)
    model = build_model("_tiny_rev", dropout=0.0)
    train, val = toy_dataset(12), toy_dataset(4, seed=1)
    events = Trainer(model, train, val, dataclasses.replace(FAST, epochs=25, loss="bce_dice"), device="cpu").fit()
    v = [e for e in events if isinstance(e, Validation)][-1]
    assert v.metrics["dice"] > 0.85
    # the network itself predicts background: p > 0.5 off the object, p < 0.5 on it
    item = val[0]
    with torch.no_grad():
        p = torch.sigmoid(model.eval()(item["image"][None]))[0, 0].numpy()
    fg = item["label"].numpy() > 0
    assert p[fg].mean() < 0.3 and p[~fg].mean() > 0.7


def test_fanet_masks_committed_only_when_val_loss_improves():
    torch.manual_seed(0)
    model = build_model("_tiny_fb")
    train, val = toy_dataset(6), toy_dataset(2, seed=5)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=12, batch_size=2, lr=0.05, augment="none")
    tr = Trainer(model, train, val, cfg, device="cpu")
    snaps, losses = [], []

    def listen(e):
        if isinstance(e, Validation):
            snaps.append((e, {i: tr.mask_store.get(i).copy() for i in tr.mask_store.indices()}))

    tr.listeners.append(listen)
    tr._setup()
    otsu = {i: tr.mask_store.get(i).copy() for i in tr.mask_store.indices()}
    from napari_segattn.data import otsu_mask

    np.testing.assert_array_equal(otsu[0], otsu_mask(train.raw(0)[0]))
    tr.mask_store = None  # let run() build it again
    tr.fit()
    best = float("inf")
    prev = otsu
    outcomes = set()
    for ev, masks in snaps:
        improved = ev.loss < best
        best = min(best, ev.loss)
        assert ev.masks_committed == improved
        outcomes.add(improved)
        if not improved:
            assert all(np.array_equal(masks[i], prev[i]) for i in masks)
        prev = masks
    assert outcomes == {True, False}, "the run should exercise both branches"
    assert any(not np.array_equal(prev[i], otsu[i]) for i in otsu)


def test_fanet_every_epoch_policy_commits_always():
    torch.manual_seed(0)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=6, batch_size=2, lr=0.05, augment="none", mask_update="every_epoch")
    events = Trainer(build_model("_tiny_fb"), toy_dataset(4), toy_dataset(2, seed=5), cfg, device="cpu").fit()
    vals = [e for e in events if isinstance(e, Validation)]
    assert all(e.masks_committed for e in vals)
    # the store's memory is reported against dense bool masks (one byte per pixel)
    ds = toy_dataset(4)
    dense = sum(ds.sample(i)["label"].size for i in range(len(ds)))
    assert all(e.mask_dense_bytes == dense and 0 <= e.mask_store_bytes < dense for e in vals)


def test_fanet_gets_the_stored_mask_as_second_input():
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, mask):
            seen.append(mask.detach().clone())
            return self.net(x, mask)

    net = build_model("_tiny_fb")
    spy = Spy(net)
    spy.segattn_config, spy.out_channels = net.segattn_config, 1
    ds = toy_dataset(2)
    cfg = dataclasses.replace(FAST, epochs=1, batch_size=2)
    tr = Trainer(spy, ds, None, cfg, device="cpu")
    tr.fit()
    from napari_segattn.data import otsu_mask

    order = list(tr.sampler)
    for k, i in enumerate(order):
        np.testing.assert_array_equal(seen[0][k, 0].numpy(), otsu_mask(ds.raw(i)[0]).astype(np.float32))


def test_gpu_oom_becomes_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    model = build_model("_tiny")
    calls = {"n": 0}
    orig = model._forward

    def forward(x, *extras):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0 (2 steps) succeeds, epoch 1 runs out of memory
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return orig(x, *extras)

    model._forward = forward
    tr = Trainer(model, toy_dataset(8), None, dataclasses.replace(FAST, epochs=3), device="cpu", out_dir=tmp_path)
    gen = tr.run()
    with pytest.raises(TrainingError, match=r"batch size 4.*--batch-size 2") as info:
        for _ in gen:
            pass
    assert str(tmp_path / "last") in str(info.value)
    state = json.loads((tmp_path / "last" / "training_state.json").read_text())
    assert state["epoch"] == 0
    load_model(tmp_path / "model.safetensors")


def test_multiclass_with_feedback_ce_selects_on_class_dice(tmp_path):
    torch.manual_seed(0)
    model = build_model("_tiny", out_channels=3, dropout=0.0)
    cfg = dataclasses.replace(recipe_for("brunet"), epochs=3, batch_size=2)
    events = Trainer(model, toy_dataset(4, classes=3), toy_dataset(2, seed=5, classes=3), cfg, device="cpu", out_dir=tmp_path).fit()
    v = [e for e in events if isinstance(e, Validation)]
    assert {"dice", "dice_class_1", "dice_class_2"} <= set(v[0].metrics)
    scores = [e.metrics["dice_class_1"] for e in v]
    best = [e.improved for e in v]
    assert best[0]
    assert all(b == (s > max(scores[:k])) for k, (s, b) in enumerate(zip(scores, best)) if k > 0)


def test_drop_last_with_too_few_samples_is_explained():
    cfg = dataclasses.replace(recipe_for("unet"), batch_size=4)
    with pytest.raises(TrainingError, match="batch size 4"):
        Trainer(build_model("_tiny"), toy_dataset(3), None, cfg, device="cpu").fit()


def test_resume_with_augmentation_equals_an_uninterrupted_run(tmp_path):
    from napari_segattn.data import Augmenter

    cfg = dataclasses.replace(recipe_for("unet"), epochs=4, batch_size=2)
    torch.manual_seed(0)
    full = build_model("_tiny")
    init = _weights(full)
    Trainer(full, toy_dataset(6, augmenter=Augmenter()), None, cfg, device="cpu", out_dir=tmp_path / "a").fit()
    part = build_model("_tiny")
    part.load_state_dict(init)
    t = Trainer(part, toy_dataset(6, augmenter=Augmenter()), None, cfg, device="cpu", out_dir=tmp_path / "b")
    for e in t.run():
        if isinstance(e, EpochStart) and e.epoch == 2:
            t.cancel()
    resumed = build_model("_tiny")
    Trainer(resumed, toy_dataset(6, augmenter=Augmenter()), None, cfg, device="cpu", out_dir=tmp_path / "b", resume=True).fit()
    for k, v in _weights(full).items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=1e-6)


def test_cpu_autocast_only_when_bf16_is_asked_for():
    """'auto' keeps CPU training in exact float32; 'bf16' is an explicit CPU opt-in that trains."""
    torch.manual_seed(0)
    for amp, want in (("auto", None), ("fp16", None), ("bf16", torch.bfloat16)):
        tr = Trainer(build_model("_tiny", dropout=0.0), toy_dataset(4), None, dataclasses.replace(FAST, epochs=1, amp=amp),
                     device="cpu")
        events = tr.fit()
        assert tr.amp_dtype == want
        assert all(np.isfinite(e.loss) for e in events if isinstance(e, Step))


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_and_channels_last_train(amp):
    torch.manual_seed(0)
    model = build_model("_tiny", dropout=0.0)
    cfg = dataclasses.replace(FAST, epochs=2, amp=amp)
    tr = Trainer(model, toy_dataset(8), toy_dataset(2, seed=5), cfg, device="cuda")
    events = tr.fit()
    assert tr.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert tr.scaler.is_enabled() == (amp == "fp16")
    assert next(model.parameters()).is_cuda
    assert model.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(np.isfinite(e.loss) for e in events if isinstance(e, Step))


def test_cpu_channels_last_only_for_fanet():
    """The training layout follows inference.use_channels_last: FANet (measured faster) trains in
    channels_last on CPU, the other models stay contiguous; both train to finite losses."""
    torch.manual_seed(0)
    fanet = build_model("fanet", in_channels=1, out_channels=1)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=1, batch_size=2, augment="none")
    tr = Trainer(fanet, toy_dataset(2), None, cfg, device="cpu")
    events = tr.fit()
    assert tr.channels_last
    conv = next(m for m in fanet.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert all(np.isfinite(e.loss) for e in events if isinstance(e, Step))
    tiny = Trainer(build_model("_tiny"), toy_dataset(2), None, dataclasses.replace(FAST, epochs=1), device="cpu")
    tiny.fit()
    assert not tiny.channels_last


def test_two_trainers_on_one_data_set_both_start_from_otsu():
    """A Trainer leaves the caller's data set as it found it: a second run on the same objects
    is fed the Otsu masks, not the first run's final predictions (the fanet-ablation leak)."""
    from napari_segattn.data import otsu_mask

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x, mask):
            seen.append(mask.detach().clone())
            return self.net(x, mask)

    train, val = toy_dataset(4), toy_dataset(2, seed=5)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=3, batch_size=4, lr=0.05, augment="none",
                              mask_update="every_epoch")
    first_masks = []
    for run in range(2):
        seen.clear()
        torch.manual_seed(run)
        net = build_model("_tiny_fb")
        spy = Spy(net)
        spy.segattn_config, spy.out_channels = net.segattn_config, 1
        tr = Trainer(spy, train, val, cfg, device="cpu")
        tr.fit()
        assert train.feedback is None and val.feedback is None
        tr.sampler.set_epoch(0)
        order = list(tr.sampler)
        # the first training batch of each run: the Otsu masks, and the run did change its masks
        for k, i in enumerate(order):
            np.testing.assert_array_equal(seen[0][k, 0].numpy(), otsu_mask(train.raw(i)[0]).astype(np.float32))
        # the first validation batch too (after epoch 0's one training step)
        np.testing.assert_array_equal(seen[1][0, 0].numpy(), otsu_mask(val.raw(0)[0]).astype(np.float32))
        first_masks.append([tr.mask_store.get(i) for i in range(len(train))])
        assert any(not np.array_equal(m, otsu_mask(train.raw(i)[0])) for i, m in enumerate(first_masks[-1]))


class _FeedSpy(torch.nn.Module):
    """Records (image, fed mask, output, grad enabled, training mode) of every forward."""

    def __init__(self, net, calls):
        super().__init__()
        self.net, self.calls = net, calls
        self.segattn_config, self.out_channels = net.segattn_config, 1

    def forward(self, x, mask):
        out = self.net(x, mask)
        self.calls.append((x.detach().clone(), mask.detach().clone(), out.detach().clone(),
                           torch.is_grad_enabled(), self.training))
        return out


def _edit_model_spy(calls):
    """A small FANet with mask and edit input channels, recording its forwards into ``calls``."""
    torch.manual_seed(0)
    net = build_model("fanet", in_channels=1, out_channels=1, width=4, mixpool="none", mask_input=True,
                      edit_input=True)
    spy = _FeedSpy(net, calls)
    spy.edit_input = True
    return spy


def _steps(calls):
    """Split the recorded forwards into training steps: no-grad passes, then the trained one."""
    steps, cur = [], []
    for c in calls:
        cur.append(c)
        if c[3]:
            steps.append(cur)
            cur = []
    assert not cur, "a no-grad pass was not followed by a trained forward"
    return steps


def test_correction_aware_training_feeds_a_painted_copy_of_the_previous_mask():
    """feedback='corrections', correction_prob=1: each step starts from the Otsu mask of the view,
    runs 0..2 no-grad passes in eval mode, and every pass (and the trained one) is fed the previous
    mask with its largest error painted from the labels. The store stages the last own mask."""
    from napari_segattn.data import error_regions, otsu_mask
    from napari_segattn.data.corrections import _brush

    calls = []
    torch.manual_seed(0)
    spy = _FeedSpy(build_model("_tiny_fb"), calls)
    ds = toy_dataset(2)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=6, batch_size=2, augment="none",
                              feedback="corrections", correction_prob=1.0)
    tr = Trainer(spy, ds, None, cfg, device="cpu")
    tr.fit()
    steps = _steps(calls)
    assert len(steps) == 6
    assert min(len(s) for s in steps) == 1 and max(len(s) for s in steps) > 1  # both were drawn
    truth = np.stack([ds.label(i) > 0 for i in range(len(ds))])
    painted = 0
    for epoch, step in enumerate(steps):  # one step per epoch
        tr.sampler.set_epoch(epoch)
        order = list(tr.sampler)
        assert all(not c[4] for c in step[:-1]) and step[-1][4]  # no-grad passes in eval mode
        previous = np.stack([otsu_mask(v) for v in step[0][0].numpy()])
        for x, fed, out, _, _ in step:
            for k in range(len(previous)):
                largest = error_regions(previous[k], truth[order[k]], 1)
                if largest:
                    dot = _brush(largest[0], 0)  # the region's most interior pixel
                    np.testing.assert_array_equal(fed[k, 0].numpy()[dot] > 0.5, truth[order[k]][dot])
                    painted += 1
            previous = torch.sigmoid(out[:, 0]).numpy() > 0.5
    assert painted > 0
    # the store keeps the last own mask of the last step (the trained forward's after 0 passes)
    last = steps[-1]
    own = torch.sigmoid((last[-2] if len(last) > 1 else last[-1])[2][:, 0]).numpy() > 0.5
    for k, i in enumerate(order):
        np.testing.assert_array_equal(tr.mask_store.get(i), own[k])


def test_corrections_mode_feeds_aligned_masks():
    """correction_prob=0: the first pass of each step is fed the Otsu mask of the very view it sees
    (not the stored mask, which comes from an earlier epoch's view), each later pass the
    prediction of the one before."""
    from napari_segattn.data import otsu_mask

    calls = []
    torch.manual_seed(0)
    spy = _FeedSpy(build_model("_tiny_fb_nodrop"), calls)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=6, batch_size=2, augment="flip",
                              feedback="corrections", correction_prob=0.0)
    Trainer(spy, toy_dataset(2), None, cfg, device="cpu").fit()
    steps = _steps(calls)
    assert max(len(s) for s in steps) >= 2
    for step in steps:
        x0 = step[0][0].numpy()
        np.testing.assert_array_equal(step[0][1][:, 0].numpy(), np.stack([otsu_mask(v) for v in x0]).astype(np.float32))
        for (x, _, out, _, _), (x_next, fed, _, _, _) in zip(step, step[1:]):
            np.testing.assert_array_equal(x_next.numpy(), x.numpy())
            np.testing.assert_array_equal(fed.numpy(), (torch.sigmoid(out) > 0.5).float().numpy())


def test_an_edit_input_model_is_told_which_pixels_were_painted():
    """For FANet(edit_input=True) the fed code marks the simulated painting: every painted pixel
    carries the label's value (PAINTED_FOREGROUND / PAINTED_BACKGROUND), and the paint stays
    put in the passes that follow (as FANetRefiner(pin_edits=True) keeps it)."""
    from napari_segattn.models.fanet import PAINTED_BACKGROUND, PAINTED_FOREGROUND

    calls = []
    spy = _edit_model_spy(calls)
    ds = toy_dataset(2, size=32)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=6, batch_size=2, augment="none",
                              feedback="corrections", correction_prob=1.0)
    tr = Trainer(spy, ds, None, cfg, device="cpu")
    tr.fit()
    steps = _steps(calls)
    assert max(len(s) for s in steps) > 1
    for epoch, step in enumerate(steps):
        tr.sampler.set_epoch(epoch)
        truth = np.stack([ds.label(i) > 0 for i in tr.sampler])
        before = None
        for _, code, _, _, _ in step:
            code = code[:, 0].numpy()
            edit = (code == PAINTED_FOREGROUND) | (code == PAINTED_BACKGROUND)
            assert edit.any() and set(np.unique(code)) <= {PAINTED_BACKGROUND, 0.0, 1.0, PAINTED_FOREGROUND}
            np.testing.assert_array_equal((code == PAINTED_FOREGROUND)[edit], truth[edit])
            if before is not None:
                assert (edit | ~before).all()  # painted pixels stay painted
            before = edit


def test_errors_touching_keeps_the_error_a_correction_left_next_to_the_paint():
    """A missed object clicked into: the rest of it is the propagation zone; a second missed object
    nobody painted, and errors where nothing was painted, are not."""
    from napari_segattn.training.engine import _errors_touching

    truth = np.zeros((1, 20, 20), bool)
    truth[0, 2:8, 2:8] = truth[0, 12:18, 12:18] = True
    mask = np.zeros_like(truth)
    mask[0, 4:6, 4:6] = True  # the painted click, now right
    painted = mask.copy()
    zone = _errors_touching(mask, truth, painted)
    expected = np.zeros_like(truth)
    expected[0, 2:8, 2:8] = True
    expected[0, 4:6, 4:6] = False
    np.testing.assert_array_equal(zone, expected)
    assert not _errors_touching(mask, truth, np.zeros_like(truth)).any()
    # margin 3: also every pixel within 3 px of the click, the correct ones included
    ys, xs = np.mgrid[:20, :20]
    dist = np.min([np.hypot(ys - y, xs - x) for y, x in zip(*np.nonzero(painted[0]))], axis=0)
    np.testing.assert_array_equal(_errors_touching(mask, truth, painted, margin=3)[0], expected[0] | (dist <= 3))


def test_correction_loss_weight_adds_the_cross_entropy_over_the_propagation_zone():
    """correction_loss_weight=2: the step's loss is the plain loss plus 2x the mean BCE over the
    errors of the fed mask that touch the paint (computed here from the fed code)."""
    from scipy import ndimage

    from napari_segattn.models.fanet import PAINTED_BACKGROUND, PAINTED_FOREGROUND
    from napari_segattn.training.losses import build_loss

    calls = []
    spy = _edit_model_spy(calls)
    ds = toy_dataset(2, size=32)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=1, batch_size=2, augment="none",
                              feedback="corrections", correction_prob=1.0, correction_loss_weight=2.0)
    tr = Trainer(spy, ds, None, cfg, device="cpu")
    (step,) = [e for e in tr.fit() if isinstance(e, Step)]
    _, code, out, _, _ = _steps(calls)[0][-1]
    tr.sampler.set_epoch(0)
    truth = np.stack([ds.label(i) > 0 for i in tr.sampler])
    code = code[:, 0].numpy()
    mask, edit = code > 0.5, (code == PAINTED_FOREGROUND) | (code == PAINTED_BACKGROUND)
    zone = np.zeros_like(mask)
    for b in range(len(mask)):
        lab, _ = ndimage.label(mask[b] != truth[b], structure=np.ones((3, 3)))
        for k in set(lab[ndimage.binary_dilation(edit[b], iterations=2)].tolist()) - {0}:
            zone[b] |= lab == k
    assert zone.any()
    target = torch.from_numpy(truth.astype(np.float32))
    plain = build_loss("bce_dice", 1)(out, target[:, None].long()[:, 0])
    extra = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0][torch.from_numpy(zone)],
                                                                 target[torch.from_numpy(zone)])
    assert step.loss == pytest.approx(float(plain + 2.0 * extra), rel=1e-5)


def test_feedback_lr_scale_multiplies_the_step_of_the_mask_and_edit_weights_only():
    """feedback_lr_scale=5: after one optimiser step the first block's weights on the mask and edit
    channels moved 5x as far as with scale 1 from the same start; every other weight moved the same."""
    import copy

    torch.manual_seed(0)
    net = build_model("fanet", in_channels=1, out_channels=1, width=4, mixpool="none", mask_input=True,
                      edit_input=True)
    weights = net.feedback_input_weights()
    assert len(weights) >= 1 and all(i == 1 and w.shape[1] == 3 for w, i in weights)
    start = copy.deepcopy(net.state_dict())
    ends = {}
    for scale in (1.0, 5.0):
        net.load_state_dict(start)
        cfg = dataclasses.replace(recipe_for("fanet"), epochs=1, batch_size=2, augment="none",
                                  feedback="corrections", correction_prob=1.0, feedback_lr_scale=scale)
        Trainer(net, toy_dataset(2, size=32), None, cfg, device="cpu").fit()
        ends[scale] = copy.deepcopy(net.state_dict())
    names = {id(p): n for n, p in net.named_parameters()}
    fed = {names[id(w)] for w, _ in weights}
    for name, w0 in start.items():
        d1, d5 = ends[1.0][name] - w0, ends[5.0][name] - w0
        if name in fed:
            assert d1[:, 1:].abs().max() > 0
            torch.testing.assert_close(d5[:, 1:], 5 * d1[:, 1:])
            torch.testing.assert_close(d5[:, :1], d1[:, :1])
        else:
            torch.testing.assert_close(d5, d1)


def test_correction_options_a_run_cannot_use_are_named_in_a_warning():
    """A plain U-Net with the correction options set trains, and says which ones it ignored; a
    correction-aware FANet using them raises no such warning."""
    import warnings

    from napari_segattn.data.errors import SegattnWarning

    options = dict(feedback_lr_scale=10.0, val_feedback="corrections", correction_loss_weight=1.0)
    cfg = dataclasses.replace(recipe_for("pam"), epochs=1, batch_size=2, **options)
    with pytest.warns(SegattnWarning, match="ignored in this run") as caught:
        Trainer(build_model("_tiny"), toy_dataset(2), toy_dataset(2, seed=5), cfg, device="cpu").fit()
    text = str(caught[0].message)
    assert all(name in text for name in options)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=1, batch_size=2, augment="none", feedback="corrections",
                              **options)
    net = build_model("fanet", in_channels=1, out_channels=1, width=4, mixpool="none", mask_input=True,
                      edit_input=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="ignored in this run", category=SegattnWarning)
        Trainer(net, toy_dataset(2, size=32), toy_dataset(2, size=32, seed=5), cfg, device="cpu").fit()


def test_validation_on_corrections_scores_the_model_fed_its_painted_prediction():
    """val_feedback='corrections': each validation batch runs twice, first on the stored mask (whose
    prediction the store keeps, as released), then on that prediction with its largest error
    painted from the labels by a brush of the middle training radius; the loss and Dice are the
    second pass's."""
    from napari_segattn.data import paint_largest_errors
    from napari_segattn.metrics import binary_metrics

    calls = []
    torch.manual_seed(0)
    spy = _FeedSpy(build_model("_tiny_fb"), calls)
    val = toy_dataset(2, seed=5)
    cfg = dataclasses.replace(recipe_for("fanet"), epochs=1, batch_size=2, val_batch_size=2, augment="none",
                              val_feedback="corrections", correction_radius=(4, 6), mask_update="every_epoch")
    tr = Trainer(spy, toy_dataset(2), val, cfg, device="cpu")
    (validation,) = [e for e in tr.fit() if isinstance(e, Validation)]
    first, second = [c for c in calls if not c[3]]
    own = torch.sigmoid(first[2][:, 0]).numpy() > 0.5
    truth = np.stack([val.label(i) > 0 for i in range(len(val))])
    for k in range(len(val)):
        fed, region = paint_largest_errors(own[k], truth[k], 1, 5)
        assert region.any()
        np.testing.assert_array_equal(second[1][k, 0].numpy(), fed.astype(np.float32))
        np.testing.assert_array_equal(tr.val_mask_store.get(k), own[k])
    pred = torch.sigmoid(second[2][:, 0]).numpy() > 0.5
    expected = np.mean([binary_metrics(p, t)["dice"] for p, t in zip(pred, truth)])
    assert validation.metrics["dice"] == pytest.approx(expected)


class _Killed(Exception):
    """Stands in for a kill: raised from a listener, so the run stops between two steps."""


def _kill_at(epoch: int, step: int):
    def listener(e):
        if isinstance(e, Step) and (e.epoch, e.step) == (epoch, step):
            raise _Killed
    return listener


@pytest.mark.parametrize("name,recipe,kill_epoch", [("_tiny", "pam", 1), ("_tiny", "pam", 0), ("_tiny_fb", "fanet", 1),
                                                    ("_tiny_rev", "rfna", 0)])
def test_a_kill_within_an_epoch_resumes_from_the_step_checkpoint(tmp_path, name, recipe, kill_epoch):
    """Killed in step 6 of epoch ``kill_epoch`` (rfna: inside its warm-up epoch) with a state every
    2 steps: the resumed run redoes step 5 and reaches the uninterrupted run's weights."""
    from napari_segattn.data import Augmenter

    # FANet commits its masks every epoch here, so the masks staged before the kill must be kept
    cfg = dataclasses.replace(recipe_for(recipe), epochs=2, batch_size=1, checkpoint_every=2,
                              warmup_epochs=min(1, recipe_for(recipe).warmup_epochs), mask_update="every_epoch")

    def data():  # augmented (flips drawn per sample and epoch) and with dropout: RNG must carry over
        return toy_dataset(7, augmenter=Augmenter()), toy_dataset(2, seed=5)

    torch.manual_seed(0)
    full = build_model(name)
    init = _weights(full)
    t_full = Trainer(full, *data(), cfg, device="cpu", out_dir=tmp_path / "a")
    t_full.fit()

    part = build_model(name)
    part.load_state_dict(init)
    seen = []
    t = Trainer(part, *data(), cfg, device="cpu", out_dir=tmp_path / "b",
                listeners=[seen.append, _kill_at(kill_epoch, 5)])
    with pytest.raises(_Killed):
        t.fit()
    steps = [c for c in seen if isinstance(c, Checkpoint) and c.kind == "step"]
    # every 2 steps within the epoch, none at its end (the epoch checkpoint is written there)
    assert [(c.epoch, c.steps_done) for c in steps] == [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4)][:2 + 3 * kill_epoch]
    state = json.loads((tmp_path / "b" / "last" / "training_state.json").read_text())
    assert state["epoch"] == kill_epoch - 1 and state["within_epoch"]["steps_done"] == 4

    resumed = build_model(name)  # other initial weights: all must come from the checkpoint
    staged = []
    t2 = Trainer(resumed, *data(), cfg, device="cpu", out_dir=tmp_path / "b", resume=True,
                 listeners=[lambda e: isinstance(e, Resumed) and staged.append(t2.mask_store and t2.mask_store.staged)])
    events = t2.fit()
    if name == "_tiny_fb":
        assert staged == [4]  # the masks predicted in the 4 steps before the kill are kept for the commit
    assert isinstance(events[0], Resumed) and (events[0].epoch, events[0].step) == (kill_epoch, 4)
    expected = [(kill_epoch, k) for k in (4, 5, 6)] + [(1, k) for k in range(7)] * (1 - kill_epoch)
    assert [(e.epoch, e.step) for e in events if isinstance(e, Step)] == expected
    a, b = _weights(full), _weights(resumed)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)
    assert t2.best_epoch == t_full.best_epoch
    if name == "_tiny_fb":
        for i in t_full.mask_store.indices():
            np.testing.assert_array_equal(t2.mask_store.get(i), t_full.mask_store.get(i))


def test_a_step_checkpoint_resumed_with_another_batch_size_is_refused(tmp_path):
    cfg = dataclasses.replace(FAST, epochs=2, batch_size=1, checkpoint_every=3)
    t = Trainer(build_model("_tiny"), toy_dataset(8), None, cfg, device="cpu", out_dir=tmp_path,
                listeners=[_kill_at(0, 4)])
    with pytest.raises(_Killed):
        t.fit()
    other = dataclasses.replace(cfg, batch_size=2)
    with pytest.raises(TrainingError, match=r"step 3 of epoch 1 with batch size 1 .* --batch-size 1"):
        Trainer(build_model("_tiny"), toy_dataset(8), None, other, device="cpu", out_dir=tmp_path, resume=True).fit()


def test_checkpoint_every_must_not_be_negative():
    with pytest.raises(ValueError, match="checkpoint_every=-1"):
        TrainConfig(checkpoint_every=-1)


def test_model_json_records_the_best_epoch_as_the_log_prints_it_and_the_files(tmp_path):
    train = toy_dataset(4)
    train.names = [f"img{k}.png[tile {k % 2}]" for k in range(4)]
    val = toy_dataset(2, seed=5)
    val.names = ["v.tif", "v.tif"]
    tr = Trainer(build_model("_tiny"), train, val, dataclasses.replace(FAST, epochs=2), device="cpu", out_dir=tmp_path)
    tr.fit()
    info = json.loads((tmp_path / "model.json").read_text())["training"]
    assert info["best_epoch"] == tr.best_epoch + 1 == info["epochs_done"]  # model.safetensors: the best epoch
    assert info["epochs"] == 2
    assert info["data"]["train_files"] == ["img0.png", "img1.png", "img2.png", "img3.png"]
    assert info["data"]["val_files"] == ["v.tif"]
    last = json.loads((tmp_path / "last" / "model.json").read_text())["training"]
    assert last["epochs_done"] == 2 and last["best_epoch"] == info["best_epoch"]
