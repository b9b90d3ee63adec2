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

from biasbench.errors import BiasbenchError
from biasbench.models.families._common import audio_only_processor
from biasbench.models.hf_audio_lm import HFAudioLMBackend, _hash_local_model

SPEECH_ADAPTER = "speech"
SPEECH_SUBFOLDER = "speech-lora"
_MAX_DOCUMENTED_S = 30 * 60
_PROMPT_ROOM = 1024


class HFPhi4MultimodalBackend(HFAudioLMBackend):
    family = "phi4_multimodal"
    title = "Phi-4-multimodal"
    model_class = "Phi4MultimodalForCausalLM"
    audio_kwarg = "audio"
    mask_key = "audio_attention_mask"
    audio_rows_alone = True
    quantization_skip_modules = ("embed_tokens_extend", "lm_head")

    def _load_processor(self, common: dict):
        from transformers import Phi4MultimodalProcessor

        return audio_only_processor(Phi4MultimodalProcessor, self.model_id, common, dropped=("image_processor",),
                                    audio_attr="audio_processor",
                                    tokens={"audio_token": "<|audio|>", "image_token": "<|image|>"})

    def _feature_extractor(self):
        return self.processor.audio_processor

    def _load_model(self, common: dict, bnb):
        model = super()._load_model(common, bnb)
        self._adapter = self._find_speech_adapter(common)
        self._peft = None
        if self._adapter is None:
            return model
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BiasbenchError(f"{self.model_id} ships its speech skills as a LoRA adapter ({SPEECH_SUBFOLDER}/), "
                                 "which needs peft: pip install peft") from exc
        # peft injects the LoRA layers into `model` in place; the backend keeps calling `model`
        # itself and switches the adapter through the PeftModel (see _before_batch).
        revision = {"revision": common["revision"]} if common.get("revision") else {}
        self._peft = PeftModel.from_pretrained(model, self.model_id, subfolder=SPEECH_SUBFOLDER,
                                               adapter_name=SPEECH_ADAPTER, is_trainable=False,
                                               local_files_only=bool(common.get("local_files_only")), **revision)
        return self._peft.get_base_model().eval()

    def _find_speech_adapter(self, common: dict) -> str | None:
        """Path (local) or hub file of `speech-lora/adapter_config.json`, None when absent."""
        local = Path(self.model_id)
        if local.is_dir():
            path = local / SPEECH_SUBFOLDER / "adapter_config.json"
            return str(path.parent) if path.is_file() else None
        from transformers.utils import cached_file

        kwargs = {k: v for k, v in common.items() if k in ("revision", "local_files_only")}
        return cached_file(self.model_id, f"{SPEECH_SUBFOLDER}/adapter_config.json",
                           _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **kwargs)

    def _before_batch(self, requests) -> None:
        if self._peft is None:
            return
        if any(r.audio is not None for r in requests):  # calls never mix (audio_rows_alone)
            self._peft.base_model.enable_adapter_layers()
        else:
            self._peft.base_model.disable_adapter_layers()

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
