"""The response store: atomic batches, no duplicates, schema checks."""

import sqlite3

import pytest

from biasbench.errors import BiasbenchError
from biasbench.store import PROMPT_COLUMNS, ResponseStore, RunDir, StoredResponse


def response(key, correct=1.0, status="valid"):
    return StoredResponse(request_key=key, item_id="i1", voice_id="v1", condition="audio", sample_index=0, prompt_hash="p",
                          audio_key="a", audio_seconds=1.5, audio_truncated=0, response_text="B",
                          option_logprobs=None, answer="B", target="B", status=status, correct=correct, value=None,
                          latency_s=0.1, n_input_tokens=10)


def test_a_key_is_stored_once(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    assert store.add([response("k1"), response("k2")]) == 2
    assert store.add([response("k2"), response("k3")]) == 1  # k2 again: ignored
    assert store.count() == 3 and store.done_keys() == {"k1", "k2", "k3"}
    frame = store.to_frame()
    assert frame["request_key"].is_unique and frame["created_at"].str.len().min() > 0


def test_every_field_lands_in_its_column(tmp_path):
    full = StoredResponse(request_key="k", item_id="i", voice_id="v", condition="text", sample_index=2, prompt_hash="p",
                          audio_key="a", audio_seconds=1.5, audio_truncated=1, response_text="t",
                          option_logprobs='{"A": -0.1}', answer="A", target="B", status="valid", correct=0.0,
                          value=3.5, latency_s=0.25, n_input_tokens=7, transcript="heard", cer=0.125,
                          created_at="2020-01-01T00:00:00+00:00")
    store = ResponseStore(tmp_path / "r.sqlite")
    store.add([full, response("now")])
    rows = store.to_frame().set_index("request_key")
    stored = {name: value for name, value in rows.loc["k"].to_dict().items() if name not in PROMPT_COLUMNS}
    assert stored == {name: value for name, value in vars(full).items() if name != "request_key"}
    assert rows.loc["now", "created_at"] > "2020"  # left empty: stamped at write time


def test_an_answer_replaces_its_slots_placeholder_and_nothing_else(tmp_path):
    """Issue 15 #1: a synthesis_failed row (no audio, so another key) and its retry's answer
    must not both stay: one row per (item, voice, condition, sample)."""
    store = ResponseStore(tmp_path / "r.sqlite")
    other_voice = response("other", status="synthesis_failed")
    other_voice.voice_id = "v2"
    store.add([response("failed", status="synthesis_failed"), other_voice])
    assert store.add([response("retried")], supersedes="synthesis_failed") == 1
    frame = store.to_frame()
    assert sorted(frame["request_key"]) == ["other", "retried"]  # v2's placeholder stays


def test_placeholders_beside_answers_left_by_older_stores_are_dropped(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    store.add([response("failed", status="synthesis_failed"), response("answered")])
    assert store.drop_superseded("synthesis_failed") == 1
    assert store.done_keys() == {"answered"}


def test_store_survives_reopen(tmp_path):
    ResponseStore(tmp_path / "r.sqlite").add([response("k1", correct=None, status="invalid")])
    frame = ResponseStore(tmp_path / "r.sqlite").to_frame()
    assert frame.loc[0, "status"] == "invalid" and frame["correct"].isna().all()


def test_store_from_another_schema_is_refused(tmp_path):
    ResponseStore(tmp_path / "r.sqlite").close()
    db = sqlite3.connect(tmp_path / "r.sqlite")
    with db:
        db.execute("UPDATE meta SET value='0' WHERE key='schema_version'")
    db.close()
    with pytest.raises(BiasbenchError, match="schema 0"):
        ResponseStore(tmp_path / "r.sqlite")


def test_run_dir_manifest_roundtrip_and_errors(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(BiasbenchError, match="not a biasbench run"):
        run.read_manifest()
    run.create({"run_id": "x", "n": 1})
    assert run.read_manifest() == {"run_id": "x", "n": 1}
    run.manifest_path.write_text("{broken")
    with pytest.raises(BiasbenchError, match="not valid JSON"):
        run.read_manifest()


def test_what_was_asked_is_stored_once_per_prompt_and_joined_to_every_answer(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    store.add([response("k1"), response("k2")])  # both answer prompt "p"
    store.add_prompts({"p": ("Which planet is largest? A. Mars B. Jupiter", "Answer with the letter.")})
    store.add_prompts({"p": ("changed", "ignored")})  # kept once: a prompt hash names its text
    frame = store.to_frame()
    assert frame["spoken_text"].tolist() == ["Which planet is largest? A. Mars B. Jupiter"] * 2
    assert frame["text_prompt"].tolist() == ["Answer with the letter."] * 2
    assert store.db.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == 1


def test_a_store_from_before_the_prompts_table_still_reads(tmp_path):
    ResponseStore(tmp_path / "r.sqlite").add([response("k1")])
    db = sqlite3.connect(tmp_path / "r.sqlite")
    with db:
        db.execute("DROP TABLE prompts")  # as a store written before it existed
    db.close()
    store = ResponseStore(tmp_path / "r.sqlite")
    frame = store.to_frame()
    assert frame.loc[0, "status"] == "valid" and frame["spoken_text"].isna().all()
    store.add_prompts({"p": ("spoken", "prompt")})  # a resumed run fills it in
    assert store.to_frame().loc[0, "spoken_text"] == "spoken"
