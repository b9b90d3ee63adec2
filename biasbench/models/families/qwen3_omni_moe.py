"""Qwen3-Omni (MoE): its thinker (audio + text in, text out), without the talker.

As Qwen2.5-Omni (see qwen2_5_omni.py: audio-only `Qwen3OmniMoeProcessor`, thinker config
and `thinker.` weights taken from the full checkpoint, M-RoPE positions from the mask), with
two differences that matter here:
- The processor does not cut clips to a 30 s window (`truncation=False`): the encoder takes
  any length in 100-frame windows, 13 audio tokens per second. The limit is therefore what
  fits the LM context with room for the prompt, at most 40 min (Qwen's stated maximum).
- The LM is a mixture of experts (Qwen3-Omni-30B-A3B: 3B of 30B parameters active).
"""

from __future__ import annotations

from biasbench.models.families._common import audio_only_processor
from biasbench.models.families.qwen2_5_omni import OMNI_TOKENS, HFQwen25OmniBackend

_MAX_DOCUMENTED_S = 40 * 60
_PROMPT_ROOM = 1024  # tokens kept free for the text prompt and the answer
_TOKENS_PER_SECOND = 13  # per 100 mel frames (1 s): see the processor's _get_feat_extract_output_lengths


class HFQwen3OmniMoeBackend(HFQwen25OmniBackend):
    family = "qwen3_omni_moe"
    title = "Qwen3-Omni thinker"
    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    quantization_skip_modules = ("audio_tower", "visual", "lm_head", "mlp.gate")

    def _load_processor(self, common: dict):
        from transformers import Qwen3OmniMoeProcessor

        return audio_only_processor(Qwen3OmniMoeProcessor, self.model_id, common,
                                    dropped=("image_processor", "video_processor"), tokens=OMNI_TOKENS)

    def _model_config(self, common: dict):
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_id, **common)
        return config.thinker_config if config.model_type == "qwen3_omni_moe" else None

    def _read_max_audio_seconds(self) -> float:
        context = self.model.config.get_text_config().max_position_embeddings
        return float(min((context - _PROMPT_ROOM) // _TOKENS_PER_SECOND, _MAX_DOCUMENTED_S))
