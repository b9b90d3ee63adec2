"""HF Qwen2-Audio backend, exercised on the tiny model built offline (real classes, random weights)."""

from __future__ import annotations

import math

import pytest

from biasbench.errors import BiasbenchError
from biasbench.models.base import Request

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend  # noqa: E402
from biasbench.models.tiny.qwen2audio import TINY_NAME, build_tiny_qwen2audio, tiny_qwen2audio_path  # noqa: E402

from conftest import LETTERS, PROMPT, clip, mc  # noqa: E402
from conftest import gen as _gen  # noqa: E402

SR = 16000






def gen(rid, seconds, seed=0, max_new_tokens=8, **settings):
    return _gen(rid, seconds, seed, max_new_tokens=max_new_tokens, **settings)


@pytest.fixture(scope="session")
def tiny_dir(biasbench_cache):
    return tiny_qwen2audio_path()


@pytest.fixture(scope="session")
def backend(tiny_dir):
    return HFQwen2AudioBackend(str(tiny_dir), local_files_only=True)


def test_tiny_model_is_built_once_in_the_cache(tiny_dir, biasbench_cache):
    assert tiny_dir == biasbench_cache / "models" / TINY_NAME
    assert tiny_qwen2audio_path() == tiny_dir
    # The temporary build folder was renamed away (other tiny models may share the cache).
    leftovers = [p.name for p in tiny_dir.parent.iterdir() if p.name.startswith(f".{TINY_NAME}-building-")]
    assert leftovers == []


def test_reloads_through_the_real_classes(backend):
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    assert isinstance(backend.processor, Qwen2AudioProcessor)
    assert isinstance(backend.processor.tokenizer, Qwen2Tokenizer)
    assert isinstance(backend.model, Qwen2AudioForConditionalGeneration)
    assert backend.processor.feature_extractor.feature_size == 128
    assert backend.max_audio_seconds == 30.0
    assert backend.processor.tokenizer.padding_side == "left"
    for letter in LETTERS:
        assert len(backend._option_ids(letter)) == 2  # "A" and " A" are both single tokens


def test_scored_choices_are_a_log_distribution(backend):
    (resp,) = backend.score_choices([mc("q1", 3.0)])
    lp = resp.option_logprobs
    assert list(lp) == LETTERS
    assert all(v <= 0 for v in lp.values())
    assert math.isclose(float(torch.logsumexp(torch.tensor(list(lp.values())), 0)), 0.0, abs_tol=1e-6)
    assert resp.text == max(lp, key=lp.get)
    assert resp.n_input_tokens > 75  # 3 s of audio alone expands to 75 audio tokens
    assert resp.latency_s > 0


def test_batched_scoring_equals_single_with_mixed_lengths(backend):
    # Different clip lengths (and a text-only row, and a 2-option row) force real left padding.
    requests = [mc("a", 2.0, 1), mc("b", 11.7, 2), mc("c", 5.3, 3), mc("t", None), mc("ab", 7.1, 4, ["A", "B"])]
    batched = backend.score_choices(requests)
    assert len({r.n_input_tokens for r in batched}) == len(requests)
    for req, b in zip(requests, batched):
        (single,) = backend.score_choices([req])
        assert b.request_id == req.request_id
        assert b.n_input_tokens == single.n_input_tokens
        assert list(b.option_logprobs) == list(req.choices)
        for k in req.choices:
            assert b.option_logprobs[k] == pytest.approx(single.option_logprobs[k], abs=1e-5)


def test_generate_batched_equals_single_under_greedy(backend):
    requests = [gen("a", 2.0, 1), gen("b", 9.4, 2), gen("t", None), gen("c", 4.2, 3)]
    batched = backend.generate(requests)
    assert [r.request_id for r in batched] == ["a", "b", "t", "c"]
    for req, b in zip(requests, batched):
        assert isinstance(b.text, str)
        assert b.text == b.text.strip()
        assert 0 <= b.n_output_tokens <= 8
        assert b.text == backend.generate([req])[0].text


def _manual_greedy(backend, request, n_tokens):
    """Plain argmax loop over full forward passes: the reference for greedy decoding."""
    inputs = backend._encode([request])
    ids, mask, out = inputs["input_ids"], inputs["attention_mask"], []
    with torch.inference_mode():
        for _ in range(n_tokens):
            logits = backend.model(**{**inputs, "input_ids": ids, "attention_mask": mask}).logits[0, -1]
            token = int(logits.argmax())
            if token in backend._stop_ids:
                break
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
            mask = torch.cat([mask, torch.ones(1, 1, dtype=mask.dtype)], 1)
    return backend.processor.tokenizer.decode(out, skip_special_tokens=True).strip()


def test_greedy_ignores_checkpoint_sampling_defaults(backend, monkeypatch):
    # The checkpoint's generation_config samples with a repetition penalty (as the real
    # Instruct model's does); exaggerate the penalty so any leak would change the tokens.
    monkeypatch.setattr(backend.model.generation_config, "repetition_penalty", 50.0)
    request = gen("g", 3.0, 5)
    assert backend.generate([request])[0].text == _manual_greedy(backend, request, 8)


def test_sampling_is_reproducible_from_the_seed(backend):
    first = backend.generate([gen("s", 3.0, temperature=1.0, seed=7)])[0].text
    again = backend.generate([gen("s", 3.0, temperature=1.0, seed=7)])[0].text
    assert first == again


def test_mixed_settings_in_one_call_keep_order(backend):
    requests = [gen("x", 2.0, max_new_tokens=2), gen("y", 2.0), gen("z", None, max_new_tokens=2)]
    out = backend.generate(requests)
    assert [r.request_id for r in out] == ["x", "y", "z"]
    assert out[0].n_output_tokens <= 2 and out[2].n_output_tokens <= 2


def test_text_only_request(backend):
    (scored,) = backend.score_choices([mc("t", None)])
    assert set(scored.option_logprobs) == set(LETTERS)
    (generated,) = backend.generate([gen("t", None)])
    assert isinstance(generated.text, str)


def test_audio_longer_than_the_window_raises(backend):
    backend.score_choices([mc("full", 30.0)])  # exactly the window is fine
    with pytest.raises(ValueError, match="30"):
        backend.score_choices([mc("ok", 2.0), mc("long", 30.5)])
    with pytest.raises(ValueError, match="truncated"):
        backend.generate([gen("long", 31.0)])


def test_wrong_sampling_rate_raises(backend):
    request = Request("sr", PROMPT, audio=clip(2.0), sampling_rate=22050, choices=LETTERS)
    with pytest.raises(ValueError, match="22050"):
        backend.score_choices([request])


def test_fingerprint(backend, tiny_dir, tmp_path):
    fp = backend.fingerprint()
    assert fp["backend"] == "hf" and fp["model"] == str(tiny_dir)
    assert fp["dtype"] == "float32" and fp["device"] == "cpu"
    assert fp["revision"] is None and fp["transformers"] and fp["torch"]
    other = HFQwen2AudioBackend(str(build_tiny_qwen2audio(tmp_path / "seed1", seed=1)), local_files_only=True)
    assert other.fingerprint()["local_sha256"] != fp["local_sha256"]


def test_build_is_deterministic(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    rebuilt = build_tiny_qwen2audio(tmp_path / "again")
    first, second = load_file(tiny_dir / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tiny_dir / "tokenizer.json").read_bytes() == (rebuilt / "tokenizer.json").read_bytes()
    from biasbench.models.hf_qwen2audio import _hash_local_model

    assert _hash_local_model(tiny_dir) == _hash_local_model(rebuilt)


@pytest.mark.parametrize("model", ["does-not-exist/no-such-model", "/nonexistent/biasbench/model"])
def test_unloadable_model_raises_a_clear_error(model):
    with pytest.raises(BiasbenchError, match="no-such-model|nonexistent"):
        HFQwen2AudioBackend(model, local_files_only=True)
