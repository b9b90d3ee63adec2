"""A tiny, randomly initialised Qwen2-Audio built offline, for tests and benchmarks.

It uses the REAL classes (`Qwen2AudioForConditionalGeneration`, `Qwen2AudioProcessor`,
`Qwen2Tokenizer`, `WhisperFeatureExtractor`) and is saved with `save_pretrained`, so it
reloads through `AutoProcessor` / `from_pretrained` exactly like `Qwen/Qwen2-Audio-7B-Instruct`
does. Only the widths are tiny; the audio front end keeps the real 30 s window
(chunk_length 30, max_source_positions 1500) so length limits behave as in production.
Its answers are noise: it exercises code paths, it measures nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from biasbench.paths import cached_model

TINY_NAME = "tiny-qwen2audio-v1"  # bump the suffix whenever the build below changes

# Same ids order as the real Qwen tokenizer's added tokens (endoftext, im_start, im_end, ...).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
OPTION_LETTERS = ["A", "B", "C", "D"]

# The chat template shipped with Qwen/Qwen2-Audio-7B-Instruct (chat_template.json). Spelled out
# here rather than taken from `Qwen2AudioProcessor.default_chat_template`, which transformers
# marks as kept only for backward compatibility.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Training text for the BPE. The repeated " A" / " B" ... make the trainer learn the
# space-prefixed letters as single tokens (bare "A" is always one token: it is a byte).
_CORPUS = [
    "You are a helpful assistant.",
    "Listen to the audio and answer the question.",
    "Answer with the letter of the correct option: A, B, C or D.",
    "The answer is A. The answer is B. The answer is C. The answer is D.",
    "Option A: yes. Option B: no. Option C: maybe. Option D: I do not know.",
    "What did the speaker ask about? Should the speaker get the job?",
    "Is the person speaking a good candidate? Rate the speaker from 1 to 10.",
    "Please transcribe the speech. Describe the voice of the speaker.",
] * 8

_VOCAB_SIZE = 512


def qwen2_pre_tokenizer():
    """Qwen2's pre-tokenizer (its split regex, then byte-level), for the tiny BPE tokenizers."""
    from tokenizers import Regex, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _train_tokenizer():
    """A byte-level BPE with Qwen2's normalizer and pre-tokenizer, wrapped as `Qwen2Tokenizer`."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = qwen2_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIAL_TOKENS,  # first in the vocab: fixed ids 0..5
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer)  # deterministic: same vocab/merges every run
    trained = json.loads(bpe.to_str())["model"]
    # Rebuild through Qwen2Tokenizer (the class the real checkpoint names) from vocab + merges.
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) for m in trained["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL_TOKENS[1:],
        padding_side="left",  # saved in tokenizer_config.json, kept on reload
    )
    _check_single_token_letters(tokenizer)
    return tokenizer


def _check_single_token_letters(tokenizer) -> None:
    """Multiple-choice scoring reads one logit per letter: "A" and " A" must be one token each."""
    for letter in OPTION_LETTERS:
        for variant in (letter, " " + letter):
            ids = tokenizer.encode(variant, add_special_tokens=False)
            if len(ids) != 1:
                raise RuntimeError(f"tiny tokenizer splits {variant!r} into {ids}; extend _CORPUS")


def _build_processor(tokenizer):
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    # Real Qwen2-Audio front end: 128 mel bins, 16 kHz, 10 ms hop, 30 s window.
    feature_extractor = WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400, chunk_length=30
    )
    return Qwen2AudioProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


def _build_model(tokenizer, seed: int):
    import torch
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    audio_config = dict(
        d_model=64,
        encoder_layers=2,
        encoder_attention_heads=2,
        encoder_ffn_dim=128,
        num_mel_bins=128,
        max_source_positions=1500,  # 3000 mel frames (30 s) / 2: the encoder insists on it
    )
    text_config = dict(
        model_type="qwen2",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    config = Qwen2AudioConfig(
        audio_config=audio_config,
        text_config=text_config,
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    # fork_rng: seed the init without disturbing the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2AudioForConditionalGeneration(config).eval()
    # Mirrors the real Instruct checkpoint, whose generation_config samples by default
    # (with a repetition penalty): backends must override it explicitly to decode greedily.
    model.generation_config = sampling_generation_config(tokenizer, top_p=0.5, repetition_penalty=1.1)
    return model


def sampling_generation_config(tokenizer, top_p: float, repetition_penalty: float):
    """A Qwen Instruct checkpoint's generation_config: it samples unless told otherwise."""
    from transformers import GenerationConfig

    return GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True, top_k=20, top_p=top_p, temperature=0.7, repetition_penalty=repetition_penalty,
    )


def build_tiny_qwen2audio(path, seed: int = 0) -> Path:
    """Build the tiny model + processor and `save_pretrained` both into `path`. Deterministic
    for a given seed (same tokenizer, same weights); different seeds give different weights."""
    path = Path(path)
    tokenizer = _train_tokenizer()
    processor = _build_processor(tokenizer)
    model = _build_model(tokenizer, seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def tiny_qwen2audio_path() -> Path:
    """`cache_dir()/models/tiny-qwen2audio-v1`, built on first use (atomically)."""
    return cached_model(TINY_NAME, build_tiny_qwen2audio)
