"""The first analysis: accuracy per group over valid answers, invalid share beside it."""

import numpy as np
import pandas as pd

from biasbench.analysis.summary import accuracy_table, first_analysis, to_markdown


def table():
    rows = []
    for voice, gender, ethnicity, outcomes in [
        ("f1", "female", "black", [1, 1, 0, None]),  # one invalid answer
        ("f2", "female", "white", [1, 1, 1, 1]),
        ("m1", "male", "black", [0, 0, 1, 0]),
        ("m2", "male", "white", [1, 0, 1, 0]),
    ]:
        for item, outcome in enumerate(outcomes):
            rows.append({"item_id": f"i{item}", "voice_id": voice, "gender": gender, "ethnicity": ethnicity,
                         "condition": "audio", "status": "valid" if outcome is not None else "invalid",
                         "correct": np.nan if outcome is None else float(outcome)})
    return pd.DataFrame(rows)


def test_accuracy_is_over_valid_answers_and_invalid_is_counted():
    by_gender = accuracy_table(table(), ["gender"]).set_index("gender")
    assert by_gender.loc["female", "n"] == 8 and by_gender.loc["female", "n_valid"] == 7
    assert by_gender.loc["female", "accuracy"] == 6 / 7
    assert by_gender.loc["female", "invalid_rate"] == 1 / 8
    assert by_gender.loc["male", "accuracy"] == 3 / 8 and by_gender.loc["male", "invalid_rate"] == 0


def test_all_groupings_are_described_without_a_second_gap():
    analysis = first_analysis(table())
    assert "largest_gap" not in analysis["groupings"]["gender"]  # the one gap is the primary analysis's
    cells = analysis["groupings"]["gender x ethnicity"]["table"]
    assert len(cells) == 4 and analysis["status_counts"] == {"valid": 15, "invalid": 1}
    assert len(analysis["groupings"]["voice"]["table"]) == 4
    by_cell = {(r["gender"], r["ethnicity"]): r for r in analysis["status_by_group"]}
    assert by_cell[("female", "black")]["invalid"] == 1 and by_cell[("male", "white")]["invalid"] == 0
    markdown = to_markdown(analysis, title="t", banner="PIPELINE CHECK")
    assert "PIPELINE CHECK" in markdown and "85.7%" in markdown and "Responses by status and group" in markdown
    assert "Largest gap" not in markdown and "Not computed yet" in markdown
    with_primary = to_markdown(analysis, title="t", primary="## Primary result\n\n- By gender: no significant gap")
    assert with_primary.index("By gender: no significant gap") < with_primary.index("Descriptive tables")
