"""Keep Python's full garbage collections short while the viewer runs (issue 14).

A full (generation-2) collection walks every object the collector tracks and holds the GIL
throughout, whichever thread set it off, so the viewer freezes for as long as it runs. A
session with napari, Qt, torch, scipy and pandas imported tracks ~530,000 objects: one full
collection took 350-620 ms on the loaded 2-core machine, and it was the whole Load stall
(``scripts/measure_stalls.py --why``, timed with ``gc.callbacks``). Nearly all of those objects live
as long as the process (modules, classes, functions, Qt wrappers), so they are moved to the
collector's permanent generation with ``gc.freeze()`` (CPython's own remedy for this; see the
``gc`` docs). Later full collections walk only what was made after: 30-56 ms for the same Load.

Frozen objects are still freed by reference counting (most arrays and tensors go that way);
only garbage held in reference cycles among them waits. The long-lived objects a session drops
in cycles are layers, so when a layer is about to be removed everything is unfrozen, and frozen
again only after the first full collection that runs once the removal is over (napari's own ``gc.collect()`` during
the removal cannot free the layer: the removal still holds it). That collection frees the layer
as it would without us; until it runs, full collections cost what they cost without freezing.
"""

from __future__ import annotations

import gc
import os
import weakref

__all__ = ["freeze_long_lived", "thaw_on_layer_removal"]


def freeze_long_lived() -> int:
    """Move every object the collector tracks now into the permanent generation; returns how
    many are frozen in all. Cheap (a list splice), so it may run after each import step.
    ``SEGATTN_GC_FREEZE=0`` turns it off (to compare, or if a user's other code needs it off)."""
    if os.environ.get("SEGATTN_GC_FREEZE", "1") != "0":
        _watch_open_viewers()
        gc.freeze()
    return gc.get_freeze_count()


_ARMED = {"refreeze": False}


def _refreeze_after_full_collection(phase: str, info: dict) -> None:
    # stays registered (gc iterates its callback list while calling them: no removal from inside)
    if _ARMED["refreeze"] and phase == "stop" and info["generation"] == 2:
        _ARMED["refreeze"] = False
        freeze_long_lived()


def _arm_refreeze() -> None:
    if _refreeze_after_full_collection not in gc.callbacks:
        gc.callbacks.append(_refreeze_after_full_collection)
    _ARMED["refreeze"] = True


def _thaw(*_) -> None:
    gc.unfreeze()  # the layer being removed may be frozen
    from qtpy.QtCore import QTimer

    # armed on the next event-loop turn, when the removal (and its gc.collect()) is over
    QTimer.singleShot(0, _arm_refreeze)


_WATCHED: weakref.WeakSet = weakref.WeakSet()  # viewers whose layer removals thaw


def _watch_open_viewers() -> None:
    """Every open viewer, not only those with a plugin session: freezing is process-wide, so a
    layer of any of them may be frozen (napari keeps its open viewers in ``Viewer._instances``;
    without it, plugin sessions are still watched through ``state.get_state``)."""
    try:
        from napari import Viewer
    except ImportError:  # pragma: no cover - the widgets run inside napari
        return
    for viewer in list(getattr(Viewer, "_instances", ())):
        thaw_on_layer_removal(viewer)


def thaw_on_layer_removal(viewer) -> None:
    """Unfreeze before any layer of ``viewer`` is removed, so a frozen layer's memory is freed
    (once per viewer; every freeze watches the viewers open then, ``state.get_state`` a new
    plugin session's)."""
    if viewer in _WATCHED:
        return
    _WATCHED.add(viewer)
    viewer.layers.events.removing.connect(_thaw)
