"""Tiny, randomly initialised speech LMs of the other supported families, built offline.

Like `qwen2audio.py` (Qwen2-Audio), each uses the family's REAL classes (model, processor,
feature extractor) with shrunk widths and a byte-level BPE tokenizer trained locally on a
few sentences, so it reloads through the same code path as the hub checkpoint. The audio
front ends keep their real settings (16 kHz, 128 mel bins, 30 s Whisper windows), so length
limits and audio-token counts behave as in production. Answers are noise: these exercise
code paths, they measure nothing.

    tiny_family_path("voxtral")  # cache_dir()/models/tiny-voxtral-v1, built on first use

Families: qwen2_5_omni, qwen3_omni_moe (thinkers only), audioflamingo3, musicflamingo,
glmasr, voxtral, phi4_multimodal (with a `speech-lora/` adapter), and, where their optional
extras import (`OPTIONAL_BUILDERS`), granite_speech (torchaudio; a root LoRA adapter) and
gemma3n (timm + torchvision); `build_tiny_text_lm` makes a
text-only Qwen2 for the "text-only model" error. Omni and Phi-4 models are saved as
tokenizer + feature extractor + chat template, since their full processors also hold image
or video processors that need torchvision (see families/_common.py).

Built deterministically (fixed corpus, seeded init) into a temporary sibling folder and
renamed into place (atomic on one filesystem).
"""

from __future__ import annotations

import json
from pathlib import Path

from biasbench.models.tiny.qwen2audio import _CORPUS, OPTION_LETTERS, qwen2_pre_tokenizer
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
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import BPE

    bpe = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = qwen2_pre_tokenizer()
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


def _chatml_generation_config(tokenizer):
    """ChatML checkpoints (Qwen-based): stop at <|im_end|> or <|endoftext|>, pad with <|endoftext|>."""
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return _generation_config([tokenizer.convert_tokens_to_ids("<|im_end|>"), end], end)


def _save(path: Path, model, *parts) -> Path:
    """The model and the parts that load beside it (processor, tokenizer, feature extractor) in `path`."""
    for part in (model, *parts):
        part.save_pretrained(path)
    return path


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
    model.generation_config = _chatml_generation_config(tokenizer)
    _save(path, model, tokenizer, _whisper_fe())
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
    model.generation_config = _chatml_generation_config(tokenizer)
    return _save(path, model, processor)


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
    model.generation_config = _chatml_generation_config(tokenizer)
    return _save(path, model, processor)


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
    model.generation_config = _chatml_generation_config(tokenizer)
    return _save(path, model, processor)


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
    _save(path, model, tokenizer, Phi4MultimodalFeatureExtractor())
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
    specials = [VOXTRAL_SPECIALS.get(i, f"<SPECIAL_{i}>") for i in range(max(VOXTRAL_SPECIALS) + 1)]
    return _fast_bpe_tokenizer(specials, [], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")


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
    return _save(path, model, processor)


# ----------------------------------------------------------------- shared: plain fast BPE tokenizers

def _fast_bpe_tokenizer(specials: list[str], tail: list[str], *, bos: str | None, eos: str, pad: str,
                        unk: str | None = None, add_bos: bool = False, named: dict[str, str] | None = None):
    """Byte-level BPE with `specials` at ids 0..n-1 and `tail` appended after the trained vocab
    (Gemma 3n's multimodal tokens must sit past the text vocabulary), as a plain fast tokenizer.
    `add_bos`: encoding prepends `bos`, as Gemma's tokenizer does."""
    from tokenizers import Tokenizer, decoders, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _train_bpe(specials)
    bpe = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token=None, continuing_subword_prefix="",
                        end_of_word_suffix="", fuse_unk=False))
    bpe.pre_tokenizer = qwen2_pre_tokenizer()
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(specials + tail)
    if add_bos:
        bos_id = bpe.token_to_id(bos)
        bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bos_id)])
    kwargs = {"bos_token": bos} if bos else {}
    if unk:
        kwargs["unk_token"] = unk
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, pad_token=pad, padding_side="left",
                                        extra_special_tokens=named or {}, **kwargs)
    _check_letters(tokenizer)
    return tokenizer


# ----------------------------------------------------------------- Granite Speech

GRANITE_SPECIALS = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>"]
GRANITE_CONTEXT = 4096  # tiny LM context: (4096 - 1024) / 10 tokens per second = 307 s of audio
# Granite 3.3's chat template, reduced to plain turns (no tools or documents); like the real
# one, its default system prompt carries today's date, which the backend never relies on.
_GRANITE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set system_message = \"Knowledge Cutoff Date: April 2024.\\nToday's Date: \" + strftime_now('%B %d, %Y')"
    " + \".\\nYou are Granite, developed by IBM.\" %}{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\\n' }}"
    "{%- for message in loop_messages %}"
    "{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
)
# LoRA on the language model's attention only, like the real checkpoint's q/v adapter.
GRANITE_LORA_TARGETS = r"model\.language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"


def build_tiny_granite_speech(path, seed: int = 0) -> Path:
    """`GraniteSpeechForConditionalGeneration` with explicit tiny sub-configs (Conformer encoder,
    Q-Former projector, Granite LM) and the real `GraniteSpeechFeatureExtractor` settings
    (80 mel bins, 10 audio tokens per second), plus a LoRA adapter at the folder's root like
    the real checkpoint's (random weights, not the usual zero init, so switching it matters).
    Needs torchaudio (the `granite` extra) for the feature extractor."""
    from biasbench.models.families.granite_speech import require_granite_extra

    require_granite_extra()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (GraniteSpeechConfig, GraniteSpeechFeatureExtractor,
                              GraniteSpeechForConditionalGeneration, GraniteSpeechProcessor)

    path = Path(path)
    tokenizer = _fast_bpe_tokenizer(GRANITE_SPECIALS, [], bos="<|end_of_text|>", eos="<|end_of_text|>",
                                    pad="<|end_of_text|>", named={"audio_token": "<|audio|>"})
    tokenizer.chat_template = _GRANITE_TEMPLATE
    processor = GraniteSpeechProcessor(audio_processor=GraniteSpeechFeatureExtractor(), tokenizer=tokenizer,
                                       audio_token="<|audio|>", chat_template=_GRANITE_TEMPLATE)
    config = GraniteSpeechConfig(
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=32, feedforward_mult=2, num_heads=2,
                            output_dim=16, context_size=200, max_pos_emb=512, conv_kernel_size=15),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=32, num_hidden_layers=1,
                              num_attention_heads=2, intermediate_size=64, encoder_hidden_size=32,
                              cross_attention_frequency=1, max_position_embeddings=64),
        text_config=dict(model_type="granite", vocab_size=len(tokenizer), max_position_embeddings=GRANITE_CONTEXT,
                         **_TEXT),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"),
        has_lora_adapter=True, tie_word_embeddings=False,
    )
    model = _seeded(lambda: GraniteSpeechForConditionalGeneration(config), seed)
    eos = tokenizer.convert_tokens_to_ids("<|end_of_text|>")
    model.generation_config = _generation_config([eos], eos)
    _save(path, model, processor)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=GRANITE_LORA_TARGETS, init_lora_weights=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        adapted = get_peft_model(model, lora)  # after saving the base: this changes `model` in place
    adapted.save_pretrained(path)  # adapter_config.json + adapter_model.safetensors beside the weights
    return path


# ----------------------------------------------------------------- Gemma 3n

GEMMA3N_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                    "<start_of_audio>"]
# After the text vocabulary, as in the real one: vision tokens from `vocab_offset` (end-of-image
# first, then the soft token), then audio tokens (end-of-audio first, then the soft token).
GEMMA3N_MM_VOCAB = 4  # per modality (the real one has 128)
GEMMA3N_TAIL = (["<end_of_image>", "<image_soft_token>"] + [f"<vision_{i}>" for i in range(2, GEMMA3N_MM_VOCAB)]
                + ["<end_of_audio>", "<audio_soft_token>"] + [f"<audio_{i}>" for i in range(2, GEMMA3N_MM_VOCAB)])
GEMMA3N_NAMED = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                 "audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
# Gemma 3n's chat template (text, image and audio parts; the system turn folds into the first user turn).
_GEMMA3N_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'audio' -%}{{ '<audio_soft_token>' }}"
    "{%- elif item['type'] == 'image' -%}{{ '<image_soft_token>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
# The smallest MobileNetV5 timm builds from these block strings (the real one is ~300M parameters).
_GEMMA3N_VISION_BLOCKS = [["er_r1_k3_s2_e2_c8"], ["uir_r1_a3_k3_s2_e2_c16"], ["uir_r1_a3_k3_s2_e2_c16"]]


def build_tiny_gemma3n(path, seed: int = 0) -> Path:
    """`Gemma3nForConditionalGeneration`: tiny MatFormer LM (2 layers, per-layer inputs,
    AltUp, Laurel), tiny USM audio encoder, and a tiny timm MobileNetV5 vision tower (the
    class always builds one; its 2048-wide output is fixed by timm). Token layout as in the
    real vocabulary: text, then vision tokens, then audio tokens. Saved as tokenizer + the
    real `Gemma3nAudioFeatureExtractor` + chat template: the backend builds the audio-only
    `Gemma3nProcessor` (the image processor needs torchvision). Needs timm and torchvision
    (the `gemma3n` extra)."""
    from biasbench.models.families.gemma3n import require_gemma3n_extra

    require_gemma3n_extra()
    from timm.models._efficientnet_builder import decode_arch_def
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nForConditionalGeneration

    path = Path(path)
    tokenizer = _fast_bpe_tokenizer(GEMMA3N_SPECIALS, GEMMA3N_TAIL, bos="<bos>", eos="<eos>", pad="<pad>",
                                    unk="<unk>", add_bos=True, named=GEMMA3N_NAMED)
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in GEMMA3N_NAMED.items()}
    vision_offset = ids["eoi_token"]
    audio_offset = ids["eoa_token"]
    vocab = len(tokenizer)
    assert audio_offset == vision_offset + GEMMA3N_MM_VOCAB and vocab == audio_offset + GEMMA3N_MM_VOCAB
    config = Gemma3nConfig(
        text_config=dict(vocab_size=vocab, vocab_size_per_layer_input=vision_offset, hidden_size=64,
                         intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=16, hidden_size_per_layer_input=8, num_kv_shared_layers=0, laurel_rank=8,
                         altup_num_inputs=2, layer_types=["sliding_attention", "full_attention"], sliding_window=64,
                         activation_sparsity_pattern=[0.0, 0.0], max_position_embeddings=4096,
                         pad_token_id=0, bos_token_id=2, eos_token_id=1),
        vision_config=dict(model_args={"block_args": decode_arch_def(_GEMMA3N_VISION_BLOCKS), "stem_size": 8},
                           vocab_size=GEMMA3N_MM_VOCAB, vocab_offset=vision_offset),
        audio_config=dict(vocab_size=GEMMA3N_MM_VOCAB, vocab_offset=audio_offset, hidden_size=32,
                          conf_num_attention_heads=2, conf_num_hidden_layers=2, sscp_conv_channel_size=[16, 8],
                          input_feat_size=128),
        audio_token_id=ids["audio_token"], boa_token_id=ids["boa_token"], eoa_token_id=ids["eoa_token"],
        image_token_id=ids["image_token"], boi_token_id=ids["boi_token"], eoi_token_id=ids["eoi_token"],
    )
    model = _seeded(lambda: Gemma3nForConditionalGeneration(config), seed)
    # timm's builder fills layer functions into the block dicts it was given: save fresh ones.
    model.config.vision_config.model_args = {"block_args": decode_arch_def(_GEMMA3N_VISION_BLOCKS), "stem_size": 8}
    # Like the real checkpoint: stop at <eos> or <end_of_turn>.
    model.generation_config = _generation_config([1, tokenizer.convert_tokens_to_ids("<end_of_turn>")], 0)
    _save(path, model, tokenizer, Gemma3nAudioFeatureExtractor())
    (path / "chat_template.jinja").write_text(_GEMMA3N_TEMPLATE)
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
    # These two need optional extras (torchaudio; timm + torchvision): see OPTIONAL_BUILDERS.
    "granite_speech": build_tiny_granite_speech,
    "gemma3n": build_tiny_gemma3n,
}
#: Families whose tiny build (and backend) needs an extra, with the modules it must import.
OPTIONAL_BUILDERS = {"granite_speech": ("granite", ("torchaudio",)),
                     "gemma3n": ("gemma3n", ("timm", "torchvision"))}
TINY_VERSION = "v1"  # bump whenever a build above changes


def tiny_family_name(family: str) -> str:
    return f"tiny-{family.replace('_', '-')}-{TINY_VERSION}"


def tiny_family_path(family: str) -> Path:
    """`cache_dir()/models/tiny-<family>-v1`, built on first use (atomic rename into place)."""
    if family == "qwen2_audio":
        from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

        return tiny_qwen2audio_path()
    if family not in BUILDERS:
        raise KeyError(f"no tiny builder for {family!r}; known: {', '.join(sorted(BUILDERS))}")
    return cached_model(tiny_family_name(family), BUILDERS[family])
