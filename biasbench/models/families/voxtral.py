"""Mistral Voxtral (mistralai/Voxtral-Mini-3B-2507, Voxtral-Small-24B-2507).

- Model: `VoxtralForConditionalGeneration` (Whisper-style encoder on 30 s chunks, four
  encoder frames stacked per audio token: 375 tokens per chunk, then a Llama-style LM).
- Processor: `VoxtralProcessor`. Voxtral has no Jinja chat template: its prompt format is
  mistral-common's instruct format, which for one user turn with a clip reads
  `<s>[INST][BEGIN_AUDIO][AUDIO]x(375 per started 30 s)<text>[/INST]`. The processor's own
  `apply_chat_template` needs mistral-common and audio as files or base64; here the ids are
  laid out directly from the tokenizer's special tokens (the same ids mistral-common
  emits) and the clips go through the processor's Whisper feature extractor, padded to a
  multiple of 30 s exactly as `VoxtralProcessor` does. The real checkpoint's tokenizer
  (`MistralCommonBackend`) still needs `pip install mistral-common` to load.
- No feature mask: every 30 s chunk is encoded whole, its padding heard as silence, so a
  row's features never depend on the other rows of a batch.
- Longest clip: what fits the LM context with room for the prompt, at most 40 min (Mistral's
  stated limit for audio understanding).
"""

from __future__ import annotations

from biasbench.errors import BiasbenchError
from biasbench.models.base import Request
from biasbench.models.hf_audio_lm import HFAudioLMBackend

_MAX_DOCUMENTED_S = 40 * 60
_PROMPT_ROOM = 1024  # tokens kept free for the text prompt and the answer


class HFVoxtralBackend(HFAudioLMBackend):
    family = "voxtral"
    title = "Voxtral"
    model_class = "VoxtralForConditionalGeneration"
    audio_kwarg = "input_features"
    mask_key = None
    takes_conversation = False  # its prompt is built outside the chat template: one turn only
    quantization_skip_modules = ("audio_tower", "multi_modal_projector", "lm_head")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tok = self.tokenizer
        self._ids = {name: tok.convert_tokens_to_ids(name) for name in ("[INST]", "[/INST]", "[BEGIN_AUDIO]")}
        self._ids["[AUDIO]"] = self.processor.audio_token_id  # hard-coded by VoxtralProcessor
        self._bos = tok.bos_token_id
        unknown = [name for name, i in self._ids.items() if i is None or i == tok.unk_token_id]
        if unknown or self._bos is None:
            raise BiasbenchError(f"{self.model_id}: its tokenizer lacks Voxtral's control tokens "
                                 f"{unknown or ['<s>']}; is this a Voxtral checkpoint?")

    def _load_processor(self, common: dict):
        try:
            return super()._load_processor(common)
        except Exception as exc:
            from transformers.utils import is_mistral_common_available

            if is_mistral_common_available():
                raise
            raise BiasbenchError(f"cannot load the Voxtral processor of {self.model_id!r} ({type(exc).__name__}: "
                                 f"{exc}); Voxtral's Tekken tokenizer needs mistral-common: "
                                 "pip install 'mistral-common[audio]'") from exc

    def _read_max_audio_seconds(self) -> float:
        fe = self._feature_extractor()
        chunk_s = fe.n_samples / fe.sampling_rate
        context = self.model.config.get_text_config().max_position_embeddings
        chunks = max(1, (context - _PROMPT_ROOM) // self._tokens_per_chunk())
        return float(min(chunks * chunk_s, _MAX_DOCUMENTED_S))

    def _tokens_per_chunk(self) -> int:
        audio = self.model.config.audio_config
        # Encoder frames per chunk x hidden size, regrouped into intermediate_size-wide tokens.
        return audio.max_source_positions * audio.hidden_size // audio.intermediate_size

    def _prompt_ids(self, request: Request, n_chunks: int) -> list[int]:
        ids = [self._bos, self._ids["[INST]"]]
        if n_chunks:
            ids += [self._ids["[BEGIN_AUDIO]"]] + [self._ids["[AUDIO]"]] * (n_chunks * self._tokens_per_chunk())
        ids += self.tokenizer.encode(request.prompt, add_special_tokens=False)
        return ids + [self._ids["[/INST]"]]

    def _features(self, clip):
        """(n_chunks, mel bins, 3000) for one clip, padded up to a multiple of 30 s."""
        fe = self._feature_extractor()
        feats = fe(clip, sampling_rate=self.sampling_rate, padding=True, truncation=False,
                   pad_to_multiple_of=fe.n_samples, return_tensors="pt")["input_features"]
        frames = fe.n_samples // fe.hop_length
        return feats.reshape(fe.feature_size, -1, frames).transpose(0, 1)

    def _encode(self, requests: list[Request]):
        import torch
        from transformers import BatchFeature

        rows, features = [], []
        for r in requests:
            n_chunks = 0
            if r.audio is not None:
                chunks = self._features(self._check_audio(r))
                features.append(chunks)
                n_chunks = chunks.shape[0]
            rows.append(self._prompt_ids(r, n_chunks))
        width = max(len(ids) for ids in rows)
        input_ids = torch.tensor([[self._pad_id] * (width - len(ids)) + ids for ids in rows])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in rows])
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if features:
            data["input_features"] = torch.cat(features)  # in row order, as the audio tokens are
        return self._to_device(BatchFeature(data))
