"""Reference checks: each statistic against an independent implementation or a textbook value."""

import gc
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from statsmodels.stats.contingency_tables import cochrans_q as sm_cochrans_q
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from biasbench.analysis import (categorical_gap, cochran_q_by_item, cohens_h, correct_pvalues, count_arrangements,
                                enumerate_arrangements, exact_mcnemar_p, jensen_shannon, mcnemar_by_item, odds_ratio,
                                permutation_pvalue, permutation_test, risk_difference, wilson_interval)
from biasbench.analysis.categorical import stat_jsd, stat_tv
from biasbench.analysis.paired import cochrans_q


# ----------------------------------------------------------------- Wilson

@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (47, 120), (1, 1), (512, 1000)])
@pytest.mark.parametrize("level", [0.90, 0.95, 0.99])
def test_wilson_matches_statsmodels(k, n, level):
    low, high = wilson_interval(k, n, level)
    ref_low, ref_high = proportion_confint(k, n, alpha=1 - level, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-12) and high == pytest.approx(ref_high, abs=1e-12)


# ----------------------------------------------------------------- McNemar

def test_exact_mcnemar_textbook_value():
    # 1 vs 6 discordant pairs: p = 2 * P(X <= 1), X ~ Bin(7, 1/2) = 2 * (1 + 7) / 128 = 0.125
    assert exact_mcnemar_p(1, 6) == pytest.approx(0.125)
    assert exact_mcnemar_p(6, 1) == pytest.approx(0.125)
    assert exact_mcnemar_p(5, 5) == 1.0  # capped at 1


@pytest.mark.parametrize("table", [[[794, 150], [86, 570]], [[10, 1], [6, 20]], [[3, 0], [9, 1]], [[5, 4], [4, 5]]])
def test_exact_mcnemar_matches_statsmodels(table):
    ref = sm_mcnemar(np.array(table), exact=True)
    assert exact_mcnemar_p(table[0][1], table[1][0]) == pytest.approx(ref.pvalue, rel=1e-12)


def _paired_table(majorities: dict[str, list[int]], voices_per_group=3):
    """A tidy table whose per-item group majorities are exactly `majorities` (all voices agree)."""
    rows = []
    for group, outcomes in majorities.items():
        for v in range(voices_per_group):
            for i, y in enumerate(outcomes):
                rows.append(dict(item_id=f"q{i}", voice_id=f"{group}{v}", grp=group, status="valid", correct=float(y)))
    return pd.DataFrame(rows)


def test_mcnemar_by_item_matches_statsmodels_on_majorities():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    df = _paired_table({"a": list(a), "b": list(b)})
    result = mcnemar_by_item(df, "grp")
    table = [[int(((a == 1) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())],
             [int(((a == 0) & (b == 1)).sum()), int(((a == 0) & (b == 0)).sum())]]
    assert result.details["table"] == table
    assert result.p_value == pytest.approx(sm_mcnemar(np.array(table), exact=True).pvalue)
    assert "voices drawn" in result.conditions_on


def test_mcnemar_majority_rule_drops_ties():
    # two voices per group: item 0 ties in group a (one right, one wrong) and is dropped
    rows = [("q0", "a0", "a", 1.0), ("q0", "a1", "a", 0.0), ("q0", "b0", "b", 1.0), ("q0", "b1", "b", 1.0),
            ("q1", "a0", "a", 1.0), ("q1", "a1", "a", 1.0), ("q1", "b0", "b", 0.0), ("q1", "b1", "b", 0.0)]
    df = pd.DataFrame(rows, columns=["item_id", "voice_id", "grp", "correct"]).assign(status="valid")
    result = mcnemar_by_item(df, "grp")
    assert result.details["items_used"] == 1 and result.details["items_dropped"] == 1
    assert result.details["table"] == [[0, 1], [0, 0]]


# ----------------------------------------------------------------- Cochran's Q

def test_cochrans_q_matches_statsmodels():
    rng = np.random.default_rng(7)
    x = (rng.random((40, 4)) < [0.3, 0.5, 0.6, 0.45]).astype(int)
    q, dof = cochrans_q(x)
    ref = sm_cochrans_q(x)
    assert q == pytest.approx(ref.statistic) and dof == ref.df

    df = _paired_table({g: list(x[:, j]) for j, g in enumerate("abcd")})
    result = cochran_q_by_item(df, "grp")
    assert result.statistic == pytest.approx(ref.statistic)
    assert result.p_value == pytest.approx(ref.pvalue)


def test_cochrans_q_two_groups_equals_mcnemar_chi_square():
    # with k = 2 Cochran's Q is the (uncorrected) McNemar chi-square (b - c)^2 / (b + c)
    x = np.array([[1, 0]] * 9 + [[0, 1]] * 3 + [[1, 1]] * 5 + [[0, 0]] * 4)
    assert cochrans_q(x)[0] == pytest.approx((9 - 3) ** 2 / (9 + 3))


# ----------------------------------------------------------------- chi-square and G

def test_pooled_chi_square_and_g_match_scipy():
    rng = np.random.default_rng(11)
    probs = {"f": [0.3, 0.4, 0.3], "m": [0.2, 0.5, 0.3]}
    rows = [dict(item_id=f"q{i}", voice_id=f"{g}{v}", gender=g, status="valid",
                 category=rng.choice(["nurse", "engineer", "teacher"], p=probs[g]))
            for g in "fm" for v in range(4) for i in range(30)]
    df = pd.DataFrame(rows)
    result = categorical_gap(df, "gender", n_permutations=199)
    table = pd.crosstab(df["gender"], df["category"]).to_numpy()
    for name, lambda_ in (("chi_square", None), ("g_test", "log-likelihood")):
        ref = stats.chi2_contingency(table, correction=False, lambda_=lambda_)
        assert result.tests[name].statistic == pytest.approx(ref.statistic)
        assert result.tests[name].p_value == pytest.approx(ref.pvalue)
        assert "independent" in result.tests[name].conditions_on


# ----------------------------------------------------------------- JSD and TV

@pytest.mark.parametrize("p,q", [([0.2, 0.3, 0.5], [0.5, 0.3, 0.2]), ([1, 0, 0], [0, 0.5, 0.5]),
                                 ([0.25] * 4, [0.25] * 4), ([3, 1], [1, 3])])
def test_jsd_is_scipy_jensenshannon_squared_base2(p, q):
    assert jensen_shannon(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)


def test_generalised_jsd_and_tv_on_three_groups():
    m = np.array([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]])

    def h(p):
        return -sum(x * math.log2(x) for x in p if x > 0)

    assert stat_jsd(m[None])[0] == pytest.approx(h(m.mean(axis=0)) - np.mean([h(r) for r in m]))
    assert stat_tv(m[None])[0] == pytest.approx(0.7)  # groups 0 and 2: (0.7 + 0.7) / 2


# ----------------------------------------------------------------- effect sizes

def test_cohens_h_textbook_values():
    # Cohen (1988), Table 6.2.1: phi = 2 arcsin sqrt(p): phi(.10) = .6435, phi(.50) = 1.5708, phi(.90) = 2.4981
    assert cohens_h(0.5, 0.1) == pytest.approx(1.5708 - 0.6435, abs=1e-4)
    assert cohens_h(0.9, 0.1) == pytest.approx(2.4981 - 0.6435, abs=1e-4)
    assert cohens_h(0.55, 0.45) == pytest.approx(0.2003, abs=1e-4)  # a "small" effect
    assert cohens_h(0.3, 0.3) == 0.0


def test_odds_ratio_and_risk_difference():
    assert odds_ratio(0.5, 0.2) == pytest.approx(1.0 / 0.25)
    assert odds_ratio(1.0, 0.2) is None  # undefined at a rate of 1
    assert risk_difference(0.7, 0.65) == pytest.approx(0.05)


# ----------------------------------------------------------------- multiple comparisons

@pytest.mark.parametrize("method,ref", [("holm", "holm"), ("bh", "fdr_bh")])
def test_correction_matches_multipletests(method, ref):
    p = [0.001, 0.04, 0.03, 0.2, 0.011, 0.5]
    result = correct_pvalues({f"t{i}": v for i, v in enumerate(p)}, method=method, family="six gaps")
    reject, adjusted, _, _ = multipletests(p, alpha=0.05, method=ref)
    assert result.p_adjusted == pytest.approx(list(adjusted))
    assert result.reject == list(reject)
    assert result.family.startswith("six gaps") and result.method == ref


@pytest.mark.parametrize("method,ref", [("holm", "holm"), ("bh", "fdr_bh"), ("bonferroni", "bonferroni")])
def test_correction_matches_multipletests_on_random_pvalues(method, ref, monkeypatch):
    """The numpy adjustments (multitest.adjust) against statsmodels over random p-vectors,
    ties and p-values near 0 and 1 included."""
    # statsmodels' Holm calls gc.collect() on every call (statsmodels PR #8671): 200 calls in a
    # worker holding torch and transformers took 100 s. Collection changes no result.
    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(20)
    for trial in range(200):
        m = int(rng.integers(1, 12))
        p = rng.uniform(0, 1, m) ** rng.uniform(0.2, 4)
        if trial % 5 == 0:
            p = np.round(p, 1)  # ties
        result = correct_pvalues(list(p), method=method, alpha=0.05)
        reject, adjusted, _, _ = multipletests(p, alpha=0.05, method=ref)
        assert result.p_adjusted == pytest.approx(list(adjusted), abs=1e-12)
        assert result.reject == list(reject)


def test_correction_leaves_out_undefined_pvalues():
    result = correct_pvalues({"a": 0.01, "b": None, "c": 0.04}, method="holm", family="f")
    assert result.left_out == ["b"] and result.p_adjusted[1] is None
    assert result.p_adjusted[0] == pytest.approx(multipletests([0.01, 0.04], method="holm")[1][0])


# ----------------------------------------------------------------- permutation test

def _brute_force_p(values, labels, stat):
    """Every ordering of the labels (n! of them, repeats included): each arrangement equally often."""
    observed = stat(values, labels)
    hits = total = 0
    for perm in itertools.permutations(labels):
        hits += stat(values, perm) >= observed - 1e-12
        total += 1
    return hits / total


def _range_stat(values, labels):
    means = {}
    for v, g in zip(values, labels):
        means.setdefault(g, []).append(v)
    group_means = [sum(x) / len(x) for x in means.values()]
    return max(group_means) - min(group_means)


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 2, 2, 2], [0, 1, 0, 1, 0, 1]])
def test_exact_permutation_p_matches_brute_force(labels):
    values = np.array([0.61, 0.55, 0.72, 0.40, 0.58, 0.44, 0.52])[: len(labels)]
    _, p, method, details = permutation_pvalue(values, np.array(labels))
    assert details["exact"] and method.startswith("exact")
    assert p == pytest.approx(_brute_force_p(list(values), labels, _range_stat))


def test_exact_permutation_through_the_table():
    # 4 + 4 voices, 5 items: C(8, 4) = 70 arrangements, enumerated
    rng = np.random.default_rng(0)
    p_voice = [0.9, 0.8, 0.85, 0.7, 0.4, 0.5, 0.3, 0.6]
    rows = [dict(item_id=f"q{i}", voice_id=f"v{v}", gender="f" if v < 4 else "m", status="valid",
                 correct=float(rng.random() < p_voice[v])) for v in range(8) for i in range(5)]
    df = pd.DataFrame(rows)
    result = permutation_test(df, "gender")
    means = df.groupby("voice_id")["correct"].mean().to_numpy()
    assert result.details["n_used"] == 70 and result.details["exact"]
    assert result.p_value == pytest.approx(_brute_force_p(list(means), [0] * 4 + [1] * 4, _range_stat))


def test_monte_carlo_p_has_plus_one_correction_and_seed():
    values = np.arange(20.0)
    codes = np.repeat([0, 1], 10)  # C(20, 10) = 184756 > 20000: Monte Carlo
    _, p, method, details = permutation_pvalue(values, codes, n_permutations=999, seed=5)
    assert not details["exact"] and details["seed"] == 5 and "seed 5" in method
    assert p == pytest.approx(1 / 1000)  # the observed split is the most extreme: (0 + 1) / (999 + 1)
    assert permutation_pvalue(values, codes, n_permutations=999, seed=5)[1] == p  # reproducible


def test_one_sided_diff_statistic():
    values = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    codes = np.array([0, 0, 0, 1, 1, 1])
    greater = permutation_pvalue(values, codes, statistic="diff", alternative="greater")[1]
    less = permutation_pvalue(values, codes, statistic="diff", alternative="less")[1]
    assert greater == pytest.approx(1 / 20) and less == pytest.approx(1.0)


def test_arrangement_enumeration_is_complete_and_distinct():
    codes = np.array([0, 0, 1, 1, 2, 2, 2])
    arr = enumerate_arrangements(codes)
    assert len(arr) == count_arrangements(codes) == math.factorial(7) // (2 * 2 * 6)
    assert len({tuple(r) for r in arr}) == len(arr)
    assert all(sorted(r) == sorted(codes) for r in arr)


def test_stratified_permutation_only_permutes_within_strata():
    codes = np.array([0, 1, 0, 1, 0, 1])
    strata = np.array([0, 0, 1, 1, 2, 2])
    assert count_arrangements(codes, strata) == 8  # 2 x 2 x 2
    values = np.array([0.5, 0.6, 0.2, 0.3, 0.8, 0.9])  # male higher by 0.1 in every stratum
    _, p, _, details = permutation_pvalue(values, codes, strata=strata)
    assert details["n_used"] == 8 and p == pytest.approx(2 / 8)  # all-male-higher and its mirror
