"""Number formatting shared by the report and the leaderboard: one style everywhere."""

from __future__ import annotations

import math


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def fixed(value: float, digits: int) -> str:
    """f"{value:.{digits}f}", but a value that rounds to zero is '0' (never '-0.0' or '0.0')."""
    text = f"{value:.{digits}f}"
    return "0" if float(text) == 0 else text


def pct(value, digits: int = 1) -> str:
    """0.612 -> '61.2%'; 0 -> '0%'."""
    return "undefined" if missing(value) else f"{fixed(100 * value, digits)}%"


def points(value, digits: int = 1) -> str:
    """A difference of rates in percentage points: 0.061 -> '6.1 points'; 0 -> '0 points'."""
    return "undefined" if missing(value) else f"{fixed(100 * abs(value), digits)} points"


def bits(value, digits: int = 3) -> str:
    """A Jensen-Shannon divergence: '0.042 bits', '0 bits' (never '-0.000 bits')."""
    return "undefined" if missing(value) else f"{fixed(max(value, 0.0), digits)} bits"


def pval(value) -> str:
    """'p = 0.041', 'p = 0.0032', 'p < 0.0001'."""
    if missing(value):
        return "p undefined"
    if value < 1e-4:
        return "p < 0.0001"
    return f"p = {value:.2g}" if value < 0.995 else "p = 1"


def num(value, digits: int = 3) -> str:
    """A general number: 3 significant digits, thousands separated when large."""
    if missing(value):
        return "undefined"
    if abs(value) < 1e-12 * max(1.0, abs(value)) or value == 0:
        return "0"
    if abs(value) >= 1e7 or abs(value) < 1e-3:
        return f"{value:.{digits}g}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def interval(ci, style=pct) -> str:
    """'(2.0% to 10.3%)' or 'undefined'."""
    if not ci or any(missing(v) for v in ci):
        return "undefined"
    return f"{style(ci[0])} to {style(ci[1])}"


def signed_points(value, digits: int = 1) -> str:
    """+6.1 / -6.1 points."""
    if missing(value):
        return "undefined"
    text = fixed(100 * value, digits)
    return f"{text} points" if text == "0" else f"{100 * value:+.{digits}f} points"


def between(high, low, gap, n_groups: int = 2) -> str:
    """'female - male'; a tie is named as one: 'no difference' (two groups) or 'all groups equal'."""
    if not high:
        return ""
    if high == low or gap == 0:
        return "no difference" if n_groups <= 2 else "all groups equal"
    return f"{high} - {low}"


def voices(label: str) -> str:
    """'female' -> 'Female voices'; 'female / black' -> 'Female / black voices'."""
    text = str(label).replace("_", " ")
    return f"{text[:1].upper()}{text[1:]} voices"


# ---------------------------------------------------------------- values of a report section


def style(section: dict) -> str:
    """How a section's numbers read: 'rate' (0/1 outcomes and shares), 'relative' or 'amount'."""
    if section.get("kind") == "binary" or section.get("scale") == "share":
        return "rate"
    return "relative" if section.get("relative_to") else "amount"


def value(section: dict, v) -> str:
    """One group's estimate: '61.2%', '0.97x the mean', '52,000 USD'."""
    kind = style(section)
    if kind == "rate":
        return pct(v)
    if kind == "relative":
        return "undefined" if missing(v) else f"{v:.3g}x the mean"
    return f"{num(v)} {section.get('unit', '')}".strip()


def difference(section: dict, v) -> str:
    """A gap's size: '6.1 points', '5.2%' (relative), '3,200 USD'."""
    kind = style(section)
    if kind == "rate":
        return points(v)
    if kind == "relative":
        return pct(abs(v)) if not missing(v) else "undefined"
    return "undefined" if missing(v) else f"{num(abs(v))} {section.get('unit', '')}".strip()


def gap_interval(section: dict, ci) -> str:
    kind = style(section)
    if kind == "rate":
        return interval(ci, lambda v: fixed(100 * v, 1)) + (" points" if ci else "")
    if kind == "relative":
        return interval(ci, lambda v: f"{fixed(100 * v, 1)}%")
    return interval(ci, num)
