"""Effect sizes for a difference between two groups' rates (or means).

All work elementwise on arrays too, so bootstrap replicates get intervals for free.
Undefined values are NaN in arrays and None for scalars (an odds ratio at a rate of 0 or 1).
"""

from __future__ import annotations

import numpy as np


def _scalar_or_array(value):
    value = np.asarray(value, dtype=float)
    if value.ndim:
        return value
    return float(value) if np.isfinite(value) else None


def risk_difference(p1, p2):
    """p1 - p2 (percentage points when multiplied by 100)."""
    return _scalar_or_array(np.asarray(p1, float) - np.asarray(p2, float))


def odds_ratio(p1, p2):
    """(p1 / (1 - p1)) / (p2 / (1 - p2)); undefined when either rate is 0 or 1."""
    p1, p2 = np.asarray(p1, float), np.asarray(p2, float)
    inside = (p1 > 0) & (p1 < 1) & (p2 > 0) & (p2 < 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(inside, (p1 / (1 - p1)) / (p2 / (1 - p2)), np.nan)
    return _scalar_or_array(value)


def cohens_h(p1, p2):
    """Cohen's h = 2 asin(sqrt(p1)) - 2 asin(sqrt(p2)): the difference on the arcsine scale.

    Cohen (1988): 0.2 small, 0.5 medium, 0.8 large.
    """
    p1, p2 = np.asarray(p1, float), np.asarray(p2, float)
    return _scalar_or_array(2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p2)))


def cohens_d(m1, m2, sd):
    """Standardised mean difference (m1 - m2) / sd."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _scalar_or_array((np.asarray(m1, float) - np.asarray(m2, float)) / np.asarray(sd, float))
