"""Horizontal bar charts as geometry for inline SVG templates: no script, no library.

A chart is rows of segments (a stacked bar) on a shared scale with "nice" gridlines; the
template draws rects and text from it. Every colour pairs with a text label and the
figures follow in a table, so nothing is told by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

LABEL_W: Final = 190  # room for the row labels
BAR_H: Final = 22
ROW_GAP: Final = 10
TOP: Final = 8
AXIS_H: Final = 26
PLOT_W: Final = 440
VALUE_W: Final = 60  # room for the total after a bar


@dataclass(frozen=True)
class Segment:
    name: str
    value: float
    x: float
    width: float
    color: str


@dataclass(frozen=True)
class Row:
    label: str
    y: int
    total: float
    total_text: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Chart:
    rows: tuple[Row, ...]
    ticks: tuple[tuple[float, str], ...]  # (x, label)
    width: int
    height: int
    plot_x: int
    plot_w: int
    bar_h: int
    legend: tuple[tuple[str, str], ...]  # (name, colour)


def nice_step(top: float, *, whole: bool, ticks: int = 4) -> float:
    """A gridline step of 1, 2, 2.5 or 5 times a power of ten that covers ``top`` in at
    most ``ticks`` steps; whole numbers only for counts (``whole``)."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        step = m * power
        if step >= raw and (not whole or float(step).is_integer()):
            return float(step)
    return float(10 * power)  # pragma: no cover - the loop always returns


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def bars(
    rows: Sequence[tuple[str, Sequence[float]]],
    series: Sequence[tuple[str, str]],
    *,
    unit: str = "",
    whole: bool = True,
) -> Chart:
    """A stacked horizontal bar per row. ``rows``: (label, one value per series);
    ``series``: (name, colour); ``whole``: the values are counts (whole-number ticks)."""
    top = max((sum(v) for _, v in rows), default=0.0)
    step = nice_step(top, whole=whole)
    n = max(1, math.ceil(top / step - 1e-9))
    scale_max = step * n
    ticks = tuple((round(LABEL_W + PLOT_W * i / n, 1), _fmt(step * i)) for i in range(n + 1))
    out = []
    for i, (label, values) in enumerate(rows):
        y = TOP + i * (BAR_H + ROW_GAP)
        x = float(LABEL_W)
        segs = []
        for (name, colour), v in zip(series, values, strict=True):
            w = PLOT_W * v / scale_max if scale_max else 0.0
            if v > 0:
                segs.append(Segment(name, v, round(x, 1), round(max(w, 1.0), 1), colour))
            x += w
        total = float(sum(values))
        out.append(Row(label, y, total, _fmt(total) + unit, tuple(segs)))
    height = TOP + max(1, len(rows)) * (BAR_H + ROW_GAP) + AXIS_H
    return Chart(
        rows=tuple(out),
        ticks=ticks,
        width=LABEL_W + PLOT_W + VALUE_W,
        height=height,
        plot_x=LABEL_W,
        plot_w=PLOT_W,
        bar_h=BAR_H,
        legend=tuple(series),
    )
