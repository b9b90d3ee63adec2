"""The public API on simulated tables: shapes, labels, plain-data output, what each result says."""

import json

import numpy as np
import pandas as pd
import pytest

from biasbench.analysis import (add_invalid_column, categorical_gap, common_item_rows, gee_test, group_gap, group_rates,
                                numeric_gap, permutation_test, simulate_responses, voice_rates)


@pytest.fixture(scope="module")
def table():
    return simulate_responses(voices_per_cell=3, n_items=30, effects={"gender": {"male": 1.5}},
                              voice_sd=0.3, item_sd=1.0, invalid_rate=0.05, seed=4)


def test_simulator_shape_and_balance(table):
    assert len(table) == 2 * 3 * 3 * 30
    assert set(table.columns) >= {"item_id", "voice_id", "gender", "ethnicity", "status", "correct"}
    per_cell = table.drop_duplicates("voice_id").groupby(["gender", "ethnicity"]).size()
    assert (per_cell == 3).all()
    assert table.loc[table.status != "valid", "correct"].isna().all()


def test_group_gap_finds_a_large_planted_effect(table):
    result = group_gap(table, "gender")
    assert result.highest == "male" and result.lowest == "female"
    assert result.p_value < 0.01 and result.undefined is None
    assert result.ci[0] <= result.gap <= result.ci[1]
    assert result.n_voices == 18 and result.n_responses == len(table)
    # random invalid answers: the default keeps every item (item-adjusted voice scores); the
    # common-item rule keeps only those every voice answered validly
    assert result.n_items == result.items["n_items_used"] == 30 == result.items["n_items_all"]
    common = group_gap(table, "gender", items="common")
    assert common.n_items == common.items["n_items_common"] < 30
    assert set(result.estimates) == {"female", "male"} and result.n_voices_by_group == {"female": 9, "male": 9}
    assert "voice" in result.conditions_on and "permutation" in result.test
    es = result.effect_sizes
    assert es["risk_difference"] == pytest.approx(result.gap)
    assert es["odds_ratio"] > 1 and es["cohens_h"] > 0
    assert 0 < result.invalid_rate["female"] < 0.2
    json.dumps(result.to_dict())  # plain data
    assert "gap male - female" in str(result)


def test_group_estimate_is_mean_of_voice_means(table):
    result = group_gap(table, "ethnicity", n_permutations=999, items="common")
    common = common_item_rows(table, "correct")[0]
    voice_means = common.groupby(["ethnicity", "voice_id"])["correct"].mean()
    every = group_gap(table, "ethnicity", n_permutations=99, items="all")  # the secondary, all-items estimate
    for label, estimate in every.estimates.items():
        assert estimate == pytest.approx(table.groupby(["ethnicity", "voice_id"])["correct"].mean()[label].mean())
    for label, estimate in result.estimates.items():
        assert estimate == pytest.approx(voice_means[label].mean())


def test_combined_grouping_and_pairwise_family(table):
    result = group_gap(table, ["gender", "ethnicity"], n_permutations=999)
    assert result.group == "gender x ethnicity"
    assert len(result.estimates) == 6 and "female / black" in result.estimates
    assert len(result.pairwise) == 15
    for pair in result.pairwise:
        assert pair.p_holm >= pair.p_value
        assert pair.a_minus_b == pytest.approx(result.estimates[pair.a] - result.estimates[pair.b])


def test_group_rates_columns_and_methods(table):
    rates = group_rates(table, "gender")
    assert list(rates["gender"]) == ["female", "male"]
    assert {"rate", "pooled_rate", "ci_low", "ci_high", "invalid_rate", "n_invalid", "n_voices"} <= set(rates.columns)
    assert (rates["ci_low"] <= rates["rate"]).all() and (rates["rate"] <= rates["ci_high"]).all()
    two_way = group_rates(table, "gender", two_way=True)
    # adding item resampling can only widen the interval (on average): check it is not narrower by much
    assert ((two_way.ci_high - two_way.ci_low) > 0.9 * (rates.ci_high - rates.ci_low)).all()
    wilson = group_rates(table, "gender", ci="wilson")
    assert wilson["ci_method"].str.contains("ignores voice clustering").all()


def test_voice_rates_wilson(table):
    rates = voice_rates(table)
    assert len(rates) == 18 and list(rates.columns[:3]) == ["voice_id", "gender", "ethnicity"]
    assert ((rates.ci_low <= rates.rate) & (rates.rate <= rates.ci_high)).all()


def test_invalid_rate_can_be_tested_as_a_gap(table):
    flagged = add_invalid_column(table)
    assert flagged["invalid"].mean() == pytest.approx((table.status != "valid").mean())
    result = group_gap(flagged, "gender", outcome="invalid", n_permutations=999)
    assert result.p_value is not None
    assert result.estimates == pytest.approx(result.invalid_rate)  # each voice answers every item once
    assert not result.notes


def test_nan_policy_as_zero_scores_invalid_as_wrong(table):
    kept = group_rates(table, "gender", ci="wilson")
    zero = group_rates(table, "gender", ci="wilson", nan_policy="as_zero")
    assert (zero["pooled_rate"] < kept["pooled_rate"]).all()


def test_stratified_permutation_test(table):
    result = permutation_test(table, "gender", strata="ethnicity")
    assert result.details["exact"] and result.details["n_used"] == 20**3


def test_numeric_gap():
    rng = np.random.default_rng(0)
    rows = [dict(item_id=f"q{i}", voice_id=f"{g}{v}", gender=g, status="valid",
                 value=rng.normal(1.0 if g == "m" else 0.0, 1.0) + 0.1 * v) for g in "fm" for v in range(5)
            for i in range(20)]
    result = numeric_gap(pd.DataFrame(rows), "gender")
    assert result.kind == "numeric" and result.highest == "m"
    assert result.effect_sizes["cohens_d"] == pytest.approx(1.0, abs=0.35)
    assert result.p_value < 0.05
    json.dumps(result.to_dict())


def test_categorical_gap_finds_a_planted_shift():
    rng = np.random.default_rng(2)
    probs = {"f": [0.6, 0.2, 0.2], "m": [0.2, 0.6, 0.2]}
    rows = [dict(item_id=f"q{i}", voice_id=f"{g}{v}", gender=g, status="valid",
                 category=rng.choice(["nurse", "engineer", "teacher"], p=probs[g])) for g in "fm" for v in range(4)
            for i in range(40)]
    rows[0]["status"], rows[0]["category"] = "refusal", None
    result = categorical_gap(pd.DataFrame(rows), "gender", n_permutations=999)
    assert result.tests["permutation_jsd"].p_value == pytest.approx(1 / 35)  # exact: C(8, 4) = 70, mirror image
    assert result.tv == pytest.approx(0.4, abs=0.1)
    assert result.invalid_rate["f"] == pytest.approx(1 / 160)
    with_refusals = categorical_gap(pd.DataFrame(rows), "gender", nan_policy="category", n_permutations=99)
    assert "<refusal>" in with_refusals.categories
    json.dumps(result.to_dict())


def test_gee_test_detects_effect_and_adjusts_for_covariates(table):
    result = gee_test(table, "gender")
    assert result.p_value < 0.01 and result.details["item_effects"] == "fixed"
    assert result.details["odds_ratio"]["male"] > 1
    wer = table.assign(wer=table["voice_id"].str[1:].astype(int) % 5 / 10)
    adjusted = gee_test(wer, "gender", covariates=["wer"])
    assert adjusted.defined and adjusted.details["covariates"] == ["wer"]
    assert "voices" in result.conditions_on
