"""Keep Python's full garbage collections short while the viewer runs (issue 14).

A full (generation-2) collection walks every object the collector tracks and holds the GIL
throughout, whichever thread set it off, so the viewer freezes for as long as it runs. A
session with napari, Qt, torch, scipy and pandas imported tracks ~530,000 objects: one full
collection took 350-620 ms on the loaded 2-core machine, and it was the whole Load stall
(``scripts/measure_stalls.py --why``, timed with ``gc.callbacks``). Nearly all of those objects
live as long as the process (modules, classes, functions, Qt wrappers), so they are moved to the
collector's permanent generation with ``gc.freeze()`` (CPython's own remedy for this; see the
``gc`` docs). Later full collections walk only what was made after: 30-56 ms for the same Load.

Frozen objects are still freed by reference counting (most arrays and tensors go that way);
only garbage held in reference cycles among them waits. The long-lived objects a session drops
in cycles are layers, so when a layer of any open viewer is about to be removed everything is
unfrozen, and frozen again only after the first full collection that runs once the removal is
over (napari's own ``gc.collect()`` during the removal cannot free the layer: the removal still
holds it). That collection frees the layer
as it would without us; until it runs, full collections cost what they cost without freezing.
"""

from __future__ import annotations

import gc
import os
import weakref

__all__ = ["freeze_long_lived"]


def freeze_long_lived() -> int:
    """Move every object the collector tracks now into the permanent generation; returns how
    many are frozen in all. Cheap (a list splice), so it may run after each import step.
    ``SEGATTN_GC_FREEZE=0`` turns it off (to compare, or if a user's other code needs it off)."""
    if os.environ.get("SEGATTN_GC_FREEZE", "1") != "0" and _watch_open_viewers():
        gc.freeze()
    return gc.get_freeze_count()


_refreeze_armed = False


def _refreeze_after_full_collection(phase: str, info: dict) -> None:
    # stays registered (gc iterates its callback list while calling them: no removal from inside)
    global _refreeze_armed
    if _refreeze_armed and phase == "stop" and info["generation"] == 2:
        _refreeze_armed = False
        freeze_long_lived()


def _arm_refreeze() -> None:
    global _refreeze_armed
    if _refreeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_refreeze_after_full_collection)
    _refreeze_armed = True


def _thaw(*_) -> None:
    gc.unfreeze()  # the layer being removed may be frozen
    from qtpy.QtCore import QTimer

    # armed on the next event-loop turn, when the removal (and its gc.collect()) is over
    QTimer.singleShot(0, _arm_refreeze)


_WATCHED: weakref.WeakSet = weakref.WeakSet()  # viewers whose layer removals thaw


def _watch_open_viewers() -> bool:
    """Every viewer open at a freeze, with or without a plugin session: freezing is
    process-wide, so a layer of any of them may be frozen (napari keeps its open viewers in
    ``Viewer._instances``). A viewer opened later holds no frozen layer until the next freeze,
    which watches it. False where the viewers cannot be found: then nothing is frozen."""
    try:
        from napari import Viewer
    except ImportError:  # pragma: no cover - the widgets run inside napari
        return False
    viewers = getattr(Viewer, "_instances", None)
    if viewers is None:  # pragma: no cover - a napari without it
        return False
    for viewer in list(viewers):
        if viewer not in _WATCHED:  # unfreeze before any of its layers is removed
            _WATCHED.add(viewer)
            viewer.layers.events.removing.connect(_thaw)
    return True
