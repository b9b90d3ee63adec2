"""Group gaps: estimates per group, largest-minus-smallest and pairwise gaps, intervals, effect sizes.

Estimates are means of voice means; p-values come from the voice-level permutation test
(permutation.py), the primary test. Pairwise p-values are Holm-corrected within the family
of pairs of this grouping.

Missing answers (DESIGN.md: they must neither fake a gap nor throw the data away). When a
slower group's long clips run past the model's window and long items are the hard ones,
per-voice means over whatever items each voice heard (`items="all"`) make the slower group
look more accurate with no voice effect at all (level 0.49). Keeping only the items every
compared voice answered validly (`items="common"`) removes that bias but, with 23% of
answers missing at random per voice, keeps about 5 of 540 items (power 0.56 where the
all-items test has 0.95). The default, `items="adjusted"`, keeps every answer and scores
each voice by its least-squares mean under an additive voice + item model
(`_data.additive_voice_effects`): each answer is compared with the other voices' answers to
the same item, so a voice that missed the hard items is not credited for it, and an item
one voice missed still counts for the others. The test stays at the voice level (group
labels permuted among the voices' adjusted means). Level and power of the three are
measured in benchmarks/calibration.py and docs/statistics.md. The invalid rates are computed
on every response whichever is used, and tested in their own right (`add_invalid_column`).

Groups of unequal size: the test statistic is the studentised (Welch-type) gap when the
groups' voice counts differ (permutation.py), the range of group means when they are equal.

Intervals agree with the test. The interval of a difference between two groups is the
difference plus or minus `c`, the largest range of group means that the permutation test
does not reject (test inversion, on the same arrangements as the p-value). The same `c`
serves every pair, so with k > 2 groups these are simultaneous intervals for all pairwise
differences (like Tukey's, with a permutation reference distribution); the interval of the
largest-minus-smallest gap is that pair's. So when the primary p > alpha the interval of
the gap includes 0, and when p <= alpha it does not. With the studentised statistic (unequal
group sizes) the interval is the gap plus or minus q times its Welch standard error, q the
|t| at the largest Welch score the test does not reject (for that pair's Welch df): again it
excludes 0 exactly when the test rejects. Pairwise intervals use the same critical score with
their own standard errors and df. Under a shift model the permutation
distribution of the observed data is at least as wide as the null one, so these intervals
cover at (or above) their nominal level; coverage is checked in tests and
`benchmarks/calibration.py`. A group's own interval is the t interval on its voice means.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from ._data import Voices, design_problem, drop_empty_voices, item_adjusted, reduce_to_voices, require_columns
from .effects import cohens_d, cohens_h, odds_ratio, risk_difference
from .multitest import correct_pvalues
from .permutation import (CONDITIONS_ON, EXACT_MAX, STATISTIC_WORDS, arrangements, auto_statistic, critical_value,
                          null_statistics, permutation_pvalue, stat_range, stat_studentised, voice_strata, welch_df)
from .rates import group_summary
from .results import GapResult, PairGap, TestResult

TEST_NAME = "voice-level permutation test ({words})"
ITEMS = ("adjusted", "common", "all")
NOT_TESTABLE = "not testable: no item answered by every voice"
ITEM_WORDS = {"adjusted": "every valid answer, each voice scored on item-adjusted outcomes (its answers compared with "
                          "the other voices' answers to the same items)",
              "common": "items every compared voice answered validly", "all": "every valid answer, as answered"}
GAP_CI = ("{level}% simultaneous interval for the pairwise differences, by inverting the primary test: the "
          "difference plus or minus the largest range of group means the permutation test does not reject")
GAP_CI_STUDENTISED = ("{level}% interval by inverting the primary (studentised) test: the difference plus or minus "
                      "its Welch standard error times the largest studentised gap the permutation test does not "
                      "reject")
GROUP_CI = "{level}% t interval on the group's voice means (mean +/- t(k-1) SD / sqrt(k))"


def common_item_rows(df: pd.DataFrame, outcome: str, unit: str = "voice_id",
                     item: str = "item_id") -> tuple[pd.DataFrame, dict]:
    """The rows of the items that every voice with any valid answer answered validly.

    Voices with no valid answer at all are left out of the requirement (the gap functions
    drop them with a note); a voice with a few valid answers shrinks the common set, and
    that is reported rather than hidden. Returns (rows, a record of what was kept).
    """
    require_columns(df, [outcome, unit, item])
    answered = pd.to_numeric(df[outcome], errors="coerce").notna().to_numpy()
    voices = df.loc[answered, unit].nunique()
    per_item = df.loc[answered].groupby(item, sort=False)[unit].nunique()
    kept = per_item.index[per_item == voices]
    n_all = int(df[item].nunique())
    info = {"items": "common", "n_items_all": n_all, "n_items_common": int(len(kept)),
            "n_items_dropped": n_all - int(len(kept)), "n_items_used": int(len(kept))}
    return df[df[item].isin(kept)], info


def _pooled_sd(voices: Voices, groups: list[int]) -> float | None:
    """Pooled within-group SD of responses (for Cohen's d), from the per-voice sums."""
    within, n = 0.0, 0.0
    for g in groups:
        mask = voices.codes == g
        count, total = voices.counts[mask].sum(), voices.sums[mask].sum()
        within += voices.sumsq[mask].sum() - total**2 / count
        n += count
    return float(np.sqrt(within / (n - len(groups)))) if n > len(groups) else None


def _effects(kind: str, est_a: float, est_b: float, interval, pooled_sd=None) -> dict:
    """Effect sizes of a versus b; the interval is the difference's (others are point estimates)."""
    if kind == "numeric":
        return {"difference": float(est_a - est_b), "difference_ci": interval,
                "cohens_d": cohens_d(est_a, est_b, pooled_sd),
                "cohens_d_note": "standardised by the pooled response-level SD within the two groups"}
    # item-adjusted rates can stray a little outside [0, 1]; odds ratio and h need rates
    rate_a, rate_b = float(np.clip(est_a, 0.0, 1.0)), float(np.clip(est_b, 0.0, 1.0))
    return {"risk_difference": risk_difference(est_a, est_b), "risk_difference_ci": interval,
            "odds_ratio": odds_ratio(rate_a, rate_b), "cohens_h": cohens_h(rate_a, rate_b)}


def group_intervals(voices: Voices, level: float, bounds=(-np.inf, np.inf)) -> dict:
    """label -> t interval on the group's voice means (None for a single voice), kept within
    `bounds` (a rate's interval stops at 0 and 1)."""
    out = {}
    for g, label in enumerate(voices.labels):
        means = voices.means[voices.codes == g]
        if len(means) < 2:
            out[label] = None
            continue
        half = stats.t.ppf(0.5 + level / 2, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
        out[label] = (float(max(means.mean() - half, bounds[0])), float(min(means.mean() + half, bounds[1])))
    return out


def _pair_pvalue(voices: Voices, a: int, b: int, strata, **perm) -> float:
    mask = np.isin(voices.codes, [a, b])
    codes = (voices.codes[mask] == b).astype(int)
    _, p, _, _ = permutation_pvalue(voices.means[mask], codes, statistic="auto",
                                    strata=None if strata is None else strata[mask], **perm)
    return float(p)


def welch_se(voices: Voices, a: int, b: int) -> tuple[float, float]:
    """Welch standard error of the difference between two groups' means of voice values, and its df."""
    va, vb = voices.means[voices.codes == a], voices.means[voices.codes == b]
    se2_a, se2_b = va.var(ddof=1) / len(va), vb.var(ddof=1) / len(vb)
    return float(np.sqrt(se2_a + se2_b)), float(welch_df(se2_a, se2_b, len(va), len(vb)))


def welch_half_width(critical_score: float, se: float, df: float) -> float:
    """Half-width d +/- q se of the differences the studentised test does not reject: q is the |t|
    whose Welch score -log p (df degrees of freedom) equals the critical score."""
    if not np.isfinite(critical_score):
        return float("inf")
    return float(stats.t.isf(np.exp(-critical_score) / 2, df if np.isfinite(df) else 1.0) * se)


def _pairwise(voices: Voices, estimates, half_width, kind, strata, perm, studentised=False) -> list[PairGap]:
    pairs = []
    for a, b in itertools.combinations(range(len(voices.labels)), 2):
        la, lb = voices.labels[a], voices.labels[b]
        diff = estimates[la] - estimates[lb]
        half = welch_half_width(half_width, *welch_se(voices, a, b)) if studentised else half_width
        ci = (float(diff - half), float(diff + half))
        sd = _pooled_sd(voices, [a, b]) if kind == "numeric" else None
        pairs.append(PairGap(
            a=la, b=lb, a_minus_b=float(diff), ci=ci, p_value=_pair_pvalue(voices, a, b, strata, **perm), p_holm=None,
            effect_sizes=_effects(kind, estimates[la], estimates[lb], ci, sd)))
    holm = correct_pvalues({f"{p.a} vs {p.b}": p.p_value for p in pairs}, method="holm",
                           family=f"pairwise gaps by {voices.group}")
    for pair, adjusted in zip(pairs, holm.p_adjusted):
        pair.p_holm = adjusted
    return pairs


def gap_half_width(voices: Voices, strata_codes, observed: float, p: float, alpha: float, statistic: str = "range",
                   se: tuple[float, float] = (1.0, 1.0), **perm) -> tuple[float, float]:
    """Half-width of the gap's interval by test inversion, and the critical statistic.

    range: the permutation test's critical range. studentised: the |t| at the critical Welch
    score (for the observed pair's df) times its Welch standard error (`se` = (se, df)).
    Computed on the same arrangements (same seed) as the p-value; where the p-value and the critical value disagree by
    floating-point ties at the boundary, the p-value wins, so the interval includes 0
    exactly when the test does not reject.
    """
    perms, exact = arrangements(voices.codes, strata=strata_codes, **perm)
    fn = stat_studentised if statistic == "studentised" else stat_range
    crit = critical_value(null_statistics(voices.means, voices.codes, perms, fn), alpha, exact)
    half = welch_half_width(crit, *se) if statistic == "studentised" else crit
    if p > alpha:
        half = max(half, observed)
    elif half >= observed:
        half = float(np.nextafter(observed, 0.0))
    return half, crit


def analysed_rows(df, outcome, unit, item, items, nan_policy="exclude"):
    """The rows the estimate and test use, and the record of the items used (None: all items, as answered)."""
    if items not in ITEMS:
        raise ValueError(f"items must be one of {ITEMS}, got {items!r}")
    if items == "all" or nan_policy == "as_zero":
        return df, None
    if items == "common":
        return common_item_rows(df, outcome, unit, item)
    require_columns(df, [outcome, unit, item])
    answered = pd.to_numeric(df[outcome], errors="coerce").notna()
    n_all, used = int(df[item].nunique()), int(df.loc[answered, item].nunique())
    return df, {"items": "adjusted", "n_items_all": n_all, "n_items_used": used, "n_items_dropped": n_all - used}


def _gap(df, group, outcome, unit, item, *, kind, n_permutations, exact_max, level, strata, nan_policy, items,
         seed) -> GapResult:
    binary = kind == "binary"
    voices_all = reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary=binary)
    summary = group_summary(voices_all).set_index(voices_all.group)
    rows, item_info = analysed_rows(df, outcome, unit, item, items, nan_policy)
    base = dict(
        group=voices_all.group, outcome=outcome, kind=kind, estimates={k: None for k in summary.index},
        ci_by_group={k: None for k in summary.index}, n_voices_by_group=summary["n_voices"].to_dict(),
        invalid_rate=summary["invalid_rate"].to_dict(), highest=None, lowest=None, gap=None, ci=None, p_value=None,
        test=TEST_NAME.format(words=STATISTIC_WORDS["range"]), conditions_on=CONDITIONS_ON,
        ci_method=GAP_CI.format(level=round(100 * level)), level=level,
        effect_sizes={}, pairwise=[], n_voices=len(voices_all.ids), n_items=voices_all.n_items,
        n_responses=int(voices_all.totals.sum()), notes=list(voices_all.notes), items=item_info)
    if rows.empty or not voices_all.counts.any():
        return GapResult(undefined=f"no valid {outcome} in any response" if not voices_all.counts.any() else
                         f"{NOT_TESTABLE} (the task's `analysis: items: adjusted` compares the voices on every "
                         "item)", **base)
    voices = drop_empty_voices(reduce_to_voices(rows, group, outcome, unit, item, nan_policy, binary=binary))
    base["notes"] = list(dict.fromkeys([*base["notes"], *voices.notes]))
    if item_info and item_info["items"] == "common" and item_info["n_items_dropped"]:
        base["notes"].append(f"{item_info['n_items_dropped']} of {item_info['n_items_all']} items left out: not "
                             "every voice answered them validly (the estimate keeps to the common items)")
    if item_info and item_info["items"] == "adjusted":
        voices = item_adjusted(voices)
    base["n_items"] = voices.n_items if not item_info else item_info["n_items_used"]
    estimates = pd.Series(voices.means).groupby(np.asarray(voices.labels)[voices.codes]).mean()
    base["estimates"].update({k: float(v) for k, v in estimates.items()})
    scored = {k: v for k, v in base["estimates"].items() if v is not None}
    if len(scored) >= 2:
        base["highest"], base["lowest"] = max(scored, key=scored.get), min(scored, key=scored.get)
        base["gap"] = scored[base["highest"]] - scored[base["lowest"]]
        if base["gap"] <= 1e-12 * max(1.0, *map(abs, scored.values())):  # a tie, not floating-point noise
            base["gap"] = 0.0
    problem = design_problem(voices)
    if problem:
        return GapResult(undefined=problem, **base)
    strata_codes = voice_strata(df, strata, unit, voices.ids)
    perm = dict(n_permutations=n_permutations, exact_max=exact_max, seed=seed)
    statistic = auto_statistic(voices.codes)
    base["test"] = TEST_NAME.format(words=STATISTIC_WORDS[statistic])
    if statistic == "studentised":
        base["ci_method"] = GAP_CI_STUDENTISED.format(level=round(100 * level))
    observed, p, method, details = permutation_pvalue(voices.means, voices.codes, statistic=statistic,
                                                      strata=strata_codes, **perm)
    hi, lo = base["highest"], base["lowest"]
    a, b = voices.labels.index(hi), voices.labels.index(lo)
    se = welch_se(voices, a, b) if statistic == "studentised" else (1.0, 1.0)
    # the gap as reported (not the permutation code's own sum) decides the interval's side of 0
    half, crit = gap_half_width(voices, strata_codes, float(base["gap"]), float(p), round(1 - level, 10),
                                statistic=statistic, se=se, **perm)
    sd = _pooled_sd(voices, [a, b]) if kind == "numeric" else None
    details.update(groups=voices.labels, strata=strata, critical_range=half, critical_statistic=crit)
    ci = (float(base["gap"] - half), float(base["gap"] + half))
    base.update(
        p_value=float(p), ci=ci, mc_se=details["mc_se"],
        ci_by_group={**base["ci_by_group"], **group_intervals(voices, level, (0.0, 1.0) if binary else (-np.inf, np.inf))},
        effect_sizes=_effects(kind, scored[hi], scored[lo], ci, sd),
        pairwise=_pairwise(voices, scored, crit if statistic == "studentised" else half, kind, strata_codes, perm,
                           studentised=statistic == "studentised"),
        permutation=TestResult(base["test"], float(observed), float(p), CONDITIONS_ON, len(voices.ids),
                               voices.n_items, method, details))
    return GapResult(**base)


def group_gap(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
              item: str = "item_id", *, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
              level: float = 0.95, strata=None, nan_policy: str = "exclude", items: str = "adjusted",
              seed: int | None = 0) -> GapResult:
    """Gap in a 0/1 outcome between the groups of `group` (a column, or a list for a combination).

    Estimates: mean of voice rates per group; by default (items="adjusted") each voice's rate
    is its item-adjusted mean over every valid answer (module docstring); items="common": over
    the items every voice answered validly; items="all": over whatever each voice answered. Gap: largest minus smallest, with the
    voice-level permutation p-value and the interval that inverts it (module docstring).
    Effect sizes (risk difference, odds ratio, Cohen's h) for highest vs lowest and per pair.
    """
    return _gap(df, group, outcome, unit, item, kind="binary", n_permutations=n_permutations,
                exact_max=exact_max, level=level, strata=strata, nan_policy=nan_policy, items=items, seed=seed)


def numeric_gap(df: pd.DataFrame, group="gender", outcome: str = "value", unit: str = "voice_id",
                item: str = "item_id", *, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
                level: float = 0.95, strata=None, items: str = "adjusted", seed: int | None = 0) -> GapResult:
    """Gap in the mean of a numeric outcome, tested and bounded at the voice level as group_gap.

    Effect size: difference and Cohen's d (standardised by the pooled response-level SD).
    NaN values (invalid responses) are excluded and counted in `invalid_rate`.
    """
    return _gap(df, group, outcome, unit, item, kind="numeric", n_permutations=n_permutations,
                exact_max=exact_max, level=level, strata=strata, nan_policy="exclude", items=items, seed=seed)
