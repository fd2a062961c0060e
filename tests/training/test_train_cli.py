"""``segattn train`` end to end on PNG folders, its errors, and DDP under torchrun (2 CPU ranks, gloo)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from napari_segattn.cli import main
from napari_segattn.models import load_model
from training_toys import toy_arrays

HERE = Path(__file__).resolve().parent


def _folders(tmp_path: Path, n: int = 6) -> tuple[Path, Path]:
    images, labels = toy_arrays(n, size=24)
    idir, mdir = tmp_path / "images", tmp_path / "masks"
    idir.mkdir()
    mdir.mkdir()
    for k, (im, lab) in enumerate(zip(images, labels)):
        iio.imwrite(idir / f"s{k:02d}.png", np.clip(im[0] * 120 + 60, 0, 255).astype(np.uint8))
        iio.imwrite(mdir / f"s{k:02d}.png", (lab * 255).astype(np.uint8))
    return idir, mdir


def test_train_writes_a_loadable_model(tmp_path, capsys):
    idir, mdir = _folders(tmp_path)
    out = tmp_path / "run"
    rc = main(["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize",
               "--epochs", "2", "--batch-size", "2", "--lr", "0.01", "--device", "cpu", "--out", str(out), "--seed", "3"])
    assert rc == 0
    model = load_model(out / "model.safetensors")
    assert model.segattn_normalization["mode"] == "zscore"
    assert (out / "last" / "training_state.json").exists()
    err = capsys.readouterr().err
    assert "val loss" in err
    # --resume with the same epochs has nothing left to do and keeps the files
    rc = main(["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize",
               "--epochs", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out), "--seed", "3", "--resume"])
    assert rc == 0
    # a plain re-run into the same folder is refused (the first run's model stays), --overwrite replaces it
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize", "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    capsys.readouterr()
    assert main(base) == 2
    assert "not empty" in capsys.readouterr().err and (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert main(base + ["--overwrite"]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp
    # predict takes the run folder for its model; a device this torch lacks is a one-line error
    iio.imwrite(tmp_path / "one.png", iio.imread(idir / "s00.png"))
    assert main(["predict", str(out), str(tmp_path / "one.png"), "--out", str(tmp_path / "p.png"), "--device", "cpu"]) == 0
    if not torch.cuda.is_available():
        assert main(["predict", str(out), str(tmp_path / "one.png"), "--out", str(tmp_path / "q.png"),
                     "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err and not (tmp_path / "q.png").exists()
    assert main(["predict", str(tmp_path / "images"), str(tmp_path / "one.png"), "--out", str(tmp_path / "r.png")]) == 2
    assert "folder without model.safetensors" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "nope", "--images", "x", "--masks", "y"], "unknown model 'nope'"),
        (["--model", "_tiny", "--images", "{tmp}/missing", "--masks", "{tmp}"], "is not a folder"),
        (["--model", "_tiny", "--images", "{tmp}"], "--images and --masks go together"),
        (["--model", "_tiny"], "no data"),
        (["--model", "_tiny", "--volume", "a.nii"], "--volume needs --labels"),
        (["--model", "_tiny", "--images", "{tmp}", "--masks", "{tmp}", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    ],
)
def test_user_errors_are_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    import training_toys
    training_toys.skip_zoo_if_broken()
    from napari_segattn.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_torchrun_ddp_matches_a_single_process_run(tmp_path):
    """2 ranks × batch 2 == 1 process × batch 4: same samples per step (DistributedSampler with the
    same seed), gradients averaged; BCE is a per-pixel mean so the loss decomposes. FANet masks are
    gathered over ranks, so every rank holds every global sample index."""
    from safetensors.torch import load_file

    idir, mdir = _folders(tmp_path, n=10)
    script = tmp_path / "segattn_main.py"
    script.write_text(DDP_SCRIPT.format(here=str(HERE)))
    common = ["train", "--model", "_tiny_fb_nodrop", "--images", str(idir), "--masks", str(mdir), "--binarize",
              "--epochs", "3", "--loss", "ce", "--augment", "none", "--lr", "0.01", "--device", "cpu", "--val-fraction", "0.2", "--seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(script), *common, "--batch-size", "4", "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                          str(script), *common, "--batch-size", "2", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "last" / "model.safetensors"))
    for k in a:
        # all-reduce sums in another order: ~1e-8 differences (measured). Wrong samples per step
        # give ~1e-2. No augmentation: SegmentationDataset's draw counter makes flips depend on
        # which samples a process has seen (see the xfail resume test).
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    sa = load_file(str(tmp_path / "one" / "last" / "training_state.safetensors"))
    sb = load_file(str(tmp_path / "two" / "last" / "training_state.safetensors"))
    from napari_segattn.training import MaskStore

    stores = []
    for s in (sa, sb):
        store = MaskStore()
        store.load_state_dict({k.split("/")[1]: v.numpy() for k, v in s.items() if k.startswith("masks_train/")})
        stores.append(store)
    assert stores[0].indices() == stores[1].indices() == list(range(8))  # both ranks' samples gathered
    for i in range(8):
        assert np.array_equal(stores[0].get(i), stores[1].get(i))


def test_different_sizes_say_how_to_batch_them(tmp_path, capsys):
    idir, mdir = _folders(tmp_path, n=4)
    iio.imwrite(idir / "s01.png", np.zeros((30, 20), np.uint8))
    iio.imwrite(mdir / "s01.png", np.zeros((30, 20), np.uint8))
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize", "--epochs", "1",
            "--device", "cpu", "--val-fraction", "0"]
    assert main(base + ["--batch-size", "2", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "2 different sizes (s00.png 24x24, s01.png 30x20)" in err and "--tile N or --crop N, or --batch-size 1" in err
    assert "\n" not in err
    assert main(base + ["--batch-size", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(base + ["--batch-size", "2", "--tile", "12", "--out", str(tmp_path / "c")]) == 0


def test_tiles_are_validated_on_held_out_images(tmp_path, capsys):
    """Validation tiles come from images no training tile comes from (split by image)."""
    import json

    idir, mdir = _folders(tmp_path, n=5)
    out = tmp_path / "run"
    assert main(["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize",
                 "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--tile", "12", "--val-fraction", "0.4",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "validation: 8 tiles of 2 held-out image(s) of 5 (split by image)" in err
    data = json.loads((out / "model.json").read_text())["training"]["data"]
    assert data["train_samples"] == 12 and data["val_samples"] == 8
    assert data["examples"][0].endswith(".png[tile 0]")  # file names, not array[1]


def test_split_by_image_keeps_each_image_on_one_side(capsys):
    from napari_segattn.cli.train_cmd import _split, _tiled
    from training_toys import toy_dataset

    tiles = _tiled(toy_dataset(n=6, size=24), 12, seed=0)
    train, val = _split(tiles, 0.34, seed=0, tiled=True)
    assert set(train.groups).isdisjoint(val.groups) and len(set(val.groups)) == 2
    assert len(train) + len(val) == 24


def test_random_crop_is_fresh_each_epoch_and_reproducible():
    from training_toys import toy_dataset

    ds = toy_dataset(n=2, size=24)
    ds.crop = 10

    def window(epoch):
        ds.set_epoch(epoch)
        item = ds[0]
        assert item["image"].shape[-2:] == (10, 10) and item["label"].shape == (10, 10)
        return item["image"].numpy()

    e0, e1 = window(0), window(1)
    assert not np.array_equal(e0, e1)  # a fresh window per epoch
    np.testing.assert_array_equal(window(0), e0)  # the same for the same (seed, epoch)
    full = ds.normalized(0)
    hits = [(y, x) for y in range(15) for x in range(15) if np.array_equal(full[:, y:y + 10, x:x + 10], e0)]
    assert len(hits) == 1  # it is a window of the sample, not a resized copy


def test_crop_and_time_budget_from_the_cli(tmp_path, capsys):
    import json
    import warnings

    idir, mdir = _folders(tmp_path, n=4)
    iio.imwrite(idir / "s01.png", np.zeros((30, 20), np.uint8))
    iio.imwrite(mdir / "s01.png", np.zeros((30, 20), np.uint8))
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize",
            "--batch-size", "2", "--device", "cpu", "--val-fraction", "0"]
    assert main(base + ["--epochs", "1", "--crop", "16", "--out", str(tmp_path / "a")]) == 0  # mixed sizes, one crop
    assert main(base + ["--epochs", "1", "--crop", "22", "--out", str(tmp_path / "b")]) == 2
    assert "--crop 22 is larger than 1 training sample(s), e.g. s01.png (30x20)" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(base + ["--epochs", "3", "--crop", "16", "--max-minutes", "1e-6", "--out", str(tmp_path / "c")]) == 0
    err = capsys.readouterr().err
    assert "time budget of 1e-06 min reached after epoch 1 of 3" in err
    state = json.loads((tmp_path / "c" / "last" / "training_state.json").read_text())
    assert state["epoch"] == 0


def test_binarize_threshold_is_recorded_and_reused(tmp_path, capsys):
    """{0, 255} masks: the error names --binarize; --binarize T thresholds (JPEG noise warns at
    T=0); evaluate and refine reuse the recorded threshold without --binarize."""
    import json
    import warnings

    idir, mdir = _folders(tmp_path, n=4)
    m = iio.imread(mdir / "s00.png").copy()
    m[0, :3] = 3  # JPEG-like noise next to 0
    iio.imwrite(mdir / "s00.png", m)
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--val-fraction", "0"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 2
    assert "pass --binarize to map label > 0 to 1 (--binarize 127 for JPEG masks" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(base + ["--binarize", "--out", str(tmp_path / "b")]) == 0
        assert "3 pixel(s) have values between 0 and 127" in capsys.readouterr().err
        assert main(base + ["--binarize", "127", "--out", str(tmp_path / "c")]) == 0
        assert "lossy" not in capsys.readouterr().err
    assert json.loads((tmp_path / "c" / "model.json").read_text())["training"]["data"]["binarize"] == 127.0
    # evaluate: no --binarize needed for a model that recorded its threshold
    ev = ["evaluate", str(tmp_path / "c"), "--images", str(idir), "--masks", str(mdir), "--device", "cpu"]
    assert main(ev + ["--out", str(tmp_path / "e.csv")]) == 0
    rows = (tmp_path / "e.csv").read_text()
    assert "mean" in rows
    from napari_segattn.data import SegmentationDataset

    ref = SegmentationDataset.from_folders(idir, mdir, binarize=127.0)
    assert all(set(np.unique(ref.label(i))) <= {0, 1} for i in range(len(ref)))
    assert ref.label(0)[0, :3].tolist() == [0, 0, 0]  # the noise stays background at T=127


class _Killed(Exception):
    """Stands in for a kill -9 between two optimisation steps."""


def _kill_after(monkeypatch, calls: int):
    from napari_segattn.training import engine

    real, n = engine.Trainer._train_step, [0]

    def step(self, *a, **k):
        n[0] += 1
        if n[0] > calls:
            raise _Killed
        return real(self, *a, **k)

    monkeypatch.setattr(engine.Trainer, "_train_step", step)
    return lambda: monkeypatch.setattr(engine.Trainer, "_train_step", real)


def test_checkpoint_every_lets_a_kill_in_epoch_one_resume_within_it(tmp_path, capsys, monkeypatch):
    """5 training images, batch 1: 5 steps an epoch. Killed in the 9th step with --checkpoint-every 2,
    the state holds 7 steps (epoch 2, 2 steps done; one step lost) and --resume continues at step 3
    of epoch 2 to the weights of an uninterrupted run."""
    import json

    from safetensors.torch import load_file

    idir, mdir = _folders(tmp_path, n=6)
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize", "--epochs", "2",
            "--batch-size", "1", "--device", "cpu", "--augment", "flip", "--checkpoint-every", "2"]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    restore = _kill_after(monkeypatch, 8)
    with pytest.raises(_Killed):
        main(base + ["--out", str(tmp_path / "run")])
    restore()
    state = json.loads((tmp_path / "run" / "last" / "training_state.json").read_text())
    assert state["epoch"] == 0 and state["within_epoch"] == {"epoch": 1, "steps_done": 2, "steps": 5, "batch_size": 1}
    capsys.readouterr()
    assert main(base + ["--out", str(tmp_path / "run"), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"resuming from {tmp_path / 'run' / 'last'}: continuing at step 3 of 5 in epoch 2" in err
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6)


def test_model_json_has_the_printed_best_epoch_and_the_file_names(tmp_path, capsys):
    import json
    import re

    idir, mdir = _folders(tmp_path, n=6)
    out = tmp_path / "run"
    args = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--binarize", "--epochs", "3",
            "--batch-size", "2", "--lr", "0.01", "--device", "cpu", "--out", str(out), "--val-fraction", "0.34"]
    assert main(args) == 0
    printed = int(re.search(r"\(best epoch (\d+)\)", capsys.readouterr().out).group(1))
    info = json.loads((out / "model.json").read_text())["training"]
    assert info["best_epoch"] == printed == info["epochs_done"]
    files = info["data"]["train_files"] + info["data"]["val_files"]
    assert sorted(files) == [f"s{k:02d}.png" for k in range(6)] and len(info["data"]["val_files"]) == 2
    assert all(type(f) is str for f in files)
    # resuming the finished run says so, before reading any data, and leaves the model as it was
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    said = capsys.readouterr().out
    assert f"nothing left to train: {out} already finished 3 epoch(s) of --epochs 3" in said
    assert f"(best epoch {printed}) is unchanged; pass --epochs N with N > 3" in said
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert main(args + ["--resume", "--epochs", "4"]) == 0  # a larger --epochs continues it
    assert "resuming from" in capsys.readouterr().err
    assert json.loads((out / "last" / "model.json").read_text())["training"]["epochs_done"] == 4


def test_init_from_starts_fine_tuning_from_the_saved_weights(tmp_path):
    """--init-from: the built model gets the checkpoint's weights (FANet widened with zero-weight
    feedback inputs, so it starts as exactly the saved model); another architecture or other
    options are one-line errors."""
    import pytest
    import torch

    from napari_segattn.cli import CLIError
    from napari_segattn.cli.train_cmd import _init_from
    from napari_segattn.models import build_model, save_model

    torch.manual_seed(0)
    saved = build_model("fanet", in_channels=1, out_channels=1, width=4).eval()
    path = tmp_path / "released.safetensors"
    save_model(saved, path)
    fresh = build_model("fanet", in_channels=1, out_channels=1, width=4, mask_input=True, edit_input=True)
    model = _init_from(str(path), "fanet", fresh).eval()
    x, m = torch.randn(1, 1, 32, 32), (torch.rand(1, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        torch.testing.assert_close(model(x, m), saved(x, m))
    with pytest.raises(CLIError, match="holds a 'fanet' model; --model is 'unet'"):
        _init_from(str(path), "unet", build_model("unet", in_channels=1))
    with pytest.raises(CLIError, match="does not fit the model built here"):
        _init_from(str(path), "fanet", build_model("fanet", in_channels=1, out_channels=1, width=8))


def test_instance_labels_are_not_taken_for_jpeg_noise(shared_data):
    """The DSB sample's instance labels (ids 1..183): binarising them must not warn of lossy
    noise (it named 24,044 pixels, the nuclei with ids below 92, and suggested dropping them);
    a {0, 255} mask with faint pixels still warns."""
    import warnings

    from napari_segattn.data import dsb2018_nuclei
    from napari_segattn.data.labels import to_label_map
    from napari_segattn.data.errors import SegattnWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", SegattnWarning)
        lab = dsb2018_nuclei(shared_data).label(0)
    assert int(np.asarray(lab).sum()) == 52226  # every nucleus is foreground
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    mask[3, 4:7] = 2
    with pytest.warns(SegattnWarning, match="3 pixel"):
        to_label_map(mask, "m", binarize=True)


def test_correction_options_are_validated_and_recorded(tmp_path, capsys):
    import json

    idir, mdir = _folders(tmp_path, n=4)
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--epochs", "1",
            "--batch-size", "2", "--device", "cpu", "--val-fraction", "0", "--binarize"]
    assert main(base + ["--correction-radius", "5", "2", "--out", str(tmp_path / "bad")]) == 2
    assert "correction_radius=(5, 2)" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--correction-loss-weight", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--correction-loss-weight" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(base + ["--correction-radius", "2", "5", "--feedback-lr-scale", "10", "--val-feedback", "corrections",
                        "--correction-loss-weight", "0.5", "--correction-loss-margin", "16",
                        "--out", str(tmp_path / "ok")]) == 0
    state = json.loads((tmp_path / "ok" / "last" / "training_state.json").read_text())
    found = []

    def walk(d):  # wherever the run's config sits in the resume state
        if isinstance(d, dict):
            if "correction_radius" in d:
                found.append(d)
            for v in d.values():
                walk(v)

    walk(state)
    assert [(c["correction_radius"], c["feedback_lr_scale"], c["val_feedback"], c["correction_loss_weight"],
             c["correction_loss_margin"]) for c in found] == [([2, 5], 10.0, "corrections", 0.5, 16)]


def test_a_multi_class_label_set_trains_with_the_recipes_multi_class_loss(tmp_path, capsys):
    """Found by a new user: the shipped 3-class MNI sample made `segattn train --model unet` end in
    a traceback (the recipe's binary soft Dice); a binary --loss chosen on purpose is one line."""
    from napari_segattn.training import recipe_for

    assert recipe_for("unet").loss == "dice" and recipe_for("unet", 3).loss == "ce_dice"
    assert recipe_for("fanet", 3).loss == "ce_dice" and recipe_for("brunet", 3).loss == recipe_for("brunet").loss
    images, labels = toy_arrays(6, size=24)
    idir, mdir = tmp_path / "images", tmp_path / "masks"
    idir.mkdir()
    mdir.mkdir()
    for k, (im, lab) in enumerate(zip(images, labels)):
        iio.imwrite(idir / f"s{k:02d}.png", np.clip(im[0] * 120 + 60, 0, 255).astype(np.uint8))
        three = lab.astype(np.uint8) + (np.arange(24)[None, :] > 18).astype(np.uint8) * (lab == 0)  # classes 0, 1, 2
        iio.imwrite(mdir / f"s{k:02d}.png", (three * 2).astype(np.uint8))  # stored as 0, 2, 4
    base = ["train", "--model", "_tiny", "--images", str(idir), "--masks", str(mdir), "--epochs", "1", "--batch-size",
            "2", "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "3 classes train with 'ce_dice'" in err
    assert load_model(tmp_path / "run" / "model.safetensors").out_channels == 3
    assert main(base + ["--out", str(tmp_path / "run2"), "--loss", "dice"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1].startswith("segattn train: error: loss 'dice' is binary") and "Traceback" not in err
    assert not (tmp_path / "run2" / "model.safetensors").exists()
