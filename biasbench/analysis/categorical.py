"""Categorical outcomes (bias probes: which occupation, which decision): distributions per group.

Each voice gets its own distribution over categories (shares of its valid answers); a
group's distribution is the mean of its voices' distributions. Differences between group
distributions are measured by the Jensen-Shannon divergence (base 2, so 0..1; for k > 2
groups the generalised JSD with equal weights, H(mean) - mean H) and the total variation
distance (largest pairwise, 0..1), each tested by permuting group labels among voices.

Chi-square and G tests on the pooled group x category table are reported too, labelled as
treating responses as independent: they ignore voices and over-reject when voices vary.

Missing answers: nan_policy="exclude" (default) leaves invalid responses out of the
distributions and reports their rate per group; "category" makes each non-valid status
its own category ("<refusal>", "<invalid>", ...), since invalid answers are data.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from ._data import group_columns, group_name, invalid_mask, require_columns, voice_labels
from .permutation import CONDITIONS_ON, EXACT_MAX, permutation_pvalue
from .results import CategoricalResult, TestResult

POOLED_CONDITIONS = ("responses as independent draws: ignores that responses come from a few voices, so it "
                     "over-rejects when voices vary; descriptive only")


def _entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits along the last axis (0 log 0 = 0)."""
    return -(p * np.log2(np.where(p > 0, p, 1.0))).sum(axis=-1)


def stat_jsd(means: np.ndarray) -> np.ndarray:
    """Generalised Jensen-Shannon divergence (base 2) of the group distributions, axis 1 = groups."""
    return _entropy(means.mean(axis=1)) - _entropy(means).mean(axis=1)


def stat_tv(means: np.ndarray) -> np.ndarray:
    """Largest pairwise total variation distance between the group distributions."""
    pairs = itertools.combinations(range(means.shape[1]), 2)
    return np.max([0.5 * np.abs(means[:, a] - means[:, b]).sum(axis=-1) for a, b in pairs], axis=0)


def jensen_shannon(p, q) -> float:
    """JSD(p, q) in bits; equals scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2."""
    p, q = np.asarray(p, float) / np.sum(p), np.asarray(q, float) / np.sum(q)
    return float(stat_jsd(np.stack([p, q])[None])[0])


def _categories(df, outcome, nan_policy):
    """Category per response (None where missing) and the not-valid mask for invalid rates."""
    invalid = invalid_mask(df, outcome)
    category = df[outcome].astype(object)
    missing = category.isna()
    if nan_policy == "category":  # each kind of missing answer becomes its own category
        status = df["status"].astype(object) if "status" in df.columns else pd.Series("missing", index=df.index)
        kind = status.where(status.notna() & (status != "valid"), "missing")
        category = category.where(~missing, "<" + kind.astype(str) + ">")
    elif nan_policy != "exclude":
        raise ValueError(f"nan_policy must be 'exclude' or 'category', got {nan_policy!r}")
    return category.astype(str).where(category.notna()), invalid


def categorical_gap(df: pd.DataFrame, group="gender", outcome: str = "category", unit: str = "voice_id",
                    item: str = "item_id", *, nan_policy: str = "exclude", n_permutations: int = 10_000,
                    exact_max: int = EXACT_MAX, seed: int | None = 0) -> CategoricalResult:
    """Group x category distributions; voice-level permutation tests on JSD and TV; pooled chi-square/G."""
    columns = group_columns(group)
    require_columns(df, [*columns, outcome, unit, item])
    category, invalid = _categories(df, outcome, nan_policy)
    row_voice, ids, voice_label = voice_labels(df, columns, unit)
    labels = sorted(set(voice_label))
    voice_code = np.searchsorted(labels, voice_label)
    included = category.notna().to_numpy()
    cat_code, cats = pd.factorize(category[included], sort=True)
    n_v, n_c = len(ids), len(cats)
    counts = np.bincount(row_voice[included] * n_c + cat_code, minlength=n_v * n_c).reshape(n_v, n_c)
    totals, n_bad = np.bincount(row_voice, minlength=n_v), np.bincount(row_voice[invalid], minlength=n_v)
    group_of = np.asarray(labels)[voice_code]
    table = pd.DataFrame(counts, columns=list(cats)).groupby(group_of).sum()
    invalid_rate = (pd.Series(n_bad).groupby(group_of).sum() / pd.Series(totals).groupby(group_of).sum()).to_dict()
    keep = counts.sum(axis=1) > 0  # voices with no valid answer have no distribution
    shares = counts[keep] / counts[keep].sum(axis=1, keepdims=True)
    kept_labels = sorted(set(group_of[keep]))
    codes = np.searchsorted(kept_labels, group_of[keep])
    distributions = pd.DataFrame(shares, columns=list(cats)).groupby(group_of[keep]).mean()
    result = CategoricalResult(
        group=group_name(columns), outcome=outcome, categories=list(cats), counts=table.to_dict("index"),
        distributions=distributions.to_dict("index"), invalid_rate=invalid_rate, jsd=None, tv=None, tests={},
        n_voices=n_v, n_items=int(df[item].nunique()),
        notes=[f"{int((~keep).sum())} voice(s) with no valid answer left out"] if (~keep).any() else [])
    result.undefined = _problem(kept_labels, codes, n_c)
    if result.undefined:
        return result
    result.tests.update(_pooled_tests(table, n_v, result.n_items))
    for name, fn in (("jsd", stat_jsd), ("tv", stat_tv)):
        observed, p, method, details = permutation_pvalue(shares, codes, statistic=fn, n_permutations=n_permutations,
                                                          exact_max=exact_max, seed=seed)
        setattr(result, name, float(observed))
        result.tests[f"permutation_{name}"] = TestResult(
            f"voice-level permutation test ({name.upper()})", float(observed), float(p), CONDITIONS_ON,
            int(keep.sum()), result.n_items, method, {**details, "groups": kept_labels})
    return result


def _problem(labels, codes, n_categories) -> str | None:
    if n_categories < 2:
        return "fewer than two distinct categories among valid answers; there is no distribution to compare"
    if len(labels) < 2:
        return "fewer than two groups with valid answers; nothing to compare"
    single = [lab for lab, k in zip(labels, np.bincount(codes)) if k < 2]
    if single:
        return f"group(s) {single} have a single voice: voice-to-voice variation cannot be estimated"
    return None


def _pooled_tests(table: pd.DataFrame, n_voices: int, n_items: int) -> dict:
    """Pearson chi-square and G (log-likelihood ratio) tests on the pooled contingency table."""
    table = table.loc[:, table.sum(axis=0) > 0]
    out = {}
    for name, lambda_ in (("chi_square", "pearson"), ("g_test", "log-likelihood")):
        res = stats.chi2_contingency(table.to_numpy(), correction=False, lambda_=lambda_)
        out[name] = TestResult(
            f"{'Pearson chi-square' if name == 'chi_square' else 'G'} test on pooled group x category counts",
            float(res.statistic), float(res.pvalue), POOLED_CONDITIONS, n_voices, n_items,
            f"scipy.stats.chi2_contingency(lambda_={lambda_!r}, correction=False), df {res.dof}",
            {"df": int(res.dof), "min_expected": float(res.expected_freq.min())})
    return out
