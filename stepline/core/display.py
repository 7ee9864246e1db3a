"""Times, durations and sizes as people read them: one set of rules for the command line and
the web UI."""

from __future__ import annotations

import datetime as dt


def fmt_time(ts: float | None, *, seconds: bool = True) -> str:
    """A UNIX time as local ``YYYY-MM-DD HH:MM[:SS]``; ``-`` when unset."""
    if not ts:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return dt.datetime.fromtimestamp(ts).strftime(fmt)


def fmt_duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m 05s``, ``2h 03m``, ``1d 04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d {h:02d}h"


def fmt_size(size: int | None) -> str:
    """Bytes in binary units: ``512 B``, ``3.6 KiB``, ``1.2 GiB``."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
