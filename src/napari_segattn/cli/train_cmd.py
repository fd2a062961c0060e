"""``segattn train``: train a registered model with its paper recipe; writes OUT/model.safetensors.

Multi-GPU: ``torchrun --nproc_per_node N -m napari_segattn train ...`` runs the same engine with
DistributedDataParallel (one process per GPU; gloo on CPU).
"""

from __future__ import annotations

from pathlib import Path

import dataclasses
import os
import sys

from . import CLIError
from .argtypes import NONNEGATIVE_INT, POSITIVE_FLOAT, POSITIVE_INT, add_binarize, float_range, int_range


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (paper recipe; every setting overridable)")
    p.add_argument("--model", required=True, help="registered model name (see `segattn models`)")
    src = p.add_argument_group("data (folders of 2D images, or volumes)")
    src.add_argument("--images", help="folder of images")
    src.add_argument("--masks", help="folder of masks with the same file names")
    src.add_argument("--mask-suffix", default="", help="masks are named <image name><suffix>, e.g. _mask")
    src.add_argument("--volume", nargs="+", metavar="F", help="image volume(s), one per modality")
    src.add_argument("--labels", help="label volume for --volume")
    src.add_argument("--axis", type=int_range(0, 2), default=0, help="slice axis of the volume (default 0)")
    add_binarize(p)
    p.add_argument("--tile", type=NONNEGATIVE_INT, default=0,
                   help="cut 2D images into TILE x TILE training tiles (0 = whole images)")
    p.add_argument("--crop", type=NONNEGATIVE_INT, default=0,
                   help="train on a random CROP x CROP window of each sample, drawn afresh every epoch "
                        "(after --tile; validation sees whole samples; not for FANet-style models)")
    p.add_argument("--max-minutes", type=POSITIVE_FLOAT, default=None, metavar="M",
                   help="time budget: finish the epoch that passes M minutes, save, stop (--resume continues)")
    p.add_argument("--checkpoint-every", type=NONNEGATIVE_INT, default=None, metavar="N",
                   help="also save the resume state OUT/last every N optimisation steps within an epoch, so a "
                        "kill loses fewer than N steps (default 0: at epoch ends only)")
    p.add_argument("--model-options", default="{}", metavar="JSON",
                   help='extra model options, e.g. \'{"width": 8}\' or \'{"dilation": 6}\'')
    p.add_argument("--epochs", type=POSITIVE_INT)
    p.add_argument("--batch-size", type=POSITIVE_INT)
    p.add_argument("--lr", type=POSITIVE_FLOAT)
    p.add_argument("--loss", choices=["dice", "bce_dice", "ce", "ce_dice", "feedback_ce"])
    p.add_argument("--augment", choices=["none", "flip", "fanet"], help="augmentation (default: the recipe's)")
    p.add_argument("--tv-alpha", type=POSITIVE_FLOAT, help="TV-smoothing augmentation weight (smaller = smoother)")
    p.add_argument("--val-fraction", type=float_range(0.0, 1.0, low_open=False), default=0.1, help="held-out fraction (0 = no validation)")
    p.add_argument("--device", default="auto", help="auto, cuda, cuda:N, mps or cpu")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last")
    p.add_argument("--overwrite", action="store_true", help="train into a non-empty OUT, replacing its run")
    p.add_argument("--seed", type=int)
    p.add_argument("--init-from", metavar="CKPT",
                   help="start from the weights of a saved model of the same architecture (fine-tuning); for "
                        "FANet, --model-options may add mask_input/edit_input: the new input channels start at "
                        "zero, so training begins from exactly the saved model")
    fb = p.add_argument_group("FANet feedback (correction-aware training, not in the paper)")
    fb.add_argument("--feedback", choices=["released", "corrections"],
                    help="what FANet is fed while training: its stored previous prediction (released, the "
                         "default) or, with probability --correction-prob, a simulated user correction of its "
                         "current mask; pair with --model-options "
                         "'{\"mixpool\": \"none\", \"mask_input\": true, \"edit_input\": true}'")
    fb.add_argument("--correction-prob", type=float_range(0.0, 1.0, low_open=False, high_open=False), metavar="P",
                    help="share of samples fed a simulated correction with --feedback corrections (default 0.5)")
    fb.add_argument("--correction-radius", type=POSITIVE_INT, nargs=2, metavar=("LO", "HI"),
                    help="brush radius of the simulated corrections in px, drawn from [LO, HI] (default 8 48; a few px "
                         "trains for click-like corrections on small objects)")
    fb.add_argument("--feedback-lr-scale", type=POSITIVE_FLOAT, metavar="K",
                    help="the mask/edit input weights learn K times as fast as the rest (default 1)")
    fb.add_argument("--val-feedback", choices=["released", "corrections"],
                    help="what validation feeds the model: its stored masks (default) or its prediction with the "
                         "largest error painted; the loss, schedule and kept checkpoint then follow the latter")
    fb.add_argument("--correction-loss-weight", type=float_range(0.0, low_open=False), metavar="W",
                    help="extra cross-entropy, weighted W, over the errors a simulated correction left next to the "
                         "paint (default 0: off)")
    fb.add_argument("--correction-loss-margin", type=NONNEGATIVE_INT, metavar="PX",
                    help="... and over every pixel within PX of the paint (default 0)")
    p.set_defaults(func=run)


def _binarize(args):
    """The data set's ``binarize``: False, True (> 0) or a threshold."""
    return False if args.binarize is None else (True if args.binarize == 0 else args.binarize)


def _dataset(args, seed: int):
    from ..data import DataError, SegmentationDataset

    try:
        if args.images or args.masks:
            if args.volume or args.labels:
                raise CLIError("give either --images/--masks or --volume/--labels, not both")
            if not (args.images and args.masks):
                raise CLIError("--images and --masks go together")
            return SegmentationDataset.from_folders(args.images, args.masks, binarize=_binarize(args), seed=seed,
                                                    mask_suffix=args.mask_suffix)
        if args.volume:
            if not args.labels:
                raise CLIError("--volume needs --labels")
            return SegmentationDataset.from_volumes(args.volume, args.labels, axis=args.axis, binarize=_binarize(args), seed=seed)
    except DataError as exc:
        raise CLIError(str(exc)) from None
    raise CLIError("no data: give --images DIR --masks DIR or --volume F --labels F")


def _tiled(ds, tile: int, seed: int):
    """The same samples cut into tiles (so one large image can give train and val samples).

    Each tile keeps its image's name (``a.png[tile 3]``, recorded in model.json) and its
    image's group, so validation can hold out whole images (:func:`_split`)."""
    from ..data import SegmentationDataset, tile_pairs

    images, labels, names, groups, spacings = [], [], [], [], []
    for i in range(len(ds)):
        ims, labs = tile_pairs(ds.raw(i), ds.label(i), tile)
        images += ims
        labels += labs
        names += [f"{ds.names[i]}[tile {k}]" for k in range(len(ims))]
        groups += [ds.groups[i]] * len(ims)
        spacings += [ds.spacings[i]] * len(ims)
    return SegmentationDataset(images, labels, names=names, normalization=ds.normalization, seed=seed,
                               groups=groups, spacings=spacings, num_classes=ds.num_classes)


def _split(ds, val_fraction: float, seed: int, tiled: bool):
    """Train/validation split; tiles are held out by *image* (a random share of tiles put
    validation tiles beside training tiles of the same image: optimistic scores, and the best
    epoch chosen on leaked data). The log says which split was used."""
    if len(ds) < 2:
        raise CLIError(f"only {len(ds)} sample: cannot hold out a validation set (use --val-fraction 0)")
    n_groups = len(set(ds.groups))
    by_image = tiled and n_groups >= 2
    train_ds, val_ds = ds.split(val_fraction, seed=seed, by_group=by_image)
    if by_image:
        n_val = len(set(val_ds.groups))
        note = f"{len(val_ds)} tiles of {n_val} held-out image(s) of {n_groups} (split by image)"
    elif tiled:
        note = (f"{len(val_ds)} of {len(ds)} tiles of the one image: validation tiles sit beside training "
                "tiles, so its scores are optimistic")
    else:
        note = f"{len(val_ds)} of {len(ds)} samples"
    print(f"validation: {note}", file=sys.stderr)
    return train_ds, val_ds


def _check_sizes(ds, batch_size: int, tile: int, crop: int) -> None:
    """Different image sizes can only be batched when cut to one size (raw torch 'stack expects
    each tensor to be equal size' before)."""
    if ds.shape is not None or tile or crop or batch_size == 1:
        return
    from ..data.errors import few

    sizes: dict = {}
    for i in range(len(ds)):
        sizes.setdefault(tuple(ds.raw(i).shape[-2:]), ds.names[i])
    listed = few([f"{n} {h}x{w}" for (h, w), n in sizes.items()], 3)
    raise CLIError(f"the training images have {len(sizes)} different sizes ({listed}); a batch needs one size: "
                   "pass --tile N or --crop N, or --batch-size 1")


def _check_crop(ds, crop: int, model_name: str) -> None:
    from ..models import get_spec

    if get_spec(model_name).takes_mask:
        raise CLIError(f"--crop is not for {model_name!r}: its feedback masks are kept per whole sample; "
                       "use --tile N for fixed tiles")
    small = [(ds.names[i], ds.raw(i).shape[-2:]) for i in range(len(ds)) if min(ds.raw(i).shape[-2:]) < crop]
    if small:
        name, (h, w) = small[0]
        raise CLIError(f"--crop {crop} is larger than {len(small)} training sample(s), e.g. {name} ({h}x{w}); "
                       "use a smaller --crop")


def _model_options(text: str) -> dict:
    import json

    try:
        opts = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(f"--model-options is not valid JSON: {exc}") from None
    if not isinstance(opts, dict):
        raise CLIError('--model-options must be a JSON object, e.g. {"width": 8}')
    return opts


def _config(args):
    from ..training import recipe_for

    overrides = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "loss": args.loss,
        "tv_alpha": args.tv_alpha, "seed": args.seed, "augment": args.augment, "max_minutes": args.max_minutes,
        "checkpoint_every": args.checkpoint_every,
        "feedback": args.feedback, "correction_prob": args.correction_prob,
        "correction_radius": tuple(args.correction_radius) if args.correction_radius else None,
        "feedback_lr_scale": args.feedback_lr_scale, "val_feedback": args.val_feedback,
        "correction_loss_weight": args.correction_loss_weight, "correction_loss_margin": args.correction_loss_margin,
    }
    cfg = recipe_for(args.model)
    try:
        return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _init_distributed(device: str) -> tuple[int, str]:
    """Join the torchrun group if launched by torchrun; returns (rank, device)."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return 0, device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), device


class _Progress:
    """tqdm bar when tqdm is installed, else one line per epoch."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None
        try:
            import tqdm  # noqa: F401

            self.tqdm = tqdm.tqdm
        except ImportError:
            self.tqdm = None

    def __call__(self, e) -> None:
        from ..training import Cancelled, Checkpoint, EpochStart, Finished, Resumed, Step, Validation

        if not self.enabled:
            return
        if isinstance(e, EpochStart):
            if self.tqdm is not None:
                self.close()
                self.bar = self.tqdm(total=e.steps, desc=f"epoch {e.epoch + 1}/{e.epochs}", file=sys.stderr, leave=False)
        elif isinstance(e, Step):
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{e.loss:.4f}", lr=f"{e.lr:.2e}", eta=f"{e.eta_s:.0f}s")
            elif e.step == e.steps - 1:
                print(f"epoch {e.epoch + 1}: loss {e.loss:.4f} lr {e.lr:.2e} eta {e.eta_s:.0f}s", file=sys.stderr)
        elif isinstance(e, Validation):
            self.close()
            m = " ".join(f"{k} {e.metrics[k]:.4f}" for k in ("dice", "iou") if k in e.metrics)
            store = ""
            if e.mask_store_bytes is not None and e.mask_dense_bytes:
                store = (f" | mask store {e.mask_store_bytes / 1024:.1f} KiB RLE vs {e.mask_dense_bytes / 1024:.1f} KiB dense"
                         f" ({e.mask_dense_bytes / max(1, e.mask_store_bytes):.1f}x)")
            print(f"epoch {e.epoch + 1}: val loss {e.loss:.4f} {m}{' *' if e.improved else ''}{store}", file=sys.stderr)
        elif isinstance(e, Resumed):
            where = f"step {e.step + 1} of {e.steps} in epoch {e.epoch + 1}" if e.step else f"epoch {e.epoch + 1}"
            print(f"resuming from {e.path}: continuing at {where}", file=sys.stderr)
        elif isinstance(e, Checkpoint) and e.kind == "step" and self.bar is None:
            print(f"epoch {e.epoch + 1}: saved the resume state after step {e.steps_done}", file=sys.stderr)
        elif isinstance(e, (Finished, Cancelled)):
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args) -> int:
    import torch

    from ..models import build_model, get_spec
    from ..training import Trainer, TrainingError, build_augmenter, recipe_for
    from ..training.losses import build_loss

    try:
        get_spec(args.model)
    except KeyError as exc:
        raise CLIError(exc.args[0]) from None
    options = _model_options(args.model_options)  # a JSON typo is said before the data are read
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; training writes a folder")
    from .predict_cmd import refuse_unwritable

    refuse_unwritable([out / "model.safetensors"])
    if not (args.resume or args.overwrite) and out.is_dir() and any(out.iterdir()):
        raise CLIError(f"{out} is not empty (an earlier run?); pass --resume to continue it, --overwrite to "
                       "replace it, or choose another --out")
    cfg = _config(args)
    if args.resume and (finished := _finished_run(out, cfg.epochs)):
        print(finished)
        return 0
    try:
        rank, device = _init_distributed(args.device)
    except RuntimeError as exc:
        raise CLIError(str(exc)) from None
    ds = _dataset(args, cfg.seed)
    if args.tile > 0:
        ds = _tiled(ds, args.tile, cfg.seed)
    _check_sizes(ds, cfg.batch_size, args.tile, args.crop)
    ds.augmenter = build_augmenter(cfg)
    if args.val_fraction > 0:
        train_ds, val_ds = _split(ds, args.val_fraction, cfg.seed, tiled=args.tile > 0)
    else:
        train_ds, val_ds = ds, None
    if args.crop:
        _check_crop(train_ds, args.crop, args.model)
        train_ds.crop = args.crop
    train_ds.binarize = args.binarize  # recorded in model.json: evaluate/refine reuse it
    out_channels = 1 if ds.num_classes <= 2 else ds.num_classes
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    try:
        model = build_model(args.model, **{"in_channels": ds.num_channels, "out_channels": out_channels,
                                           **options})
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot build {args.model!r} for {ds.num_channels} channel(s), {out_channels} output(s): {exc}") from None
    if args.init_from:
        model = _init_from(args.init_from, args.model, model)
    if args.loss is None and out_channels > 1:  # the recipe's loss, for as many classes as the labels hold
        multi = recipe_for(args.model, out_channels).loss
        if multi != cfg.loss:
            print(f"segattn train: the {args.model} recipe's loss {cfg.loss!r} is for one class; "
                  f"{out_channels} classes train with {multi!r} (--loss to choose)", file=sys.stderr)
            cfg = dataclasses.replace(cfg, loss=multi)
    try:  # a binary --loss for a multi-class model: said before training starts
        build_loss(cfg.loss, out_channels, **cfg.loss_options)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    progress = _Progress(enabled=rank == 0)
    trainer = Trainer(model, train_ds, val_ds, cfg, device=device, listeners=[progress], out_dir=args.out,
                      resume=args.resume)
    try:
        for _ in trainer.run():
            pass
    except TrainingError as exc:
        raise CLIError(str(exc)) from None
    except RuntimeError as exc:
        if "device" in str(exc):
            raise CLIError(str(exc)) from None
        raise
    finally:
        progress.close()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if rank == 0:
        print(_summary(trainer, cfg.epochs))
    return 0


def _init_from(path: str, name: str, model):
    """``model`` with the weights of the checkpoint at ``path`` (widened for FANet feedback inputs)."""
    from ..models import CheckpointError, load_model
    from ..models.fanet import FANet, with_feedback_inputs

    try:
        start = load_model(path, map_location="cpu")
    except (CheckpointError, OSError) as exc:
        raise CLIError(f"--init-from: {exc}") from None
    saved = start.segattn_config["name"]
    if saved != name:
        raise CLIError(f"--init-from {path} holds a {saved!r} model; --model is {name!r}")
    if isinstance(model, FANet) and (model.mask_input, model.edit_input) != (start.mask_input, start.edit_input):
        if (start.mask_input and not model.mask_input) or (start.edit_input and not model.edit_input):
            raise CLIError(f"--init-from {path} takes feedback inputs the new model drops; keep its mask_input/edit_input")
        start = with_feedback_inputs(start, mask_input=model.mask_input, edit_input=model.edit_input)
    try:
        model.load_state_dict(start.state_dict())
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise CLIError(f"--init-from {path} does not fit the model built here ({first}); "
                       "give the same --model-options and data channels it was trained with") from None
    return model


def _summary(trainer, epochs: int) -> str:
    """The last line: what was written, or, resuming a finished run, that nothing was."""
    from ..training import Step

    if trainer.resume and not any(isinstance(e, Step) for e in trainer.history):
        return _nothing_left(trainer.out_dir, trainer.start_epoch, epochs, trainer.best_epoch)
    best = trainer.best_epoch + 1 if trainer.best_epoch is not None else "-"
    return f"wrote {trainer.model_path} (best epoch {best})"


def _nothing_left(out: Path, done: int, epochs: int, best_epoch: int | None) -> str:
    best = f" (best epoch {best_epoch + 1})" if best_epoch is not None else ""
    return (f"nothing left to train: {out} already finished {done} epoch(s) of --epochs {epochs}; "
            f"{out / 'model.safetensors'}{best} is unchanged; pass --epochs N with N > {done} to train it further")


def _finished_run(out: Path, epochs: int) -> str | None:
    """``--resume`` of a run that already has its epochs: say so before reading any data."""
    import json

    from ..training.checkpoint import STATE_JSON, find_state_dir

    d = find_state_dir(out)
    if d is None:
        return None
    try:
        meta = json.loads((d / STATE_JSON).read_text())
        done = int(meta["epoch"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the engine reports a broken state
    if meta.get("within_epoch") is not None or done < epochs:
        return None
    return _nothing_left(out, done, epochs, meta.get("best_epoch"))
