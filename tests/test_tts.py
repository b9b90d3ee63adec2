"""TTS layer: the espeak-ng backend, the content-addressed audio cache, batch synthesis."""

from __future__ import annotations

import importlib.util
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from biasbench.errors import BiasbenchError
from biasbench.tts import registry
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.cache import AudioCache
from biasbench.tts.espeak import EspeakBackend
from biasbench.tts.loudness import loudness_lufs
from biasbench.tts.registry import get_tts_backend
from biasbench.tts.synthesis import SynthesisJob, synthesize_all, to_harness_audio
from conftest import clip

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not on PATH (install with `apt-get install espeak-ng`)",
)

LONG_TEXT = (
    "The committee reviewed every application carefully, and after a long discussion "
    "it decided to invite the three strongest candidates for a second interview."
)


@pytest.fixture(scope="module")
def espeak():
    return EspeakBackend()


def speak(backend, text, **params):
    audio, rate = backend.synthesize(text, {"voice": "en-us", **params})
    assert rate == SAMPLE_RATE
    return audio


def median_f0(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Median fundamental frequency of the voiced frames, by autocorrelation peak picking."""
    frame, hop = int(0.04 * sr), int(0.01 * sr)
    min_lag, max_lag = sr // 400, sr // 60  # search 60-400 Hz
    loud = 0.3 * np.sqrt(np.mean(audio**2))
    estimates = []
    for start in range(0, len(audio) - frame, hop):
        x = audio[start : start + frame] - audio[start : start + frame].mean()
        if np.sqrt(np.mean(x**2)) < loud:
            continue
        ac = np.correlate(x, x, mode="full")[frame - 1 :]
        lag = min_lag + int(np.argmax(ac[min_lag:max_lag]))
        if ac[lag] > 0.5 * ac[0]:  # clearly periodic: a voiced frame
            estimates.append(sr / lag)
    assert len(estimates) > 10, "too few voiced frames to estimate pitch"
    return float(np.median(estimates))


# -- espeak-ng backend -------------------------------------------------------------


@needs_espeak
def test_output_is_16k_mono_float32_and_not_silent(espeak):
    audio = speak(espeak, "Hello, how are you today?")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.5 < len(audio) / SAMPLE_RATE < 5
    assert np.sqrt(np.mean(audio**2)) > 0.01
    assert np.max(np.abs(audio)) <= 1.0


@needs_espeak
def test_duration_grows_with_text_length(espeak):
    short = speak(espeak, "Hello.")
    long = speak(espeak, LONG_TEXT)
    assert len(long) > 3 * len(short)


@needs_espeak
def test_female_variant_has_higher_pitch_than_male(espeak):
    male = speak(espeak, LONG_TEXT, variant="m1")
    female = speak(espeak, LONG_TEXT, variant="f2")
    assert male.shape != female.shape or not np.allclose(male, female)
    assert median_f0(female) > 1.3 * median_f0(male)


@needs_espeak
def test_speed_and_pitch_params_change_the_audio(espeak):
    normal = speak(espeak, LONG_TEXT)
    assert len(speak(espeak, LONG_TEXT, speed=300)) < 0.8 * len(normal)
    assert median_f0(speak(espeak, LONG_TEXT, pitch=90)) > median_f0(speak(espeak, LONG_TEXT, pitch=10))


@needs_espeak
def test_synthesis_is_deterministic(espeak):
    # The cache relies on it: the same inputs must give the same samples.
    assert np.array_equal(speak(espeak, "Same words."), speak(espeak, "Same words."))


@needs_espeak
@pytest.mark.parametrize(
    "text",
    [
        'She said "don\'t worry" and left.',
        "First line.\nSecond line;\n\nthird line.",
        "Café naïve façade — “curly quotes” and an emoji 🙂.",
        "-v en-gb --stdout $(rm -rf /) `ls` | cat",  # nothing here reaches a shell or argv
    ],
)
def test_awkward_text_is_spoken(espeak, text):
    audio = speak(espeak, text)
    assert len(audio) > SAMPLE_RATE // 2


@needs_espeak
def test_newline_text_is_spoken_in_full(espeak):
    one_line = speak(espeak, "First line. Second line.")
    two_lines = speak(espeak, "First line.\nSecond line.")
    assert len(two_lines) > 0.8 * len(one_line)


@needs_espeak
def test_version_is_a_number(espeak):
    assert espeak.version()[0].isdigit()


@needs_espeak
def test_unknown_voice_error_names_voice_and_text(espeak):
    with pytest.raises(BiasbenchError, match=r"xx-nope.*'Good morning"):
        espeak.synthesize("Good morning everyone", {"voice": "xx-nope"})


needs_mbrola = pytest.mark.skipif(not Path("/usr/share/mbrola/us1").exists() or shutil.which("mbrola") is None,
                                  reason="MBROLA us1 is not installed (scripts/install.sh, Debian non-free)")


@needs_espeak
@needs_mbrola
def test_mbrola_voice_speaks_and_differs_from_the_formant_voice(espeak):
    mbrola, _ = espeak.synthesize("Which way is the museum?", {"voice": "mb-us1"})
    formant, _ = espeak.synthesize("Which way is the museum?", {"voice": "en-us"})
    assert mbrola.dtype == np.float32 and 0.8 < len(mbrola) / SAMPLE_RATE < 3.0
    assert np.max(np.abs(mbrola)) > 0.05
    assert not np.array_equal(mbrola[: len(formant)], formant[: len(mbrola)])


@needs_espeak
def test_missing_mbrola_voice_says_which_packages_give_it(espeak):
    # mb-fr1 is French, never installed by biasbench: espeak-ng fails, the message says why.
    with pytest.raises(BiasbenchError, match=r"mb-fr1.*MBROLA voices need Debian's mbrola"):
        espeak.synthesize("Bonjour", {"voice": "mb-fr1"})


@needs_espeak
def test_unknown_variant_is_refused_with_suggestion(espeak):
    # espeak-ng itself would silently fall back to the default male voice.
    with pytest.raises(BiasbenchError, match=r"'variant'.*did you mean"):
        espeak.synthesize("Hi", {"voice": "en-us", "variant": "f22"})


@needs_espeak
def test_punctuation_only_text_is_an_empty_audio_error(espeak):
    with pytest.raises(BiasbenchError, match="no audio"):
        espeak.synthesize("...", {"voice": "en-us"})


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({}, "'voice'"),
        ({"voice": "en-us", "pitchrange": 40}, "'pitchrange'"),
        ({"voice": 3}, "'voice'"),
        ({"voice": "en-us", "speed": "fast"}, "'speed'"),
        ({"voice": "en-us", "speed": 170.0}, "'speed'"),
        ({"voice": "en-us", "pitch": True}, "'pitch'"),
        ({"voice": "en-us", "pitch": 120}, "'pitch'"),
        ({"voice": "en-us", "pitch_range": -1}, "'pitch_range'"),
        ({"voice": "en-us+f2"}, "'variant'"),
        ({"voice": "--help"}, "'voice'"),
        ("en-us", "dict"),
    ],
)
def test_bad_params_name_the_key(params, needle):
    # Validation happens before espeak-ng is looked up, so this runs without it.
    with pytest.raises(BiasbenchError, match=needle):
        EspeakBackend().synthesize("Hello", params)


def test_empty_text_is_refused():
    with pytest.raises(BiasbenchError, match="non-empty"):
        EspeakBackend().synthesize("  \n", {"voice": "en-us"})


def test_missing_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    backend = EspeakBackend()
    with pytest.raises(BiasbenchError, match=r"espeak-ng.*apt-get install espeak-ng"):
        backend.synthesize("Hello", {"voice": "en-us"})
    with pytest.raises(BiasbenchError, match=r"apt-get install espeak-ng"):
        backend.version()


# -- audio conversion --------------------------------------------------------------


def test_to_harness_audio_resamples_and_downmixes():
    sr = 22050
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    out = to_harness_audio(stereo, sr)
    assert out.dtype == np.float32 and out.ndim == 1 and len(out) == SAMPLE_RATE
    peak_hz = np.argmax(np.abs(np.fft.rfft(out))) * SAMPLE_RATE / len(out)
    assert abs(peak_hz - 440) < 2


def test_to_harness_audio_scales_integer_pcm():
    out = to_harness_audio(np.array([16384, -32768], dtype=np.int16), SAMPLE_RATE)
    assert np.allclose(out, [0.5, -1.0])


# -- cache -------------------------------------------------------------------------

BASE = dict(
    backend_name="espeak-ng",
    backend_version="1.51",
    params={"voice": "en-us", "variant": "f2", "speed": 170},
    text="Hello there.",
    fmt="wav-16k-mono-pcm16",
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("backend_name", "flite"),
        ("backend_version", "1.52"),
        ("params", {"voice": "en-us", "variant": "f3", "speed": 170}),
        ("params", {"voice": "en-us", "variant": "f2"}),
        ("params", {"voice": "en-us", "variant": "f2", "speed": 171}),
        ("text", "Hello there!"),
        ("text", "Hello there. "),
        ("fmt", "wav-22k-mono-pcm16"),
    ],
)
def test_cache_key_changes_with_every_field(tmp_path, field, value):
    cache = AudioCache(tmp_path)
    assert cache.key(**BASE) != cache.key(**{**BASE, field: value})


def test_cache_key_is_stable_and_ignores_param_order(tmp_path):
    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    reordered = {"speed": 170, "variant": "f2", "voice": "en-us"}
    assert key == cache.key(**{**BASE, "params": reordered})
    assert key == AudioCache(tmp_path / "elsewhere").key(**BASE)  # not tied to the root
    assert len(key) == 64 and int(key, 16) >= 0


def test_cache_key_default_format_is_pcm16_wav(tmp_path):
    cache = AudioCache(tmp_path)
    without_fmt = {k: v for k, v in BASE.items() if k != "fmt"}
    assert cache.key(**without_fmt) == cache.key(**BASE)


def test_cache_key_refuses_non_json_params(tmp_path):
    with pytest.raises(BiasbenchError, match="JSON"):
        AudioCache(tmp_path).key("espeak-ng", "1", {"voice": object()}, "hi")


def test_cache_put_get_roundtrip(tmp_path):
    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    assert cache.get(key) is None and cache.duration(key) is None and not cache.has(key)
    audio = (0.8 * np.sin(np.linspace(0, 300, 8000))).astype(np.float32)
    path = cache.put(key, audio, SAMPLE_RATE)
    assert path == cache.path(key) == tmp_path / key[:2] / f"{key}.wav"
    back = cache.get(key)
    assert back.dtype == np.float32 and back.shape == audio.shape
    assert np.max(np.abs(back - audio)) <= 1 / 32768 + 1e-7
    assert cache.duration(key) == pytest.approx(0.5)
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{key}.b2", path.name]  # no temp files left


@pytest.mark.parametrize("change", ["swapped", "noise", "digest_copied_too", "no_digest"])
def test_a_clip_whose_content_changed_is_a_miss(tmp_path, change):
    """Issue 21 #2: a cached clip swapped for another voice's, or overwritten with noise of the
    right length, is whole (its header fits its size) but not what was put there."""
    cache = AudioCache(tmp_path)
    key, other = cache.key(**BASE), cache.key(**{**BASE, "text": "another"})
    path = cache.put(key, np.full(16000, 0.25, dtype=np.float32), SAMPLE_RATE)
    other_path = cache.put(other, np.full(16000, -0.5, dtype=np.float32), SAMPLE_RATE)
    data = path.read_bytes()
    if change == "swapped":
        path.write_bytes(other_path.read_bytes())
    elif change == "noise":
        noise = np.random.default_rng(0).integers(-2**15, 2**15, (len(data) - 44) // 2, dtype=np.int16)
        path.write_bytes(data[:44] + noise.tobytes())
    elif change == "digest_copied_too":
        path.write_bytes(other_path.read_bytes())
        cache.digest_path(key).write_bytes(cache.digest_path(other).read_bytes())
    else:
        cache.digest_path(key).unlink()
    assert cache.state(key) == ("missing" if change == "no_digest" else "changed")
    assert cache.get(key) is None and not cache.has(key)
    assert cache.get(other) is not None  # the other clip is untouched


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_a_changed_clip_is_made_again_and_counted(tmp_path):
    from biasbench.tts.synthesis import SynthesisJob, synthesize_all

    cache = AudioCache(tmp_path)
    jobs = [SynthesisJob("v1", "espeak-ng", {"voice": "en-us"}, text) for text in ("One.", "Two.")]
    first = synthesize_all(jobs, cache, workers=1, progress=False)
    one = cache.path(first.keys[jobs[0]])
    original = one.read_bytes()
    one.write_bytes(original[:44] + bytes(reversed(original[44:])))  # other samples, the same length
    again = synthesize_all(jobs, cache, workers=1, progress=False)
    assert (again.made, again.changed, again.reused, again.repaired) == (1, 1, 1, 0)
    assert one.read_bytes() == original


@pytest.mark.parametrize("damage", ["truncate_keep_header", "empty", "ten_bytes", "not_wav"])
def test_a_damaged_clip_is_a_miss_not_half_a_clip(tmp_path, damage):
    """Issue 15 #2: libsndfile reads a clip cut short without complaint; the cache must not."""
    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    path = cache.put(key, np.full(16000, 0.25, dtype=np.float32), SAMPLE_RATE)
    data = path.read_bytes()
    path.write_bytes({"truncate_keep_header": data[: len(data) // 2], "empty": b"", "ten_bytes": data[:10],
                      "not_wav": b"x" * len(data)}[damage])
    assert cache.state(key) == "damaged" and not cache.has(key)
    assert cache.get(key) is None and cache.duration(key) is None


def test_cache_put_clips_instead_of_wrapping(tmp_path):
    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    cache.put(key, np.array([1.5, -1.5, 0.25], dtype=np.float32), SAMPLE_RATE)
    back = cache.get(key)
    assert back[0] > 0.99 and back[1] <= -0.99 and back[2] == pytest.approx(0.25, abs=1e-4)


def test_cache_put_refuses_other_rates_and_stereo(tmp_path):
    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    with pytest.raises(ValueError, match="16000"):
        cache.put(key, np.zeros(100, np.float32), 22050)
    with pytest.raises(ValueError, match="mono"):
        cache.put(key, np.zeros((100, 2), np.float32), SAMPLE_RATE)


def test_cache_put_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    import soundfile

    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)

    def dies_mid_write(file, *args, **kwargs):
        file.write(b"RIFF partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        cache.put(key, np.zeros(100, np.float32), SAMPLE_RATE)
    assert not cache.has(key)
    assert list(cache.path(key).parent.iterdir()) == []


def test_cache_rejects_malformed_keys(tmp_path):
    with pytest.raises(ValueError):
        AudioCache(tmp_path).path("../../etc/passwd")


# -- registry ----------------------------------------------------------------------


def test_registry_returns_espeak():
    backend = get_tts_backend("espeak-ng")
    assert backend.name == "espeak-ng"


def test_registry_unknown_name_lists_known_and_suggests():
    with pytest.raises(BiasbenchError, match=r"known backends: espeak-ng.*Did you mean 'espeak-ng'"):
        get_tts_backend("espeak")


# -- synthesize_all ----------------------------------------------------------------


def job(voice_id, text, **params):
    return SynthesisJob(voice_id, "espeak-ng", {"voice": "en-us", **params}, text)


@needs_espeak
def test_synthesize_all_makes_each_clip_once_then_reuses(tmp_path):
    cache = AudioCache(tmp_path)
    jobs = [
        job("us-m", "Is it raining?"),
        job("us-m", "Is it raining?"),  # exact duplicate
        job("us-m-alias", "Is it raining?"),  # another pool entry with the same voice
        job("us-f", "Is it raining?", variant="f2"),
        job("us-f", "Where is the station?", variant="f2"),
    ]
    first = synthesize_all(jobs, cache, progress=False)
    assert (first.made, first.reused, first.failed) == (3, 0, 0)
    assert first.keys[jobs[0]] == first.keys[jobs[2]] != first.keys[jobs[3]]
    assert all(first.ok(j) and cache.get(first.keys[j]) is not None for j in jobs)

    second = synthesize_all(jobs, cache, progress=False)
    assert (second.made, second.reused, second.failed) == (0, 3, 0)
    assert second.keys == first.keys


@needs_espeak
def test_synthesize_all_remakes_damaged_clips_and_counts_them(tmp_path):
    cache = AudioCache(tmp_path)
    jobs = [job("us-m", "Is it raining?"), job("us-f", "Is it raining?", variant="f2")]
    first = synthesize_all(jobs, cache, progress=False)
    whole = cache.get(first.keys[jobs[0]])
    path = cache.path(first.keys[jobs[0]])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header intact, samples cut
    again = synthesize_all(jobs, cache, progress=False)
    assert (again.made, again.repaired, again.reused, again.failed) == (1, 1, 1, 0)
    assert np.array_equal(cache.get(first.keys[jobs[0]]), whole)


@needs_espeak
def test_synthesize_all_records_failures_and_keeps_the_rest(tmp_path):
    cache = AudioCache(tmp_path)
    good = [job("us-m", f"Question number {i}.") for i in range(4)]
    bad_voice = SynthesisJob("nope", "espeak-ng", {"voice": "xx-nope"}, "Question number 1.")
    bad_param = SynthesisJob("typo", "espeak-ng", {"voice": "en-us", "speeed": 200}, "Hi.")
    result = synthesize_all([bad_voice, *good, bad_param], cache, workers=2, progress=False)
    assert (result.made, result.failed) == (4, 2)
    messages = dict(result.failures)
    assert "xx-nope" in messages[bad_voice] and "speeed" in messages[bad_param]
    assert all(result.ok(j) for j in good) and not result.ok(bad_voice)
    assert not cache.has(result.keys[bad_voice])


def test_synthesize_all_runs_jobs_in_parallel(tmp_path, monkeypatch):
    """A slow fake backend: with 4 workers, 8 jobs of 0.2 s overlap and finish in ~0.4 s."""
    in_flight, peak, lock = 0, 0, threading.Lock()

    class SlowBackend:
        name = "slow"

        def version(self):
            return "1"

        def synthesize(self, text, params):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.2)
            with lock:
                in_flight -= 1
            return np.full(1600, 0.1, np.float32), SAMPLE_RATE

    monkeypatch.setitem(registry.BACKENDS, "slow", SlowBackend)
    jobs = [SynthesisJob(f"v{i}", "slow", {}, f"text {i}") for i in range(8)]
    start = time.perf_counter()
    result = synthesize_all(jobs, AudioCache(tmp_path), workers=4, progress=False)
    elapsed = time.perf_counter() - start
    assert result.made == 8 and peak == 4
    assert elapsed < 1.2  # serial would take 1.6 s


def test_synthesize_all_survives_unexpected_exceptions(tmp_path, monkeypatch):
    class FlakyBackend:
        name = "flaky"

        def version(self):
            return "1"

        def synthesize(self, text, params):
            if "boom" in text:
                raise RuntimeError("engine crashed")
            return np.zeros(160, np.float32) + 0.1, SAMPLE_RATE

    monkeypatch.setitem(registry.BACKENDS, "flaky", FlakyBackend)
    jobs = [SynthesisJob("a", "flaky", {}, "fine"), SynthesisJob("b", "flaky", {}, "boom")]
    result = synthesize_all(jobs, AudioCache(tmp_path), progress=False)
    assert (result.made, result.failed) == (1, 1)
    assert result.failures == [(jobs[1], "RuntimeError: engine crashed")]


def test_synthesize_all_unknown_backend_raises_before_work(tmp_path):
    with pytest.raises(BiasbenchError, match="unknown TTS backend"):
        synthesize_all([SynthesisJob("a", "festivalx", {}, "hi")], AudioCache(tmp_path))


def test_synthesize_all_resamples_backend_output(tmp_path, monkeypatch):
    class NativeRateBackend:
        name = "native"

        def version(self):
            return "1"

        def synthesize(self, text, params):
            return np.full((22050, 2), 0.2, np.float32), 22050  # 1 s stereo at 22.05 kHz

    monkeypatch.setitem(registry.BACKENDS, "native", NativeRateBackend)
    cache = AudioCache(tmp_path)
    result = synthesize_all([SynthesisJob("a", "native", {}, "x")], cache, progress=False)
    assert cache.duration(result.keys[SynthesisJob("a", "native", {}, "x")]) == pytest.approx(1.0)


def test_cache_key_carries_the_loudness_target_only_when_set(tmp_path):
    cache = AudioCache(tmp_path)
    plain = cache.key(**BASE)
    assert cache.key(**BASE, loudness_target=None) == plain  # clips made before the option keep their keys
    assert cache.key(**BASE, loudness_target=-23) == cache.key(**BASE, loudness_target=-23.0) != plain
    assert cache.key(**BASE, loudness_target=-23) != cache.key(**BASE, loudness_target=-20)


@pytest.mark.skipif(importlib.util.find_spec("pyloudnorm") is None, reason="pyloudnorm is not installed")
def test_synthesis_normalises_every_voice_to_the_pool_loudness_target(tmp_path, monkeypatch):
    """A quiet and a loud voice both come out at the target; without one they stay apart."""

    class LevelBackend:
        name = "level"

        def version(self):
            return "1"

        def synthesize(self, text, params):
            return clip(2.0, seed=params["seed"]) * params["gain"], SAMPLE_RATE

    monkeypatch.setitem(registry.BACKENDS, "level", LevelBackend)
    cache = AudioCache(tmp_path)
    voices = {"quiet": {"seed": 1, "gain": 0.05}, "loud": {"seed": 2, "gain": 1.5}}

    def levels(target):
        jobs = [SynthesisJob(name, "level", params, "x", target) for name, params in voices.items()]
        result = synthesize_all(jobs, cache, progress=False)
        assert result.made == 2  # a new target is a new clip, never the un-normalised one
        return [loudness_lufs(cache.get(result.keys[job])) for job in jobs]

    quiet, loud = levels(None)
    assert loud - quiet > 20
    assert levels(-23.0) == pytest.approx([-23.0, -23.0], abs=0.2)
    assert levels(-30.0) == pytest.approx([-30.0, -30.0], abs=0.2)


def test_a_pool_loudness_target_reaches_every_planned_clip():
    from biasbench.config import VoicePool
    from biasbench.runner import plan_requests
    from biasbench.tasks.loader import load_task

    voice = {"gender": "female", "ethnicity": "black", "accent": "en-029", "label_source": "proxy",
             "tts": {"backend": "espeak-ng", "voice": "en-029"}}
    pool = VoicePool.model_validate({"pool": "p", "loudness_target": -23,
                                     "voices": [{"id": "a", **voice}, {"id": "b", **voice, "gender": "male"}]})
    plan = plan_requests(load_task("mmlu", data_source="local", limit=2), pool)
    assert plan and {p.job.loudness_target for p in plan if p.job} == {-23.0}


def test_a_verified_clip_is_trusted_by_its_file_times_only_until_it_is_read(tmp_path):
    """A state check trusts the size, inode and mtime recorded when the clip was last verified
    (a resumed run reads no clip); a write changes them. A clip changed with its times put back
    is still caught when it is read, and made again by the next synthesis."""
    import os

    cache = AudioCache(tmp_path)
    key = cache.key(**BASE)
    path = cache.put(key, np.full(16000, 0.25, dtype=np.float32), SAMPLE_RATE)
    assert cache.state(key) == "ok" and len(cache.digest_path(key).read_text().split()) == 4  # times recorded
    data = path.read_bytes()
    path.write_bytes(data[:44] + bytes(reversed(data[44:])))  # in place: same inode, a new mtime
    assert AudioCache(tmp_path).state(key) == "changed"
    cache = AudioCache(tmp_path)
    path.write_bytes(data)
    assert cache.state(key) == "missing"  # its digest went with the change: made again
    key2 = cache.key(**{**BASE, "text": "two"})
    path2 = cache.put(key2, np.full(16000, 0.25, dtype=np.float32), SAMPLE_RATE)
    assert AudioCache(tmp_path).state(key2) == "ok"
    stat = path2.stat()
    data2 = path2.read_bytes()
    path2.write_bytes(data2[:44] + bytes(reversed(data2[44:])))
    os.utime(path2, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # times put back by hand
    fresh = AudioCache(tmp_path)
    assert fresh.state(key2) == "ok"  # trusted by its times...
    assert fresh.get(key2) is None  # ...but never used: reading verifies the digest
    assert AudioCache(tmp_path).state(key2) == "missing"
