"""Group gaps: estimates per group, largest-minus-smallest and pairwise gaps, CIs, effect sizes.

Estimates are means of voice means; CIs come from the cluster bootstrap over voices
(rates.py); p-values from the voice-level permutation test (permutation.py), the primary
test. Pairwise p-values are Holm-corrected within the family of pairs of this grouping.

The CI of the gap: with two groups, the bootstrap interval of the signed difference
(highest minus lowest, identities fixed); with more, the interval of the range
(largest minus smallest recomputed in each replicate), which includes the selection of
the extremes and so never dips below zero: it is wide, by design, near no effect.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from ._data import Voices, design_problem, drop_empty_voices, reduce_to_voices
from .effects import cohens_d, cohens_h, odds_ratio, risk_difference
from .multitest import correct_pvalues
from .permutation import CONDITIONS_ON, EXACT_MAX, permutation_pvalue, voice_strata
from .rates import BOOTSTRAP_CI, TWO_WAY_CI, bootstrap_group_means, group_summary, percentile_ci
from .results import GapResult, PairGap, TestResult

TEST_NAME = "voice-level permutation test (largest minus smallest group mean)"


def _effects(kind: str, est_a: float, est_b: float, boot_a, boot_b, level: float, pooled_sd=None) -> dict:
    """Effect sizes of a versus b with bootstrap CIs (None where undefined)."""
    if kind == "numeric":
        return {"difference": float(est_a - est_b),
                "difference_ci": percentile_ci(boot_a - boot_b, level),
                "cohens_d": cohens_d(est_a, est_b, pooled_sd),
                "cohens_d_note": "standardised by the pooled response-level SD within the two groups"}
    out = {}
    for name, fn in (("risk_difference", risk_difference), ("odds_ratio", odds_ratio), ("cohens_h", cohens_h)):
        out[name] = fn(est_a, est_b)
        out[f"{name}_ci"] = percentile_ci(np.asarray(fn(boot_a, boot_b), float), level) if boot_a is not None else None
    return out


def _pooled_sd(voices: Voices, groups: list[int]) -> float | None:
    """Pooled within-group SD of responses (for Cohen's d), from the per-voice sums."""
    within, n = 0.0, 0.0
    for g in groups:
        mask = voices.codes == g
        count, total = voices.counts[mask].sum(), voices.sums[mask].sum()
        within += voices.sumsq[mask].sum() - total**2 / count
        n += count
    return float(np.sqrt(within / (n - len(groups)))) if n > len(groups) else None


def _pair_pvalue(voices: Voices, a: int, b: int, strata, **perm) -> float:
    mask = np.isin(voices.codes, [a, b])
    codes = (voices.codes[mask] == b).astype(int)
    _, p, _, _ = permutation_pvalue(voices.means[mask], codes, strata=None if strata is None else strata[mask], **perm)
    return float(p)


def _pairwise(voices: Voices, estimates, boot, kind, level, strata, perm) -> list[PairGap]:
    pairs = []
    for a, b in itertools.combinations(range(len(voices.labels)), 2):
        la, lb = voices.labels[a], voices.labels[b]
        diff = estimates[la] - estimates[lb]
        sd = _pooled_sd(voices, [a, b]) if kind == "numeric" else None
        pairs.append(PairGap(
            a=la, b=lb, a_minus_b=float(diff), ci=percentile_ci(boot[:, a] - boot[:, b], level),
            p_value=_pair_pvalue(voices, a, b, strata, **perm), p_holm=None,
            effect_sizes=_effects(kind, estimates[la], estimates[lb], boot[:, a], boot[:, b], level, sd)))
    holm = correct_pvalues({f"{p.a} vs {p.b}": p.p_value for p in pairs}, method="holm",
                           family=f"pairwise gaps by {voices.group}")
    for pair, adjusted in zip(pairs, holm.p_adjusted):
        pair.p_holm = adjusted
    return pairs


def _gap(df, group, outcome, unit, item, *, kind, n_permutations, exact_max, n_boot, two_way,
         level, strata, nan_policy, seed) -> GapResult:
    voices_all = reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary=(kind == "binary"))
    voices = drop_empty_voices(voices_all)
    summary = group_summary(voices_all).set_index(voices_all.group)
    estimates = {k: (None if pd.isna(v) else float(v)) for k, v in summary["rate"].items()}
    scored = {k: v for k, v in estimates.items() if v is not None}
    highest = max(scored, key=scored.get) if len(scored) >= 2 else None
    lowest = min(scored, key=scored.get) if len(scored) >= 2 else None
    base = dict(
        group=voices_all.group, outcome=outcome, kind=kind, estimates=estimates,
        ci_by_group={k: None for k in estimates}, n_voices_by_group=summary["n_voices"].to_dict(),
        invalid_rate=summary["invalid_rate"].to_dict(), highest=highest, lowest=lowest,
        gap=scored[highest] - scored[lowest] if highest else None, ci=None, p_value=None, test=TEST_NAME,
        conditions_on=CONDITIONS_ON, ci_method=TWO_WAY_CI if two_way else BOOTSTRAP_CI, level=level,
        effect_sizes={}, pairwise=[], n_voices=len(voices_all.ids), n_items=voices_all.n_items,
        n_responses=int(voices_all.totals.sum()), notes=list(voices.notes))
    problem = design_problem(voices)
    if problem:
        return GapResult(undefined=problem, **base)
    strata_codes = voice_strata(df, strata, unit, voices.ids)
    perm = dict(n_permutations=n_permutations, exact_max=exact_max, seed=seed)
    observed, p, method, details = permutation_pvalue(voices.means, voices.codes, statistic="range",
                                                      strata=strata_codes, **perm)
    boot = bootstrap_group_means(voices, n_boot=n_boot, seed=seed, two_way=two_way)
    hi, lo = voices.labels.index(highest), voices.labels.index(lowest)
    sd = _pooled_sd(voices, [hi, lo]) if kind == "numeric" else None
    details.update(groups=voices.labels, strata=strata)
    if len(voices.labels) == 2:  # the signed difference, identities fixed: the usual interval
        gap_ci = percentile_ci(boot[:, hi] - boot[:, lo], level)
    else:  # k > 2: the range itself, so the CI carries the selection of the extremes
        gap_ci = percentile_ci(boot.max(axis=1) - boot.min(axis=1), level)
        base["ci_method"] += "; CI of the range (largest minus smallest in each replicate)"
    base.update(
        p_value=float(p), ci=gap_ci,
        ci_by_group={**base["ci_by_group"],
                     **{lab: percentile_ci(boot[:, g], level) for g, lab in enumerate(voices.labels)}},
        effect_sizes=_effects(kind, scored[highest], scored[lowest], boot[:, hi], boot[:, lo], level, sd),
        pairwise=_pairwise(voices, scored, boot, kind, level, strata_codes, perm),
        permutation=TestResult(TEST_NAME, float(observed), float(p), CONDITIONS_ON, len(voices.ids),
                               voices.n_items, method, details))
    return GapResult(**base)


def group_gap(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
              item: str = "item_id", *, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
              n_boot: int = 2000, two_way: bool = False, level: float = 0.95, strata=None,
              nan_policy: str = "exclude", seed: int | None = 0) -> GapResult:
    """Gap in a 0/1 outcome between the groups of `group` (a column, or a list for a combination).

    Estimates: mean of voice rates per group. Gap: largest minus smallest, with a cluster-
    bootstrap CI (voices; two_way=True also items) and the voice-level permutation p-value.
    Effect sizes (risk difference, odds ratio, Cohen's h) for highest vs lowest and per pair.
    """
    return _gap(df, group, outcome, unit, item, kind="binary", n_permutations=n_permutations,
                exact_max=exact_max, n_boot=n_boot, two_way=two_way, level=level, strata=strata,
                nan_policy=nan_policy, seed=seed)


def numeric_gap(df: pd.DataFrame, group="gender", outcome: str = "value", unit: str = "voice_id",
                item: str = "item_id", *, n_permutations: int = 10_000, exact_max: int = EXACT_MAX,
                n_boot: int = 2000, two_way: bool = False, level: float = 0.95, strata=None,
                seed: int | None = 0) -> GapResult:
    """Gap in the mean of a numeric outcome, tested and bootstrapped at the voice level as group_gap.

    Effect size: difference and Cohen's d (standardised by the pooled response-level SD).
    NaN values (invalid responses) are excluded and counted in `invalid_rate`.
    """
    return _gap(df, group, outcome, unit, item, kind="numeric", n_permutations=n_permutations,
                exact_max=exact_max, n_boot=n_boot, two_way=two_way, level=level, strata=strata,
                nan_policy="exclude", seed=seed)
