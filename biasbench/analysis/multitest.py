"""Multiple-comparison correction across a named family of tests.

The family is whatever the caller passes (e.g. all pairwise gaps of one grouping, or
every grouping x task of a report); the result names it, so a report can say what was
corrected for. Undefined p-values are left out of the family, and listed as left out.

The adjustments are written out here (a few lines of numpy) rather than taken from
statsmodels' `multipletests`, which runs `gc.collect()` on every call (statsmodels PR
#8671): a report corrects many small families (one per grouping's pairs), each paying for a
full garbage collection. They are
checked against `multipletests` over random p-vectors in tests/test_analysis_reference.py.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .results import CorrectionResult

METHODS = {"holm": "holm", "bonferroni": "bonferroni", "bh": "fdr_bh", "fdr_bh": "fdr_bh",
           "benjamini-hochberg": "fdr_bh"}


def adjust(p: np.ndarray, method: str) -> np.ndarray:
    """Adjusted p-values (statsmodels' names: "holm", "bonferroni", "fdr_bh"), capped at 1."""
    p = np.asarray(p, dtype=float)
    m = p.size
    if method == "bonferroni":
        return np.minimum(1.0, m * p)
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":  # step-down: max over j <= i of (m - j) p_(j)
        adjusted = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "fdr_bh":  # step-up: min over j >= i of m p_(j) / (j + 1)
        adjusted = np.minimum.accumulate((m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(1.0, adjusted)
    return out


def _as_items(pvalues) -> list[tuple[str, float | None]]:
    if isinstance(pvalues, Mapping):
        return [(str(k), v) for k, v in pvalues.items()]
    items = []
    for i, value in enumerate(pvalues):
        if hasattr(value, "p_value"):  # a TestResult / GapResult
            label = getattr(value, "test", None) or f"test {i}"
            items.append((f"{i}: {label}", value.p_value))
        else:
            items.append((str(i), value))
    return items


def correct_pvalues(pvalues, method: str = "holm", family: str = "unnamed family",
                    alpha: float = 0.05) -> CorrectionResult:
    """Holm (family-wise error) or Benjamini-Hochberg ("bh", false discovery rate) adjustment.

    pvalues: {label: p} or a sequence of p-values or of results with a `p_value`.
    None/NaN p-values (undefined tests) are not part of the family; they stay None.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    items = _as_items(pvalues)
    labels = [label for label, _ in items]
    defined = [i for i, (_, p) in enumerate(items) if p is not None and np.isfinite(p)]
    adjusted, reject = [None] * len(items), [None] * len(items)
    if defined:
        raw = np.array([items[i][1] for i in defined], dtype=float)
        if ((raw < 0) | (raw > 1)).any():
            raise ValueError("p-values must lie in [0, 1]")
        adj = adjust(raw, METHODS[method])
        rej = adj <= alpha
        for j, i in enumerate(defined):
            adjusted[i], reject[i] = float(adj[j]), bool(rej[j])
    return CorrectionResult(
        family=f"{family} ({len(defined)} tests)", method=METHODS[method], alpha=alpha, labels=labels,
        p_values=[p if i in defined else None for i, (_, p) in enumerate(items)],
        p_adjusted=adjusted, reject=reject, left_out=[labels[i] for i in range(len(items)) if i not in defined])
