"""The MaskGCT backend (Amphion's zero-shot TTS).

The first half needs no Amphion: a missing BIASBENCH_AMPHION_DIR, a directory that is not
a checkout, or missing requirements give one clear error naming the variable and the
requirements, and only the clips of that backend's voices fail. The second half runs
Amphion's real MaskGCT code on tiny random-weight models built here (semantic model,
semantic and acoustic codecs, T2S and S2A); it needs an Amphion checkout in
BIASBENCH_AMPHION_DIR and its requirements installed, and is skipped otherwise.
"""

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write
from test_tts_cloning import (REFERENCE_TEXT, assert_missing_engine_fails_alone, assert_pool_cloned_in_batches, load,
                              voice_yaml, write_clip, write_pool)

from biasbench.errors import BiasbenchError
from biasbench.tts import maskgct, registry
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.cache import AudioCache
from biasbench.tts.synthesis import SynthesisJob, synthesize_all

AMPHION_ENV = "BIASBENCH_AMPHION_DIR"


@pytest.fixture
def fresh_import(monkeypatch):
    """Forget an Amphion imported by earlier tests (restored afterwards)."""
    monkeypatch.setattr(maskgct, "_modules", None)
    for name in [m for m in sys.modules if m.split(".")[0] in ("models", "utils")]:
        monkeypatch.delitem(sys.modules, name)
    for var in maskgct.ENV.values():
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def fake_checkout(root: Path, body: str) -> Path:
    write(root / "models" / "tts" / "maskgct" / "maskgct_utils.py", body)
    return root


# -- without Amphion -------------------------------------------------------------------------


def test_unset_amphion_dir_names_the_variable_and_the_install(fresh_import):
    status = registry.backend_status("maskgct")
    assert not status.installed
    assert AMPHION_ENV in status.detail and "is not set" in status.detail
    assert "git clone https://github.com/open-mmlab/Amphion" in status.detail
    assert "models/tts/maskgct/requirements.txt" in status.detail
    assert registry.get_tts_backend("maskgct").name == "maskgct"  # creating it imports nothing
    assert "maskgct" in registry.CLONING_BACKENDS


def test_a_directory_that_is_not_a_checkout_is_refused(fresh_import, tmp_path):
    fresh_import.setenv(AMPHION_ENV, str(tmp_path))
    with pytest.raises(BiasbenchError, match=f"{AMPHION_ENV}=.* is not an Amphion checkout"):
        maskgct.MaskGCTBackend().version()


def test_missing_requirements_name_the_requirements_file_and_leave_no_trace(fresh_import, tmp_path):
    root = fake_checkout(tmp_path / "Amphion", "import no_such_amphion_requirement\n")
    fresh_import.setenv(AMPHION_ENV, str(root))
    path_before = list(sys.path)
    with pytest.raises(BiasbenchError) as info:
        maskgct.MaskGCTBackend().version()
    message = str(info.value)
    assert AMPHION_ENV in message and f"pip install -r {root.resolve() / maskgct.REQUIREMENTS}" in message
    assert "missing module" in message  # which one depends on what this environment has
    assert sys.path == path_before and "models" not in sys.modules and os.getcwd() != str(root)


def test_amphion_exiting_on_missing_data_is_an_error_not_an_exit(fresh_import, tmp_path):
    root = fake_checkout(tmp_path / "Amphion", "exit()\n")
    fresh_import.setenv(AMPHION_ENV, str(root))
    try:
        import librosa  # noqa: F401
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        pytest.skip("needs Amphion's requirements (librosa, safetensors, transformers) to reach Amphion's code")
    with pytest.raises(BiasbenchError, match="g2p data files are missing"):
        maskgct.MaskGCTBackend().version()


def test_params_and_references_are_checked_before_any_import(fresh_import):
    backend = maskgct.MaskGCTBackend()
    with pytest.raises(BiasbenchError, match="needs a reference clip"):
        backend.synthesize("Hello there.", {"seed": 1})
    with pytest.raises(BiasbenchError, match="'sede' is not known.*did you mean 'seed'"):
        backend.synthesize("Hello there.", {"sede": 1})
    with pytest.raises(BiasbenchError, match="'language' must be one of"):
        backend.synthesize("Hello there.", {"language": "xx"})
    with pytest.raises(BiasbenchError, match="voice 'v': field 'reference_clip': file not found.*Hello"):
        backend.synthesize("Hello there.", {"reference_error": "voice 'v': field 'reference_clip': file not found"})


def test_missing_amphion_fails_its_voices_and_the_rest_of_the_pool_is_made(fresh_import, tmp_path):
    assert_missing_engine_fails_alone(tmp_path, fresh_import, "maskgct", AMPHION_ENV)


# -- Amphion's MaskGCT for real, on tiny random models ----------------------------------------


@pytest.fixture(scope="module")
def tiny_maskgct(tmp_path_factory):
    """Random-weight MaskGCT models on disk, built with Amphion's own builders; no download."""
    amphion = os.environ.get(AMPHION_ENV, "").strip()
    if not amphion:
        pytest.skip(f"{AMPHION_ENV} is not set: point it at an Amphion checkout with "
                    "models/tts/maskgct/requirements.txt installed to run MaskGCT for real")
    from biasbench.models.tiny import maskgct as tiny

    saved = maskgct._modules
    maskgct._modules = None  # import Amphion from the builder's mirror of the checkout
    try:
        import torch
    except ImportError:
        pytest.skip("MaskGCT needs torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention on shared cores
    try:
        env = tiny.build(tmp_path_factory.mktemp("tiny-maskgct"), amphion)
    except BiasbenchError as err:
        maskgct._modules = saved
        torch.set_num_threads(threads)
        pytest.skip(f"Amphion in {AMPHION_ENV}={amphion} cannot be imported here: {str(err)[:300]}")
    yield env
    torch.set_num_threads(threads)


@pytest.fixture
def mg_env(tiny_maskgct, monkeypatch):
    for name, value in tiny_maskgct.items():
        monkeypatch.setenv(name, value)
    return tiny_maskgct


FAST = {"t2s_steps": 4}


def _voice_params(tmp_path, seconds=4.0, seed=0, sr=24000, **extra):
    from biasbench.tts.reference import reference_params

    ref = write_clip(tmp_path / "refs" / f"r{seed}.wav", seconds=seconds, seed=seed, sr=sr)
    return {**reference_params(ref, REFERENCE_TEXT), **FAST, **extra}


def test_maskgct_version_names_amphion_and_local_weights(mg_env):
    version = maskgct.MaskGCTBackend().version()
    assert version.startswith("maskgct (Amphion ")
    assert "commit " in version or "code sha256:" in version
    for part in ("config sha256:", "checkpoints sha256:", "semantic model sha256:", "stats sha256:"):
        assert part in version, (part, version)
    assert registry.backend_status("maskgct").installed


def test_maskgct_clones_from_a_reference_clip_with_amphions_duration_rule(mg_env, tmp_path):
    params = _voice_params(tmp_path, sr=16000)
    text = "Which of these animals is a mammal?"
    audio, sr = maskgct.MaskGCTBackend().synthesize(text, params)
    assert sr == SAMPLE_RATE and audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and float(np.max(np.abs(audio))) > 1e-4
    # Amphion's rule: the reference's duration x (phones of text / phones of transcript).
    mu = maskgct._modules["maskgct_utils"]
    expected = 4.0 * len(mu.g2p_(text, "en")[1]) / len(mu.g2p_(REFERENCE_TEXT, "en")[1])
    assert 0.9 * expected < audio.size / sr < 1.1 * expected + 0.05


def test_maskgct_is_deterministic_under_a_seed(mg_env, tmp_path):
    params = _voice_params(tmp_path)
    backend = maskgct.MaskGCTBackend()
    first, _ = backend.synthesize("Name a prime number.", {**params, "seed": 7})
    again, _ = backend.synthesize("Name a prime number.", {**params, "seed": 7})
    other, _ = backend.synthesize("Name a prime number.", {**params, "seed": 8})
    assert np.array_equal(first, again)
    assert first.shape == other.shape and not np.array_equal(first, other)


def test_maskgct_refuses_text_it_cannot_speak_and_replaced_clips(mg_env, tmp_path):
    params = _voice_params(tmp_path)
    backend = maskgct.MaskGCTBackend()
    for text in ("नमस्ते दुनिया", "... !!"):
        with pytest.raises(BiasbenchError, match="cannot speak text.*G2P"):
            backend.synthesize(text, params)
    write_clip(Path(params["reference_audio"]), seed=5, sr=24000)
    with pytest.raises(BiasbenchError, match="changed after the pool was loaded"):
        backend.synthesize("Hello there.", params)


def test_maskgct_pool_runs_through_synthesize_all_into_the_cache(mg_env, tmp_path):
    write_clip(tmp_path / "refs" / "a.wav", seconds=4, seed=1)
    write_clip(tmp_path / "refs" / "b.wav", seconds=5, seed=2, sr=22050)
    voices_yaml = (voice_yaml("clone-a", "refs/a.wav", backend="maskgct", extra=", t2s_steps: 4")
                   + voice_yaml("clone-b", "refs/b.wav", backend="maskgct", extra=", t2s_steps: 4, seed: 3")
                   + voice_yaml("clone-bad", "refs/missing.wav", backend="maskgct"))
    path = write_pool(tmp_path, voices_yaml)

    def jobs_of(path):
        voices, pool = load(path)
        return [SynthesisJob.speak(v, text, pool.loudness_target) for v in voices.values()
                for text in ("Is water wet?", "Count to three.")]

    jobs = jobs_of(path)
    cache = AudioCache(tmp_path / "cache")
    first = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (first.made, first.failed) == (4, 2), first.failures
    assert {job.voice_id for job, _ in first.failures} == {"clone-bad"}
    for job in jobs:
        if job.voice_id != "clone-bad":
            stored = cache.get(first.keys[job])
            assert stored is not None and stored.ndim == 1 and 0.3 < cache.duration(first.keys[job]) < 10
    again = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (again.made, again.reused) == (0, 4)
    # A re-recorded reference clip: that voice's clips are made anew, the others reused. (It
    # is longer: random weights barely listen to the audio, Amphion's duration rule does.)
    old = {job.voice_id + job.text: first.keys[job] for job in jobs if job in first.keys}
    write_clip(tmp_path / "refs" / "a.wav", seconds=5, seed=9)
    jobs = jobs_of(path)
    third = synthesize_all(jobs, cache, workers=2, progress=False)
    assert (third.made, third.reused) == (2, 2)
    for job in jobs:
        if job.voice_id == "clone-a":
            assert third.keys[job] != old[job.voice_id + job.text]
            before, after = cache.get(old[job.voice_id + job.text]), cache.get(third.keys[job])
            assert 1.1 < after.size / before.size < 1.4  # 5 s instead of 4 s of the same speaker
    assert hashlib.sha256((tmp_path / "refs" / "a.wav").read_bytes()).hexdigest() == \
        load(path)[0]["clone-a"].tts.params["reference_sha256"]


def _amphion_alone(text, params):
    """The clip as Amphion's own pipeline makes it (maskgct_inference's steps after
    torch.manual_seed), at the harness's rate."""
    import contextlib
    import io

    from biasbench.tts.synthesis import to_harness_audio

    settings = {**maskgct.DEFAULTS, **{k: params[k] for k in maskgct.DEFAULTS if k in params}}
    modules = maskgct._modules
    torch, pipeline = modules["torch"], maskgct._load(maskgct.Settings.from_env()).pipeline
    speech_16k, speech_24k = maskgct._reference(params, modules["librosa"])
    torch.manual_seed(settings["seed"])
    with contextlib.redirect_stdout(io.StringIO()):
        semantic, _ = pipeline.text2semantic(speech_16k, params["reference_text"], "en", text, "en", None,
                                             settings["t2s_steps"], settings["cfg"], settings["rescale_cfg"])
        acoustic = pipeline.extract_acoustic_code(torch.from_numpy(speech_24k).unsqueeze(0))
        _, audio = pipeline.semantic2acoustic(semantic, acoustic, n_timesteps=list(maskgct.S2A_STEPS),
                                              cfg=settings["s2a_cfg"], rescale_cfg=settings["s2a_rescale_cfg"])
    return to_harness_audio(np.asarray(audio, np.float32).ravel(), maskgct.CODEC_RATE)


def test_maskgct_clip_alone_is_amphions_clip(mg_env, tmp_path):
    """One clip through the batched sampler is the clip Amphion's pipeline makes under the same
    seed (same draws from the same generator), so clips cached before batching stay valid."""
    params = {**_voice_params(tmp_path, seconds=3.0, seed=2), "seed": 11, "cfg": 1.5}
    text = "Which of these animals is a mammal?"
    audio, _ = maskgct.MaskGCTBackend().synthesize(text, params)
    np.testing.assert_allclose(audio, _amphion_alone(text, params), atol=1e-6)


def test_maskgct_batch_gives_each_clip_as_made_alone(mg_env, tmp_path):
    """Clips of different lengths, references and seeds in one batch come out as they do one at
    a time; a clip with other sampling settings goes in its own pass; a clip that cannot be
    made fails alone."""
    short = _voice_params(tmp_path, seconds=3.0, seed=0)
    longer = {**_voice_params(tmp_path, seconds=5.0, seed=1), "seed": 3}
    requests = [("Name a prime number.", short), ("Which of these animals is a mammal, a fish or a bird?", longer),
                ("Yes.", short), ("Is water wet?", {**longer, "seed": 4}),
                ("Count to three.", {**short, "t2s_steps": 3}), ("नमस्ते दुनिया", short)]
    backend = maskgct.MaskGCTBackend()
    alone = [backend.synthesize(text, params)[0] for text, params in requests[:-1]]
    batched = backend.synthesize_batch(requests)
    assert len(batched) == len(requests)
    assert len({a.size for a in alone}) > 2  # the batch is padded
    for single, made in zip(alone, batched):
        audio, rate = made
        assert rate == SAMPLE_RATE and audio.shape == single.shape
        # Equal to float rounding; with the padding not masked in attention nearly every sample differs.
        np.testing.assert_allclose(audio, single, atol=1e-5 * max(1.0, float(np.abs(single).max())))
    assert not np.array_equal(alone[1], backend.synthesize(requests[1][0], {**longer, "seed": 5})[0])
    assert isinstance(batched[-1], BiasbenchError) and "cannot speak text" in str(batched[-1])


def test_maskgct_pool_is_cloned_in_batches_with_the_same_clips(mg_env, tmp_path, monkeypatch):
    assert_pool_cloned_in_batches(tmp_path, monkeypatch, maskgct.MaskGCTBackend, "maskgct", "t2s_steps: 4")


def test_maskgct_a_failed_pass_fails_only_its_clips(mg_env, tmp_path, monkeypatch):
    """Clips with other sampling settings go through other passes: one pass failing (say, out
    of memory) fails its clips and no others."""
    params = _voice_params(tmp_path, seconds=3.0)
    real = maskgct._semantic2acoustic

    def failing(clips, engine, torch):
        if clips[0].sampling[0] == 3:
            raise RuntimeError("CUDA out of memory")
        return real(clips, engine, torch)

    monkeypatch.setattr(maskgct, "_semantic2acoustic", failing)
    made = maskgct.MaskGCTBackend().synthesize_batch(
        [("Is water wet?", params), ("Count to three.", {**params, "t2s_steps": 3}),
         ("Name a prime number.", {**params, "t2s_steps": 3}), ("Yes.", params)])
    assert [isinstance(m, BiasbenchError) for m in made] == [False, True, True, False]
    assert "inference failed (a batch of 2; a smaller BIASBENCH_TTS_BATCH_SIZE may fit)" in str(made[1])
