"""Tiny, randomly initialised speech LMs of the other supported families, built offline.

Like `tiny.py` (Qwen2-Audio), each uses the family's REAL classes (model, processor,
feature extractor) with shrunk widths and a byte-level BPE tokenizer trained locally on a
few sentences, so it reloads through the same code path as the hub checkpoint. The audio
front ends keep their real settings (16 kHz, 128 mel bins, 30 s Whisper windows), so length
limits and audio-token counts behave as in production. Answers are noise: these exercise
code paths, they measure nothing.

    tiny_family_path("voxtral")  # cache_dir()/models/tiny-voxtral-v1, built on first use

Families: qwen2_5_omni, qwen3_omni_moe (thinkers only), audioflamingo3, musicflamingo,
glmasr, voxtral, phi4_multimodal (with a `speech-lora/` adapter); `build_tiny_text_lm` makes a
text-only Qwen2 for the "text-only model" error. Omni and Phi-4 models are saved as
tokenizer + feature extractor + chat template, since their full processors also hold image
or video processors that need torchvision (see families/_common.py).

Built deterministically (fixed corpus, seeded init) into a temporary sibling folder and
renamed into place (atomic on one filesystem).
"""

from __future__ import annotations

import json
from pathlib import Path

from biasbench.models.tiny import _CORPUS, OPTION_LETTERS
from biasbench.paths import cached_model

_VOCAB_SIZE = 512
_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, tie_word_embeddings=False)

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen-style ChatML with a default system turn; `audio_part` is what one clip becomes.
_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content %}AUDIO_PART"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _train_bpe(specials: list[str]) -> tuple[dict, list]:
    """Byte-level BPE (Qwen2's pre-tokenizer) on the fixed corpus; `specials` get ids 0..n-1."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=_VOCAB_SIZE, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(_CORPUS, trainer)
    trained = json.loads(bpe.to_str())["model"]
    return trained["vocab"], [tuple(m) for m in trained["merges"]]


def _qwen_tokenizer(extra: list[str], named: dict[str, str] | None = None):
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab, merges = _train_bpe(QWEN_SPECIALS + extra)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                               extra_special_tokens=named or extra, padding_side="left")
    _check_letters(tokenizer)
    return tokenizer


def _check_letters(tokenizer) -> None:
    for letter in OPTION_LETTERS:
        for variant in (letter, " " + letter):
            if len(tokenizer.encode(variant, add_special_tokens=False)) != 1:
                raise RuntimeError(f"tiny tokenizer splits {variant!r}; extend the corpus")


def _whisper_fe():
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, n_fft=400, chunk_length=30)


def _seeded(build, seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(seed)
        return build().eval()


def _generation_config(eos: list[int], pad: int):
    from transformers import GenerationConfig

    # Like the real instruct checkpoints: sampling defaults the backends must override.
    return GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=True, top_k=20, top_p=0.8,
                            temperature=0.7, repetition_penalty=1.05)


# ----------------------------------------------------------------- Qwen2.5-Omni thinker

OMNI_NAMED = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
              "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>", "vision_bos_token": "<|vision_bos|>",
              "vision_eos_token": "<|vision_eos|>"}


def build_tiny_qwen2_5_omni(path, seed: int = 0) -> Path:
    """Thinker only (`Qwen2_5OmniThinkerForConditionalGeneration`), with a tiny vision tower
    (the class always has one). Saved as tokenizer + Whisper feature extractor + chat
    template: the backend builds the audio-only `Qwen2_5OmniProcessor` from those."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    path = Path(path)
    tokenizer = _qwen_tokenizer(list(OMNI_NAMED.values()), OMNI_NAMED)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in OMNI_NAMED.items()}
    config = Qwen2_5OmniThinkerConfig(
        audio_config=dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          num_mel_bins=128, output_dim=_TEXT["hidden_size"], n_window=100, max_source_positions=1500),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2,
                           out_hidden_size=_TEXT["hidden_size"], fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=len(tokenizer), max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6},
                         **{k: v for k, v in _TEXT.items() if k != "tie_word_embeddings"}),
        audio_token_index=ids["audio_token"], image_token_index=ids["image_token"],
        video_token_index=ids["video_token"], audio_start_token_id=ids["audio_bos_token"],
        audio_end_token_id=ids["audio_eos_token"], vision_start_token_id=ids["vision_bos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    return _save_omni_thinker(_seeded(lambda: Qwen2_5OmniThinkerForConditionalGeneration(config), seed), tokenizer, path)


def _save_omni_thinker(model, tokenizer, path: Path) -> Path:
    """What both Omni thinkers save: model (ChatML stop tokens), tokenizer, Whisper features, template."""
    model.generation_config = _generation_config(
        [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    _whisper_fe().save_pretrained(path)
    (path / "chat_template.jinja").write_text(_CHATML.replace("AUDIO_PART", "<|audio_bos|><|AUDIO|><|audio_eos|>"))
    return path


# ----------------------------------------------------------------- Qwen3-Omni (MoE) thinker

def build_tiny_qwen3_omni_moe(path, seed: int = 0) -> Path:
    """Thinker only (`Qwen3OmniMoeThinkerForConditionalGeneration`): 4 experts, 2 active, and
    a tiny vision tower (the class always has one). Saved like the Qwen2.5-Omni one."""
    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    path = Path(path)
    tokenizer = _qwen_tokenizer(list(OMNI_NAMED.values()), OMNI_NAMED)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in OMNI_NAMED.items()}
    hidden = _TEXT["hidden_size"]
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
                          num_mel_bins=128, output_dim=hidden, n_window=50, n_window_infer=800,
                          downsample_hidden_size=32, max_source_positions=1500),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           deepstack_visual_indexes=[0], num_position_embeddings=64),
        text_config=dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=128,
                         moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e6,
                                          "mrope_interleaved": True}),
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"],
        user_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )
    return _save_omni_thinker(_seeded(lambda: Qwen3OmniMoeThinkerForConditionalGeneration(config), seed), tokenizer, path)


# ----------------------------------------------------------------- Audio Flamingo 3

AF3_MAX_AUDIO_S = 60  # the real processor's is 600 s; tiny keeps the too-long check cheap


def build_tiny_audioflamingo3(path, seed: int = 0) -> Path:
    from transformers import AudioFlamingo3Config, AudioFlamingo3ForConditionalGeneration, AudioFlamingo3Processor

    path = Path(path)
    tokenizer = _qwen_tokenizer(["<sound>"])
    template = _CHATML.replace("AUDIO_PART", "<sound>")
    processor = AudioFlamingo3Processor(feature_extractor=_whisper_fe(), tokenizer=tokenizer,
                                        chat_template=template, max_audio_len=AF3_MAX_AUDIO_S)
    config = AudioFlamingo3Config(
        audio_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                          num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), max_position_embeddings=4096, **_TEXT),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    model = _seeded(lambda: AudioFlamingo3ForConditionalGeneration(config), seed)
    model.generation_config = _generation_config(
        [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------- Music Flamingo

def build_tiny_musicflamingo(path, seed: int = 0) -> Path:
    """AF3's layout plus `<|sound_bos|>`/`<|sound_eos|>` around each clip's tokens and rotary
    time embeddings on the audio frames."""
    from transformers import MusicFlamingoConfig, MusicFlamingoForConditionalGeneration, MusicFlamingoProcessor

    path = Path(path)
    tokenizer = _qwen_tokenizer(["<sound>", "<|sound_bos|>", "<|sound_eos|>"])
    processor = MusicFlamingoProcessor(feature_extractor=_whisper_fe(), tokenizer=tokenizer,
                                       chat_template=_CHATML.replace("AUDIO_PART", "<sound>"),
                                       max_audio_len=AF3_MAX_AUDIO_S)
    config = MusicFlamingoConfig(
        audio_config=dict(model_type="audioflamingo3_encoder", hidden_size=64, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=128, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), max_position_embeddings=4096, **_TEXT),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
        audio_bos_token_id=tokenizer.convert_tokens_to_ids("<|sound_bos|>"),
        audio_eos_token_id=tokenizer.convert_tokens_to_ids("<|sound_eos|>"),
    )
    model = _seeded(lambda: MusicFlamingoForConditionalGeneration(config), seed)
    model.generation_config = _generation_config(
        [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------- GLM-ASR

GLMASR_MAX_AUDIO_S = 60  # the real processor's is 655 s; tiny keeps the too-long check cheap


def build_tiny_glmasr(path, seed: int = 0) -> Path:
    """GLM-ASR's LM is Llama-style; its audio placeholder is `<|pad|>`."""
    from transformers import GlmAsrConfig, GlmAsrForConditionalGeneration, GlmAsrProcessor

    path = Path(path)
    tokenizer = _qwen_tokenizer(["<|pad|>"])
    processor = GlmAsrProcessor(feature_extractor=_whisper_fe(), tokenizer=tokenizer,
                                chat_template=_CHATML.replace("AUDIO_PART", "<|pad|>"),
                                max_audio_len=GLMASR_MAX_AUDIO_S)
    config = GlmAsrConfig(
        audio_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                          num_mel_bins=128, max_position_embeddings=1500),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), max_position_embeddings=4096,
                         head_dim=16, **_TEXT),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|pad|>"),
        tie_word_embeddings=False,
    )
    model = _seeded(lambda: GlmAsrForConditionalGeneration(config), seed)
    model.generation_config = _generation_config(
        [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")],
        tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------- Phi-4-multimodal

PHI4_NAMED = {"audio_token": "<|audio|>", "image_token": "<|image|>"}
# LoRA on the language model only (the speech encoder has projections too).
PHI4_LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"


def build_tiny_phi4_multimodal(path, seed: int = 0) -> Path:
    """`Phi4MultimodalForCausalLM` (tiny Conformer speech encoder, tiny vision tower) plus a
    `speech-lora/` adapter like the real checkpoint's; its LoRA weights are random (not the
    usual zero init) so that switching it on visibly changes the answers. Saved as tokenizer
    + `Phi4MultimodalFeatureExtractor` + chat template: the backend builds the audio-only
    processor from those (the image processor needs torchvision)."""
    from peft import LoraConfig
    from transformers import Phi4MultimodalConfig, Phi4MultimodalFeatureExtractor, Phi4MultimodalForCausalLM

    path = Path(path)
    tokenizer = _qwen_tokenizer(list(PHI4_NAMED.values()), PHI4_NAMED)
    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in PHI4_NAMED.items()}
    pad, eos = tokenizer.convert_tokens_to_ids("<|endoftext|>"), tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Phi4MultimodalConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, original_max_position_embeddings=4096,
        pad_token_id=pad, bos_token_id=pad, eos_token_id=eos,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, crop_size=28, patch_size=14, image_token_id=ids["image_token"]),
        audio_config=dict(hidden_size=64, intermediate_size=128, num_blocks=2, num_attention_heads=4,
                          ext_pw_out_channel=64, depthwise_separable_out_channel=64, nemo_conv_channels=64,
                          input_size=80, time_reduction=8, audio_token_id=ids["audio_token"]),
    )
    model = _seeded(lambda: Phi4MultimodalForCausalLM(config), seed)
    model.generation_config = _generation_config([eos, pad], pad)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    Phi4MultimodalFeatureExtractor().save_pretrained(path)
    (path / "chat_template.jinja").write_text(_CHATML.replace("AUDIO_PART", "<|audio|>"))
    import torch
    from peft import get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=PHI4_LORA_TARGETS, init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        adapted = get_peft_model(model, lora)  # after saving the base: this changes `model` in place
    adapted.save_pretrained(path / "speech-lora")  # adapter_config.json + adapter_model.safetensors
    return path


# ----------------------------------------------------------------- Voxtral

# Tekken's control tokens sit at fixed ids; VoxtralProcessor hard-codes [AUDIO] = 24.
VOXTRAL_SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]", 11: "<pad>",
                    24: "[AUDIO]", 25: "[BEGIN_AUDIO]"}
VOXTRAL_CONTEXT = 2048  # tiny LM context: (2048 - 1024) // 375 = 2 chunks, so 60 s of audio


def _voxtral_tokenizer():
    """Byte-level BPE with Tekken's control tokens at their ids, as a plain fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    specials = [VOXTRAL_SPECIALS.get(i, f"<SPECIAL_{i}>") for i in range(max(VOXTRAL_SPECIALS) + 1)]
    vocab, merges = _train_bpe(specials)
    bpe = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", padding_side="left")
    _check_letters(tokenizer)
    return tokenizer


def build_tiny_voxtral(path, seed: int = 0) -> Path:
    """Tokenizer: a plain fast tokenizer with Tekken's control-token ids (the real one is
    mistral-common's Tekken, which the backend drives through the same token names)."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, VoxtralProcessor

    path = Path(path)
    tokenizer = _voxtral_tokenizer()
    processor = VoxtralProcessor(feature_extractor=_whisper_fe(), tokenizer=tokenizer)
    config = VoxtralConfig(
        # intermediate = 4 x hidden: four encoder frames per audio token, 375 tokens per 30 s, as the real one.
        audio_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                          num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), max_position_embeddings=VOXTRAL_CONTEXT,
                         head_dim=16, **_TEXT),
        audio_token_id=24,
    )
    model = _seeded(lambda: VoxtralForConditionalGeneration(config), seed)
    model.generation_config = _generation_config([2], 11)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ----------------------------------------------------------------- text-only (for the dispatch error)

def build_tiny_text_lm(path, seed: int = 0) -> Path:
    """A tiny Qwen2ForCausalLM: what `hf:<path>` must refuse with a clear message."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer = _qwen_tokenizer([])
    config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=1024, **_TEXT)
    _seeded(lambda: Qwen2ForCausalLM(config), seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


BUILDERS = {
    "qwen2_5_omni": build_tiny_qwen2_5_omni,
    "qwen3_omni_moe": build_tiny_qwen3_omni_moe,
    "audioflamingo3": build_tiny_audioflamingo3,
    "glmasr": build_tiny_glmasr,
    "musicflamingo": build_tiny_musicflamingo,
    "phi4_multimodal": build_tiny_phi4_multimodal,
    "voxtral": build_tiny_voxtral,
}
TINY_VERSION = "v1"  # bump whenever a build above changes


def tiny_family_name(family: str) -> str:
    return f"tiny-{family.replace('_', '-')}-{TINY_VERSION}"


def tiny_family_path(family: str) -> Path:
    """`cache_dir()/models/tiny-<family>-v1`, built on first use (atomic rename into place)."""
    if family == "qwen2_audio":
        from biasbench.models.tiny import tiny_qwen2audio_path

        return tiny_qwen2audio_path()
    if family not in BUILDERS:
        raise KeyError(f"no tiny builder for {family!r}; known: {', '.join(sorted(BUILDERS))}")
    return cached_model(tiny_family_name(family), BUILDERS[family])
