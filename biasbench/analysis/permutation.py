"""The primary test: permute group labels among voices, not responses.

Under H0 (the voice group does not matter) the group labels are exchangeable among the
voices, whatever the voice-to-voice and item-to-item variation. So the table is reduced
once to one mean per voice, and each permutation costs a matrix product over voices:
group means = (one-hot of permuted labels) @ voice means. A permutation matrix of
10,000 x 30 voices is tiny, which is why this is fast on a million responses.

When the number of distinct label arrangements is small (<= `exact_max`) all of them are
enumerated and the p-value is exact: the share of arrangements (the observed one
included) whose statistic is at least the observed. Otherwise a Monte Carlo sample with
a stated seed is used and p = (1 + #{T* >= T}) / (B + 1), which is never below 1/(B+1)
and keeps the test valid. `strata` restricts permutations to within strata (e.g. permute
gender within ethnicity), which keeps the test exact when the other factor matters.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from ._data import (design_problem, drop_empty_voices, group_columns, reduce_to_voices, require_columns,
                    voice_labels)
from .results import TestResult

EXACT_MAX = 20_000
CONDITIONS_ON = ("the voices' mean outcomes over the items they answered; group labels are permuted among "
                 "voices, so the p-value refers to the population of voices (the voice is the unit of "
                 "replication), not to these particular voices")
_CHUNK_ELEMENTS = 4_000_000  # bounds memory of the (permutations x groups x trailing) block


# ---------------------------------------------------------------- statistics

def stat_range(means: np.ndarray) -> np.ndarray:
    """Largest minus smallest group mean (for two groups: the absolute difference)."""
    return means.max(axis=1) - means.min(axis=1)


def stat_diff(means: np.ndarray) -> np.ndarray:
    """Second group minus first (labels in sorted order); two groups only."""
    if means.shape[1] != 2:
        raise ValueError("statistic 'diff' needs exactly two groups; use 'range' for more")
    return means[:, 1] - means[:, 0]


def _statistic(statistic, alternative: str):
    if callable(statistic):
        return statistic
    if statistic == "range":
        if alternative != "two-sided":
            raise ValueError("statistic 'range' is two-sided by construction; use 'diff' for one-sided tests")
        return stat_range
    if statistic == "diff":
        return {"two-sided": lambda m: np.abs(stat_diff(m)), "greater": stat_diff,
                "less": lambda m: -stat_diff(m)}[alternative]
    raise ValueError(f"unknown statistic {statistic!r}; use 'range', 'diff' or a callable")


# ---------------------------------------------------------------- arrangements

def count_arrangements(codes, strata=None) -> int:
    """Number of distinct label arrangements (a multinomial coefficient per stratum)."""
    codes = np.asarray(codes)
    total = 1
    for index in _strata_index(codes, strata):
        sizes = np.unique(codes[index], return_counts=True)[1]
        n, count = int(sizes.sum()), 1
        for k in sizes:
            count *= math.comb(n, int(k))
            n -= int(k)
        total *= count
    return total


def _strata_index(codes, strata):
    if strata is None:
        return [np.arange(len(codes))]
    strata = np.asarray(strata)
    return [np.flatnonzero(strata == s) for s in np.unique(strata)]


def enumerate_arrangements(codes) -> np.ndarray:
    """All distinct arrangements of a multiset of labels, one per row (observed included).

    Built group by group: choose the positions of group 0 among all slots, then of group 1
    among those left, ... vectorised over the partial arrangements.
    """
    codes = np.asarray(codes)
    labels, sizes = np.unique(codes, return_counts=True)
    rows = np.full((1, codes.size), -1, dtype=np.int64)
    for label, k in zip(labels[:-1], sizes[:-1]):
        n_free = int((rows[0] < 0).sum())
        combos = np.array(list(itertools.combinations(range(n_free), int(k))), dtype=np.intp)
        free = np.nonzero(rows < 0)[1].reshape(len(rows), n_free)
        new = np.repeat(rows, len(combos), axis=0)
        positions = np.take_along_axis(np.repeat(free, len(combos), axis=0),
                                       np.tile(combos, (len(rows), 1)), axis=1)
        new[np.arange(len(new))[:, None], positions] = label
        rows = new
    rows[rows < 0] = labels[-1]
    return rows


def arrangements(codes, *, strata=None, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
                 seed: int | None = 0) -> tuple[np.ndarray, bool]:
    """(matrix of label arrangements x voices, exact?). Exact enumeration when small enough."""
    codes = np.asarray(codes)
    blocks = _strata_index(codes, strata)
    if count_arrangements(codes, strata) <= exact_max:
        parts = [enumerate_arrangements(codes[index]) for index in blocks]
        grid = np.indices([len(p) for p in parts]).reshape(len(parts), -1)
        out = np.empty((grid.shape[1], codes.size), dtype=np.int64)
        for part, index, pick in zip(parts, blocks, grid):
            out[:, index] = part[pick]
        return out, True
    rng = np.random.default_rng(seed)
    out = np.empty((n_permutations, codes.size), dtype=np.int64)
    for index in blocks:  # shuffle each row independently, within each stratum
        out[:, index] = rng.permuted(np.tile(codes[index], (n_permutations, 1)), axis=1)
    return out, False


def group_means(arrangement: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Group means for each arrangement: (perms x voices) one-hot @ (voices x ...) values.

    Group sizes are the same in every arrangement (labels are only permuted), so one
    division per group suffices. values may carry trailing axes (categories, simulations).
    """
    values = np.asarray(values, dtype=float)
    flat = values.reshape(values.shape[0], -1)
    out = np.empty((len(arrangement), n_groups, flat.shape[1]))
    for g in range(n_groups):
        mask = arrangement == g
        out[:, g] = (mask.astype(float) @ flat) / mask[0].sum()
    return out.reshape(len(arrangement), n_groups, *values.shape[1:])


# ---------------------------------------------------------------- the test

def permutation_pvalue(values, codes, *, statistic="range", alternative="two-sided", strata=None,
                       n_permutations: int = 10_000, exact_max: int = EXACT_MAX, seed: int | None = 0):
    """Voice-level permutation p-value from per-voice values (the reduced table).

    values: (voices,) or (voices, ...) with trailing axes carried through (e.g. many
    simulated data sets at once). Returns (observed statistic, p-value, details dict).
    """
    codes = np.asarray(codes)
    n_groups = int(codes.max()) + 1
    fn = _statistic(statistic, alternative)
    observed = fn(group_means(codes[None, :], values, n_groups))[0]
    perms, exact = arrangements(codes, strata=strata, n_permutations=n_permutations,
                                exact_max=exact_max, seed=seed)
    # ties: arithmetic on permuted sums can differ from the observed in the last bits
    scale = np.nanmax(np.abs(values)) if np.size(values) else 1.0
    threshold = observed - 1e-9 * np.abs(observed) - 1e-12 * max(scale, 1e-300)
    trailing = int(np.prod(np.shape(values)[1:], dtype=int))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_groups * trailing))
    exceed = np.zeros(np.shape(observed))
    for start in range(0, len(perms), chunk):
        exceed += (fn(group_means(perms[start:start + chunk], values, n_groups)) >= threshold).sum(axis=0)
    p = exceed / len(perms) if exact else (exceed + 1) / (len(perms) + 1)
    method = (f"exact: all {len(perms)} distinct label arrangements" if exact else
              f"Monte Carlo: {len(perms)} random label permutations, seed {seed}, p = (1 + #{{T* >= T}}) / (B + 1)")
    details = {"exact": exact, "n_arrangements": count_arrangements(codes, strata), "n_used": len(perms),
               "seed": None if exact else seed, "statistic": getattr(statistic, "__name__", statistic),
               "alternative": alternative, "stratified": strata is not None,
               "mc_se": None if exact or np.ndim(p) else monte_carlo_se(float(p), len(perms))}
    return observed, p, method, details


def monte_carlo_se(p: float, n_permutations: int) -> float:
    """Monte Carlo standard error of a permutation p-value from B random permutations:
    sqrt(p (1 - p) / B). An exact p-value (every arrangement) has none."""
    return float(np.sqrt(p * (1 - p) / n_permutations))


def null_statistics(values, codes, perms: np.ndarray, fn=stat_range) -> np.ndarray:
    """The statistic under every arrangement in `perms`, for one set of per-voice values."""
    n_groups = int(np.max(codes)) + 1
    chunk = max(1, _CHUNK_ELEMENTS // n_groups)
    return np.concatenate([fn(group_means(perms[s:s + chunk], values, n_groups))
                           for s in range(0, len(perms), chunk)])


def critical_value(null: np.ndarray, alpha: float, exact: bool) -> float:
    """The largest statistic the permutation test does not reject at `alpha`.

    Mirrors permutation_pvalue: with E = #{T* >= T}, an exact test rejects when E / N <= alpha
    and a Monte Carlo one when (1 + E) / (B + 1) <= alpha. Both fail to reject exactly when
    E >= r, i.e. when T is at most the r-th largest null statistic, so that one is returned
    (infinity when there are too few permutations to ever reject).
    """
    n = len(null)
    r = int(np.floor(alpha * n)) + 1 if exact else int(np.floor(alpha * (n + 1) - 1)) + 1
    if r <= 0 or r > n:  # r <= 0: alpha (B + 1) < 1, so no p-value can be small enough
        return float("inf")
    return float(np.partition(null, n - r)[n - r])


def voice_strata(df: pd.DataFrame, strata, unit: str, voice_ids: np.ndarray) -> np.ndarray | None:
    """Per-voice stratum codes (aligned with voice_ids) from label column(s), or None."""
    if strata is None:
        return None
    columns = group_columns(strata)
    require_columns(df, columns)
    _, ids, labels = voice_labels(df, columns, unit)
    by_id = dict(zip(ids, labels))
    return pd.factorize(np.array([by_id[v] for v in voice_ids]))[0]


def permutation_test(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
                     item: str = "item_id", *, statistic="range", alternative: str = "two-sided",
                     strata=None, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
                     seed: int | None = 0, nan_policy: str = "exclude") -> TestResult:
    """PRIMARY test of a group difference: voice-level label permutation on voice means.

    statistic "range" (largest minus smallest group mean; |difference| for two groups) or
    "diff" (second minus first sorted label; allows alternative "greater"/"less").
    strata: label column(s) to permute within (e.g. "ethnicity" when testing gender).
    Works for 0/1 and numeric outcomes alike (voice means either way).
    """
    binary = nan_policy == "as_zero"  # scoring invalid as 0 presumes a 0/1 outcome
    voices = drop_empty_voices(reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary))
    name = f"voice-level permutation test ({getattr(statistic, '__name__', statistic)})"
    common = dict(test=name, conditions_on=CONDITIONS_ON, n_voices=len(voices.ids), n_items=voices.n_items)
    problem = design_problem(voices)
    if problem:
        return TestResult(statistic=None, p_value=None, undefined=problem, details={"notes": voices.notes}, **common)
    codes_strata = voice_strata(df, strata, unit, voices.ids)
    observed, p, method, details = permutation_pvalue(
        voices.means, voices.codes, statistic=statistic, alternative=alternative, strata=codes_strata,
        n_permutations=n_permutations, exact_max=exact_max, seed=seed)
    details.update(groups=voices.labels, notes=voices.notes, strata=strata)
    return TestResult(statistic=float(observed), p_value=float(p), method=method, details=details, **common)
