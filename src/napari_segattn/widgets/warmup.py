"""Pay the process's one-off import costs once, in the background, when the plugin is docked.

An import holds the GIL in chunks of up to ~200 ms (torch's C extension, torch._dynamo's
stream variables, inductor's config) whichever thread runs it, so the viewer stalls for as
long as an import chunk. Measured with a 10 ms Qt timer (scripts/measure_stalls.py): done in
the load worker they stalled the Load; the first optimiser (it imports torch._dynamo and
sympy, ~1.6 s) started once a model existed stalled the first Predict by 740-900 ms; napari's
first labels layer imports pandas (~150 ms of the first Predict). Done here, the stalls fall in
the seconds after docking, before the user has started anything, and once per process.
"""

from __future__ import annotations

import threading

from .gc_freeze import freeze_long_lived

__all__ = ["start_warm_up", "wait_for_warm_up", "warm_up_done"]

_THREAD: threading.Thread | None = None
_LOCK = threading.Lock()


def _warm() -> None:
    # After each step the objects made so far (the viewer's, then the modules') are frozen out
    # of the collector's full passes, which otherwise hold the GIL for 350-620 ms on a loaded
    # machine (widgets/gc_freeze.py); freezing before the imports keeps their own passes short.
    freeze_long_lived()
    import torch

    freeze_long_lived()
    # The first optimiser imports torch's compiler stack (torch._dynamo, sympy).
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    freeze_long_lived()
    # What napari imports on its first labels layer (features table) and what our results use.
    import pandas  # noqa: F401
    import safetensors.torch  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import skimage.filters  # noqa: F401
    import skimage.measure  # noqa: F401

    from .. import data, explain, inference, metrics, models, training  # noqa: F401

    freeze_long_lived()


def start_warm_up() -> threading.Thread:
    """Start the warm-up thread (once per process; later calls return the same thread)."""
    global _THREAD
    with _LOCK:
        if _THREAD is None:
            _THREAD = threading.Thread(target=_warm, name="segattn-warm-up", daemon=True)
            _THREAD.start()
        return _THREAD


def wait_for_warm_up(timeout: float | None = None) -> bool:
    """Block until the imports are done (training jobs need the optimiser's); True when done."""
    thread = start_warm_up()
    thread.join(timeout)
    return not thread.is_alive()


def warm_up_done() -> bool:
    return _THREAD is not None and not _THREAD.is_alive()
