"""Side by side: napari's grid mode with one cell per result map, each over its image.

napari has one canvas; its grid mode lays the layer list out in cells, ``|stride|`` layers per
cell (with a negative stride counted from the top of the list, hidden layers taking no cell).
So each map gets an underlay (an image layer on the same array, no copy) right below it, the
pairs go to the top of the list, every other layer is hidden, and the grid runs with stride -2.
Turning it off restores the grid settings, the visibility and the order of the user's layers
and removes the underlays.
"""

from __future__ import annotations

import numpy as np

from .layers import upsert_layer

__all__ = ["SideBySide", "grid_of"]


def grid_of(viewer):
    """The viewer's grid settings: ``viewer.canvas.grid`` from napari 0.9 (``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


class SideBySide:
    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self._saved: dict | None = None  # grid settings and the user's layers' visibility

    @property
    def active(self) -> bool:
        return self._saved is not None

    def show(self, image: np.ndarray, maps: list[str], geometry: dict, title: str = "image") -> None:
        """One cell per layer named in ``maps`` (left to right), each over ``image`` (2D)."""
        self.hide()
        v, grid = self.viewer, grid_of(self.viewer)
        self._saved = {"grid": (grid.enabled, grid.stride, grid.shape),
                       "visible": {l.name: l.visible for l in v.layers if l.name not in maps},
                       "order": [l.name for l in v.layers]}
        lo, hi = (float(q) for q in np.percentile(image, (0.5, 99.5)))
        for name in reversed(maps):  # the first map ends on top: the top-left cell
            under = upsert_layer(v, "image", image, f"{title} under {name}", colormap="gray",
                                 contrast_limits=(lo, hi if hi > lo else lo + 1.0),
                                 metadata={"side_by_side": True}, **geometry)
            for layer in (under, v.layers[name]):
                v.layers.move(v.layers.index(layer), len(v.layers))
                layer.visible = True
        for layer in v.layers:
            if layer.name not in maps and not layer.metadata.get("side_by_side"):
                layer.visible = False
        grid.stride, grid.shape, grid.enabled = -2, (1, len(maps)), True
        v.reset_view()  # each cell's camera fits its image (else the cells crop the old view)

    def hide(self) -> None:
        if self._saved is None:
            return
        v, saved = self.viewer, self._saved
        self._saved = None
        grid = grid_of(v)
        grid.enabled, grid.stride, grid.shape = saved["grid"]
        for layer in [l for l in v.layers if l.metadata.get("side_by_side")]:
            v.layers.remove(layer)
        for layer in v.layers:
            if layer.name in saved["visible"]:
                layer.visible = saved["visible"][layer.name]
        # the user's order back, layers added meanwhile on top
        known = [n for n in saved["order"] if n in v.layers]
        for target, name in enumerate(known):
            v.layers.move(v.layers.index(name), target)
        v.reset_view()
