"""Metric plots as inline SVG, drawn on the server: one chart per title, a line per series,
with axis ticks and a legend. No charting library, nothing for the browser to fetch."""

from __future__ import annotations

import math

from markupsafe import Markup, escape

W, H = 460, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 28
#: series colours (colour-blind friendly, the Okabe-Ito palette)
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#000000")


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    out: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(out) < 12:
        out.append(round(v, 12))
        v += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


def line_chart(title: str, series: dict[str, list[tuple[int, float]]]) -> Markup:
    """An SVG chart of ``series`` ({name: [(iteration, value), ...]})."""
    finite = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(y)]
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{escape(title)}" data-title="{escape(title)}">'
    ]
    if not finite:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" class="empty">no values</text></svg>')
        return Markup("".join(parts))
    x0, x1 = min(p[0] for p in finite), max(p[0] for p in finite)
    y0, y1 = min(p[1] for p in finite), max(p[1] for p in finite)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y0 == y1:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * ph

    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
        )
    for t in _ticks(float(x0), float(x1)):
        if abs(t - round(t)) > 1e-9:
            continue
        x = sx(t)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{H - 8}" text-anchor="middle">{int(t)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + ph}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}"/>'
    )
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        good = [(x, y) for x, y in pts if math.isfinite(y)]
        if not good:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        last = good[-1]
        label = f"{name}: last {_fmt(last[1])} at {last[0]}"
        parts.append(
            f'<polyline class="series" points="{coords}" stroke="{colour}" '
            f'data-series="{escape(name)}"><title>{escape(label)}</title></polyline>'
        )
        if len(good) <= 40:
            for x, y in good:
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{escape(name)} @ {x}: {_fmt(y)}</title></circle>"
                )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{COLOURS[i % len(COLOURS)]}"></i>'
        f"{escape(name)}</span>"
        for i, name in enumerate(series)
    )
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')
