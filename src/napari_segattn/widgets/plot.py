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
    """Polylines with named axes; ``y_range`` is the least range shown (data outside widen it),
    ``x_labels`` (per series) name the ticks, e.g. "init", 1, 2, ..."""

    def __init__(self, title: str = "", parent=None, *, x_label: str = "", y_label: str = "",
                 y_range: tuple[float, float] | None = None) -> None:
        super().__init__(parent)
        self.title = title
        self.x_label, self.y_label, self.y_range = x_label, y_label, y_range
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.x_labels: list[str] | None = None
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)

    def clear(self) -> None:
        self.series.clear()
        self.x_labels = None
        self.update()

    def add_point(self, name: str, x: float, y: float) -> None:
        if y == y and abs(y) != float("inf"):  # skip NaN/inf
            self.series.setdefault(name, []).append((float(x), float(y)))
            self.update()

    def set_series(self, name: str, ys, x_labels=None) -> None:
        self.series[name] = [(float(i), float(y)) for i, y in enumerate(ys) if y is not None and y == y]
        self.x_labels = list(x_labels) if x_labels is not None else None
        self.update()

    def ranges(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """((x0, x1), (y0, y1)) drawn, None without data."""
        pts = [pt for s in self.series.values() for pt in s]
        if not pts:
            return None
        xs, ys = [a for a, _ in pts], [b for _, b in pts]
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys)
        if self.y_range is not None:
            # the data's span, padded to a tenth and kept inside the natural range (0..1 for Dice)
            lo, hi = self.y_range
            span = max(y1 - y0, 0.05)
            y0, y1 = max(lo, y0 - 0.25 * span), min(hi, y1 + 0.25 * span)
            y0, y1 = (min(y0, y1 - 0.05), y1) if y1 - y0 < 0.05 else (y0, y1)
        elif y1 <= y0:
            y1 = y0 + 1e-6
        return (x0, x1), (y0, y1)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt API)
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        w, h = self.width(), self.height()
        left, top, bottom, right = 44, 8, 40, 8
        pw, ph = w - left - right, h - top - bottom
        p.setPen(QColor("#888888"))
        p.drawRect(left, top, pw, ph)
        rng = self.ranges()
        if rng is None:
            p.setPen(QColor("#aaaaaa"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, f"{self.title} (no data yet)")
            p.end()
            return
        (x0, x1), (y0, y1) = rng

        def to_px(x, y):
            return QPointF(left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph)

        for i, (name, s) in enumerate(self.series.items()):
            color = QColor(_COLORS[i % len(_COLORS)])
            p.setPen(QPen(color, 1.6))
            p.drawPolyline(QPolygonF([to_px(x, y) for x, y in s]))
            if len(s) <= 30:  # markers while they can be told apart
                for x, y in s:
                    p.drawEllipse(to_px(x, y), 2.5, 2.5)
            p.drawText(left + 4 + 110 * i, top + 14, f"{name}: {s[-1][1]:.4g}" if s else name)
        p.setPen(QColor("#aaaaaa"))
        p.drawText(2, top + 10, f"{y1:.3g}")
        p.drawText(2, top + ph, f"{y0:.3g}")
        # x ticks: the named ones (e.g. "init", 1, 2...) or the ends of the range
        ticks = list(enumerate(self.x_labels)) if self.x_labels else [(x0, f"{x0:g}"), (x1, f"{x1:g}")]
        every = max(1, len(ticks) // 10)
        for j, (x, text) in enumerate(ticks):
            if j % every == 0 or j == len(ticks) - 1:
                pt = to_px(float(x), y0)
                p.drawText(int(pt.x()) - 10, top + ph + 14, text)
        if self.x_label:
            p.drawText(left + pw // 2 - 30, h - 4, self.x_label)
        if self.y_label:
            p.save()
            p.translate(12, top + ph // 2 + 15)
            p.rotate(-90)
            p.drawText(0, 0, self.y_label)
            p.restore()
        p.end()
