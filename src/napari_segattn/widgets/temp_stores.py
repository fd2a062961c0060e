"""Temporary zarr stores behind lazy prediction layers, removed once no layer shows them.

A lazy Predict writes its result block by block into a zarr store in a temporary folder and
shows it from there (dask reads it as the user pans), so the folder must live as long as a layer
reads it, and no longer: before, every lazy Predict left its ``/tmp/segattn-*`` folder behind
(a full-size label volume and probabilities each). A folder is removed when the last layer
whose ``metadata["zarr_store"]`` names it is removed or replaced, and at exit.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

__all__ = ["track", "release_unused", "tracked"]

_TRACKED: dict[str, Path] = {}  # store path -> the temporary folder made for it
_WATCHED: set[int] = set()


def tracked() -> list[str]:
    return list(_TRACKED)


def track(viewer, store: str | Path, folder: str | Path) -> None:
    """``store`` (inside the temporary ``folder``) now backs a layer of ``viewer``."""
    _TRACKED[str(store)] = Path(folder)
    if id(viewer) not in _WATCHED:
        _WATCHED.add(id(viewer))
        # after the removal, so the removed layer no longer counts
        viewer.layers.events.removed.connect(lambda _ev: release_unused())


def _in_use() -> set[str]:
    import napari

    used = set()
    for viewer in list(getattr(napari.Viewer, "_instances", ())):
        for layer in viewer.layers:
            store = layer.metadata.get("zarr_store")
            if store:
                used.add(str(store))
    return used


def release_unused() -> list[str]:
    """Remove the temporary folders no open layer reads; returns the stores removed."""
    used = _in_use()
    gone = [store for store in _TRACKED if store not in used]
    for store in gone:
        shutil.rmtree(_TRACKED.pop(store), ignore_errors=True)
    return gone


@atexit.register
def _remove_all() -> None:
    for folder in _TRACKED.values():
        shutil.rmtree(folder, ignore_errors=True)
    _TRACKED.clear()
