"""The other transformers speech-LM families (Qwen2.5-Omni and Qwen3-Omni thinkers, Audio
Flamingo 3, Music Flamingo, GLM-ASR, Voxtral, Phi-4-multimodal),
each exercised on a tiny randomly initialised model of its REAL classes, built offline and
loaded the way a user's `--model hf:<path>` is: through the registry, which picks the family
from the checkpoint's config model_type.

Tolerance for "batched == one at a time": 1e-5 on log-probabilities. Everything runs in
float32 on CPU; a row's numbers differ between the two only through left padding (masked
positions) and the batch shape, which can make the BLAS kernels sum in another order. Seen:
at most ~4e-7; 1e-5 leaves headroom for other CPUs while still catching any real leak
between rows (a padding or position bug moves these values by 1e-2 or more).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from biasbench.errors import BiasbenchError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from biasbench.models.families import FAMILIES, backend_for_model_type  # noqa: E402
from biasbench.models.hf_audio_lm import HFAudioLMBackend, quantization_config  # noqa: E402
from biasbench.models.registry import ALIASES, load_backend, resolve_model  # noqa: E402
from biasbench.models.tiny.families import (  # noqa: E402
    BUILDERS,
    OPTIONAL_BUILDERS,
    build_tiny_text_lm,
    tiny_family_name,
    tiny_family_path,
)

from conftest import LETTERS, gen, mc  # noqa: E402

SR = 16000
# Every family with a tiny builder (all but qwen2_audio, tested on its own), except those that
# need an optional extra (Granite Speech, Gemma 3n): tests/test_hf_families_extra.py has them.
FAMILY_NAMES = sorted(set(BUILDERS) - set(OPTIONAL_BUILDERS))
MODEL_CLASSES = {
    "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
    "audioflamingo3": "AudioFlamingo3ForConditionalGeneration",
    "glmasr": "GlmAsrForConditionalGeneration",
    "musicflamingo": "MusicFlamingoForConditionalGeneration",
    "phi4_multimodal": "Phi4MultimodalForCausalLM",
    "voxtral": "VoxtralForConditionalGeneration",
}
TOL = 1e-5  # see the module docstring






@pytest.fixture(scope="session")
def families_cache(biasbench_cache, tmp_path_factory) -> Path:
    """A cache of their own for these tiny models: the Qwen2-Audio tests expect theirs alone
    in the session cache's models folder."""
    return tmp_path_factory.mktemp("families-cache")


@pytest.fixture(autouse=True)
def _use_families_cache(families_cache, monkeypatch):
    monkeypatch.setenv("BIASBENCH_CACHE", str(families_cache))


@pytest.fixture(scope="session")
def tiny_paths(families_cache):
    before = os.environ.get("BIASBENCH_CACHE")
    os.environ["BIASBENCH_CACHE"] = str(families_cache)
    try:
        return {family: tiny_family_path(family) for family in FAMILY_NAMES}
    finally:
        if before is None:
            os.environ.pop("BIASBENCH_CACHE", None)
        else:
            os.environ["BIASBENCH_CACHE"] = before


@pytest.fixture(scope="session")
def backends(tiny_paths):
    """Each tiny model loaded once, the way `--model hf:<path>` loads it."""
    return {family: load_backend(resolve_model(f"hf:{path}")) for family, path in tiny_paths.items()}


@pytest.fixture(params=FAMILY_NAMES)
def family(request):
    return request.param


def test_tiny_models_are_built_once_in_the_cache(tiny_paths, families_cache):
    for family, path in tiny_paths.items():
        assert path == families_cache / "models" / tiny_family_name(family)
        assert tiny_family_path(family) == path
    leftovers = [p.name for p in (families_cache / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # every temporary build folder was renamed away


def test_registry_dispatches_by_model_type(backends, family):
    backend = backends[family]
    assert isinstance(backend, backend_for_model_type(family))
    assert isinstance(backend, HFAudioLMBackend)
    assert type(backend.model).__name__ == MODEL_CLASSES[family]
    assert backend.family == family and family in FAMILIES
    assert backend.tokenizer.padding_side == "left"
    assert backend.sampling_rate == SR
    for letter in LETTERS:
        assert backend._option_ids(letter)


def test_scored_choices_are_a_log_distribution(backends, family):
    (resp,) = backends[family].score_choices([mc("q1", 3.0)])
    lp = resp.option_logprobs
    assert list(lp) == LETTERS
    assert all(v <= 0 for v in lp.values())
    assert math.isclose(float(torch.logsumexp(torch.tensor(list(lp.values())), 0)), 0.0, abs_tol=1e-6)
    assert resp.text == max(lp, key=lp.get)
    assert resp.n_input_tokens > 30  # the clip's audio tokens are counted
    assert resp.latency_s > 0


def test_batched_scoring_equals_single_with_mixed_lengths(backends, family):
    backend = backends[family]
    # Different clip lengths (one past 30 s where the family hears that far), a text-only row
    # and a 2-option row force real left padding (and, for Voxtral, a two-chunk clip).
    long = 31.0 if backend.max_audio_seconds >= 31 else 11.7
    requests = [mc("a", 2.0, 1), mc("b", long, 2), mc("c", 5.3, 3), mc("t", None), mc("ab", 7.1, 4, ["A", "B"])]
    batched = backend.score_choices(requests)
    assert [b.request_id for b in batched] == [r.request_id for r in requests]
    for req, b in zip(requests, batched):
        (single,) = backend.score_choices([req])
        assert b.n_input_tokens == single.n_input_tokens
        assert list(b.option_logprobs) == list(req.choices)
        for k in req.choices:
            assert b.option_logprobs[k] == pytest.approx(single.option_logprobs[k], abs=TOL)


def test_generate_batched_equals_single_under_greedy(backends, family):
    backend = backends[family]
    requests = [gen("a", 2.0, 1), gen("b", 6.4, 2), gen("t", None)]
    batched = backend.generate(requests)
    assert [r.request_id for r in batched] == ["a", "b", "t"]
    for req, b in zip(requests, batched):
        assert isinstance(b.text, str) and b.text == b.text.strip()
        assert 0 <= b.n_output_tokens <= 6 and b.n_input_tokens > 0
        assert b.text == backend.generate([req])[0].text


def test_sampling_is_reproducible_and_settings_keep_order(backends):
    # Shared machinery (hf_audio_lm.py): one family is enough.
    backend = backends["qwen2_5_omni"]
    first = backend.generate([gen("s", 2.0, temperature=1.0, seed=7)])[0].text
    assert backend.generate([gen("s", 2.0, temperature=1.0, seed=7)])[0].text == first
    out = backend.generate([gen("x", 2.0, max_new_tokens=2), gen("y", 2.0), gen("z", None, max_new_tokens=2)])
    assert [r.request_id for r in out] == ["x", "y", "z"]
    assert out[0].n_output_tokens <= 2 and out[2].n_output_tokens <= 2


def test_greedy_ignores_checkpoint_sampling_defaults(backends, monkeypatch):
    # The tiny checkpoints sample by default with a repetition penalty, like the real ones;
    # an exaggerated penalty would change greedy tokens if it leaked into decoding.
    backend = backends["voxtral"]
    request = gen("g", 2.0, 5, max_new_tokens=8)
    before = backend.generate([request])[0].text
    monkeypatch.setattr(backend.model.generation_config, "repetition_penalty", 50.0)
    assert backend.generate([request])[0].text == before


def test_audio_longer_than_the_limit_raises(backends, family):
    backend = backends[family]
    limit = backend.max_audio_seconds
    # Whisper window; the tiny AF3/GLM-ASR max_audio_len; what fits the tiny LM contexts.
    assert limit == {"qwen2_5_omni": 30.0, "audioflamingo3": 60.0, "glmasr": 60.0, "voxtral": 60.0,
                     "qwen3_omni_moe": 236.0, "phi4_multimodal": 245.0, "musicflamingo": 60.0}[family]
    with pytest.raises(ValueError, match="truncated"):
        backend.score_choices([mc("ok", 2.0), mc("long", limit + 0.5)])
    with pytest.raises(ValueError, match="truncated"):
        backend.generate([gen("long", limit + 0.5)])


def test_fingerprints_differ_between_families(backends, biasbench_cache, monkeypatch):
    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    monkeypatch.setenv("BIASBENCH_CACHE", str(biasbench_cache))  # where the Qwen2-Audio tests keep theirs
    qwen2audio = load_backend(resolve_model(f"hf:{tiny_qwen2audio_path()}"))
    assert type(qwen2audio).__name__ == "HFQwen2AudioBackend"
    assert "family" not in qwen2audio.fingerprint()  # unchanged, so earlier caches stay valid
    prints = {family: b.fingerprint() for family, b in backends.items()}
    assert {fp["family"] for fp in prints.values()} == set(FAMILY_NAMES)
    hashes = [fp["local_sha256"] for fp in prints.values()] + [qwen2audio.fingerprint()["local_sha256"]]
    assert len(set(hashes)) == len(hashes)
    for fp in prints.values():
        assert fp["backend"] == "hf" and fp["dtype"] == "float32" and fp["device"] == "cpu"
        assert "quantization" not in fp


def test_text_only_model_gives_a_clear_error(tmp_path):
    path = build_tiny_text_lm(tmp_path / "text-lm")
    with pytest.raises(BiasbenchError, match="text-only.*cascade"):
        load_backend(resolve_model(f"hf:{path}"))


def test_unsupported_speech_family_is_named():
    with pytest.raises(BiasbenchError, match="older remote-code format"):
        backend_for_model_type("phi4mm")
    with pytest.raises(BiasbenchError, match="no speech-LM backend"):
        backend_for_model_type("no_such_family")


def test_tiny_aliases_resolve_and_load():
    for name, family in [("tiny-qwen2.5-omni", "qwen2_5_omni"), ("tiny-qwen3-omni", "qwen3_omni_moe"),
                         ("tiny-voxtral", "voxtral"), ("tiny-audio-flamingo-3", "audioflamingo3"),
                         ("tiny-glm-asr", "glmasr"), ("tiny-phi-4-mm", "phi4_multimodal"),
                         ("tiny-music-flamingo", "musicflamingo")]:
        choice = resolve_model(name)
        assert choice.pipeline_check and choice.backend == "hf"
        assert choice.model == f"builtin:tiny-{family}"
    backend = load_backend(resolve_model("tiny-voxtral"))
    assert backend.family == "voxtral"
    for name in ("qwen2.5-omni", "qwen3-omni", "voxtral-mini", "audio-flamingo-3", "music-flamingo", "glm-asr",
                 "phi-4-mm"):
        assert ALIASES[name].needs_gpu and ALIASES[name].backend == "hf"


@pytest.mark.parametrize("omni, config_class", [("qwen2_5_omni", "Qwen2_5OmniConfig"),
                                                ("qwen3_omni_moe", "Qwen3OmniMoeConfig")])
def test_omni_loads_the_thinker_from_a_full_omni_checkpoint(tiny_paths, backends, tmp_path, omni, config_class):
    """The hub checkpoints (model_type qwen2_5_omni / qwen3_omni_moe) hold thinker + talker;
    the backend must take the thinker config and weights (`thinker.` prefix) from them and
    nothing else."""
    import json
    import shutil

    import transformers
    from safetensors.torch import load_file, save_file

    src, dst = tiny_paths[omni], tmp_path / "omni-full"
    shutil.copytree(src, dst)
    thinker = json.loads((src / "config.json").read_text())
    getattr(transformers, config_class)(thinker_config=thinker, enable_audio_output=False).save_pretrained(dst)
    weights = load_file(src / "model.safetensors")
    save_file({f"thinker.{k}": v for k, v in weights.items()}, dst / "model.safetensors", metadata={"format": "pt"})
    full = load_backend(resolve_model(f"hf:{dst}"))
    assert type(full.model).__name__ == MODEL_CLASSES[omni]
    assert full.fingerprint()["family"] == omni
    request = mc("q", 2.0, 3)
    expected = backends[omni].score_choices([request])[0].option_logprobs
    got = full.score_choices([request])[0].option_logprobs
    assert got == pytest.approx(expected, abs=1e-6)


def test_phi4_speech_adapter_is_on_for_clips_and_off_for_text(backends):
    """Phi-4-multimodal's speech skills are a LoRA adapter: on for calls with a clip, off for
    text-only ones (the tiny adapter's weights are random, so on/off changes the logits)."""
    backend = backends["phi4_multimodal"]
    fp = backend.fingerprint()
    assert fp["speech_adapter"] == "speech-lora" and fp["speech_adapter_sha256"]
    lora = backend._peft.base_model

    def logits(request, adapter_on: bool):
        (lora.enable_adapter_layers if adapter_on else lora.disable_adapter_layers)()
        with torch.inference_mode():
            return backend._last_position_logits(backend._encode([request]))[0]

    for request, expect_on in [(mc("audio", 2.0, 1), True), (mc("text", None), False)]:
        scored = backend.score_choices([request])[0].option_logprobs
        on, off = logits(request, True), logits(request, False)
        assert not torch.allclose(on, off, atol=1e-4)  # the adapter matters
        expected = backend._option_logprobs(on if expect_on else off, LETTERS)
        assert scored == pytest.approx(expected, abs=1e-6)


def test_build_is_deterministic(tiny_paths, tmp_path):
    from safetensors.torch import load_file

    rebuilt = BUILDERS["voxtral"](tmp_path / "again")
    first, second = load_file(tiny_paths["voxtral"] / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert (tiny_paths["voxtral"] / "tokenizer.json").read_bytes() == (rebuilt / "tokenizer.json").read_bytes()


# ----------------------------------------------------------------- precision / quantization

def test_quantization_is_refused_on_cpu_before_loading(tiny_paths):
    with pytest.raises(BiasbenchError, match="CUDA GPU"):
        backend_for_model_type("voxtral")(str(tiny_paths["voxtral"]), device="cpu", quantization="8bit")
    with pytest.raises(BiasbenchError, match="unknown quantization"):
        quantization_config("3bit", "cuda", torch.bfloat16)
    assert quantization_config(None, "cpu", torch.float32) is None


def test_quantization_without_bitsandbytes_names_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(BiasbenchError, match="pip install bitsandbytes"):
        quantization_config("4bit", "cuda", torch.bfloat16)


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_families_on_gpu_in_bf16(tiny_paths, family):
    backend = load_backend(resolve_model(f"hf:{tiny_paths[family]}"), device="cuda", dtype="bfloat16")
    fp = backend.fingerprint()
    assert fp["device"] == "cuda" and fp["dtype"] == "bfloat16"
    requests = [mc("a", 2.0, 1), mc("b", 7.0, 2)]
    batched = backend.score_choices(requests)
    for req, b in zip(requests, batched):
        single = backend.score_choices([req])[0]
        # bf16 on GPU: batch shape changes the kernels; 5e-2 still catches a leak between rows.
        assert b.option_logprobs == pytest.approx(single.option_logprobs, abs=5e-2)
    (generated,) = backend.generate([gen("g", 2.0)])
    assert isinstance(generated.text, str) and generated.n_output_tokens <= 6


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_loading_on_gpu(tiny_paths, bits):
    pytest.importorskip("bitsandbytes")
    backend = load_backend(resolve_model(f"hf:{tiny_paths['audioflamingo3']}"), device="cuda", quantization=bits)
    assert backend.fingerprint()["quantization"] == bits
    (resp,) = backend.score_choices([mc("q", 2.0)])
    assert set(resp.option_logprobs) == set(LETTERS)
