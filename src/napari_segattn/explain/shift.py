"""Attention shift between two saliency maps (Attention Shift, sec. 3), made quantitative.

The paper compares saliency maps of models trained with different TV smoothing by eye ("WM
pixels are more attended as smoothing increases") and names quantifying it as follow-up work.
Here, per explained class: the share of saliency mass ``|map|`` that falls inside each
ground-truth region, the shift of the saliency centroid (pixels and, with a spacing, mm), and a
difference map of the two maps each normalised to unit mass. The inputs can be two models, two
checkpoints of one model, or FANet iterations a and b: anything that gives two saliency maps.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["ShiftResult", "attention_shift", "saliency_mass", "saliency_centroid", "relative_saliency",
           "symmetric_limits"]


def relative_saliency(m: np.ndarray) -> np.ndarray:
    """``|m|`` divided by its mean: 1 = the share a uniform map gives each pixel, so two models'
    maps (raw scales 0-34 and 0-0.6 in the issue's trial) read on one scale."""
    a = np.abs(np.asarray(m, np.float64))
    mean = a.mean()
    return (a / mean if mean else np.zeros_like(a)).astype(np.float32)


def symmetric_limits(d: np.ndarray, percentile: float = 99.0) -> tuple[float, float]:
    """(-l, l) with l the ``percentile`` of ``|d|``: a few extreme pixels would otherwise set the
    limits and leave the rest of a difference map at the colormap's neutral middle."""
    a = np.abs(np.asarray(d, np.float64)).ravel()
    lim = float(np.percentile(a, percentile)) if a.size else 0.0
    lim = lim or (float(a.max()) if a.size else 0.0) or 1.0
    return -lim, lim


def saliency_mass(m: np.ndarray, gt: np.ndarray, regions: Sequence[int]) -> np.ndarray:
    """Fraction of ``|m|`` inside each region (NaN when the map is all zero)."""
    a = np.abs(m).astype(np.float64)
    total = a.sum()
    if total == 0:
        return np.full(len(regions), np.nan)
    return np.array([a[gt == r].sum() / total for r in regions])


def saliency_centroid(m: np.ndarray) -> np.ndarray:
    """``|m|``-weighted centre of mass in pixel coordinates (axis order of the array)."""
    a = np.abs(m).astype(np.float64)
    total = a.sum()
    if total == 0:
        return np.full(a.ndim, np.nan)
    grids = np.indices(a.shape, dtype=np.float64)
    return np.array([(g * a).sum() / total for g in grids])


@dataclass
class ShiftResult:
    """Per explained class ``k`` (rows) and ground-truth region ``r`` (columns)."""

    classes: list[str]  # names of the explained classes
    regions: list[str]  # names of the ground-truth regions
    mass_a: np.ndarray  # (K, R)
    mass_b: np.ndarray  # (K, R)
    centroid_a: np.ndarray  # (K, ndim) pixels
    centroid_b: np.ndarray  # (K, ndim)
    shift_px: np.ndarray  # (K,)
    shift_mm: np.ndarray | None  # (K,) when a spacing was given
    difference: np.ndarray  # (K, *spatial): |b|/sum|b| - |a|/sum|a|
    label_a: str = "a"
    label_b: str = "b"

    @property
    def mass_delta(self) -> np.ndarray:
        return self.mass_b - self.mass_a

    def rows(self) -> list[dict]:
        """One wide row per explained class (the summary table)."""
        out = []
        for i, k in enumerate(self.classes):
            row: dict = {"class": k}
            for j, r in enumerate(self.regions):
                row[f"mass_{self.label_a}:{r}"] = float(self.mass_a[i, j])
                row[f"mass_{self.label_b}:{r}"] = float(self.mass_b[i, j])
                row[f"mass_delta:{r}"] = float(self.mass_delta[i, j])
            for d in range(self.centroid_a.shape[1]):
                row[f"centroid_{self.label_a}_{d}"] = float(self.centroid_a[i, d])
                row[f"centroid_{self.label_b}_{d}"] = float(self.centroid_b[i, d])
            row["shift_px"] = float(self.shift_px[i])
            if self.shift_mm is not None:
                row["shift_mm"] = float(self.shift_mm[i])
            out.append(row)
        return out

    def _side(self, label: str) -> str:
        side, _, name = label.partition(":")
        return f"{side} ({name})" if name else label

    def focus_region(self, i: int = 0) -> int:
        """The region a sentence talks about: the one named like the explained class (the
        foreground for class 1), else the one whose share changed most."""
        if self.classes[i] in self.regions:
            return self.regions.index(self.classes[i])
        return int(np.nanargmax(np.abs(self.mass_delta[i]))) if np.isfinite(self.mass_delta[i]).any() else 0

    def summary(self) -> str:
        """One sentence per explained class: where b looks more than a, and how far the centroid moved."""
        out = []
        for i, k in enumerate(self.classes):
            j = self.focus_region(i)
            ma, mb, d = self.mass_a[i, j], self.mass_b[i, j], self.mass_delta[i, j]
            if not np.isfinite(d):
                out.append(f"class {k}: no saliency to compare (an all-zero map)")
                continue
            more = "more" if d >= 0 else "less"
            moved = f"{self.shift_px[i]:.1f} px" + (f" ({self.shift_mm[i]:.2f} mm)" if self.shift_mm is not None else "")
            lead = f"class {k}: " if len(self.classes) > 1 else ""
            out.append(f"{lead}{self._side(self.label_b)} puts {abs(d) * 100:.0f} percentage points {more} of its "
                       f"saliency on {self.regions[j]} than {self._side(self.label_a)} ({mb:.0%} vs {ma:.0%}); "
                       f"the saliency centroid moved {moved}.")
        return " ".join(out)

    def table(self) -> tuple[list[str], list[list]]:
        """(columns, rows) for a person: plain names with units, shares in %, no coordinates
        (those stay in :meth:`rows`, the CSV/JSON)."""
        cols = ["class"]
        for r in self.regions:
            cols += [f"on {r}: a (%)", f"on {r}: b (%)", f"on {r}: b - a (points)"]
        cols.append("centroid shift (px)")
        if self.shift_mm is not None:
            cols.append("centroid shift (mm)")
        rows = []
        for i, k in enumerate(self.classes):
            row: list = [k]
            for j in range(len(self.regions)):
                row += [round(100 * float(v), 1) for v in (self.mass_a[i, j], self.mass_b[i, j], self.mass_delta[i, j])]
            row.append(round(float(self.shift_px[i]), 1))
            if self.shift_mm is not None:
                row.append(round(float(self.shift_mm[i]), 2))
            rows.append(row)
        return cols, rows

    def to_csv(self, path: str | Path) -> Path:
        rows = self.rows()
        path = Path(path)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def to_json(self, path: str | Path) -> Path:
        def clean(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v

        payload = {"a": self.label_a, "b": self.label_b, "classes": self.classes, "regions": self.regions,
                   "rows": [{k: clean(v) for k, v in r.items()} for r in self.rows()]}
        path = Path(path)
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path


def _check_maps(a: np.ndarray, b: np.ndarray, labels, classes) -> None:
    """NaN/inf maps are refused; an all-zero map (nothing attributed) is a warning, because its
    rows are NaN (no mass to share out, no centroid) and used to come back without a word."""
    from ..data.errors import SegattnWarning
    from ..inference.layout import InputError

    for lab, st in zip(labels, (a, b)):
        bad = ~np.isfinite(st)
        if bad.any():
            raise InputError(f"saliency map {lab!r} holds {int(bad.sum())} NaN/inf value(s); recompute it "
                             "(a model with non-finite output cannot be explained)")
        for k, m in zip(classes, st):
            if not np.abs(m).sum():
                warnings.warn(f"saliency map {lab!r} of class {k} is all zero: its region shares, centroid and "
                              "shift are NaN (nothing was attributed; check the class and the baseline)",
                              SegattnWarning, stacklevel=3)


def _as_stack(m) -> tuple[np.ndarray, list[int] | None]:
    if hasattr(m, "target_classes") and hasattr(m, "map"):  # a SaliencyMap
        return np.asarray(m.map), list(m.target_classes)
    return np.asarray(m), None


def attention_shift(
    map_a,
    map_b,
    gt: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    spacing: Sequence[float] | None = None,
    regions: Sequence[int] | None = None,
    labels: tuple[str, str] = ("a", "b"),
) -> ShiftResult:
    """Compare two saliency maps (arrays ``(H, W)``/``(K, H, W)`` or SaliencyMaps) on ``gt``.

    ``gt`` holds integer region labels; ``regions`` defaults to its unique values.
    ``class_names[i]`` names label ``i`` (both explained classes and regions).
    """
    a, ca = _as_stack(map_a)
    b, cb = _as_stack(map_b)
    gt = np.asarray(gt)
    if a.ndim == gt.ndim:
        a = a[None]
    if b.ndim == gt.ndim:
        b = b[None]
    if a.shape != b.shape or a.shape[1:] != gt.shape:
        raise ValueError(f"saliency maps {a.shape} / {b.shape} do not match each other and ground truth {gt.shape}")
    if ca is not None and cb is not None and ca != cb:
        raise ValueError(f"the two saliency maps explain different classes ({ca} vs {cb})")
    class_ids = ca or cb or list(range(a.shape[0]))
    region_ids = list(regions) if regions is not None else [int(v) for v in np.unique(gt)]

    def name(i: int) -> str:
        return str(class_names[i]) if class_names is not None and 0 <= i < len(class_names) else str(i)

    _check_maps(a, b, labels, [name(k) for k in class_ids])
    mass_a = np.stack([saliency_mass(m, gt, region_ids) for m in a])
    mass_b = np.stack([saliency_mass(m, gt, region_ids) for m in b])
    cen_a = np.stack([saliency_centroid(m) for m in a])
    cen_b = np.stack([saliency_centroid(m) for m in b])
    d = cen_b - cen_a
    shift_px = np.sqrt((d ** 2).sum(1))
    shift_mm = None
    if spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.shape != (gt.ndim,):
            raise ValueError(f"spacing needs {gt.ndim} values, got {tuple(spacing)}")
        shift_mm = np.sqrt(((d * sp) ** 2).sum(1))

    def unit(m: np.ndarray) -> np.ndarray:
        s = np.abs(m).sum()
        return np.abs(m) / s if s else np.zeros_like(m, dtype=np.float64)

    diff = np.stack([unit(mb) - unit(ma) for ma, mb in zip(a, b)]).astype(np.float32)
    return ShiftResult(
        classes=[name(k) for k in class_ids],
        regions=[name(r) for r in region_ids],
        mass_a=mass_a,
        mass_b=mass_b,
        centroid_a=cen_a,
        centroid_b=cen_b,
        shift_px=shift_px,
        shift_mm=shift_mm,
        difference=diff,
        label_a=labels[0],
        label_b=labels[1],
    )
