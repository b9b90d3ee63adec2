"""Bad input: clear errors for what the user must fix, 'undefined' (with a reason) for what cannot be estimated."""

import json

import numpy as np
import pandas as pd
import pytest

from biasbench.analysis import (categorical_gap, cochran_q_by_item, correct_pvalues, gee_test, group_gap, group_rates,
                                mcnemar_by_item, numeric_gap, permutation_test, simulate_responses, voice_rates)


@pytest.fixture()
def table():
    return simulate_responses(voices_per_cell=2, n_items=12, seed=9)


# ------------------------------------------------------------- missing columns

@pytest.mark.parametrize("call", [
    lambda df: group_gap(df, "accent"),
    lambda df: group_gap(df, ["gender", "accent"]),
    lambda df: group_rates(df, "accent"),
    lambda df: permutation_test(df, "accent"),
    lambda df: mcnemar_by_item(df, "accent"),
    lambda df: cochran_q_by_item(df, "accent"),
    lambda df: gee_test(df, "accent"),
    lambda df: categorical_gap(df, "accent", outcome="correct"),
    lambda df: numeric_gap(df, "accent", outcome="correct"),
    lambda df: voice_rates(df, labels=["accent"]),
])
def test_missing_column_names_it_and_lists_present_ones(table, call):
    with pytest.raises(ValueError, match=r"column 'accent' not found.*present columns: \[.*'gender'.*\]"):
        call(table)


def test_missing_outcome_and_unit_columns(table):
    with pytest.raises(ValueError, match="column 'score' not found"):
        group_gap(table, "gender", outcome="score")
    with pytest.raises(ValueError, match="column 'voice_id' not found"):
        group_gap(table.drop(columns="voice_id"), "gender")
    with pytest.raises(ValueError, match="column 'wer' not found"):
        gee_test(table, "gender", covariates=["wer"])


def test_non_binary_outcome_is_refused_for_rates(table):
    with pytest.raises(ValueError, match="must be 0/1"):
        group_gap(table.assign(correct=table["correct"] * 2), "gender")


def test_label_not_constant_within_a_voice(table):
    bad = table.copy()
    bad.loc[0, "gender"] = "male" if bad.loc[0, "gender"] == "female" else "female"
    with pytest.raises(ValueError, match="not constant within voices"):
        group_gap(bad, "gender")


def test_missing_item_ids_raise(table):
    with pytest.raises(ValueError, match="column 'item_id' has 1 rows with no item id"):
        group_gap(table.assign(item_id=table["item_id"].where(table.index != 5)), "gender")


def test_missing_labels_raise(table):
    with pytest.raises(ValueError, match="column 'gender' has 1 rows with no label"):
        group_gap(table.assign(gender=table["gender"].where(table.index != 3)), "gender")


# ------------------------------------------------------------- a group with a single voice

def test_single_voice_group_is_undefined(table):
    one = table[(table.gender == "female") | (table.voice_id == table[table.gender == "male"].voice_id.iloc[0])]
    gap = group_gap(one, "gender")
    assert gap.p_value is None and gap.ci is None
    assert "single voice" in gap.undefined and "undefined" in str(gap)
    assert gap.estimates["male"] is not None  # the point estimate is still shown
    assert permutation_test(one, "gender").p_value is None
    assert gee_test(one, "gender").undefined
    rates = group_rates(one, "gender").set_index("gender")
    assert np.isnan(rates.loc["male", "ci_low"]) and "single voice" in rates.loc["male", "note"]
    assert not np.isnan(rates.loc["female", "ci_low"])
    json.dumps(gap.to_dict())


def test_single_voice_group_in_categorical(table):
    one = table[(table.gender == "female") | (table.voice_id == table[table.gender == "male"].voice_id.iloc[0])]
    result = categorical_gap(one.assign(category=np.where(one.correct == 1, "a", "b")), "gender")
    assert result.undefined and "single voice" in result.undefined and not result.tests


def test_only_one_group_is_undefined(table):
    assert "only one group" in group_gap(table[table.gender == "female"], "gender").undefined


# ------------------------------------------------------------- all-identical outcomes

def test_all_identical_outcomes_are_undefined(table):
    same = table.assign(correct=1.0, status="valid")
    gap = group_gap(same, "gender")
    assert gap.p_value is None and "identical" in gap.undefined
    assert gap.gap == 0.0
    assert permutation_test(same, "gender").undefined
    assert gee_test(same, "gender").undefined
    assert mcnemar_by_item(same, "gender").p_value is None
    assert "no variation" in cochran_q_by_item(same, "ethnicity").undefined
    assert categorical_gap(same.assign(category="nurse"), "gender").undefined
    assert numeric_gap(same.assign(value=3.0), "gender").undefined


# ------------------------------------------------------------- NaNs

def test_nan_outcomes_are_excluded_and_counted(table):
    rng = np.random.default_rng(0)
    holes = table.copy()
    drop = rng.random(len(holes)) < 0.2
    holes.loc[drop, "status"] = "refusal"
    holes.loc[drop, "correct"] = np.nan
    rates = group_rates(holes, "gender").set_index("gender")
    expected = holes.groupby("gender")["status"].apply(lambda s: (s != "valid").mean())
    assert rates["invalid_rate"].to_dict() == pytest.approx(expected.to_dict())
    assert (rates["n_refusal"] == holes[drop].groupby("gender").size()).all()
    valid_mean = holes.dropna().groupby(["gender", "voice_id"])["correct"].mean().groupby(level=0).mean()
    assert rates["rate"].to_dict() == pytest.approx(valid_mean.to_dict())
    gap = group_gap(holes, "gender", n_permutations=499)
    assert gap.p_value is not None and gap.invalid_rate == pytest.approx(expected.to_dict())


def test_voice_with_no_valid_answer_is_left_out_with_a_note(table):
    voice = table.voice_id.iloc[0]
    holes = table.assign(correct=table.correct.where(table.voice_id != voice),
                         status=table.status.where(table.voice_id != voice, "invalid"))
    gap = group_gap(holes, "gender", n_permutations=499)
    assert any(voice in note for note in gap.notes)
    assert gap.n_voices_by_group == {"female": 6, "male": 6}  # counted, though not in the estimate
    assert gap.p_value is not None


def test_all_nan_outcomes_are_undefined(table):
    empty = table.assign(correct=np.nan, status="invalid")
    gap = group_gap(empty, "gender")
    assert gap.gap is None and "no valid" in gap.undefined
    assert group_rates(empty, "gender")["invalid_rate"].eq(1.0).all()


def test_valid_status_without_outcome_is_noted(table):
    odd = table.copy()
    odd.loc[odd.index[:3], "correct"] = np.nan
    assert any("status 'valid' but no correct" in note for note in group_gap(odd, "gender").notes)


def test_nan_pvalues_are_left_out_of_the_family():
    assert correct_pvalues([0.01, float("nan")], method="bh").left_out == ["1"]


def test_bad_options(table):
    with pytest.raises(ValueError, match="nan_policy"):
        group_gap(table, "gender", nan_policy="drop")
    with pytest.raises(ValueError, match="method"):
        correct_pvalues([0.1], method="sidak-ish")
    with pytest.raises(ValueError, match="groups=\\(a, b\\)"):
        mcnemar_by_item(table, "ethnicity")
    with pytest.raises(ValueError, match="'diff' needs exactly two groups"):
        permutation_test(table, "ethnicity", statistic="diff")
    with pytest.raises(ValueError, match="empty|no rows"):
        group_gap(table.iloc[:0], "gender")
    with pytest.raises(TypeError):
        group_gap(table.to_dict(), "gender")


def test_mcnemar_without_discordant_items_is_undefined():
    rows = [dict(item_id=f"q{i}", voice_id=f"{g}{v}", gender=g, status="valid", correct=float(i % 2))
            for g in "fm" for v in range(3) for i in range(6)]
    assert "no discordant" in mcnemar_by_item(pd.DataFrame(rows), "gender").undefined
