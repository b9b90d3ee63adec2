"""Granite Speech and Gemma 3n: the speech-LM families that need an optional extra.

Granite's feature extractor needs torchaudio (extra `granite`); Gemma 3n's model always builds
a timm vision tower, and timm imports torchvision (extra `gemma3n`). PyPI's builds of those
only import beside the torch build they were made for, so in the main (CPU-wheel) venv and in
CI the tests that need them skip with the reason, and the tests of the clear missing-extra
error run instead. With the extras importable (checked in a torch 2.9.1 + torchaudio 2.9.1 +
torchvision 0.24.1 + timm 1.0.31 venv), each family runs on a tiny randomly initialised model
of its REAL classes, built offline and loaded as `--model hf:<path>` loads it.

Tolerance for "batched == one at a time": 1e-5 on log-probabilities, as in test_hf_families.py.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from biasbench.models.families import FAMILIES, backend_for_model_type  # noqa: E402
from biasbench.models.hf_audio_lm import HFAudioLMBackend  # noqa: E402
from biasbench.models.registry import ALIASES, load_backend, resolve_model  # noqa: E402
from biasbench.models.tiny.families import OPTIONAL_BUILDERS, tiny_family_name, tiny_family_path  # noqa: E402

from conftest import LETTERS, PROMPT, gen, mc  # noqa: E402

SR = 16000
TOL = 1e-5
MODEL_CLASSES = {"granite_speech": "GraniteSpeechForConditionalGeneration",
                 "gemma3n": "Gemma3nForConditionalGeneration"}
EXTRAS = {"granite_speech": ("granite", ("torchaudio",)), "gemma3n": ("gemma3n", ("timm", "torchvision"))}
ALIAS = {"granite_speech": "tiny-granite-speech", "gemma3n": "tiny-gemma-3n"}


def _import_problem(modules) -> str | None:
    """Why `modules` cannot be used here (None: they import)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a wheel built for another torch
            return f"{name} does not import here ({type(exc).__name__}: {str(exc)[:120]})"
    return None


# The tiny Granite also carries a LoRA adapter, built and loaded with peft.
WHY_NOT = {"granite_speech": _import_problem(("torchaudio", "peft")),
           "gemma3n": _import_problem(("timm", "torchvision"))}
FAMILY_NAMES = sorted(MODEL_CLASSES)


def needs_extra(family):
    why = WHY_NOT[family]
    return pytest.param(family, marks=pytest.mark.skipif(
        why is not None, reason=f"{family} needs the '{EXTRAS[family][0]}' extra: {why}"))


AVAILABLE = [needs_extra(f) for f in FAMILY_NAMES]




@pytest.fixture(scope="session")
def extra_cache(biasbench_cache, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("families-extra-cache")


@pytest.fixture(autouse=True)
def _use_extra_cache(extra_cache, monkeypatch):
    monkeypatch.setenv("BIASBENCH_CACHE", str(extra_cache))


_loaded: dict[str, HFAudioLMBackend] = {}


@pytest.fixture
def backend(family, extra_cache) -> HFAudioLMBackend:
    """The family's tiny model, built once and loaded the way `--model hf:<path>` loads it."""
    if family not in _loaded:
        _loaded[family] = load_backend(resolve_model(f"hf:{tiny_family_path(family)}"))
    return _loaded[family]


# ----------------------------------------------------------------- without the extras (main venv, CI)

@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_missing_extra_is_named_before_loading(family, tmp_path, monkeypatch):
    """With the extra's modules not importable, `hf:<checkpoint>` says which extra to install,
    before reading any weights (the folder holds only a config)."""
    extra, modules = EXTRAS[family]
    folder = tmp_path / family
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": family}))
    monkeypatch.setitem(sys.modules, modules[-1], None)  # import fails as if not installed
    with pytest.raises(BiasbenchError, match=re.escape(install_extra(extra))) as err:
        load_backend(resolve_model(f"hf:{folder}"))
    assert modules[-1] in str(err.value)
    with pytest.raises(BiasbenchError, match=re.escape(install_extra(extra))):  # the tiny alias too, before building
        load_backend(resolve_model(ALIAS[family]))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_this_environment_reports_its_missing_extra(family, tmp_path):
    """Where the extra really does not import (the CPU-wheel venv), the same clear error."""
    extra, modules = EXTRAS[family]
    if _import_problem(modules) is None:
        pytest.skip(f"{' and '.join(modules)} import here: nothing missing to report")
    folder = tmp_path / family
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": family}))
    with pytest.raises(BiasbenchError, match=re.escape(install_extra(extra))):
        load_backend(resolve_model(f"hf:{folder}"))


def test_families_and_aliases_are_registered():
    for family in FAMILY_NAMES:
        assert family in FAMILIES and family in OPTIONAL_BUILDERS
        assert backend_for_model_type(family).family == family  # importing the module needs no extra
    for name, hub_id, extra in [("granite-speech-2b", "ibm-granite/granite-speech-3.3-2b", "granite"),
                                ("granite-speech-8b", "ibm-granite/granite-speech-3.3-8b", "granite"),
                                ("gemma-3n-e2b", "google/gemma-3n-E2B-it", "gemma3n"),
                                ("gemma-3n-e4b", "google/gemma-3n-E4B-it", "gemma3n")]:
        alias = ALIASES[name]
        assert alias.model == hub_id and alias.backend == "hf" and alias.needs_gpu
        assert alias.needs == f"the {extra} extra"
    for family, name in ALIAS.items():
        choice = resolve_model(name)
        assert choice.pipeline_check and choice.model == f"builtin:tiny-{family}"


# ----------------------------------------------------------------- with the extras (tiny models)

@pytest.mark.parametrize("family", AVAILABLE)
def test_registry_dispatches_and_builds_once(backend, family, extra_cache):
    path = tiny_family_path(family)
    assert path == extra_cache / "models" / tiny_family_name(family)
    assert isinstance(backend, backend_for_model_type(family))
    assert type(backend.model).__name__ == MODEL_CLASSES[family]
    assert backend.family == family and backend.tokenizer.padding_side == "left"
    assert backend.sampling_rate == SR
    for letter in LETTERS:
        assert backend._option_ids(letter)
    fp = backend.fingerprint()
    assert fp["family"] == family and fp["local_sha256"] and fp["device"] == "cpu"


@pytest.mark.parametrize("family", AVAILABLE)
def test_prompt_follows_the_checkpoint_format(backend, family):
    request = mc("q", 2.0)
    text = backend._chat_text(request)
    ids = backend._encode([request])["input_ids"][0].tolist()
    tokens = backend.tokenizer.convert_ids_to_tokens(ids)
    if family == "granite_speech":
        # The model card's fixed system prompt (never today's date), then <|audio|> before the question.
        assert text.startswith("<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.\n"
                               "Today's Date: April 9, 2025.\n")
        assert f"<|start_of_role|>user<|end_of_role|><|audio|>{PROMPT}<|end_of_text|>" in text
        assert text.endswith("<|start_of_role|>assistant<|end_of_role|>")
        assert tokens.count("<|audio|>") == 21  # 2 s: 10 tokens per second, in whole 1.5 s projector windows
        assert "<|audio|>" not in backend._chat_text(mc("t", None))
    else:
        assert text == f"<bos><start_of_turn>user\n<audio_soft_token>{PROMPT}<end_of_turn>\n<start_of_turn>model\n"
        assert tokens.count("<bos>") == 1 and tokens[0] == "<bos>"  # the template's, not a second one
        assert tokens.count("<audio_soft_token>") == 188  # fixed per clip
        start = tokens.index("<start_of_audio>")
        assert tokens[start + 189] == "<end_of_audio>"


@pytest.mark.parametrize("family", AVAILABLE)
def test_scored_choices_are_a_log_distribution(backend, family):
    (resp,) = backend.score_choices([mc("q1", 3.0)])
    lp = resp.option_logprobs
    assert list(lp) == LETTERS and all(v <= 0 for v in lp.values())
    assert math.isclose(float(torch.logsumexp(torch.tensor(list(lp.values())), 0)), 0.0, abs_tol=1e-6)
    assert resp.text == max(lp, key=lp.get)
    assert resp.n_input_tokens > 30 and resp.latency_s > 0


@pytest.mark.parametrize("family", AVAILABLE)
def test_scores_use_the_logits_the_model_generates_from(backend, family):
    """The one-position scoring path equals the full forward pass's last logits (Gemma 3n:
    including the final soft-capping; Granite: with its speech adapter switched on)."""
    request = mc("q", 2.0, 5)
    backend._before_batch([request])
    inputs = backend._encode([request])
    with torch.inference_mode():
        full = backend.model(**inputs, use_cache=False).logits[0, -1].float()
        scored = backend._last_position_logits(inputs)[0]
    assert torch.allclose(full, scored, atol=1e-4)
    assert backend.score_choices([request])[0].option_logprobs == pytest.approx(
        backend._option_logprobs(full, LETTERS), abs=1e-5)


@pytest.mark.parametrize("family", AVAILABLE)
def test_batched_scoring_equals_single_with_mixed_lengths(backend, family):
    long = 29.5 if backend.max_audio_seconds < 31 else 31.0
    requests = [mc("a", 2.0, 1), mc("b", long, 2), mc("c", 5.3, 3), mc("t", None), mc("ab", 7.1, 4, ["A", "B"])]
    batched = backend.score_choices(requests)
    assert [b.request_id for b in batched] == [r.request_id for r in requests]
    for req, b in zip(requests, batched):
        (single,) = backend.score_choices([req])
        assert b.n_input_tokens == single.n_input_tokens
        assert list(b.option_logprobs) == list(req.choices)
        for k in req.choices:
            assert b.option_logprobs[k] == pytest.approx(single.option_logprobs[k], abs=TOL)


@pytest.mark.parametrize("family", AVAILABLE)
def test_generate_batched_equals_single_under_greedy(backend, family, monkeypatch):
    requests = [gen("a", 2.0, 1), gen("b", 6.4, 2), gen("t", None)]
    batched = backend.generate(requests)
    assert [r.request_id for r in batched] == ["a", "b", "t"]
    for req, b in zip(requests, batched):
        assert isinstance(b.text, str) and b.text == b.text.strip()
        assert 0 <= b.n_output_tokens <= 6 and b.n_input_tokens > 0
        assert b.text == backend.generate([req])[0].text
    # The checkpoint's sampling defaults (a repetition penalty here) never leak into greedy decoding.
    monkeypatch.setattr(backend.model.generation_config, "repetition_penalty", 50.0)
    assert backend.generate([requests[0]])[0].text == batched[0].text


@pytest.mark.parametrize("family", AVAILABLE)
def test_audio_longer_than_the_limit_raises(backend, family):
    limit = backend.max_audio_seconds
    # Granite: what fits the tiny LM context (4096 - 1024 tokens at 10 per second);
    # Gemma 3n: the feature extractor's 30 s window (longer clips would be cut silently).
    assert limit == {"granite_speech": 307.0, "gemma3n": 30.0}[family]
    with pytest.raises(ValueError, match="truncated"):
        backend.score_choices([mc("ok", 2.0), mc("long", limit + 0.5)])
    with pytest.raises(ValueError, match="truncated"):
        backend.generate([gen("long", limit + 0.5)])


@pytest.mark.parametrize("family", [needs_extra("granite_speech")])
def test_granite_speech_adapter_is_on_for_clips_and_off_for_text(backend, family):
    """Granite's speech LoRA sits at the checkpoint's root: loaded with peft as adapter
    "speech", on for calls with a clip, off for text-only ones (the tiny adapter's weights are
    random, so on/off changes the logits)."""
    fp = backend.fingerprint()
    assert fp["speech_adapter"] == "adapter_config.json" and "April 9, 2025" in fp["system_prompt"]
    lora = backend._peft.base_model

    def logits(request, adapter_on: bool):
        (lora.enable_adapter_layers if adapter_on else lora.disable_adapter_layers)()
        with torch.inference_mode():
            return backend._last_position_logits(backend._encode([request]))[0]

    for request, expect_on in [(mc("audio", 2.0, 1), True), (mc("text", None), False)]:
        scored = backend.score_choices([request])[0].option_logprobs
        on, off = logits(request, True), logits(request, False)
        assert not torch.allclose(on, off, atol=1e-4)  # the adapter matters
        assert scored == pytest.approx(backend._option_logprobs(on if expect_on else off, LETTERS), abs=1e-6)


@pytest.mark.parametrize("family", AVAILABLE)
def test_tiny_alias_loads(family):
    loaded = load_backend(resolve_model(ALIAS[family]))
    assert loaded.family == family
    assert Path(loaded.model_id) == tiny_family_path(family)
    assert os.environ["BIASBENCH_CACHE"] in loaded.model_id
