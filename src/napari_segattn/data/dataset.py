"""2D segmentation samples from folders, NIfTI volumes or in-memory (napari layer) arrays.

Raw pixels are kept as loaded (slices are views into their volume); normalisation and
augmentation happen per access, so a data set costs little more memory than its files.
"""

from __future__ import annotations

import copy

import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import Augmenter
from .errors import DataError, few
from .io import IMAGE_SUFFIXES, file_stem, read_image, read_volume
from .labels import MAX_CLASSES, check_finite, to_label_map
from .normalization import Normalization
from .otsu import otsu_mask

AXIS_NAMES = "zyx"


def _natural_key(s: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _binarize_arg(binarize) -> tuple[bool, float]:
    """``True`` → label > 0; a number t → label > t (e.g. 127 for JPEG-compressed masks)."""
    if binarize is True:
        return True, 0.0
    if binarize is False or binarize is None:
        return False, 0.0
    return True, float(binarize)


def _labels(lab: np.ndarray, name: str, binarize, label_map, max_classes) -> np.ndarray:
    on, thr = _binarize_arg(binarize)
    if on and thr != 0.0:
        return (np.asarray(lab, dtype=np.float64) > thr).astype(np.int64)
    return to_label_map(lab, name, binarize=on, label_map=label_map, max_classes=max_classes)


def _suffix_hint(image_stems: list[str], mask_stems: list[str]) -> str:
    """Suggest ``mask_suffix`` when every mask is named ``<image stem><same suffix>``."""
    img = set(image_stems)
    suffixes = set()
    for m in mask_stems:
        hits = [m[len(s):] for s in img if m.startswith(s) and len(m) > len(s)]
        if not hits:
            return ""
        suffixes.add(min(hits, key=len))
    return f" — the masks look like '<name>{suffixes.pop()}': pass mask_suffix (--mask-suffix on the command line)" if len(suffixes) == 1 else ""


def image_to_chw(arr: np.ndarray, name: str) -> np.ndarray:
    """A 2D image file's array as CxHxW: HxW, HxWxC (C <= 4, RGB(A)) or CxHxW (C <= 4)."""
    a = np.asarray(arr)
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3:
        if a.shape[-1] <= 4 and a.shape[0] > 4:
            a = np.moveaxis(a, -1, 0)
            if a.shape[0] == 4 and np.all(a[3] == a[3].flat[0]):
                a = a[:3]  # constant alpha carries no information
            return a
        if a.shape[0] <= 4:
            return a
    raise DataError(f"{name}: cannot tell the channel axis of an image with shape {a.shape}; "
                    "expected HxW, HxWxC or CxHxW with at most 4 channels")


def mask_to_hw(arr: np.ndarray, name: str) -> np.ndarray:
    """A mask file's array as HxW; RGB masks are accepted when all channels are equal."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        if np.all(a[..., :3] == a[..., :1]):
            return a[..., 0]
        raise DataError(f"{name}: mask is a colour image (shape {a.shape}); save it as a single-channel label image")
    if a.ndim == 3 and a.shape[0] == 1:
        return a[0]
    if a.ndim != 2:
        raise DataError(f"{name}: a mask must be a 2D label image, got shape {a.shape}")
    return a


def random_crop(rng: np.random.Generator, size: int, image: np.ndarray, label: np.ndarray, fb, name: str):
    """A ``size`` x ``size`` window at a random position, the same for image, label and feedback."""
    h, w = label.shape[-2:]
    if size > h or size > w:
        raise DataError(f"{name}: crop {size} is larger than the image ({h}x{w}); use a smaller --crop")
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    win = (slice(y, y + size), slice(x, x + size))
    return image[(..., *win)], label[win], None if fb is None else fb[win]


class SegmentationDataset(Dataset):
    """Samples ``{"image": float32 CxHxW, "label": int64 HxW, "index": int[, "feedback": float32 1xHxW]}``.

    ``feedback``: a callable index → HxW mask (FANet's stored previous prediction). It is
    augmented together with the sample only when ``augment_feedback=True``; the released FANet
    feeds the stored mask un-augmented (spec D4), which is the default.

    Augmentation randomness is drawn from ``default_rng((seed, epoch, index, draw))``:
    reproducible, different in every epoch, and independent of DataLoader workers as long as
    the training loop calls :meth:`set_epoch` (in-process it also varies without it).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        *,
        names: Sequence[str] | None = None,
        normalization: Normalization | None = None,
        augmenter: Augmenter | None = None,
        seed: int = 0,
        spacings: Sequence[tuple | None] | None = None,
        stats: Sequence[tuple | None] | None = None,
        groups: Sequence[int] | None = None,
        slice_index: Sequence[int | None] | None = None,
        volumes: list[dict] | None = None,
        num_classes: int | None = None,
        feedback: Callable[[int], np.ndarray] | None = None,
        augment_feedback: bool = False,
    ):
        n = len(images)
        if n == 0:
            raise DataError("the data set is empty (no samples)")
        if len(labels) != n:
            raise DataError(f"{n} images but {len(labels)} label maps")
        self._images = list(images)
        self._labels = list(labels)
        self.names = list(names) if names is not None else [f"sample[{i}]" for i in range(n)]
        self.normalization = normalization if normalization is not None else Normalization()
        self.augmenter = augmenter
        self.seed = int(seed)
        self.spacings = list(spacings) if spacings is not None else [None] * n
        self._stats = list(stats) if stats is not None else [None] * n
        self.groups = list(groups) if groups is not None else list(range(n))
        self.slice_index = list(slice_index) if slice_index is not None else [None] * n
        self.volumes = volumes or []
        #: side of a random square crop drawn afresh per sample and epoch (``--crop``); None: whole
        self.crop: int | None = None
        self.feedback = feedback
        self.augment_feedback = augment_feedback
        self._epoch = 0
        self._draws = [0] * n
        chans = {im.shape[0] for im in self._images}
        if len(chans) != 1:
            raise DataError(f"samples have different channel counts {sorted(chans)}")
        self.num_channels = chans.pop()
        found = max(int(lab.max(initial=0)) for lab in self._labels) + 1
        self.num_classes = max(2, found) if num_classes is None else int(num_classes)
        if self.num_classes < found:
            raise DataError(f"num_classes={num_classes} but labels go up to {found - 1}")

    # ---- sizes and metadata -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._images)

    @property
    def spacing(self) -> tuple | None:
        """In-plane (row, column) spacing shared by all samples, or None if unknown/mixed."""
        uniq = {tuple(s) if s is not None else None for s in self.spacings}
        return uniq.pop() if len(uniq) == 1 else None

    @property
    def shape(self) -> tuple | None:
        """(H, W) shared by all samples, or None when sizes differ."""
        uniq = {im.shape[-2:] for im in self._images}
        return uniq.pop() if len(uniq) == 1 else None

    def set_epoch(self, epoch: int) -> None:
        # Augmentation draws restart each epoch, so a sample's flips depend only on
        # (seed, epoch, index): exact resume and DDP ranks see what one process would.
        self._epoch = int(epoch)
        self._draws = [0] * len(self._draws)

    # ---- access ---------------------------------------------------------------------------
    def label(self, i: int) -> np.ndarray:
        """The HxW integer labels of sample ``i`` (after binarize / label_map)."""
        return self._labels[i]

    def raw(self, i: int) -> np.ndarray:
        """The un-normalised CxHxW image as loaded (FANet's Otsu masks are made from it)."""
        return self._images[i]

    def normalized(self, i: int) -> np.ndarray:
        return self.normalization.apply(self._images[i], channel_axis=0, stats=self._stats[i])

    def _rng(self, i: int) -> np.random.Generator:
        self._draws[i] += 1
        return np.random.default_rng([self.seed, self._epoch, i, self._draws[i]])

    def sample(self, i: int, augment: bool = False) -> dict:
        """One sample as numpy arrays (plus ``"name"``); augmented only when asked."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        i = i % len(self)
        image = self.normalized(i)
        label = self._labels[i]
        fb = None
        if self.feedback is not None:
            fb = np.asarray(self.feedback(i), dtype=np.float32)
            if fb.shape != label.shape:
                raise DataError(f"{self.names[i]}: feedback mask has shape {fb.shape}, label is {label.shape}")
        if augment and self.augmenter is not None:
            rng = self._rng(i)
            if fb is not None and self.augment_feedback:
                image, label, fb = self.augmenter(rng, image, label, fb)
            else:
                image, label = self.augmenter(rng, image, label)
        if augment and self.crop:
            image, label, fb = random_crop(self._rng(i), self.crop, image, label, fb, self.names[i])
        out = {"image": np.ascontiguousarray(image, dtype=np.float32),
               "label": np.ascontiguousarray(label, dtype=np.int64), "index": i, "name": self.names[i]}
        if fb is not None:
            out["feedback"] = np.ascontiguousarray(fb, dtype=np.float32)[None]
        return out

    def __getitem__(self, i: int) -> dict:
        s = self.sample(i, augment=self.augmenter is not None or bool(self.crop))
        item = {"image": torch.from_numpy(s["image"]), "label": torch.from_numpy(s["label"]), "index": s["index"]}
        if "feedback" in s:
            item["feedback"] = torch.from_numpy(s["feedback"])
        return item

    def initial_masks(self, method: str = "otsu") -> list[np.ndarray]:
        """FANet's iteration-0 masks from the raw images (``"otsu"``, ``"empty"`` or ``"full"``)."""
        if method == "otsu":
            return [otsu_mask(im[0] if im.shape[0] == 1 else im, channel_axis=0) for im in self._images]
        if method in ("empty", "full"):
            return [np.full(im.shape[-2:], method == "full") for im in self._images]
        raise DataError(f"unknown initial mask method {method!r}; use 'otsu', 'empty' or 'full'")

    def with_feedback(self, feedback: Callable[[int], np.ndarray] | None) -> "SegmentationDataset":
        """A view of this data set (same pixel memory) that reads feedback masks from ``feedback``.

        The training loop attaches its mask store this way instead of rebinding ``feedback`` on
        the caller's object: a second run on the same data set then starts from its own
        initial masks, not from the first run's last predictions."""
        view = copy.copy(self)
        view.feedback = feedback
        view._draws = list(self._draws)  # augmentation draws are per view
        return view

    # ---- subsets ----------------------------------------------------------------------------
    def subset(self, indices: Sequence[int], augmenter: Augmenter | None | str = "same") -> "SegmentationDataset":
        """A new data set over ``indices`` (sharing pixel memory); ``index`` is renumbered 0..n−1,
        so ``feedback`` is not carried over: attach it to the subset."""
        idx = [int(i) for i in indices]
        return SegmentationDataset(
            [self._images[i] for i in idx], [self._labels[i] for i in idx],
            names=[self.names[i] for i in idx], normalization=self.normalization,
            augmenter=self.augmenter if augmenter == "same" else augmenter, seed=self.seed,
            spacings=[self.spacings[i] for i in idx], stats=[self._stats[i] for i in idx],
            groups=[self.groups[i] for i in idx], slice_index=[self.slice_index[i] for i in idx],
            volumes=self.volumes, num_classes=self.num_classes, augment_feedback=self.augment_feedback,
        )

    def split(self, val_fraction: float = 0.2, seed: int = 0, *, by_group: bool = False,
              augment_val: bool = False) -> tuple["SegmentationDataset", "SegmentationDataset"]:
        """Deterministic random ``(train, val)`` split; order within each part is preserved.

        ``by_group=True`` keeps all slices of one volume on the same side (no neighbouring-slice
        leakage; needs several volumes). The validation part is not augmented unless
        ``augment_val`` (FPA's released code augmented val/test too, spec B4).
        """
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
        rng = np.random.default_rng(seed)
        if by_group:
            ugroups = sorted(set(self.groups))
            if len(ugroups) < 2:
                raise DataError("by_group split needs at least two volumes/groups")
            order = rng.permutation(len(ugroups))
            n_val = min(len(ugroups) - 1, max(1, int(round(val_fraction * len(ugroups)))))
            val_groups = {ugroups[k] for k in order[:n_val]}
            val_idx = [i for i, g in enumerate(self.groups) if g in val_groups]
        else:
            if len(self) < 2:
                raise DataError("need at least two samples to split")
            n_val = min(len(self) - 1, max(1, int(round(val_fraction * len(self)))))
            val_idx = sorted(rng.permutation(len(self))[:n_val].tolist())
        val_set = set(val_idx)
        train_idx = [i for i in range(len(self)) if i not in val_set]
        return self.subset(train_idx), self.subset(val_idx, augmenter="same" if augment_val else None)

    @classmethod
    def concat(cls, datasets: Sequence["SegmentationDataset"]) -> "SegmentationDataset":
        """Several data sets (e.g. one per subject) as one; groups/volumes are renumbered."""
        if not datasets:
            raise DataError("nothing to concatenate")
        first = datasets[0]
        images, labels, names, spacings, stats, groups, sl, vols = [], [], [], [], [], [], [], []
        g0 = 0
        for ds in datasets:
            if ds.normalization != first.normalization:
                raise DataError("cannot concatenate data sets with different normalisations")
            images += ds._images
            labels += ds._labels
            names += ds.names
            spacings += ds.spacings
            stats += ds._stats
            groups += [g + g0 for g in ds.groups]
            sl += ds.slice_index
            vols += ds.volumes
            g0 += max(ds.groups) + 1
        return cls(images, labels, names=names, normalization=first.normalization, augmenter=first.augmenter,
                   seed=first.seed, spacings=spacings, stats=stats, groups=groups, slice_index=sl, volumes=vols)

    # ---- constructors ---------------------------------------------------------------------
    @classmethod
    def from_folders(
        cls,
        image_dir: str | Path,
        mask_dir: str | Path,
        *,
        binarize: bool | float = False,
        normalization: Normalization | None = None,
        augmenter: Augmenter | None = None,
        seed: int = 0,
        mask_suffix: str = "",
        label_map: dict | None = None,
        max_classes: int = MAX_CLASSES,
    ) -> "SegmentationDataset":
        """Image/mask pairs matched by file stem (``a.png`` ↔ ``a{mask_suffix}.png``/``.tif``...)."""
        image_dir, mask_dir = Path(image_dir), Path(mask_dir)
        for d in (image_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{d} is not a folder")

        def listing(d: Path) -> list[Path]:
            files = [p for p in d.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
            return sorted(files, key=lambda p: _natural_key(p.name))

        imgs, masks = listing(image_dir), listing(mask_dir)
        if not imgs:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}")
        if not masks:
            raise DataError(f"no masks ({', '.join(IMAGE_SUFFIXES)}) in {mask_dir}")
        by_stem = {}
        for m in masks:
            s = file_stem(m)
            if mask_suffix and s.endswith(mask_suffix):
                s = s[: -len(mask_suffix)]
            by_stem[s] = m
        missing = [p.name for p in imgs if file_stem(p) not in by_stem]
        if missing:
            used = {file_stem(p) for p in imgs}
            orphans = [m.name for s, m in by_stem.items() if s not in used]
            hint = _suffix_hint([file_stem(p) for p in imgs], list(by_stem)) if not mask_suffix else ""
            raise DataError(
                f"{len(missing)} of {len(imgs)} images in {image_dir} have no mask with the same name in {mask_dir}: "
                f"{few(missing)}" + (f"; masks without an image: {few(orphans)}" if orphans else "")
                + (f" (mask_suffix={mask_suffix!r})" if mask_suffix else hint)
            )
        images, labels, names = [], [], []
        for p in imgs:
            m = by_stem[file_stem(p)]
            im = image_to_chw(read_image(p), str(p))
            check_finite(im, str(p))
            lab = mask_to_hw(read_image(m), str(m))
            if im.shape[-2:] != lab.shape:
                raise DataError(f"image {p} has size {im.shape[-2:]} (shape {im.shape}) but its mask {m} has shape {lab.shape}")
            labels.append(_labels(lab, str(m), binarize, label_map, max_classes))
            images.append(im)
            names.append(p.name)
        chans = {im.shape[0] for im in images}
        if len(chans) > 1:
            by = {c: [n for n, im in zip(names, images) if im.shape[0] == c] for c in chans}
            raise DataError("images have different channel counts: " + "; ".join(f"{c}: {few(v, 3)}" for c, v in by.items()))
        return cls(images, labels, names=names, normalization=normalization, augmenter=augmenter, seed=seed)

    @classmethod
    def from_volumes(
        cls,
        image_paths: str | Path | Sequence[str | Path],
        label_path: str | Path,
        *,
        axis: int = 0,
        binarize: bool | float = False,
        skip_empty: bool = False,
        normalization: Normalization | None = None,
        augmenter: Augmenter | None = None,
        seed: int = 0,
        channel_axis: int | None = None,
        label_map: dict | None = None,
        max_classes: int = MAX_CLASSES,
    ) -> "SegmentationDataset":
        """2D slices of one subject's volume(s) along ``axis`` of the (z, y, x) array.

        ``image_paths``: one path, or one path per modality (stacked as channels, BRATS style),
        or a single 4D file whose channel axis is ``channel_axis`` (default: last, as NIfTI
        stores modalities). Default normalisation: z-score over non-zero voxels per modality
        and volume (FPA's BRATS preprocessing).
        """
        paths = [image_paths] if isinstance(image_paths, (str, Path)) else list(image_paths)
        if not paths:
            raise DataError("no image volumes given")
        chans, spacing = [], None
        for p in paths:
            vol, sp, _, _ = read_volume(p)
            if vol.ndim == 4:
                ca = -1 if channel_axis is None else channel_axis
                chans += list(np.moveaxis(vol, ca, 0))
            elif vol.ndim == 3:
                chans.append(vol)
            else:
                raise DataError(f"{p}: expected a 3D volume (or 4D with channels), got shape {vol.shape}")
            check_finite(vol, str(p))
            spacing = spacing or sp
        shapes = {c.shape for c in chans}
        if len(shapes) != 1:
            raise DataError(f"modalities have different shapes {sorted(shapes)}: {few(map(str, paths))}")
        lab, lsp, affine, header = read_volume(label_path)
        if lab.shape != chans[0].shape:
            raise DataError(f"image volume {paths[0]} has shape {chans[0].shape} but labels {label_path} have shape {lab.shape}")
        lab = _labels(lab, str(label_path), binarize, label_map, max_classes)
        vol = np.stack(chans) if len(chans) > 1 else chans[0][None]
        name = Path(paths[0]).name
        norm = normalization if normalization is not None else Normalization("zscore_nonzero", per="volume")
        parts = _slice_volume(vol, lab, axis=axis, spacing=spacing or lsp, name=name, normalization=norm, skip_empty=skip_empty)
        parts["volumes"][0].update(affine=affine, header=header, source=[str(p) for p in paths], label_source=str(label_path))
        return cls(**parts, normalization=norm, augmenter=augmenter, seed=seed)

    @classmethod
    def from_arrays(
        cls,
        images,
        labels,
        *,
        channel_axis: int | None = None,
        binarize: bool | float = False,
        normalization: Normalization | None = None,
        augmenter: Augmenter | None = None,
        seed: int = 0,
        spacing: Sequence[float] | None = None,
        name: str = "array",
        axis: int = 0,
        skip_empty: bool = False,
        label_map: dict | None = None,
        max_classes: int = MAX_CLASSES,
    ) -> "SegmentationDataset":
        """From arrays as napari layers hold them.

        * 2D ``HxW`` image with ``HxW`` labels: one sample.
        * 2D multi-channel (``CxHxW``/``HxWxC``) with ``HxW`` labels: one sample; the channel axis
          is inferred when unambiguous, else pass ``channel_axis``.
        * 3D stack ``ZxHxW`` (or 4D with a channel axis) with ``ZxHxW`` labels: one sample per slice
          along ``axis`` (napari's first axis by default); ``spacing`` is the layer ``scale``.
        * lists/tuples of the above (with a list of labels): their samples, in order.
        """
        common = dict(binarize=binarize, normalization=normalization, augmenter=augmenter, seed=seed,
                      axis=axis, skip_empty=skip_empty, label_map=label_map, max_classes=max_classes, channel_axis=channel_axis)
        if isinstance(images, (list, tuple)):
            if not isinstance(labels, (list, tuple)) or len(labels) != len(images):
                raise DataError("a list of images needs a list of label arrays of the same length")
            if not images:
                raise DataError("no images given")
            parts = [cls.from_arrays(im, lb, spacing=spacing, name=f"{name}[{k}]", **common) for k, (im, lb) in enumerate(zip(images, labels))]
            return cls.concat(parts) if len(parts) > 1 else parts[0]
        img, lab = np.asarray(images), np.asarray(labels)
        if channel_axis is None and img.ndim == lab.ndim + 1:
            cands = [a for a in range(img.ndim) if img.shape[:a] + img.shape[a + 1:] == lab.shape]
            if len(cands) != 1:
                raise DataError(f"{name}: cannot tell the channel axis of image {img.shape} for labels {lab.shape}; pass channel_axis")
            channel_axis = cands[0]
        img = img[None] if channel_axis is None else np.moveaxis(img, channel_axis, 0)
        if img.shape[1:] != lab.shape:
            raise DataError(f"{name}: image shape {np.asarray(images).shape} does not match labels shape {lab.shape}")
        check_finite(img, name)
        lab = _labels(lab, name, binarize, label_map, max_classes)
        if lab.ndim == 2:
            norm = normalization if normalization is not None else Normalization()
            sp = tuple(float(s) for s in spacing[-2:]) if spacing is not None else None
            return cls([img], [lab], names=[name], normalization=norm, augmenter=augmenter, seed=seed, spacings=[sp])
        if lab.ndim != 3:
            raise DataError(f"{name}: expected 2D or 3D arrays, got labels of shape {lab.shape}")
        norm = normalization if normalization is not None else Normalization(per="volume")
        parts = _slice_volume(img, lab, axis=axis, spacing=tuple(spacing) if spacing is not None else None,
                              name=name, normalization=norm, skip_empty=skip_empty)
        return cls(**parts, normalization=norm, augmenter=augmenter, seed=seed)


def _slice_volume(vol: np.ndarray, lab: np.ndarray, *, axis: int, spacing, name: str,
                  normalization: Normalization, skip_empty: bool) -> dict:
    """Per-slice views of a CxZxYxX volume along spatial ``axis`` with in-plane spacing."""
    if not -3 <= axis < 3:
        raise DataError(f"axis must be 0, 1 or 2 for a 3D volume, got {axis}")
    axis %= 3
    stats = normalization.statistics(vol, channel_axis=0) if normalization.per == "volume" else None
    v = np.moveaxis(vol, axis + 1, 1)
    lb = np.moveaxis(lab, axis, 0)
    inplane = None
    if spacing is not None:
        if len(spacing) != 3:
            raise DataError(f"{name}: spacing must have 3 entries for a volume, got {spacing}")
        inplane = tuple(float(s) for k, s in enumerate(spacing) if k != axis)
    keep = [k for k in range(lb.shape[0]) if not skip_empty or lb[k].any()]
    if not keep:
        raise DataError(f"{name}: no slice along axis {axis} contains a labelled voxel (skip_empty=True)")
    letter = AXIS_NAMES[axis]
    return dict(
        images=[v[:, k] for k in keep], labels=[lb[k] for k in keep],
        names=[f"{name}[{letter}={k}]" for k in keep], spacings=[inplane] * len(keep),
        stats=[stats] * len(keep), groups=[0] * len(keep), slice_index=keep,
        volumes=[{"name": name, "shape": tuple(lab.shape), "axis": axis, "spacing": tuple(spacing) if spacing else None}],
    )
