"""Qwen2.5-Omni: its thinker (audio + text in, text out), without the talker.

- Model: `Qwen2_5OmniThinkerForConditionalGeneration`. The hub checkpoint
  (Qwen/Qwen2.5-Omni-7B, model_type `qwen2_5_omni`) holds thinker, talker and token2wav;
  the thinker's config is taken from it and transformers strips the `thinker.` prefix off
  the weights while loading, so the talker is never instantiated.
- Processor: `Qwen2_5OmniProcessor` without its image/video parts (see `audio_only_processor`);
  clips as `audio=`, mask `feature_attention_mask`, 30 s Whisper window (`n_samples`).
- Positions: M-RoPE (3-D, audio-time aware), computed by the model from the attention mask,
  which already accounts for left padding: no explicit position ids.
"""

from __future__ import annotations

from biasbench.models.families._common import audio_only_processor
from biasbench.models.hf_audio_lm import HFAudioLMBackend

OMNI_TOKENS = {
    "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
}


class HFQwen25OmniBackend(HFAudioLMBackend):
    family = "qwen2_5_omni"
    title = "Qwen2.5-Omni thinker"
    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    audio_kwarg = "audio"
    mask_key = "feature_attention_mask"
    explicit_position_ids = False
    quantization_skip_modules = ("audio_tower", "visual", "lm_head")

    def _load_processor(self, common: dict):
        from transformers import Qwen2_5OmniProcessor

        return audio_only_processor(Qwen2_5OmniProcessor, self.model_id, common,
                                    dropped=("image_processor", "video_processor"), tokens=OMNI_TOKENS)

    def _model_config(self, common: dict):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_id, **common)
        return config.thinker_config if config.model_type == "qwen2_5_omni" else None
