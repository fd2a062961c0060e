"""Docked through Plugins > SegAttn, napari stacks each widget under the last one (no tabify)
and lets none scroll: five widgets made a 2600 px column with the lower ones off-screen.
Once docked, each of our widgets wraps itself in a scroll area and joins the tab group of
the SegAttn widgets already docked on the same side."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QDockWidget, QMainWindow, QScrollArea

__all__ = ["dock_as_tab"]


class _DockWatcher(QObject):
    """Reacts to the widget being put into a dock (napari reparents it there)."""

    def __init__(self, container) -> None:
        super().__init__(container.native)
        self.container = container

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange:
            # napari adds the dock to the window after reparenting: settle on the next loop turn
            QTimer.singleShot(0, lambda: _settle(self.container))
        return False


def dock_as_tab(container) -> None:
    """Make ``container`` scroll and tab with its siblings whenever napari docks it."""
    watcher = _DockWatcher(container)
    container.native.installEventFilter(watcher)
    container._dock_watcher = watcher


def _ancestor(widget, cls):
    w = widget.parentWidget() if widget is not None else None
    while w is not None and not isinstance(w, cls):
        w = w.parentWidget()
    return w


def _settle(container) -> None:
    try:
        native = container.native
        dock = _ancestor(native, QDockWidget)
    except RuntimeError:  # the widget was deleted meanwhile
        return
    if dock is None:
        return
    _scroll_in(dock, container)
    _tab_with_siblings(dock)


def _scroll_in(dock: QDockWidget, container) -> None:
    """Put the dock's content in a scroll area; napari still finds our widget through it."""
    if isinstance(dock.widget(), QScrollArea) and getattr(dock.widget(), "_segattn_panel", False):
        return
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll._magic_widget = container  # QtViewerDockWidget.inner_widget() returns this
    scroll._segattn_panel = True
    scroll.setMinimumWidth(container.native.minimumSizeHint().width() + 24)
    dock.setWidget(scroll)
    scroll.setWidget(container.native)


def _tab_with_siblings(dock: QDockWidget) -> None:
    main = _ancestor(dock, QMainWindow)
    if main is None or dock.isFloating() or main.tabifiedDockWidgets(dock):
        return
    area = main.dockWidgetArea(dock)
    siblings = [d for d in main.findChildren(QDockWidget) if d is not dock and not d.isFloating()
                and getattr(d.widget(), "_segattn_panel", False) and main.dockWidgetArea(d) == area]
    if siblings:
        main.tabifyDockWidget(siblings[0], dock)
        dock.show()
        dock.raise_()
