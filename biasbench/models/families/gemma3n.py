"""Google Gemma 3n (google/gemma-3n-E2B-it, gemma-3n-E4B-it).

- Needs timm and torchvision even for audio only: the model always builds its MobileNetV5
  vision tower through timm, which imports torchvision. That is the `gemma3n` extra, checked
  before anything is loaded (see `_extras.py`).
- Model: `Gemma3nForConditionalGeneration` (USM Conformer audio encoder, MatFormer LM with
  per-layer embeddings). Its final logits are soft-capped (`final_logit_softcapping`, 30):
  the one-position scoring path applies it too, so option scores use the logits `generate` sees.
- Processor: `Gemma3nProcessor` without its image processor (`audio_only_processor`); clips as
  `audio=`, features `input_features`, mask `input_features_mask`. The chat template puts one
  `<audio_soft_token>` per clip, which the processor expands to
  `\n\n<start_of_audio>` + 188 x `<audio_soft_token>` + `<end_of_audio>\n\n`: a fixed 188
  tokens (30 s) per clip, the encoder's shorter output padded with a padding embedding.
- Batching: the processor pads every clip of a call to the longest, and the encoder's
  subsampling convolutions see that padding at the end of a shorter clip (its mask is applied
  after them): on the tiny model a 2 s clip's option log-probabilities moved by 1e-4 next to
  any longer clip, not at all next to one of the same length. So each row with a clip is a
  call of its own (`audio_rows_alone`); text-only rows still batch.
- The template writes `<bos>` itself, so the rendered text is tokenized without adding special
  tokens again (what `apply_chat_template(tokenize=True)` does).
- Longest clip: the feature extractor truncates at `max_length` samples (480 000: 30 s)
  silently, so that is the limit.
"""

from __future__ import annotations

import inspect

from biasbench.models.families._common import audio_only_processor
from biasbench.models.families._extras import require_extra
from biasbench.models.hf_audio_lm import HFAudioLMBackend

EXTRA = "gemma3n"
GEMMA3N_TOKENS = {"audio_token": "<audio_soft_token>", "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>",
                  "image_token": "<image_soft_token>", "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}


def require_gemma3n_extra() -> None:
    require_extra("Gemma 3n", EXTRA, ("timm", "torchvision"),
                  "the model always builds its timm vision tower, even for audio only")


def _audio_only_gemma3n_processor():
    from transformers import Gemma3nProcessor

    class Gemma3nAudioProcessor(Gemma3nProcessor):
        @property
        def model_input_names(self):  # the parent's reads the (dropped) image processor's names
            return list(self.tokenizer.model_input_names + ["token_type_ids"]
                        + self.feature_extractor.model_input_names)

    Gemma3nAudioProcessor.__name__ = Gemma3nProcessor.__name__
    return Gemma3nAudioProcessor


class HFGemma3nBackend(HFAudioLMBackend):
    family = "gemma3n"
    title = "Gemma 3n"
    model_class = "Gemma3nForConditionalGeneration"
    audio_kwarg = "audio"
    mask_key = "input_features_mask"
    audio_rows_alone = True
    processor_kwargs: dict = {"padding": True, "add_special_tokens": False}
    quantization_skip_modules = ("audio_tower", "vision_tower", "embed_audio", "embed_vision", "lm_head")

    def _load_processor(self, common: dict):
        require_gemma3n_extra()  # first thing loaded: fail before any download
        return audio_only_processor(_audio_only_gemma3n_processor(), self.model_id, common,
                                    dropped=("image_processor",), tokens=GEMMA3N_TOKENS)

    def _read_max_audio_seconds(self) -> float:
        fe = self._feature_extractor()
        max_length = inspect.signature(type(fe).__call__).parameters["max_length"].default
        return float(max_length) / fe.sampling_rate

    def _logits_from_hidden(self, hidden):
        logits = self.model.get_output_embeddings()(hidden)
        cap = self.model.config.get_text_config().final_logit_softcapping
        if cap is not None:
            import torch

            logits = torch.tanh(logits / cap) * cap
        return logits
