"""Microsoft Phi-4-multimodal (microsoft/Phi-4-multimodal-instruct, transformers format).

- Model: `Phi4MultimodalForCausalLM` (Phi-4-mini LM; a Conformer speech encoder inside the
  embedding layer). Its speech skills live in a LoRA adapter shipped beside the weights
  (`speech-lora/`): it is loaded as adapter "speech" with peft and switched on for calls
  with a clip, off for text-only calls, as the model card's "mixture of LoRAs" prescribes.
  (peft directly, not transformers' `load_adapter`, which in 5.24 wants peft >= 0.22.)
  A checkpoint without `speech-lora/` runs the base weights; the fingerprint says which.
- Processor: `Phi4MultimodalProcessor` without its image processor (which needs torchvision;
  see `audio_only_processor`); clips as `audio=`, features `audio_input_features`, mask
  `audio_attention_mask`, one `<|audio|>` per clip in the chat template, expanded by the
  processor (12.5 tokens per second).
- Batching: the speech encoder's convolutions see the padding of shorter clips in a batch,
  so a clip's answer would depend on its neighbours. Each row with a clip is therefore
  encoded in a call of its own (`audio_rows_alone`); text-only rows still batch.
- No truncation in the feature extractor: the limit is what fits the LM context with room
  for the prompt, at most 30 min (the model card's longest tested audio).
"""

from __future__ import annotations

from pathlib import Path

from biasbench.models.families._common import SpeechAdapterMixin, audio_only_processor
from biasbench.models.hf_audio_lm import HFAudioLMBackend, _hash_local_model

SPEECH_SUBFOLDER = "speech-lora"
_MAX_DOCUMENTED_S = 30 * 60
_PROMPT_ROOM = 1024


class HFPhi4MultimodalBackend(SpeechAdapterMixin, HFAudioLMBackend):
    family = "phi4_multimodal"
    title = "Phi-4-multimodal"
    model_class = "Phi4MultimodalForCausalLM"
    audio_kwarg = "audio"
    mask_key = "audio_attention_mask"
    audio_rows_alone = True
    quantization_skip_modules = ("embed_tokens_extend", "lm_head")
    speech_adapter_subfolder = SPEECH_SUBFOLDER

    def _load_processor(self, common: dict):
        from transformers import Phi4MultimodalProcessor

        return audio_only_processor(Phi4MultimodalProcessor, self.model_id, common, dropped=("image_processor",),
                                    audio_attr="audio_processor",
                                    tokens={"audio_token": "<|audio|>", "image_token": "<|image|>"})

    def _feature_extractor(self):
        return self.processor.audio_processor

    def _load_model(self, common: dict, bnb):
        return self._with_speech_adapter(super()._load_model(common, bnb), common)

    def _fingerprint_extra(self) -> dict:
        if self._adapter is None:
            return {"speech_adapter": None}
        folder = Path(self._adapter)
        return {"speech_adapter": SPEECH_SUBFOLDER,
                "speech_adapter_sha256": _hash_local_model(folder) if folder.is_dir() else None}

    def _read_max_audio_seconds(self) -> float:
        fe = self._feature_extractor()
        tokens_per_second = fe.sampling_rate / fe.hop_length / fe.audio_compression_rate  # 12.5
        context = self.model.config.get_text_config().max_position_embeddings
        return float(min(int((context - _PROMPT_ROOM) / tokens_per_second), _MAX_DOCUMENTED_S))
