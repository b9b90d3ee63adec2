"""Zero-shot cloning pools and the F5-TTS backend.

The first half needs no cloning engine: reference clips are checked when a pool is loaded,
reach the backend (and the audio cache key, by content hash) as params, and a bad clip, a
missing transcript or a missing engine fails only the clips of that voice, with a message
naming it. The second half runs F5-TTS's real inference code on a tiny random-weight model
(DiT + CFM, and a Vocos vocoder) built here, so it needs the `cloning` extra (f5-tts with a
torchaudio that matches torch) and is skipped without it.
"""

import hashlib
import importlib
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra
from biasbench.tts import registry
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.cache import AudioCache
from biasbench.tts.synthesis import SynthesisJob, job_key, synthesize_all
from biasbench.voices.pool import check_balance, load_pool, pool_fingerprint
from conftest import PROJECT, clip, write

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."


def write_clip(path: Path, seconds: float = 4.0, seed: int = 0, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), clip(seconds, seed, sr), sr)
    return path


def voice_yaml(vid, clip_path=None, text=REFERENCE_TEXT, backend="f5-tts", extra=""):
    lines = [f"  - id: {vid}", "    gender: female", "    ethnicity: black", "    accent: test",
             "    label_source: self_reported"]
    if clip_path is not None:
        lines.append(f"    reference_clip: {clip_path}")
    if text is not None:
        lines.append(f"    reference_text: {json.dumps(text)}")
    lines.append("    consent: {record: consent/x.pdf, licence: study-only}")
    lines.append(f"    tts: {{backend: {backend}{extra}}}")
    return "\n".join(lines) + "\n"


def write_pool(tmp_path: Path, voices: str, name="pool.yaml") -> Path:
    return write(tmp_path / name, "pool: clone-test\nvoices:\n" + voices)


def load(path: Path):
    pool, _ = load_pool(str(path), allow_unbalanced=True)
    return {v.id: v for v in pool.voices}, pool


# -- references reach the backend as params ---------------------------------------------


def test_reference_clip_is_resolved_against_the_pool_file_and_hashed(tmp_path, monkeypatch):
    ref = write_clip(tmp_path / "study" / "refs" / "a.wav")
    path = write_pool(tmp_path / "study", voice_yaml("a", "refs/a.wav"))
    monkeypatch.chdir(tmp_path)  # relative to the pool file, not the working directory
    voices, pool = load(path)
    params = voices["a"].tts.params
    assert params["reference_audio"] == str(ref.resolve())
    assert params["reference_sha256"] == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert params["reference_text"] == REFERENCE_TEXT and "reference_error" not in params
    # Derived params are not pool fields: the pool hash depends on the YAML only.
    assert "reference_sha256" not in json.dumps(pool.model_dump())
    before = pool_fingerprint(pool, path)["hash"]
    write_clip(ref, seed=3)
    assert pool_fingerprint(load(path)[1], path)["hash"] == before


def test_non_cloning_voices_get_no_reference_params(tmp_path):
    write_clip(tmp_path / "refs" / "a.wav")
    path = write_pool(tmp_path, voice_yaml("a", "refs/a.wav", backend="espeak-ng", extra=", voice: en-us"))
    voices, _ = load(path)
    assert voices["a"].tts.params == {"voice": "en-us"}


def test_shipped_pools_keep_their_params_and_the_template_still_loads():
    pool, _ = load_pool("espeak-default")
    assert not any(key.startswith("reference_") for v in pool.voices for key in v.tts.params)
    template, path = load_pool("cloning-template")
    assert check_balance(template).balanced
    assert {v.tts.backend for v in template.voices} == {"f5-tts"}
    # The template's clips are placeholders: every voice carries the error, none raises here.
    for voice in template.voices:
        message = voice.tts.params["reference_error"]
        assert str(path) in message and repr(voice.id) in message and "'reference_clip'" in message


def test_cache_key_follows_the_reference_clip_bytes(tmp_path):
    ref = write_clip(tmp_path / "refs" / "a.wav", seed=1)
    path = write_pool(tmp_path, voice_yaml("a", "refs/a.wav"))
    cache = AudioCache(tmp_path / "cache")

    def key():
        voices, pool = load(path)
        return job_key(cache, SynthesisJob.speak(voices["a"], "What is two plus two?", pool.loudness_target), "v")

    first = key()
    assert key() == first  # same bytes, same key
    write_clip(ref, seed=2)  # the speaker re-recorded: same path, new audio
    second = key()
    assert second != first
    write_clip(ref, seed=1)
    assert key() == first  # the content, not the file's age, decides


def test_cache_key_follows_the_clip_not_where_the_pool_lies(tmp_path):
    cache = AudioCache(tmp_path / "cache")
    keys = []
    for folder in ("here", "moved"):
        write_clip(tmp_path / folder / "refs" / "a.wav", seed=1)
        voices, pool = load(write_pool(tmp_path / folder, voice_yaml("a", "refs/a.wav")))
        keys.append(job_key(cache, SynthesisJob.speak(voices["a"], "Hello.", pool.loudness_target), "v"))
    assert keys[0] == keys[1]


def test_voices_check_and_list_name_the_unusable_references(tmp_path):
    from typer.testing import CliRunner

    from biasbench.cli import app

    write_clip(tmp_path / "refs" / "good.wav")
    path = write_pool(tmp_path, voice_yaml("good", "refs/good.wav") + voice_yaml("lost", "refs/lost.wav"))
    checked = CliRunner().invoke(app, ["voices", "check", str(path)])
    assert checked.exit_code == 1
    assert "1 voice(s) cannot be cloned" in checked.output
    assert "voice 'lost': field 'reference_clip': file not found" in checked.output
    assert "voice 'good'" not in checked.output
    listed = CliRunner().invoke(app, ["voices", "list", str(path), "--format", "json"])
    assert listed.exit_code == 0
    rows = {row["id"]: row for row in json.loads(listed.output)}
    assert rows["lost"]["reference_clip"].endswith("refs/lost.wav") and rows["lost"]["reference_usable"] == "no"
    assert rows["good"]["reference_clip"].endswith("refs/good.wav") and rows["good"]["reference_usable"] == "yes"
    assert "reference_sha256" not in listed.output  # derived params are not the voice's YAML params


# -- bad reference clips -------------------------------------------------------------------


def _not_audio(path):
    write(path, "this is not a wav file")


def _empty(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.mark.parametrize("make,needle", [
    (None, "file not found"),
    (_not_audio, "not a readable audio file"),
    (_empty, "not a readable audio file"),
    (lambda p: write_clip(p, seconds=0.4), "too short"),
    (lambda p: write_clip(p, seconds=31), "too long"),
    (lambda p: sf.write(str(p), np.zeros(48000, np.float32), 16000), "silent"),
    (lambda p: p.mkdir(parents=True), "not a file"),
])
def test_unusable_reference_clip_is_reported_with_pool_voice_and_field(tmp_path, make, needle):
    target = tmp_path / "refs" / "bad.wav"
    if make is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        make(target)
    path = write_pool(tmp_path, voice_yaml("speaker-7", "refs/bad.wav"))
    voices, _ = load(path)  # loading never fails on a clip: the other voices must still run
    message = voices["speaker-7"].tts.params["reference_error"]
    assert needle in message
    assert str(path) in message and "'speaker-7'" in message and "field 'reference_clip'" in message
    from biasbench.tts.f5 import F5Backend

    with pytest.raises(BiasbenchError) as info:  # before any engine import: works without the extra
        F5Backend().synthesize("What is the capital of France?", voices["speaker-7"].tts.params)
    assert needle in str(info.value) and "'speaker-7'" in str(info.value) and "capital of France" in str(info.value)


@pytest.mark.parametrize("text", ["", "   ", None])
def test_reference_clip_without_transcript_is_reported(tmp_path, text):
    write_clip(tmp_path / "refs" / "a.wav")
    path = write_pool(tmp_path, voice_yaml("v-notext", "refs/a.wav", text=text))
    voices, _ = load(path)
    message = voices["v-notext"].tts.params["reference_error"]
    assert "field 'reference_text' is empty" in message and "'v-notext'" in message and str(path) in message


def test_voice_without_reference_clip_is_reported(tmp_path):
    path = write_pool(tmp_path, voice_yaml("v-noclip", None))
    message = load(path)[0]["v-noclip"].tts.params["reference_error"]
    assert "field 'reference_clip' is missing" in message and "voices.0.reference_clip" in message


@pytest.mark.parametrize("seconds,sr,needle", [(2.0, 16000, "short"), (14.0, 16000, "under 12 s"), (4.0, 8000, "8000 Hz")])
def test_doubtful_reference_clip_is_used_with_a_warning(tmp_path, seconds, sr, needle):
    write_clip(tmp_path / "refs" / "a.wav", seconds=seconds, sr=sr)
    path = write_pool(tmp_path, voice_yaml("v-warn", "refs/a.wav"))
    with pytest.warns(UserWarning, match=needle) as caught:
        voices, _ = load(path)
    assert "'v-warn'" in str(caught[0].message)
    assert "reference_error" not in voices["v-warn"].tts.params and voices["v-warn"].tts.params["reference_sha256"]


def test_backend_refuses_params_without_a_reference_and_unknown_keys():
    from biasbench.tts.f5 import F5Backend

    with pytest.raises(BiasbenchError, match="needs a reference clip"):
        F5Backend().synthesize("Hello there.", {"seed": 1})
    with pytest.raises(BiasbenchError, match="'sede' is not known.*did you mean 'seed'"):
        F5Backend().synthesize("Hello there.", {"sede": 1})
    with pytest.raises(BiasbenchError, match="non-empty text"):
        F5Backend().synthesize("  ", {"seed": 1})


# -- a missing engine ----------------------------------------------------------------------


@pytest.fixture
def no_f5(monkeypatch):
    """Make f5_tts unimportable, even where it is installed."""
    from biasbench.tts import f5

    for name in [m for m in sys.modules if m == "f5_tts" or m.startswith("f5_tts.")] + ["f5_tts"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(f5, "_modules", None)


def test_missing_extra_names_the_install_command(no_f5):
    status = registry.backend_status("f5-tts")
    assert not status.installed
    assert install_extra("cloning") in status.detail and "not installed" in status.detail
    assert registry.get_tts_backend("f5-tts").name == "f5-tts"  # creating it imports nothing heavy


def test_missing_engine_fails_its_voices_and_the_rest_of_the_pool_is_made(tmp_path, no_f5, monkeypatch):
    assert_missing_engine_fails_alone(tmp_path, monkeypatch, "f5-tts", install_extra("cloning"))


def assert_missing_engine_fails_alone(tmp_path, monkeypatch, backend: str, advice: str) -> None:
    """A pool of one voice on the missing cloning `backend` and one on an installed engine:
    only the cloning voice's clips fail, each naming the voice and `advice`; a pool made only
    of the missing engine stops before any work, with the same advice."""

    class Tone:
        name = "tone"

        def version(self):
            return "1"

        def synthesize(self, text, params):
            return clip(0.5, seed=len(text)), SAMPLE_RATE

    monkeypatch.setitem(registry.BACKENDS, "tone", Tone)
    write_clip(tmp_path / "refs" / "a.wav")
    path = write_pool(tmp_path, voice_yaml("clone-a", "refs/a.wav", backend=backend)
                      + voice_yaml("synthetic", None, None, backend="tone"))
    voices, pool = load(path)
    assert voices["clone-a"].tts.params["reference_sha256"]  # a cloning backend: references attached
    jobs = [SynthesisJob.speak(v, f"Question {i}?", pool.loudness_target) for v in voices.values() for i in range(2)]
    cache = AudioCache(tmp_path / "cache")
    result = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (result.made, result.failed) == (2, 2)
    failures = dict(result.failures)
    for job in jobs:
        if job.voice_id == "clone-a":
            assert "'clone-a'" in failures[job] and advice in failures[job] and not result.ok(job)
        else:
            assert result.ok(job) and cache.get(result.keys[job]) is not None
    with pytest.raises(BiasbenchError, match=re.escape(advice)):
        synthesize_all([j for j in jobs if j.voice_id == "clone-a"], cache, progress=False)


def test_bad_voices_fail_alone_when_the_engine_is_present(tmp_path, monkeypatch):
    """Engine 'installed' (version stubbed): each bad voice's clips fail with its own message."""
    from biasbench.tts import f5

    monkeypatch.setattr(f5.F5Backend, "version", lambda self: "stub")
    monkeypatch.setenv("BIASBENCH_F5_CHECKPOINT", str(tmp_path / "no-such-checkpoint.safetensors"))
    write_clip(tmp_path / "refs" / "ok.wav")
    voices_yaml = (voice_yaml("missing", "refs/gone.wav") + voice_yaml("notext", "refs/ok.wav", text="")
                   + voice_yaml("ok", "refs/ok.wav"))
    path = write_pool(tmp_path, voices_yaml)
    voices, pool = load(path)
    jobs = [SynthesisJob.speak(v, "Which planet is largest?", pool.loudness_target) for v in voices.values()]
    result = synthesize_all(jobs, AudioCache(tmp_path / "cache"), workers=2, progress=False)
    failures = {job.voice_id: message for job, message in result.failures}
    assert set(failures) == {"missing", "notext", "ok"} and result.failed == 3
    assert "'missing'" in failures["missing"] and "file not found" in failures["missing"]
    assert "'notext'" in failures["notext"] and "reference_text" in failures["notext"]
    assert "Which planet" in failures["missing"]
    # The good voice got as far as the engine: not installed here, or no checkpoint.
    assert install_extra("cloning") in failures["ok"] or "no-such-checkpoint" in failures["ok"]


# -- F5-TTS for real, on a tiny random model ---------------------------------------------------


def _f5_or_skip():
    try:
        importlib.import_module("f5_tts.infer.utils_infer")
    except Exception as err:  # noqa: BLE001 - ImportError, or a torchaudio built for another torch
        pytest.skip(f"f5-tts cannot be imported here ({type(err).__name__}: {str(err)[:120]}); "
                    "install the cloning extra: pip install 'biasbench[cloning]'")


@pytest.fixture(scope="module")
def tiny_f5(tmp_path_factory):
    """A random-weight F5-TTS model, config and Vocos vocoder on disk; no download."""
    _f5_or_skip()
    from biasbench.models.tiny import f5 as tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-f5"))


@pytest.fixture
def f5_env(tiny_f5, monkeypatch):
    for name, value in tiny_f5.items():
        monkeypatch.setenv(name, value)
    return tiny_f5


FAST = {"nfe_step": 4}


def _voice_params(tmp_path, seconds=4.0, seed=0, **extra):
    from biasbench.tts.reference import reference_params

    ref = write_clip(tmp_path / "refs" / f"r{seed}.wav", seconds=seconds, seed=seed, sr=24000)
    return {**reference_params(ref, REFERENCE_TEXT), **FAST, **extra}


def test_f5_version_names_release_and_local_checkpoint(f5_env):
    from biasbench.tts.f5 import F5Backend

    version = F5Backend().version()
    engine = importlib.metadata.version("f5-tts")
    assert version.startswith(f"f5-tts {engine}; model sha256:") and "checkpoint sha256:" in version
    assert "vocoder sha256:" in version and version.endswith("float32")
    assert registry.backend_status("f5-tts").installed


def test_f5_clones_from_a_reference_clip(f5_env, tmp_path):
    from biasbench.tts.f5 import F5Backend

    params = _voice_params(tmp_path)
    text = "Which of these animals is a mammal?"
    audio, sr = F5Backend().synthesize(text, params)
    assert sr == SAMPLE_RATE and audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and float(np.max(np.abs(audio))) > 1e-4
    # F5 sizes the output from the reference's speaking rate: 4 s for 64 characters.
    expected = 4.0 / len(REFERENCE_TEXT + ". ") * len(text)
    assert 0.5 * expected < audio.size / sr < 2.0 * expected


def test_f5_is_deterministic_under_a_seed(f5_env, tmp_path):
    from biasbench.tts.f5 import F5Backend

    params = _voice_params(tmp_path)
    backend = F5Backend()
    first, _ = backend.synthesize("Name a prime number.", {**params, "seed": 7})
    again, _ = backend.synthesize("Name a prime number.", {**params, "seed": 7})
    other, _ = backend.synthesize("Name a prime number.", {**params, "seed": 8})
    assert np.array_equal(first, again)
    assert first.shape == other.shape and not np.array_equal(first, other)


def test_f5_refuses_text_it_cannot_speak(f5_env, tmp_path):
    from biasbench.tts.f5 import F5Backend

    params = _voice_params(tmp_path)
    with pytest.raises(BiasbenchError, match="cannot speak text.*not in the checkpoint's vocabulary"):
        F5Backend().synthesize("नमस्ते दुनिया", params)
    with pytest.raises(BiasbenchError, match="nothing to say"):
        F5Backend().synthesize("... !!", params)


def test_f5_refuses_a_clip_replaced_after_loading(f5_env, tmp_path):
    from biasbench.tts.f5 import F5Backend

    params = _voice_params(tmp_path)
    write_clip(Path(params["reference_audio"]), seed=5, sr=24000)
    with pytest.raises(BiasbenchError, match="changed after the pool was loaded"):
        F5Backend().synthesize("Hello there.", params)


def test_f5_pool_runs_through_synthesize_all_into_the_cache(f5_env, tmp_path):
    write_clip(tmp_path / "refs" / "a.wav", seconds=4, seed=1)
    write_clip(tmp_path / "refs" / "b.wav", seconds=5, seed=2, sr=22050)
    voices_yaml = (voice_yaml("clone-a", "refs/a.wav", extra=", nfe_step: 4")
                   + voice_yaml("clone-b", "refs/b.wav", extra=", nfe_step: 4, seed: 3")
                   + voice_yaml("clone-bad", "refs/missing.wav", extra=", nfe_step: 4"))
    path = write_pool(tmp_path, voices_yaml)
    voices, pool = load(path)
    jobs = [SynthesisJob.speak(v, text, pool.loudness_target) for v in voices.values()
            for text in ("Is water wet?", "Count to three.")]
    cache = AudioCache(tmp_path / "cache")
    first = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (first.made, first.failed) == (4, 2)
    assert {job.voice_id for job, _ in first.failures} == {"clone-bad"}
    for job in jobs:
        if job.voice_id != "clone-bad":
            stored = cache.get(first.keys[job])
            assert stored is not None and stored.ndim == 1 and 0.3 < cache.duration(first.keys[job]) < 10
    again = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (again.made, again.reused) == (0, 4)
    # A re-recorded reference clip: that voice's clips are made anew, the others reused.
    write_clip(tmp_path / "refs" / "a.wav", seconds=4, seed=9)
    voices, pool = load(path)
    jobs = [SynthesisJob.speak(v, text, pool.loudness_target) for v in voices.values()
            for text in ("Is water wet?", "Count to three.")]
    third = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (third.made, third.reused) == (2, 2)


def test_project_declares_the_cloning_extra_outside_the_default_install():
    pyproject = (PROJECT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'cloning = ["f5-tts>=' in pyproject
    install = PROJECT / "scripts" / "install.sh"
    if install.is_file():
        assert "cloning" not in install.read_text(encoding="utf-8")


LONG_QUESTION = ("A farmer has a field that is one hundred metres long and forty metres wide, and he wants "
                 "to plant rows of beans along its length with two metres between rows, leaving a path of "
                 "four metres along one side for his tractor. How many full rows of beans can he plant in the "
                 "field, if every row must run the whole length of the field and no row may cross the path?")


def test_f5_batch_gives_each_clip_as_made_alone(f5_env, tmp_path):
    """Clips of different lengths, references, seeds and chunk counts in one batch come out as
    they do one at a time; a clip that cannot be made fails alone."""
    from biasbench.tts.f5 import F5Backend

    short = _voice_params(tmp_path, seconds=4.0, seed=0)
    longer = {**_voice_params(tmp_path, seconds=6.0, seed=1), "seed": 3}
    requests = [("Name a prime number.", short), (LONG_QUESTION, longer), ("Yes.", short),
                ("Which of these animals is a mammal?", longer), ("नमस्ते दुनिया", short)]
    backend = F5Backend()
    alone = [backend.synthesize(text, params)[0] for text, params in requests[:-1]]
    batched = backend.synthesize_batch(requests)
    assert len(batched) == len(requests)
    for single, made in zip(alone, batched):
        audio, rate = made
        assert rate == SAMPLE_RATE and audio.shape == single.shape
        # Equal to float rounding; without masking the padding in attention they differ by ~3% of the peak.
        np.testing.assert_allclose(audio, single, atol=1e-5 * max(1.0, float(np.abs(single).max())))
    assert isinstance(batched[-1], BiasbenchError) and "not in the checkpoint's vocabulary" in str(batched[-1])


def test_f5_pool_is_cloned_in_batches_with_the_same_clips(f5_env, tmp_path, monkeypatch):
    from biasbench.tts import f5

    assert_pool_cloned_in_batches(tmp_path, monkeypatch, f5.F5Backend, "f5-tts", "nfe_step: 4")


def assert_pool_cloned_in_batches(tmp_path, monkeypatch, backend_class, backend: str, settings: str) -> None:
    """synthesize_all hands the backend batches of BIASBENCH_TTS_BATCH_SIZE clips; the cache ends
    up with the clips one-at-a-time synthesis makes, under the same keys."""
    write_clip(tmp_path / "refs" / "a.wav", seconds=4, seed=1)
    write_clip(tmp_path / "refs" / "b.wav", seconds=5, seed=2, sr=22050)
    path = write_pool(tmp_path, voice_yaml("clone-a", "refs/a.wav", backend=backend, extra=f", {settings}")
                      + voice_yaml("clone-b", "refs/b.wav", backend=backend, extra=f", {settings}, seed: 3"))
    voices, pool = load(path)
    texts = ("Is water wet?", "Count to three.", "Name a colour of the rainbow.")
    jobs = [SynthesisJob.speak(v, text, pool.loudness_target) for v in voices.values() for text in texts]
    calls = []
    real = backend_class.synthesize_batch
    monkeypatch.setattr(backend_class, "synthesize_batch", lambda self, requests: calls.append(len(requests))
                        or real(self, requests))
    one_by_one = synthesize_all(jobs, AudioCache(tmp_path / "single"), workers=1, progress=False, batch_size=1)
    assert calls == [1] * 6
    calls.clear()
    monkeypatch.setenv("BIASBENCH_TTS_BATCH_SIZE", "4")
    batched = synthesize_all(jobs, AudioCache(tmp_path / "batched"), workers=1, progress=False)
    assert sorted(calls) == [2, 4] and batched.made == 6 and not batched.failures
    for job in jobs:
        assert batched.keys[job] == one_by_one.keys[job]
        np.testing.assert_allclose(AudioCache(tmp_path / "batched").get(batched.keys[job]),
                                   AudioCache(tmp_path / "single").get(one_by_one.keys[job]), atol=1e-4)
