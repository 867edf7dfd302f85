"""How every number and table of a report is written."""
from __future__ import annotations

import math


def fmt(x, digits=3):
    """A table cell: empty for missing, thousands separators from 1,000, else ``digits`` significant digits."""
    if x is None or (isinstance(x, float) and (math.isnan(x))):
        return ""
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.{digits}g}"
    return str(x)

def fmt_interval(interval, digits=3) -> str:
    """'0.21 [0.19–0.23]' (a point interval without its brackets)."""
    if interval is None:
        return ""
    mid, lo, hi = interval
    return fmt(mid, digits) if lo == hi else f"{fmt(mid, digits)} [{fmt(lo, digits)}–{fmt(hi, digits)}]"
