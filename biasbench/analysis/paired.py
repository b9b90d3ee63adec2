"""Item-paired tests: exact McNemar (two groups) and Cochran's Q (two or more groups).

The same item is spoken by every voice, so items pair the groups. Each group is reduced,
per item, to one 0/1 outcome: the majority of its voices' valid answers to that item
(more than half correct -> 1, fewer -> 0). Items where a group ties exactly at one half,
or has no valid answer, are dropped and counted. The alternative, pairing individual
voices across groups, needs an arbitrary matching of voices; the majority keeps one
number per item x group and uses every voice.

These tests CONDITION ON THE VOICES DRAWN: the replication unit is the item, so a small
p-value says these particular voices are answered differently on these items, not that
the groups differ in the population of voices. When voices vary among themselves they
reject a true "no group effect" null far more often than alpha (docs/statistics.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._data import reduce_to_voices
from .results import TestResult

CONDITIONS_ON = ("the voices drawn (items are the replication unit): tests whether these voices are answered "
                 "differently on these items, not whether the groups differ in the population of voices")


def item_majority_table(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
                        item: str = "item_id", nan_policy: str = "exclude") -> tuple[pd.DataFrame, object]:
    """Items x groups table of majority outcomes (1, 0, or NaN for a tie / no valid answer)."""
    voices = reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary=True)
    n_g, n_i = len(voices.labels), voices.n_items
    cell = voices.row_item * n_g + voices.codes[voices.row_voice]
    sums = np.bincount(cell, voices.row_value, n_i * n_g).reshape(n_i, n_g)
    counts = np.bincount(cell, minlength=n_i * n_g).reshape(n_i, n_g)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = sums / counts
    majority = np.where(share > 0.5, 1.0, np.where(share < 0.5, 0.0, np.nan))
    return pd.DataFrame(majority, columns=voices.labels), voices


def exact_mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: 2 * P(X <= min(b, c)), X ~ Binomial(b + c, 1/2), capped at 1."""
    return float(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5)))


def mcnemar_by_item(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
                    item: str = "item_id", *, groups: tuple | None = None,
                    nan_policy: str = "exclude") -> TestResult:
    """Exact McNemar test on per-item group majorities; `groups=(a, b)` picks two of several."""
    table, voices = item_majority_table(df, group, outcome, unit, item, nan_policy)
    if groups is None:
        if len(voices.labels) != 2:
            raise ValueError(f"{voices.group!r} has {len(voices.labels)} groups {voices.labels}; "
                             "pass groups=(a, b) or use cochran_q_by_item")
        groups = tuple(voices.labels)
    for g in groups:
        if g not in voices.labels:
            raise ValueError(f"group {g!r} not in {voices.group!r}; present: {voices.labels}")
    a, b_ = groups
    pair = table[[a, b_]].dropna()
    n11 = int(((pair[a] == 1) & (pair[b_] == 1)).sum())
    n10 = int(((pair[a] == 1) & (pair[b_] == 0)).sum())
    n01 = int(((pair[a] == 0) & (pair[b_] == 1)).sum())
    n00 = int(((pair[a] == 0) & (pair[b_] == 0)).sum())
    details = {"groups": [a, b_], "table": [[n11, n10], [n01, n00]], "a_only": n10, "b_only": n01,
               "items_used": len(pair), "items_dropped": int(len(table) - len(pair)),
               "pairing": "per-item majority of each group's voices (ties and items without a valid answer dropped)"}
    common = dict(test="exact McNemar on item majorities", conditions_on=CONDITIONS_ON,
                  n_voices=len(voices.ids), n_items=voices.n_items, method="exact binomial on discordant items",
                  details=details)
    if n10 + n01 == 0:
        return TestResult(statistic=None, p_value=None, undefined="no discordant items (the groups' majorities agree "
                          "on every usable item)", **common)
    return TestResult(statistic=float(min(n10, n01)), p_value=exact_mcnemar_p(n10, n01), **common)


def cochrans_q(x: np.ndarray) -> tuple[float, int] | None:
    """Cochran's Q for an items x groups 0/1 array with no missing values; None if undefined."""
    x = np.asarray(x, dtype=float)
    k = x.shape[1]
    col, row, total = x.sum(axis=0), x.sum(axis=1), x.sum()
    denom = k * total - (row**2).sum()  # zero when every item is all-0 or all-1
    if k < 2 or denom == 0:
        return None
    return float((k - 1) * (k * (col**2).sum() - total**2) / denom), k - 1


def cochran_q_by_item(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
                      item: str = "item_id", *, nan_policy: str = "exclude") -> TestResult:
    """Cochran's Q across all groups on per-item group majorities (items complete in every group)."""
    table, voices = item_majority_table(df, group, outcome, unit, item, nan_policy)
    complete = table.dropna()
    details = {"groups": voices.labels, "items_used": len(complete), "items_dropped": int(len(table) - len(complete)),
               "majority_rate": complete.mean().to_dict(),
               "pairing": "per-item majority of each group's voices (ties and items without a valid answer dropped)"}
    common = dict(test="Cochran's Q on item majorities", conditions_on=CONDITIONS_ON, n_voices=len(voices.ids),
                  n_items=voices.n_items, method="chi-square approximation, df = groups - 1", details=details)
    if len(voices.labels) < 2:
        return TestResult(statistic=None, p_value=None, undefined="fewer than two groups", **common)
    result = cochrans_q(complete.to_numpy())
    if result is None:
        return TestResult(statistic=None, p_value=None, undefined="every usable item has the same majority in all "
                          "groups (or no usable item): no variation to test", **common)
    q, dof = result
    details["df"] = dof
    return TestResult(statistic=q, p_value=float(stats.chi2.sf(q, dof)), **common)
