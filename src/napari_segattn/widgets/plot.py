"""A tiny live line plot (loss, Dice) painted with QPainter.

napari does not depend on matplotlib, and a live plot needs only polylines; this keeps the
plugin's dependencies to what napari already brings.
"""

from __future__ import annotations

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

_COLORS = ["#ffb000", "#40a0ff", "#ff4040", "#60d060", "#d070ff"]


class LivePlot(QWidget):
    def __init__(self, title: str = "", parent=None) -> None:
        super().__init__(parent)
        self.title = title
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        if y == y and abs(y) != float("inf"):  # skip NaN/inf
            self.series.setdefault(name, []).append((float(x), float(y)))
            self.update()

    def set_series(self, name: str, ys) -> None:
        self.series[name] = [(float(i), float(y)) for i, y in enumerate(ys) if y == y]
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        pad = 28
        p.setPen(QColor("#888888"))
        p.drawRect(pad, 8, w - pad - 8, h - pad - 8)
        pts = [pt for s in self.series.values() for pt in s]
        label = self.title
        if pts:
            xs, ys = [a for a, _ in pts], [b for _, b in pts]
            x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
            y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-6
            for i, (name, s) in enumerate(self.series.items()):
                color = QColor(_COLORS[i % len(_COLORS)])
                p.setPen(QPen(color, 1.6))
                poly = QPolygonF([
                    QPointF(pad + (x - x0) / (x1 - x0) * (w - pad - 8), 8 + (1 - (y - y0) / (y1 - y0)) * (h - pad - 8))
                    for x, y in s
                ])
                p.drawPolyline(poly)
                p.drawText(pad + 4 + 90 * i, h - 6, f"{name}: {s[-1][1]:.4g}" if s else name)
            p.setPen(QColor("#aaaaaa"))
            p.drawText(2, 16, f"{y1:.3g}")
            p.drawText(2, h - pad, f"{y0:.3g}")
        else:
            p.setPen(QColor("#aaaaaa"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, f"{label} (no data yet)")
        p.end()
