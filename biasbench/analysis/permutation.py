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

Unequal group sizes with unequal spread. The range of group means is not pivotal when the
groups differ in size and in voice-to-voice spread: the permutation distribution mixes the
spreads, and with 15 vs 6 voices (voice SD 0.3 vs 1.2) it rejects a true null about 19% of the
time. The "studentised" statistic is the Welch test of the highest against the lowest group
mean: the difference over its Welch standard error sqrt(s_hi^2/n_hi + s_lo^2/n_lo) (for two
groups: |Welch t|), scored by its Welch p-value (-log p, so that the changing Welch df of
each arrangement is accounted for). Studentised permutation statistics are asymptotically
pivotal (Janssen 1997; Chung & Romano 2013); measured, this keeps the level there
(benchmarks/calibration.py). `auto_statistic` picks it when group sizes differ
and keeps the range when they are equal (the range's level and power on balanced designs).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

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


def welch_df(se2_a, se2_b, n_a, n_b):
    """Welch-Satterthwaite degrees of freedom from the squared standard errors of two means."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (se2_a + se2_b) ** 2 / (se2_a**2 / (n_a - 1) + se2_b**2 / (n_b - 1))


def welch_score(t, df):
    """-log of the two-sided Welch p-value of t with df degrees of freedom (0 at t = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t <= 0, 0.0, -(np.log(2.0) + stats.t.logsf(t, np.where(np.isfinite(df), df, 1.0))))


def stat_studentised(means: np.ndarray, variances: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Welch test of the highest against the lowest group mean, per arrangement, as -log p.

    t = (highest - lowest) / sqrt(s_hi^2/n_hi + s_lo^2/n_lo), referred to t with the
    Welch-Satterthwaite df of that pair; the score -log p is monotone in |t| at fixed df and
    accounts for df changing between arrangements, which keeps the level with a small group
    (15 vs 6 voices: 0.068 where the bare t ratio gives 0.085). means, variances:
    (arrangements, groups, ...); sizes: (groups,). No difference scores 0; a difference with
    no spread is infinite.
    """
    shape = (1, len(sizes)) + (1,) * (means.ndim - 2)
    n = np.broadcast_to(np.reshape(np.asarray(sizes, float), shape), means.shape)
    se2 = variances / n
    hi, lo = means.argmax(axis=1)[:, None], means.argmin(axis=1)[:, None]

    def pick(a, index):
        return np.take_along_axis(a, index, axis=1)[:, 0]

    diff = pick(means, hi) - pick(means, lo)
    se2_hi, se2_lo = pick(se2, hi), pick(se2, lo)
    se = np.sqrt(se2_hi + se2_lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
    df = welch_df(se2_hi, se2_lo, pick(n, hi), pick(n, lo))
    return np.where(diff <= 0, 0.0, np.where(se > 0, welch_score(t, df), np.inf))


def auto_statistic(codes) -> str:
    """"range" when every group has as many voices, "studentised" when sizes differ."""
    sizes = np.bincount(np.asarray(codes))
    return "range" if len(set(sizes[sizes > 0])) <= 1 else "studentised"


STATISTIC_WORDS = {"range": "largest minus smallest group mean",
                   "studentised": "Welch test of the highest against the lowest group mean, as its -log p; the "
                                  "groups differ in size"}


def _statistic(statistic, alternative: str):
    if statistic == "studentised":
        if alternative != "two-sided":
            raise ValueError("statistic 'studentised' is two-sided by construction; use 'diff' for one-sided tests")
        return stat_studentised
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


def group_moments(arrangement: np.ndarray, values: np.ndarray, n_groups: int):
    """Group means and unbiased variances of the values for each arrangement (as group_means)."""
    values = np.asarray(values, dtype=float)
    means = group_means(arrangement, values, n_groups)
    second = group_means(arrangement, values**2, n_groups)
    sizes = np.array([(arrangement[0] == g).sum() for g in range(n_groups)], dtype=float)
    shape = (1, n_groups) + (1,) * (means.ndim - 2)
    scale = np.reshape(sizes / np.maximum(sizes - 1, 1), shape)
    return means, np.maximum(second - means**2, 0.0) * scale, sizes


def evaluate(fn, arrangement: np.ndarray, values, n_groups: int) -> np.ndarray:
    """The statistic `fn` under each arrangement (a studentised one gets the group variances)."""
    if fn is stat_studentised:
        return fn(*group_moments(arrangement, values, n_groups))
    return fn(group_means(arrangement, values, n_groups))


# ---------------------------------------------------------------- the test

def permutation_pvalue(values, codes, *, statistic="range", alternative="two-sided", strata=None,
                       n_permutations: int = 10_000, exact_max: int = EXACT_MAX, seed: int | None = 0):
    """Voice-level permutation p-value from per-voice values (the reduced table).

    values: (voices,) or (voices, ...) with trailing axes carried through (e.g. many
    simulated data sets at once). Returns (observed statistic, p-value, details dict).
    """
    codes = np.asarray(codes)
    n_groups = int(codes.max()) + 1
    fn = None if statistic == "auto" else _statistic(statistic, alternative)
    if statistic == "auto":
        statistic = auto_statistic(codes)
        fn = _statistic(statistic, alternative)
    observed = evaluate(fn, codes[None, :], values, n_groups)[0]
    perms, exact = arrangements(codes, strata=strata, n_permutations=n_permutations,
                                exact_max=exact_max, seed=seed)
    # ties: arithmetic on permuted sums can differ from the observed in the last bits
    scale = np.nanmax(np.abs(values)) if np.size(values) else 1.0
    if fn is stat_studentised:  # scale-free; an infinite statistic is its own threshold
        threshold = np.where(np.isfinite(observed), observed * (1 - 1e-9), observed)
    else:
        threshold = observed - 1e-9 * np.abs(observed) - 1e-12 * max(scale, 1e-300)
    trailing = int(np.prod(np.shape(values)[1:], dtype=int))
    chunk = max(1, _CHUNK_ELEMENTS // max(1, n_groups * trailing))
    exceed = np.zeros(np.shape(observed))
    for start in range(0, len(perms), chunk):
        exceed += (evaluate(fn, perms[start:start + chunk], values, n_groups) >= threshold).sum(axis=0)
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
    return np.concatenate([evaluate(fn, perms[s:s + chunk], values, n_groups)
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
                     seed: int | None = 0, nan_policy: str = "exclude", items: str = "all") -> TestResult:
    """PRIMARY test of a group difference: voice-level label permutation on voice means.

    statistic "range" (largest minus smallest group mean; |difference| for two groups),
    "studentised" (that difference over its Welch standard error), "auto" (studentised when
    group sizes differ, else range; what group_gap uses) or "diff" (second minus first sorted
    label; allows alternative "greater"/"less").
    items: "all" (each voice's mean over what it answered), "adjusted" (item-adjusted voice
    means, gaps.py) or "common" (only items every voice answered validly); as group_gap, an
    empty common set gives an undefined result, not an error.
    strata: label column(s) to permute within (e.g. "ethnicity" when testing gender).
    Works for 0/1 and numeric outcomes alike (voice means either way).
    """
    from ._data import item_adjusted
    from .gaps import NOT_TESTABLE, analysed_rows

    binary = nan_policy == "as_zero"  # scoring invalid as 0 presumes a 0/1 outcome
    rows, info = analysed_rows(df, outcome, unit, item, items, nan_policy)
    name = f"voice-level permutation test ({getattr(statistic, '__name__', statistic)})"
    if rows.empty and len(df):
        return TestResult(test=name, statistic=None, p_value=None, conditions_on=CONDITIONS_ON, n_voices=0,
                          n_items=0, undefined=NOT_TESTABLE, details={"items": info})
    voices = drop_empty_voices(reduce_to_voices(rows, group, outcome, unit, item, nan_policy, binary))
    if items == "adjusted" and len(voices.ids) and nan_policy != "as_zero":
        voices = item_adjusted(voices)
    common = dict(test=name, conditions_on=CONDITIONS_ON, n_voices=len(voices.ids),
                  n_items=int(np.unique(voices.row_item).size) if items == "adjusted" else voices.n_items)
    problem = design_problem(voices)
    if problem:
        return TestResult(statistic=None, p_value=None, undefined=problem, details={"notes": voices.notes}, **common)
    codes_strata = voice_strata(df, strata, unit, voices.ids)
    observed, p, method, details = permutation_pvalue(
        voices.means, voices.codes, statistic=statistic, alternative=alternative, strata=codes_strata,
        n_permutations=n_permutations, exact_max=exact_max, seed=seed)
    details.update(groups=voices.labels, notes=voices.notes, strata=strata, items=info)
    return TestResult(statistic=float(observed), p_value=float(p), method=method, details=details, **common)
