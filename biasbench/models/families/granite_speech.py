"""IBM Granite Speech (ibm-granite/granite-speech-3.3-2b, granite-speech-3.3-8b).

- Needs torchaudio (its feature extractor computes the mel spectrogram with it): the
  `granite` extra, checked before anything is loaded (see `_extras.py`).
- Model: `GraniteSpeechForConditionalGeneration` (Conformer CTC encoder, a windowed
  Q-Former projector: 10 audio tokens per second, then Granite 3.3 instruct). The checkpoint
  ships a LoRA adapter beside the weights (`adapter_config.json` at the root) that is meant to
  be on for audio and off for text, which the model's own `generate` does through
  transformers' PEFT integration. transformers 5.24 wants peft >= 0.22 for that, and its
  automatic adapter loading would also redirect the load to `base_model_name_or_path`, so
  here the base weights load with that detection off and the adapter is loaded with peft
  directly as adapter "speech", switched on for calls with a clip and off for text-only calls
  (as for Phi-4-multimodal). A checkpoint without the adapter runs the base weights; the
  fingerprint says which.
- Processor: `GraniteSpeechProcessor`; clips as `audio=`, features `input_features`, mask
  `input_features_mask` (over projector outputs), one `<|audio|>` per clip expanded by the
  processor to the clip's token count.
- Prompt: Granite 3.3's chat template. The model card's example passes a fixed system
  prompt and puts `<|audio|>` directly before the question in the user turn; both are done
  here. The template's default system prompt contains today's date (`strftime_now`), which
  would make prompts, and so answers, depend on the day of the run; the fixed one does not.
- Batching: the encoder has no padding mask (its block attention and convolutions see the
  zeros a shorter clip is padded with), so each row with a clip is a call of its own
  (`audio_rows_alone`); text-only rows still batch.
- Longest clip: what fits the LM context with room for the prompt (no limit is documented).
"""

from __future__ import annotations

from biasbench.models.base import Request
from biasbench.models.families._common import SpeechAdapterMixin
from biasbench.models.families._extras import require_extra
from biasbench.models.hf_audio_lm import HFAudioLMBackend
from biasbench.paths import install_extra

EXTRA = "granite"
# The model card's example system prompt (a fixed date, unlike the template's default).
SYSTEM_PROMPT = ("Knowledge Cutoff Date: April 2024.\nToday's Date: April 9, 2025.\n"
                 "You are Granite, developed by IBM. You are a helpful AI assistant")
_PROMPT_ROOM = 1024  # tokens kept free for the text prompt and the answer


def require_granite_extra() -> None:
    require_extra("Granite Speech", EXTRA, ("torchaudio",), "its feature extractor computes mel spectrograms with it")


class HFGraniteSpeechBackend(SpeechAdapterMixin, HFAudioLMBackend):
    family = "granite_speech"
    title = "Granite Speech"
    model_class = "GraniteSpeechForConditionalGeneration"
    audio_kwarg = "audio"
    mask_key = "input_features_mask"
    audio_rows_alone = True
    takes_conversation = False  # its prompt is built outside the chat template: one turn only
    quantization_skip_modules = ("encoder", "projector", "lm_head")
    speech_adapter_install = f"{install_extra('granite')} (or pip install peft)"

    def _load_processor(self, common: dict):
        require_granite_extra()  # first thing loaded: fail before any download
        return super()._load_processor(common)

    def _load_model(self, common: dict, bnb):
        from contextlib import nullcontext
        from unittest import mock

        import transformers.modeling_utils as modeling_utils

        # Off: transformers' own detection of a root adapter_config.json (see the module doc).
        no_auto_adapter = (mock.patch.object(modeling_utils, "maybe_load_adapters",
                                             lambda path, download_kwargs, **kw: (None, path, kw))
                           if hasattr(modeling_utils, "maybe_load_adapters") else nullcontext())
        with no_auto_adapter:
            model = super()._load_model(common, bnb)
        return self._with_speech_adapter(model, common)

    def _fingerprint_extra(self) -> dict:
        # A local folder's adapter files sit at its root and are already in local_sha256.
        return {"speech_adapter": None if self._adapter is None else "adapter_config.json",
                "system_prompt": SYSTEM_PROMPT}

    def _feature_extractor(self):
        return self.processor.audio_processor

    def _tokens_per_second(self) -> float:
        fe = self._feature_extractor()
        minute = 60 * int(fe.sampling_rate)
        return fe._get_num_audio_features([minute])[0] / 60.0  # 10 for the real extractor

    def _read_max_audio_seconds(self) -> float:
        context = self.model.config.get_text_config().max_position_embeddings
        return float(int((context - _PROMPT_ROOM) / self._tokens_per_second()))

    def _chat_text(self, request: Request) -> str:
        text = request.prompt if request.audio is None else self.processor.audio_token + request.prompt
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
