"""Calibration: the primary test holds its level on null data with real voice and item variation,
and finds a planted effect as often as the power calculation predicts.

Design (the benchmark's smallest): 2 genders x 3 ethnicities x 3 voices per cell = 18 voices,
40 items, base rate 0.6, voice SD 0.5 and item SD 1.0 on the logit scale. 200 data sets
each; the Monte Carlo standard error of a rejection rate r is sqrt(r (1 - r) / 200).
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from biasbench.analysis import minimum_detectable_gap, permutation_test, power, simulate_responses

N_SIMS, ALPHA = 200, 0.05
DESIGN = dict(voices_per_cell=3, n_items=40, base_rate=0.6, voice_sd=0.5, item_sd=1.0)


def mc_se(rate: float, n: int = N_SIMS) -> float:
    return float(np.sqrt(rate * (1 - rate) / n))


def rejection_rate(effect: float, seed0: int, group="gender", **test) -> float:
    """Through the public table API: simulate_responses -> permutation_test, N_SIMS times."""
    effects = {"gender": {"male": effect}} if effect else None
    pvalues = [permutation_test(simulate_responses(effects=effects, seed=seed0 + i, **DESIGN), group,
                                n_permutations=999, seed=i, **test).p_value for i in range(N_SIMS)]
    return float(np.mean(np.array(pvalues) <= ALPHA))


@pytest.fixture(scope="module")
def null_tables():
    return [simulate_responses(seed=10_000 + i, **DESIGN) for i in range(N_SIMS)]


def test_primary_test_holds_its_level_on_null_data(null_tables):
    rate = np.mean([permutation_test(df, "gender", n_permutations=999, seed=i).p_value <= ALPHA
                    for i, df in enumerate(null_tables)])
    assert rate <= ALPHA + 2 * mc_se(ALPHA), f"type I error {rate:.3f}"
    assert rate >= ALPHA - 3 * mc_se(ALPHA)  # and it is not trivially conservative


def test_naive_response_level_test_over_rejects_on_the_same_null_data(null_tables):
    # chi-square on pooled responses treats 720 responses as independent: wrong when voices vary
    rate = np.mean([stats.chi2_contingency(pd.crosstab(df.gender, df.correct), correction=False).pvalue <= ALPHA
                    for df in null_tables])
    assert rate > ALPHA + 3 * mc_se(ALPHA), f"naive rejection rate {rate:.3f}"


@pytest.mark.parametrize("group,strata", [("gender", "ethnicity"), (["gender", "ethnicity"], None),
                                          ("ethnicity", None)])
def test_level_for_other_groupings_and_stratified_permutations(group, strata):
    # vectorised path (same permutation code, all simulated data sets at once)
    result = power(0.0, group=group, strata=strata, n_sims=400, seed=3, **DESIGN)
    assert result.power <= ALPHA + 2 * mc_se(ALPHA, 400), result


def test_planted_effect_is_found_at_the_predicted_power():
    mdg = minimum_detectable_gap(target_power=0.8, n_sims=N_SIMS, seed=1, **DESIGN)
    assert mdg.undefined is None and 0 < mdg.gap < 0.5
    assert abs(mdg.power - 0.8) <= 3 * mc_se(0.8)  # re-estimated on fresh simulations
    # independent data sets through the table API, at the effect the power search returned
    rate = rejection_rate(mdg.effect_logit, seed0=50_000)
    tolerance = 3 * np.hypot(mc_se(mdg.power), mc_se(rate))
    assert abs(rate - mdg.power) <= tolerance, f"observed power {rate:.3f} vs predicted {mdg.power:.3f}"


def test_power_grows_with_effect_and_gap_is_on_probability_scale():
    small, large = (power(e, n_sims=200, seed=2, **DESIGN) for e in (0.3, 1.5))
    assert small.power < large.power and large.power > 0.9
    assert 0 < small.gap < large.gap < 0.4
