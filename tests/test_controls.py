"""The two controls: the ASR cascade (tiny Whisper -> tiny Qwen2 text LLM) and `text:<model>`."""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd
import pytest

from biasbench.errors import BiasbenchError
from biasbench.models.base import Request
from conftest import write

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from biasbench.models.cascade import CascadeBackend, transcript_prompt  # noqa: E402
from biasbench.models.registry import load_backend, resolve_model  # noqa: E402
from biasbench.models.text_control import TextOnlyBackend  # noqa: E402
from biasbench.models.tiny.controls import (  # noqa: E402
    TINY_WHISPER_NAME,
    build_tiny_whisper,
    tiny_text_llm_path,
    tiny_whisper_path,
)

from conftest import LETTERS, clip  # noqa: E402
from conftest import gen as _gen  # noqa: E402
from conftest import mc as _mc  # noqa: E402

SR = 16000
PROMPT = "Answer the spoken question with A, B, C or D."


def mc(rid, seconds, seed=0, choices=LETTERS, prompt=PROMPT):
    return _mc(rid, seconds, seed, choices, prompt)


def gen(rid, seconds, seed=0):
    return _gen(rid, seconds, seed, prompt=PROMPT)






@pytest.fixture(scope="module")
def cascade(biasbench_cache):
    # A short ASR budget keeps the random tiny Whisper (which rarely stops by itself) fast.
    return CascadeBackend(str(tiny_whisper_path()), str(tiny_text_llm_path()), local_files_only=True,
                          asr_max_new_tokens=8)


def logsumexp(values) -> float:
    return float(torch.logsumexp(torch.tensor(list(values), dtype=torch.float64), 0))


# ---------------------------------------------------------------- tiny builders


def test_tiny_parts_are_real_classes_cached_once(cascade, biasbench_cache):
    from transformers import Qwen2ForCausalLM, WhisperForConditionalGeneration, WhisperProcessor

    assert tiny_whisper_path() == biasbench_cache / "models" / TINY_WHISPER_NAME
    assert tiny_text_llm_path().parent == biasbench_cache / "models"
    assert not [p for p in (biasbench_cache / "models").iterdir() if "-building-" in p.name]
    assert isinstance(cascade.asr.model, WhisperForConditionalGeneration)
    assert isinstance(cascade.asr.processor, WhisperProcessor)
    assert isinstance(cascade.llm.model, Qwen2ForCausalLM)
    assert cascade.llm.tokenizer.padding_side == "left"
    assert cascade.max_audio_seconds == 30.0  # Whisper's window, as in whisper-large-v3
    for letter in LETTERS:
        assert len(cascade.llm.option_ids(letter)) == 2  # "A" and " A"


def test_tiny_whisper_build_is_deterministic(tmp_path):
    def digest(folder):
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    a, b = build_tiny_whisper(tmp_path / "a"), build_tiny_whisper(tmp_path / "b")
    c = build_tiny_whisper(tmp_path / "c", seed=1)
    assert digest(a) == digest(b) != digest(c)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


# ---------------------------------------------------------------- cascade


def test_each_clip_gets_its_own_transcript(cascade):
    requests = [mc("a0", 1.0, 0), mc("a1", 2.0, 1), mc("a2", 3.0, 2), mc("t", None)]
    responses = cascade.score_choices(requests)
    assert [r.request_id for r in responses] == ["a0", "a1", "a2", "t"]
    transcripts = [r.transcript for r in responses]
    assert all(isinstance(t, str) and t for t in transcripts[:3])
    assert transcripts[3] is None  # a text-only request skips the ASR
    assert len(set(transcripts[:3])) > 1  # different clips, different (noise) transcripts
    assert cascade.asr.transcribe([clip(2.0, 1)]) == [transcripts[1]]


def test_scored_choices_are_a_log_distribution(cascade):
    for r in cascade.score_choices([mc("q", 2.0), mc("q3", 1.5, 3, choices="ABC")]):
        lp = r.option_logprobs
        assert list(lp) == list(r.request_id == "q" and LETTERS or "ABC")
        assert all(v <= 0 for v in lp.values())
        assert math.isclose(logsumexp(lp.values()), 0.0, abs_tol=1e-6)
        assert r.text == max(lp, key=lp.get)
        assert r.n_input_tokens > 0 and r.n_output_tokens == 0 and r.latency_s > 0


def test_batched_equals_single(cascade):
    requests = [mc("a", 1.0, 0), mc("b", 2.5, 1), mc("t", None), mc("c", 1.7, 2)]
    cascade._transcripts.clear()  # batched and single ASR both run, not the transcript cache
    batched = cascade.score_choices(requests)
    single = []
    for r in requests:
        cascade._transcripts.clear()
        single += cascade.score_choices([r])
    for b, s in zip(batched, single):
        assert b.transcript == s.transcript and b.text == s.text
        for letter in LETTERS:
            assert b.option_logprobs[letter] == pytest.approx(s.option_logprobs[letter], abs=1e-5)
    cascade._transcripts.clear()
    generated = cascade.generate([gen("g0", 1.0, 0), gen("g1", 2.0, 1)])
    alone = [cascade.generate([gen(f"g{i}", s, i)])[0] for i, s in enumerate([1.0, 2.0])]
    assert [g.text for g in generated] == [a.text for a in alone]
    assert [g.transcript for g in generated] == [a.transcript for a in alone]
    assert all(0 < g.n_output_tokens <= 6 for g in generated)


def test_a_clip_heard_again_reuses_its_transcript(cascade, monkeypatch):
    heard = []
    real = cascade.asr.transcribe
    monkeypatch.setattr(cascade.asr, "transcribe", lambda clips: heard.append(len(clips)) or real(clips))
    cascade._transcripts.clear()
    first = cascade.score_choices([mc("a", 1.0, 5), mc("a-again", 1.0, 5), mc("b", 1.2, 6)])
    again = cascade.generate([gen("a", 1.0, 5)])  # e.g. another sample of the same item and voice
    assert heard == [2, 0]  # two distinct clips, once each
    assert first[0].transcript == first[1].transcript == again[0].transcript


def test_the_llm_reads_the_transcript_in_place_of_the_audio(cascade, monkeypatch):
    """The cascade's answer to a clip == the LLM's answer to its transcript as text (the text
    control's layout): what the cascade hears reaches the LLM, and nothing else does."""
    monkeypatch.setattr(cascade.asr, "transcribe", lambda clips: [f"heard clip {i}" for i in range(len(clips))])
    cascade._transcripts.clear()
    via_audio = cascade.score_choices([mc("a0", 1.0, 0), mc("a1", 2.0, 1)])
    as_text = cascade.score_choices([mc("t0", None, prompt=transcript_prompt("heard clip 0", PROMPT)),
                                     mc("t1", None, prompt=transcript_prompt("heard clip 1", PROMPT))])
    for a, t in zip(via_audio, as_text):
        assert a.transcript.startswith("heard clip") and t.transcript is None
        for letter in LETTERS:
            assert a.option_logprobs[letter] == pytest.approx(t.option_logprobs[letter], abs=1e-5)
    assert transcript_prompt("the question", "Answer.") == "the question\nAnswer."


def test_bad_audio_is_refused(cascade):
    with pytest.raises(ValueError, match="longer than"):
        cascade.score_choices([mc("long", 31.0)])
    with pytest.raises(ValueError, match="Hz"):
        cascade.score_choices([Request("sr", PROMPT, audio=clip(1.0), sampling_rate=8000, choices=LETTERS)])


def test_fingerprint_covers_both_parts(cascade, tmp_path):
    fp = cascade.fingerprint()
    assert fp["backend"] == "cascade"
    assert fp["asr"]["model"] == str(tiny_whisper_path()) and fp["llm"]["model"] == str(tiny_text_llm_path())
    assert fp["asr"]["local_sha256"] and fp["llm"]["local_sha256"]
    assert fp["asr"]["language"] == "en" and fp["asr"]["max_new_tokens"] == 8
    other_asr = build_tiny_whisper(tmp_path / "whisper-seed1", seed=1)
    other = CascadeBackend(str(other_asr), str(tiny_text_llm_path()), local_files_only=True, asr_max_new_tokens=8)
    assert other.fingerprint()["llm"] == fp["llm"]
    assert other.fingerprint()["asr"]["local_sha256"] != fp["asr"]["local_sha256"]
    json.dumps(fp)  # goes into the manifest as is


def test_cascade_specs_resolve_and_load(biasbench_cache):
    choice = resolve_model("cascade:tiny-whisper+tiny-qwen2-text")
    assert choice.backend == "cascade" and choice.pipeline_check
    assert choice.parts == ("builtin:tiny-whisper", "builtin:tiny-qwen2-text")
    backend = load_backend(choice)
    assert isinstance(backend, CascadeBackend)
    assert backend.fingerprint()["asr"]["model"] == str(tiny_whisper_path())

    real = resolve_model("cascade:hf:openai/whisper-large-v3+Qwen/Qwen2-7B-Instruct")  # hub ids: no check
    assert real.parts == ("openai/whisper-large-v3", "Qwen/Qwen2-7B-Instruct") and not real.pipeline_check
    # Aliases of real models are checked (offline in tests): refused, or a labelled tiny stand-in.
    with pytest.raises(BiasbenchError, match="--offline-fallback"):
        resolve_model("cascade:whisper-large-v3+qwen2-7b-instruct")
    fallback = resolve_model("cascade:whisper-large-v3+qwen2-7b-instruct", offline_fallback=True)
    assert fallback.parts == ("builtin:tiny-whisper", "builtin:tiny-qwen2-text")
    assert fallback.name == "cascade:tiny-whisper+tiny-qwen2-text"
    assert fallback.pipeline_check and "PIPELINE CHECK" in fallback.note
    for bad, message in [("cascade:tiny-whisper", "cascade:<asr>"), ("cascade:tiny-qwen2-text+tiny-whisper", "text-llm"),
                         ("cascade:tiny-whisper+nonsense", "unknown text-llm")]:
        with pytest.raises(BiasbenchError, match=message):
            resolve_model(bad)
    with pytest.raises(BiasbenchError, match="revision"):
        load_backend(choice, revision="main")


# ---------------------------------------------------------------- text control

MC_TASK = """
task: toy_mc
dataset: {local: {path: mc.csv}}
doc_to_text: "{{ question }}{% for option in choices %} {{ letters[loop.index0] }}: {{ option }}.{% endfor %}"
instruction: "Reply with the letter of the correct option only."
doc_to_choice: choices
doc_to_target: "{{ answer }}"
output_type: multiple_choice
scoring: logprobs
metrics: [accuracy]
"""


def test_text_spec_resolves_to_the_same_model_text_only():
    choice = resolve_model("text:tiny-qwen2audio")
    assert choice.text_only and choice.backend == "hf" and choice.model == "builtin:tiny-qwen2audio"
    assert choice.name == "text:tiny-qwen2audio" and choice.pipeline_check and "TEXT CONTROL" in choice.note
    assert not resolve_model("tiny-qwen2audio").text_only
    for bad in ["text:", "text:cascade:tiny-whisper+tiny-qwen2-text", "text:text:tiny-qwen2audio"]:
        with pytest.raises(BiasbenchError):
            resolve_model(bad)


def test_text_control_refuses_audio():
    class Echo:
        max_audio_seconds = 30.0

        def fingerprint(self):
            return {"backend": "echo"}

        def score_choices(self, requests):
            return ["scored"] * len(requests)

    wrapped = TextOnlyBackend(Echo())
    assert wrapped.fingerprint() == {"backend": "echo", "control": "text"}
    assert wrapped.max_audio_seconds is None
    assert wrapped.score_choices([mc("t", None)]) == ["scored"]
    with pytest.raises(ValueError, match="takes no audio"):
        wrapped.score_choices([mc("a", 1.0)])


def test_text_control_run_has_only_text_rows_and_synthesises_nothing(tmp_path, biasbench_cache, monkeypatch):
    from biasbench.runner import TEXT_CONTROL_VOICE, RunOptions, run

    def no_tts(name):
        raise AssertionError(f"the text control must not synthesise (asked for TTS backend {name!r})")

    monkeypatch.setattr("biasbench.tts.synthesis.get_tts_backend", no_tts)
    write(tmp_path / "mc.csv", 'item_id,question,choices,answer\n'
                               'q1,Is water wet?,"[""yes"", ""no"", ""maybe""]",0\n'
                               'q2,What is two plus two?,"[""three"", ""four"", ""five"", ""six""]",1\n')
    task = write(tmp_path / "toy_mc.yaml", MC_TASK)
    audio_cache = tmp_path / "audio-cache"
    result = run(RunOptions(task=str(task), model="text:tiny-qwen2audio", output_dir=tmp_path / "runs",
                            audio_cache=audio_cache, progress=False))
    tidy = pd.read_parquet(result.run_dir / "responses.parquet")
    assert len(tidy) == 2 and result.n_total == 2
    assert set(tidy.condition) == {"text"} and set(tidy.voice_id) == {TEXT_CONTROL_VOICE}
    assert set(tidy.status) == {"valid"} and tidy["audio_key"].isna().all()
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["synthesis"]["made"] == 0 and manifest["synthesis"]["reused"] == 0
    assert manifest["model"]["fingerprint"]["control"] == "text"
    assert manifest["model"]["requested"] == "text:tiny-qwen2audio" and manifest["complete"] is True
    clips = [p for p in audio_cache.rglob("*") if p.is_file()] if audio_cache.exists() else []
    assert not [p for p in clips if p.suffix in (".wav", ".flac", ".npy")]
    assert "Text-only control" in (result.run_dir / "summary.md").read_text()
