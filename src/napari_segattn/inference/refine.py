"""FANet's test-time feedback iteration as a stepper (FANet sec. III; spec 2.7).

Indexing follows the released ``test.py``, whose CSV row ``k`` holds the metrics of the k-th
*prediction*:

* the *initial mask* (Otsu by default) is not an iteration; its metrics are kept apart in
  ``initial_metrics`` (the paper's Fig. 3 "input mask");
* iteration ``k`` (k = 0, 1, ...) feeds ``input_mask`` = the initial mask (k = 0) or the
  binarised output of iteration k − 1 (or a mask the user painted, :meth:`set_mask`), and
  records the prediction made from it. ``history[0]`` is therefore released row 0.

The feedback is binarised at 0.5 (``p > 0.5``), never the soft map, as released.

User corrections (not in the paper): :meth:`set_mask` records which pixels the user changed
(the *edit*). With ``pin_edits=True`` those pixels keep their painted value in every later
iteration (the model's output is overridden there, and so is the mask fed back), so a
correction is never silently overwritten; each result reports how many pixels changed outside
the edit, i.e. how far the model propagated it. With ``focus=m``, a step right after a
correction changes only the box around what was just painted, widened by ``m`` pixels
(FocalClick's local refinement, Chen et al. CVPR 2022): the rest of the mask stays as the user
last saw it instead of drifting wherever the model re-predicts differently. With
``progressive_merge=True`` (FocalClick's progressive merge) such a step keeps only the changes
connected to what was just painted: each connected region of ``mask != fed`` is accepted if it
touches the new paint, and dropped otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from ..devices import resolve_device
from .checks import check_finite_output, check_int, check_threshold
from .layout import InputError
from .masks import binarize, initial_masks
from .predict import Cancelled, prepare_stack
from .tiling import DEFAULT_OVERLAP, stack_probabilities
from .traits import model_traits

__all__ = ["FANetRefiner", "IterationResult"]


def _merge_connected(fed: np.ndarray, new: np.ndarray, painted: np.ndarray) -> np.ndarray:
    """``fed`` with only those changes of ``new`` whose connected region (full connectivity)
    touches ``painted`` (FocalClick's progressive merge): what the model changed because of the
    correction, not what it re-predicted differently elsewhere."""
    from scipy import ndimage

    changed = new != fed
    if not changed.any():
        return new
    structure = ndimage.generate_binary_structure(changed.ndim, changed.ndim)
    regions, _ = ndimage.label(changed, structure)
    touching = ndimage.binary_dilation(painted, structure)
    keep = np.isin(regions, np.unique(regions[touching & changed]))
    return np.where(keep, new, fed)


@dataclass
class IterationResult:
    """One feedback iteration; arrays have the image's spatial shape and order."""

    index: int
    input_mask: np.ndarray  # bool: the feedback this prediction was made from
    probabilities: np.ndarray  # float32 foreground probability
    mask: np.ndarray  # bool: probabilities > 0.5, fed back next
    changed_fraction: float  # share of pixels where mask != input_mask
    metrics: dict | None = None
    edited: bool = False  # input_mask came from set_mask (a user's correction)
    seconds: float = 0.0
    edit: np.ndarray | None = None  # bool: pixels the user painted so far (None: no edit yet)
    pinned: int = 0  # pixels where the model disagreed with the painting and the paint was kept
    changed_outside_edit: int | None = None  # pixels outside ``edit`` where mask != input_mask
    focus: tuple[slice, ...] | None = None  # the box this step was limited to (``FANetRefiner(focus=)``)
    dropped: int = 0  # changed pixels not connected to the new paint, dropped (``progressive_merge``)
    merged_with: np.ndarray | None = None  # bool: the new paint the changes had to touch (progressive merge)
    # Where the loop has settled (steps without a new edit): "fixed point" (the mask came back
    # unchanged) or "2-cycle" (it is the mask of two iterations ago again: the next Step flips
    # the same pixels back). FANet's loop often ends in one or the other (reproduction.md §1c).
    repeats: str | None = None

    @property
    def changed_pixels(self) -> int:
        return int(np.count_nonzero(self.mask != self.input_mask))

    def row(self) -> dict:
        """A flat table row (iteration, changed_fraction, metrics...)."""
        out = {"iteration": self.index, "changed_fraction": self.changed_fraction, "edited": self.edited,
               "seconds": self.seconds, "repeats": self.repeats or ""}
        if self.edit is not None:
            out.update(edit_pixels=int(self.edit.sum()), pinned=self.pinned,
                       changed_outside_edit=self.changed_outside_edit)
        out.update(self.metrics or {})
        return out


class FANetRefiner:
    """Run FANet's mask feedback loop one step at a time on a 2D image, slice batch or volume.

    ``image`` follows :func:`~napari_segattn.inference.predict` (``channel_axis``,
    ``slice_axis``). ``ground_truth`` (same spatial shape; binarised ``> 0.5`` as released)
    turns on per-iteration metrics; ``metrics_per_slice`` averages per-slice metrics as
    test.py averages per image, instead of one 3D computation. ``tile``/``overlap``/
    ``memory_budget``: as :func:`~napari_segattn.inference.predict`, for every step.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        image: np.ndarray,
        *,
        init: str | np.ndarray = "otsu",
        ground_truth: np.ndarray | None = None,
        channel_axis: int | None = None,
        slice_axis: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        amp: bool | str = True,
        threshold: float = 0.5,
        spacing: tuple[float, ...] | None = None,
        metrics_per_slice: bool = False,
        pin_edits: bool = False,
        tile: int | tuple[int, int] | str | None = "auto",
        overlap: float = DEFAULT_OVERLAP,
        memory_budget: int | str | None = None,
        squeeze: str = "window",
        focus: int | None = None,
        progressive_merge: bool = False,
    ) -> None:
        self.model = model
        self.pin_edits = pin_edits
        self.focus = None if focus is None else check_int(focus, "focus", minimum=0)
        self.progressive_merge = bool(progressive_merge)
        self.traits = model_traits(model)
        if not self.traits.takes_mask:
            raise InputError(f"model {self.traits.name!r} takes no feedback mask; the refiner is for FANet-style models")
        if not self.traits.binary:
            raise InputError("the FANet refiner needs a one-logit (binary) model")
        self.layout, self._raw, self._stack = prepare_stack(self.traits, image, channel_axis=channel_axis,
                                                            slice_axis=slice_axis, model=model)
        if isinstance(init, str):
            init_stack = initial_masks(self._raw, init)
        else:
            init_stack = self.layout.spatial_to_stack(np.asarray(init)).astype(bool)
        self.init = init if isinstance(init, str) else "array"
        self.initial_mask = self.layout.spatial_from_stack(init_stack)
        self.device = resolve_device(device)
        self.batch_size = check_int(batch_size, "batch_size")
        self.amp = amp
        self.threshold = check_threshold(threshold)
        self.spacing = spacing
        self.metrics_per_slice = metrics_per_slice
        #: sliding-window settings of every step (see ``predict``)
        self.tiling = {"tile": tile, "overlap": overlap, "memory_budget": memory_budget, "squeeze": squeeze}
        self.ground_truth = None
        if ground_truth is not None:
            gt = np.asarray(ground_truth)
            if gt.shape != self.layout.spatial_shape:
                raise InputError(f"ground truth has shape {gt.shape}; the image's spatial shape is "
                                 f"{self.layout.spatial_shape}")
            self.ground_truth = gt > 0.5
        self.initial_metrics = self._metrics(self.initial_mask)
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all iterations; the next step starts again from the initial mask."""
        self.history: list[IterationResult] = []
        self._next_mask = self.initial_mask.copy()
        self._edited = False
        self.clear_edits()

    def clear_edits(self) -> None:
        """Forget which pixels the user painted (they are no longer pinned)."""
        self._edit = np.zeros(self.layout.spatial_shape, bool)
        self._painted = np.zeros(self.layout.spatial_shape, bool)
        self._fresh = np.zeros(self.layout.spatial_shape, bool)  # painted since the last step

    @property
    def edit_mask(self) -> np.ndarray:
        """bool: every pixel a :meth:`set_mask` call changed since the last reset."""
        return self._edit.copy()

    @property
    def painted_values(self) -> np.ndarray:
        """bool: the painted value of each pixel in :attr:`edit_mask` (False elsewhere)."""
        return self._painted & self._edit

    @property
    def pending_edit(self) -> bool:
        """A correction was set (:meth:`set_mask`) since the last step: it is the next feedback."""
        return self._edited

    @property
    def current_mask(self) -> np.ndarray:
        """The feedback mask the next :meth:`step` will use."""
        return self._next_mask.copy()

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the feedback for the next step (a painted correction: human in the loop).

        The pixels where ``mask`` differs from :attr:`current_mask` join the edit; a pixel
        painted twice keeps its latest value."""
        mask = np.asarray(mask)
        if mask.shape != self.layout.spatial_shape:
            raise InputError(f"mask has shape {mask.shape}; expected {self.layout.spatial_shape}")
        new = mask > 0 if mask.dtype != bool else mask.copy()
        changed = new != self._next_mask
        self._edit |= changed
        self._fresh |= changed
        self._painted[changed] = new[changed]
        self._next_mask = new
        self._edited = True

    # -- iteration ---------------------------------------------------------------------------
    def _metrics(self, mask: np.ndarray) -> dict | None:
        if self.ground_truth is None:
            return None
        from ..metrics import binary_metrics

        if self.metrics_per_slice and self.layout.is_volume:
            ms = self.layout.spatial_to_stack(mask)
            gs = self.layout.spatial_to_stack(self.ground_truth)
            spacing = None
            if self.spacing is not None:
                sp = list(self.spacing)
                sp.pop(self.layout.slice_pos)
                spacing = tuple(sp)
            rows = [binary_metrics(m, g, spacing=spacing) for m, g in zip(ms, gs)]
            return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
        return {k: float(v) for k, v in binary_metrics(mask, self.ground_truth, spacing=self.spacing).items()}

    def step(self, cancel: Callable[[], bool] | None = None) -> IterationResult:
        """One feedback iteration: predict from the current mask, binarise, record."""
        t0 = time.perf_counter()
        fed = self._next_mask
        has_edit = bool(self._edit.any())
        feedback = fed
        if has_edit and getattr(self.model, "edit_input", False):
            from ..models.fanet import feedback_code

            feedback = feedback_code(fed, self._edit, self._painted)  # the model sees what was painted
        masks = self.layout.spatial_to_stack(feedback)
        # whole slices or Gaussian-blended windows (the feedback mask cut like the image)
        probs = stack_probabilities(self.model, self.traits, self._stack, masks, device=self.device, amp=self.amp,
                                    batch_size=self.batch_size, cancel=cancel, **self.tiling)[:, 0]
        check_finite_output(probs, self.traits.name)
        p = self.layout.spatial_from_stack(probs)
        focus = self._focus_box() if self._edited else None
        mask, pinned = self._mask_of(p, has_edit, fed, focus)
        merged_with = self._fresh.copy() if self.progressive_merge and self._edited and self._fresh.any() else None
        mask, dropped = self._merged(fed, mask, merged_with)
        repeats = None
        if not self._edited:
            if not np.any(mask != fed):
                repeats = "fixed point"
            elif self.history and np.array_equal(mask, self.history[-1].input_mask):
                repeats = "2-cycle"
        res = IterationResult(
            index=len(self.history),
            input_mask=fed,
            probabilities=p,
            mask=mask,
            changed_fraction=float(np.mean(mask != fed)),
            metrics=self._metrics(mask),
            edited=self._edited,
            seconds=time.perf_counter() - t0,
            edit=self._edit.copy() if has_edit else None,
            pinned=pinned,
            changed_outside_edit=int(np.count_nonzero((mask != fed) & ~self._edit)) if has_edit else None,
            focus=focus,
            dropped=dropped,
            merged_with=merged_with,
            repeats=repeats,
        )
        self.history.append(res)
        self._next_mask = mask
        self._edited = False
        self._fresh[:] = False
        return res

    @staticmethod
    def _merged(fed, mask, painted) -> tuple[np.ndarray, int]:
        if painted is None:
            return mask, 0
        merged = _merge_connected(fed, mask, painted)
        return merged, int(np.count_nonzero(merged != mask))

    def _focus_box(self) -> tuple[slice, ...] | None:
        """The bounding box of the pixels painted since the last step, widened by ``focus``."""
        if self.focus is None or not self._fresh.any():
            return None
        idx = np.nonzero(self._fresh)
        return tuple(slice(max(0, int(i.min()) - self.focus), int(i.max()) + 1 + self.focus) for i in idx)

    def _mask_of(self, p: np.ndarray, has_edit: bool, fed: np.ndarray,
                 focus: tuple[slice, ...] | None = None) -> tuple[np.ndarray, int]:
        """``p > threshold``, with the painted pixels kept when pinned and ``fed`` kept outside the
        ``focus`` box; and how many pixels the model disagreed with the painting."""
        mask = binarize(p, self.threshold)
        if focus is not None:
            inside = np.zeros(mask.shape, bool)
            inside[focus] = True
            mask = np.where(inside, mask, fed)
        pinned = 0
        if self.pin_edits and has_edit:
            pinned = int(np.count_nonzero(mask[self._edit] != self._painted[self._edit]))
            mask = np.where(self._edit, self._painted, mask)
        return mask, pinned

    def set_threshold(self, threshold: float) -> bool:
        """Use ``threshold`` from now on and re-threshold the last iteration's probabilities (the
        model is not run again), so the shown mask and the next feedback follow the new value.

        A correction painted since the last step is left alone (it is the next feedback); the
        new threshold then applies from the next step. Returns whether the last mask changed."""
        self.threshold = check_threshold(threshold)
        if not self.history or self._edited:
            return False
        last = self.history[-1]
        mask, pinned = self._mask_of(last.probabilities, last.edit is not None, last.input_mask, last.focus)
        mask, dropped = self._merged(last.input_mask, mask, last.merged_with)
        if np.array_equal(mask, last.mask):
            return False
        fed = last.input_mask
        self.history[-1] = replace(
            last, mask=mask, pinned=pinned, dropped=dropped, changed_fraction=float(np.mean(mask != fed)),
            metrics=self._metrics(mask),
            changed_outside_edit=None if last.edit is None else int(np.count_nonzero((mask != fed) & ~last.edit)))
        self._next_mask = mask
        return True

    def iter_run(
        self, max_iters: int = 10, tol: float | None = 0.0, cancel: Callable[[], bool] | None = None
    ) -> Iterator[IterationResult]:
        """Generator: up to ``max_iters`` more steps, yielding each; stops once the changed
        fraction is ``<= tol`` or the loop alternates between two masks (a 2-cycle never gets
        under any tol: more steps only flip the same pixels back); ``tol=None``: never, as
        released test.py. Returns the history."""
        max_iters = check_int(max_iters, "max_iters")  # 0 / negative returned [] silently
        for _ in range(max_iters):
            if cancel is not None and cancel():
                raise Cancelled("refinement cancelled")
            res = self.step(cancel=cancel)
            yield res
            if tol is not None and (res.changed_fraction <= tol or res.repeats == "2-cycle"):
                break
        return self.history

    def run(
        self,
        max_iters: int = 10,
        tol: float | None = 0.0,
        progress: Callable[[IterationResult], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[IterationResult]:
        """Blocking form of :meth:`iter_run`."""
        for res in self.iter_run(max_iters, tol, cancel):
            if progress is not None:
                progress(res)
        return self.history

    def table(self) -> list[dict]:
        """Rows for a CSV: the initial mask (iteration ``"init"``) then one row per iteration."""
        rows = []
        if self.initial_metrics is not None:
            rows.append({"iteration": "init", "changed_fraction": float("nan"), "edited": False, "seconds": 0.0,
                         **self.initial_metrics})
        rows += [r.row() for r in self.history]
        return rows
