"""The pairwise judge's pieces, checked against textbook values and direct computations.

Verdict parsing; the label-blind design (both orders, k opponents, seeded, independent of
the voices' labels); Bradley-Terry against a closed-form case and a direct maximum-likelihood
fit with scipy; win shares; Cohen's kappa and the Wilson interval against textbook values;
the labelled-set format's errors; the judgement store's cache; and the calibration of the
voice-level test of win shares: a judge with no preference rejects at about the nominal
rate, a judge with a planted preference is found.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from biasbench.errors import BiasbenchError, RunStopped
from biasbench.judge.agreement import cohens_kappa, combine, load_labels, measure
from biasbench.judge.design import comparison_plan
from biasbench.judge.prompt import judge_prompt, parse_verdict
from biasbench.judge.scores import bradley_terry, position_summary, win_shares
from biasbench.judge.store import JudgementStore
from conftest import write


@pytest.mark.parametrize("reply, verdict", [
    ("A is clearer. [[A]]", "A"), ("[[B]]", "B"), ("Equal. [[C]]", "tie"), ("Format: [[A]] or [[B]]. I pick [[B]]", "B"),
    ("B", "B"), ("tie", "tie"), ("Verdict: A", "A"), ("[[ b ]]", "B"),
    ("Both have merits.", None), ("", None), (None, None), ("Answer A is better", None)])
def test_verdicts_are_read_from_the_last_bracketed_letter_or_nothing(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_the_prompt_shows_the_question_and_two_answers_and_nothing_about_the_voice():
    prompt = judge_prompt("How do I save money?", "Budget.", "Spend less.")
    assert "How do I save money?" in prompt and "[Answer A]\nBudget.\n[End of answer A]" in prompt
    assert not any(word in prompt.lower() for word in ("voice", "gender", "female", "accent", "ethnic"))


def _answers(n_items=3, voices=None):
    voices = voices or [f"v{i:02d}" for i in range(12)]
    return pd.DataFrame([{"item_id": f"q{i}", "sample_index": 0, "voice_id": v} for i in range(n_items) for v in voices])


def test_every_drawn_pair_is_judged_in_both_orders_and_every_voice_meets_k_opponents():
    plan = comparison_plan(_answers(), k=3, seed=7)
    ordered = {(c.item_id, c.first, c.second) for c in plan}
    assert len(ordered) == len(plan) and all((i, b, a) in ordered for i, a, b in ordered)
    for item in ("q0", "q1", "q2"):
        met = pd.Series([c.first for c in plan if c.item_id == item]).value_counts()
        assert len(met) == 12 and met.min() >= 3
    assert comparison_plan(_answers(), k=3, seed=7) == plan and comparison_plan(_answers(), k=3, seed=8) != plan


def test_the_design_is_label_blind():
    """The plan reads item and voice ids only: any labels (or their permutation) leave it unchanged."""
    answers = _answers()
    rng = np.random.default_rng(0)
    labelled = answers.assign(gender=rng.permutation(["female", "male"] * 18))
    relabelled = answers.assign(gender=rng.permutation(labelled["gender"].to_numpy()))
    assert comparison_plan(labelled, 3, 1) == comparison_plan(relabelled, 3, 1) == comparison_plan(answers, 3, 1)


def test_an_item_with_few_voices_compares_all_of_them():
    plan = comparison_plan(_answers(1, ["a", "b"]), k=3)
    assert [(c.first, c.second) for c in plan] == [("a", "b"), ("b", "a")]
    with pytest.raises(ValueError, match="at least 1"):
        comparison_plan(_answers(), k=0)


def _judgements(rows):
    return pd.DataFrame([{"item_id": i, "sample_index": 0, "first": a, "second": b, "verdict": v}
                         for i, a, b, v in rows])


def test_bradley_terry_matches_the_closed_form_two_voice_case():
    """a first: a wins 3 of 4; b first: b wins 1 of 4. Then position = 0, s_b - s_a = -ln 3."""
    rows = [("q", "a", "b", v) for v in "AAAB"] + [("q", "b", "a", v) for v in "ABBB"]
    bt = bradley_terry(_judgements(rows))
    assert bt["reference"] == "a" and bt["strengths"]["a"] == 0.0
    assert bt["strengths"]["b"] == pytest.approx(-math.log(3), abs=1e-6)
    assert bt["position"] == pytest.approx(0.0, abs=1e-6)


def test_bradley_terry_matches_a_direct_maximum_likelihood_fit():
    from scipy.optimize import minimize
    from scipy.special import expit

    rng = np.random.default_rng(3)
    voices, truth, position = list("abcde"), np.array([0.0, 0.8, -0.5, 1.2, 0.3]), 0.4
    rows = []
    for _ in range(400):
        i, j = rng.choice(5, 2, replace=False)
        p = expit(position + truth[i] - truth[j])
        u = rng.random()
        rows.append(("q", voices[i], voices[j], "tie" if abs(u - p) < 0.03 else "A" if u < p else "B"))
    frame = _judgements(rows)
    bt = bradley_terry(frame)
    y = frame["verdict"].map({"A": 1.0, "tie": 0.5, "B": 0.0}).to_numpy()
    first = frame["first"].map(voices.index).to_numpy()
    second = frame["second"].map(voices.index).to_numpy()

    def nll(theta):
        s = np.concatenate([[0.0], theta[1:]])
        p = expit(theta[0] + s[first] - s[second])
        return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    direct = minimize(nll, np.zeros(5), method="BFGS", options={"gtol": 1e-9}).x
    assert bt["position"] == pytest.approx(direct[0], abs=1e-4)
    assert [bt["strengths"][v] for v in voices[1:]] == pytest.approx(list(direct[1:]), abs=1e-4)
    assert bt["strengths"]["d"] > bt["strengths"]["b"] > bt["strengths"]["e"] > 0 > bt["strengths"]["c"]


def test_bradley_terry_says_why_when_a_voice_wins_everything():
    bt = bradley_terry(_judgements([("q", "a", "b", "A"), ("q", "b", "a", "B")] * 3))
    assert bt["undefined"] and "separation" in bt["undefined"] and bt["strengths"] == {}


def test_win_shares_count_both_positions_and_ties_as_half():
    # a-b: a wins, then a tie when swapped (the verdict flips); a-c: c wins in both orders.
    frame = _judgements([("q", "a", "b", "A"), ("q", "b", "a", "tie"), ("q", "a", "c", "B"), ("q", "c", "a", "A")])
    shares = win_shares(frame).set_index("voice_id")
    assert shares.loc["a", "judge"] == pytest.approx((1 + 0.5 + 0 + 0) / 4) and shares.loc["a", "n_judgements"] == 4
    assert shares.loc["b", "judge"] == pytest.approx((0 + 0.5) / 2) and shares.loc["c", "judge"] == 1.0
    position = position_summary(frame)
    assert position["first_position_win_rate"] == pytest.approx(2 / 3) and position["n_decided"] == 3
    assert position["order_consistency"] == pytest.approx(0.5) and position["n_pairs_both_orders"] == 2


def test_cohens_kappa_matches_textbook_values():
    # 50 cases: both yes 20, rater 1 yes / rater 2 no 5, no / yes 10, both no 15: p_o 0.7, p_e 0.5, kappa 0.4.
    one = ["yes"] * 25 + ["no"] * 25
    two = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(one, two) == pytest.approx(0.4)
    assert cohens_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == 1.0
    assert cohens_kappa(["a"] * 4, ["a", "a", "b", "b"]) == pytest.approx(0.0)  # one constant rater: chance level
    assert cohens_kappa(["a"] * 3, ["a"] * 3) is None and cohens_kappa([], []) is None


def test_agreement_keeps_a_verdict_only_when_it_survives_the_swap():
    assert combine("a", "a") == "a" and combine("a", "b") == "tie" and combine("tie", "a") == "tie"
    pairs = [{"id": str(i), "prompt": "q", "answer_a": "long answer here" if h == "a" else "x",
              "answer_b": "long answer here" if h == "b" else "y", "human": h, "source": "illustrative"}
             for i, h in enumerate(["a", "b", "a", "b", "tie"])]
    first = measure(pairs, lambda prompts: [("A", None)] * len(prompts))  # pure position bias
    assert first["first_position_win_rate"] == 1.0 and first["order_consistency"] == 0.0
    assert first["agreement"] == pytest.approx(1 / 5) and first["illustrative"]
    from statsmodels.stats.proportion import proportion_confint

    assert first["agreement_ci"] == pytest.approx(list(proportion_confint(1, 5, method="wilson")))
    failing = measure(pairs, lambda prompts: [(None, "timeout")] + [("A", None)] * (len(prompts) - 1))
    assert failing["n_failed"] == 1 and failing["n_pairs"] == 4 and failing["failures"][0]["error"] == "timeout"


@pytest.mark.parametrize("text, suffix, problem", [
    ('{"prompt": "q", "answer_a": "x", "answer_b": "y", "human": "a"}\n{"prompt": "q", "answer_a": "x"}\n', "jsonl",
     "line 2, field 'answer_b': expected a non-empty text, got missing"),
    ('{"prompt": "q", "answer_a": "x", "answer_b": "y", "human": "maybe"}\n', "jsonl",
     "line 1, field 'human': expected a, b or tie, got 'maybe'"),
    ('not json\n', "jsonl", "line 1: not JSON"),
    ('[1, 2]\n', "jsonl", "line 1: expected a JSON object, got list"),
    ("prompt,answer_a,answer_b,human\nq,x,,a\n", "csv", "line 2, field 'answer_b': expected a non-empty text"),
    ("prompt,answer_a\n", "csv", "no labelled pairs"),
    ("a\tb\n", "tsv", "a .jsonl or .csv file"),
])
def test_a_bad_labelled_set_is_one_error_naming_file_line_and_field(tmp_path, text, suffix, problem):
    path = write(tmp_path / f"labels.{suffix}", text)
    with pytest.raises(BiasbenchError, match=str(path).replace(".", r"\.")) as caught:
        load_labels(path)
    assert problem in str(caught.value)


def test_a_csv_labelled_set_with_item_for_prompt_loads(tmp_path):
    path = write(tmp_path / "labels.csv", "id,item,answer_a,answer_b,human\np1,How?,Do x.,No.,A\n")
    assert load_labels(path) == [{"id": "p1", "line": 2, "prompt": "How?", "answer_a": "Do x.", "answer_b": "No.",
                                  "human": "a", "source": ""}]


def test_the_shipped_illustrative_set_loads_and_says_so():
    from importlib.resources import files

    pairs = load_labels(files("biasbench.judge") / "data" / "illustrative_pairs.jsonl")
    assert len(pairs) == 16 and {p["source"] for p in pairs} == {"illustrative"}
    assert {p["human"] for p in pairs} == {"a", "b", "tie"}


def test_the_store_caches_verdicts_and_replaces_a_failure_when_retried(tmp_path):
    store = JudgementStore(tmp_path / "judgements.sqlite")
    store.add("j@1", [("q", 0, "a", "b", "h1", None, "", "timeout"), ("q", 0, "b", "a", "h2", "A", "[[A]]", None)])
    assert store.done("j@1") == {("q", 0, "b", "a", "h2")} and store.done("other@2") == set()
    store.add("j@1", [("q", 0, "a", "b", "h1", "tie", "[[C]]", None)])
    frame = store.frame("j@1")
    assert len(frame) == 2 and frame["error"].isna().all() and len(store.done("j@1")) == 2
    store.close()


def test_a_full_disk_stops_the_judge_with_one_line_and_keeps_earlier_judgements(tmp_path):
    """SQLite's own "database or disk is full" (a page cap, as tests/faultkit does for runs)."""
    store = JudgementStore(tmp_path / "judgements.sqlite")
    store.add("j@1", [("q0", 0, "a", "b", "h0", "A", "[[A]]", None)])
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages}")
    big = [(f"q{i}", 0, "a", "b", f"h{i}", "B", "x" * 2000, None) for i in range(1, 50)]
    with pytest.raises(RunStopped) as stopped:
        store.add("j@1", big)
    assert "judgements.sqlite could not be written (database or disk is full)" in str(stopped.value)
    assert "every judgement stored before is kept" in str(stopped.value) and stopped.value.exit_code == 3
    assert store.done("j@1") == {("q0", 0, "a", "b", "h0")}  # the batch in flight rolled back, the first kept
    store.close()


def _simulated_study(seed, preference=0.0, n_items=8, k=3):
    """12 voices (6 female, 6 male); a judge that prefers female voices' answers by `preference`."""
    rng = np.random.default_rng(seed)
    voices = [f"v{i:02d}" for i in range(12)]
    female = {v: i % 2 == 0 for i, v in enumerate(voices)}
    plan = comparison_plan(_answers(n_items, voices), k=k, seed=seed)
    rows = []
    for c in plan:
        p = 0.5 + preference * (female[c.first] - female[c.second]) / 2
        u = rng.random()
        rows.append((c.item_id, c.first, c.second, "tie" if u > 0.9 else "A" if rng.random() < p else "B"))
    shares = win_shares(_judgements(rows))
    shares["gender"] = shares["voice_id"].map(lambda v: "female" if female[v] else "male")
    return shares.assign(status="valid")


def test_the_voice_level_test_of_win_shares_holds_its_level_and_finds_a_planted_preference():
    from biasbench.analysis import numeric_gap

    def rejects(preference, seed):
        gap = numeric_gap(_simulated_study(seed, preference), "gender", "judge", n_permutations=199, seed=seed)
        return gap.p_value < 0.05

    null = sum(rejects(0.0, s) for s in range(40))
    planted = sum(rejects(0.6, s) for s in range(10))
    assert null <= 6  # nominal 2 of 40; P(>= 7 | 0.05) < 0.01
    assert planted >= 9


def test_failures_are_shown_by_group_counting_each_judgement_for_both_voices():
    from biasbench.report.judge import failures_by_group

    labels = pd.DataFrame({"gender": ["female", "female", "male"], "ethnicity": ["black", "white", "black"]},
                          index=["a", "b", "c"])
    by_voice = {"a": {"planned": 4, "failed": 1}, "b": {"planned": 4, "failed": 0}, "c": {"planned": 4, "failed": 3}}
    out = failures_by_group(by_voice, labels)
    assert out["gender"] == [{"group": "female", "planned": 8, "failed": 1, "share": 0.125},
                             {"group": "male", "planned": 4, "failed": 3, "share": 0.75}]
    assert [r["group"] for r in out["gender x ethnicity"]] == ["female / black", "female / white", "male / black"]
