"""Shared plumbing of the reproduction studies: data preparation, one training call through
the project's ``Trainer``, and writers for CSV/JSON/PNG results. GUI-free.

Scales: ``smoke`` (CI, seconds), ``reduced`` (CPU, minutes) and ``full`` (the paper's
configuration, for a GPU) run the same code; only sizes and epoch counts differ.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..tables import write_csv as _write_csv

from ..data import DataError, Normalization, SegmentationDataset, shared_data_root

SCALES = ("smoke", "reduced", "full")

# Colours of explain.ERROR_COLORS as uint8 RGB on a black (TN) background.
_ERR_RGB = np.array([[0, 0, 0], [255, 255, 0], [0, 0, 255], [255, 0, 0]], dtype=np.uint8)


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {SCALES}")
    return scale


def scale_params(table: dict[str, dict], scale: str, epochs: int | None = None) -> dict:
    """A study's sizes at ``scale``, with the epoch count optionally overridden (e.g. one epoch of
    ``full`` on a CPU to check the paper-sized pipeline before renting a GPU)."""
    p = dict(table[check_scale(scale)])
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        p["epochs"] = int(epochs)
    return p


def data_root(path: str | Path | None, folder: str) -> Path:
    """The shared-data root given either the root itself or one of its data-set folders."""
    if path is not None:
        p = Path(path)
        if (p / folder).is_dir():
            return p.resolve()
        if p.name == folder and p.is_dir():
            return p.parent.resolve()
        raise DataError(f"{p}: no {folder}/ folder here; pass the shared data root (holding {folder}/)")
    return shared_data_root()


def downsample(image: np.ndarray, label: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-mean image (kept in its dtype range) and strided labels (nearest neighbour,
    so thin structures are thinned, never invented)."""
    from skimage.transform import downscale_local_mean

    if factor == 1:
        return image, label
    img = image.astype(np.float64)
    fac = (1,) * (img.ndim - 2) + (factor, factor)
    small = downscale_local_mean(img, fac)
    if np.issubdtype(image.dtype, np.integer):
        small = np.clip(np.rint(small), np.iinfo(image.dtype).min, np.iinfo(image.dtype).max).astype(image.dtype)
    else:
        small = small.astype(image.dtype)
    lab = label[..., ::factor, ::factor][..., : small.shape[-2], : small.shape[-1]]
    return small, np.ascontiguousarray(lab)


def center_crop(a: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return a
    h, w = a.shape[-2:]
    t, l = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(a[..., t:t + size, l:l + size])


def em_split(n: int = 30) -> dict[str, list[int]]:
    """FANet's EM split, 24 train / 3 validation / 3 test. The paper gives only the counts;
    we take the slices in stack order (first 24, next 3, last 3) [our choice]."""
    return {"train": list(range(0, n - 6)), "val": list(range(n - 6, n - 3)), "test": list(range(n - 3, n))}


def em_arrays(root: Path, factor: int, crop: int | None, foreground: str = "interior"):
    """ISBI 2012 images (1xHxW uint8) and labels (1 = cell interior, or 1 = membrane)."""
    from ..data import isbi2012_em

    ds = isbi2012_em(root)
    images, labels = [], []
    for i in range(len(ds)):
        img, lab = downsample(ds.raw(i), ds.sample(i)["label"], factor)
        img, lab = center_crop(img, crop), center_crop(lab, crop)
        if foreground == "membrane":
            lab = (lab == 0).astype(np.int64)
        images.append(img)
        labels.append(lab.astype(np.int64))
    return images, labels, list(ds.names)


def make_dataset(images, labels, idx: Sequence[int], names, normalization: Normalization, *, augmenter=None,
                 seed: int = 0, num_classes: int | None = None) -> SegmentationDataset:
    return SegmentationDataset([images[i] for i in idx], [labels[i] for i in idx], names=[names[i] for i in idx],
                               normalization=normalization, augmenter=augmenter, seed=seed, num_classes=num_classes)


def mni_slices(root: Path, factor: int, min_tissue: float = 0.05):
    """MNI152 axial slices (z-scored over the brain's non-zero voxels of the whole volume, then
    block-mean downsampled) with 0/1 GM/2 WM labels; only slices with >= ``min_tissue`` tissue."""
    from ..data import load_mni152

    m = load_mni152(root)
    vol = Normalization("zscore_nonzero", per="volume").apply(m["t1"][None].astype(np.float32), channel_axis=0)[0]
    images, labels, zs = [], [], []
    for z in range(vol.shape[0]):
        img, lab = downsample(vol[z], m["labels"][z], factor)
        if (lab > 0).mean() >= min_tissue:
            images.append(img[None].astype(np.float32))
            labels.append(lab.astype(np.int64))
            zs.append(z)
    return images, labels, zs


def evenly(seq: Sequence, n: int | None) -> list:
    """``n`` items spread evenly over ``seq`` (all when n is None or >= len)."""
    if n is None or n >= len(seq):
        return list(seq)
    pos = np.linspace(0, len(seq) - 1, n).round().astype(int)
    return [seq[p] for p in pos]


@dataclasses.dataclass
class TrainResult:
    model: Any
    seconds: float
    history: list[dict]
    best_epoch: int | None = None  # epoch (0-based) whose weights the model holds


def train(model_name: str, model_kw: dict, train_ds, val_ds, config, log: Callable[[str], None] = print,
          model=None) -> TrainResult:
    """Build (or take ``model``, e.g. to fine-tune) and train one model with the project's
    Trainer (no files written).

    With a validation set the model ends with the weights of the best validation epoch
    (``config.select_on``), as the papers' scripts keep their best checkpoint; without one,
    the weights after the last epoch. The model gets ``segattn_normalization`` so that
    ``inference.predict`` normalises test images exactly as training did.
    """
    import copy

    import torch

    from ..models import build_model
    from ..training import Trainer, Validation

    torch.manual_seed(config.seed)
    if model is None:
        model = build_model(model_name, **model_kw)
    t0 = time.perf_counter()
    history, best_state, best_epoch = [], None, None
    for ev in Trainer(model, train_ds, val_ds, config, device="auto").run():
        if isinstance(ev, Validation):
            row = {"epoch": ev.epoch, "val_loss": ev.loss,
                   **{k: v for k, v in ev.metrics.items() if k in ("dice", "iou", "dice_class_1", "dice_class_2")}}
            history.append(row)
            if ev.improved:
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
                best_epoch = ev.epoch
            log(f"  {model_name} epoch {ev.epoch + 1}/{config.epochs}: " + "  ".join(
                f"{k}={v:.4f}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
                + ("  (best)" if ev.improved else ""))
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = config.epochs - 1
    model.segattn_normalization = train_ds.normalization.to_dict()
    model.eval()
    return TrainResult(model, time.perf_counter() - t0, history, best_epoch)


def as_float(v) -> float:
    """A CSV cell or results.json value as float: '' / None / text -> NaN, 'inf' -> inf."""
    if v is None or v == "":
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# ---- writers -------------------------------------------------------------------------------
def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(obj), indent=2))
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    return _write_csv(path, rows, float_format=".6g")


def write_png(path: Path, rgb: np.ndarray) -> Path:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.ascontiguousarray(rgb))
    return path


def gray_u8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.percentile(a, [1, 99]) if a.size else (0, 1)
    return (np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)


def error_rgb(labels: np.ndarray) -> np.ndarray:
    """An ``explain.error_map`` label image (0 TN, 1 TP, 2 FN, 3 FP) as RGB in its colours."""
    return _ERR_RGB[np.asarray(labels, dtype=np.intp)]


def panel(tiles: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Tiles (grey HxW or RGB HxWx3, same H/W) side by side on a white gap."""
    rgb = [np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t for t in tiles]
    h = max(t.shape[0] for t in rgb)
    sep = np.full((h, gap, 3), 255, np.uint8)
    out = []
    for t in rgb:
        out += [t.astype(np.uint8), sep]
    return np.concatenate(out[:-1], axis=1)


def new_axes(figsize: tuple[float, float]):
    """``(fig, ax)`` of a matplotlib (Agg) figure, or None without matplotlib (an optional
    dependency: the CSV next to each chart holds the same numbers)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt.subplots(figsize=figsize, dpi=100)


def save_figure(fig, ax, path: Path) -> Path:
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot(path: Path, kind: str, series: dict[str, Sequence[float]], x: Sequence, *, title: str, xlabel: str,
         ylabel: str) -> Path | None:
    """A line or grouped-bar chart (None without matplotlib)."""
    axes = new_axes((5.5, 3.6))
    if axes is None:
        return None
    fig, ax = axes
    xs = np.arange(len(x))
    if kind == "line":
        for name, ys in series.items():
            ax.plot(list(x), ys, marker="o", ms=3, label=name)
    else:
        wdt = 0.8 / max(1, len(series))
        for j, (name, ys) in enumerate(series.items()):
            ax.bar(xs + (j - (len(series) - 1) / 2) * wdt, ys, wdt, label=name)
        ax.set_xticks(xs, [str(v) for v in x])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return save_figure(fig, ax, path)


def mean_rows(rows: list[dict], keys: Sequence[str]) -> dict:
    """Mean of ``keys`` over rows with NaN skipped (e.g. precision of an empty prediction); an inf
    HD95 (one mask empty) makes the mean inf, as ``metrics.segmentation_metrics`` does."""
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        vals = vals[~np.isnan(vals)]
        out[k] = float(vals.mean()) if vals.size else float("nan")
    return out
