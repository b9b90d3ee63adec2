"""NVIDIA Audio Flamingo 3 (nvidia/audio-flamingo-3-hf), its music sibling Music Flamingo, and
Zhipu GLM-ASR (zai-org/GLM-ASR-Nano-2512).

Both are Qwen2-Audio-like in transformers (Whisper-style encoder on 30 s windows, projector,
decoder LM) with the same processor logic; what follows is written for AF3, and GLM-ASR
differs only in its classes, its audio placeholder (`<|pad|>`) and `max_audio_len` (655 s).


AF3:
- Model: `AudioFlamingo3ForConditionalGeneration` (Whisper-style encoder, Qwen2.5 LM).
- Processor: `AudioFlamingo3Processor`; its chat template puts one `<sound>` per clip, which
  the processor expands. Clips longer than 30 s are cut into 30 s windows, each encoded;
  past `max_audio_len` (600 s) they are truncated, so that is the limit here.
- Its processor wants exactly one clip per text row (`mixed_batches = False`: rows without a
  clip go in their own call) and pads the text itself; passing `padding=True` would pad the
  audio windows too and break the encoder. Mask key: `input_features_mask`.
"""

from __future__ import annotations

from biasbench.models.hf_audio_lm import HFAudioLMBackend


class HFAudioFlamingo3Backend(HFAudioLMBackend):
    family = "audioflamingo3"
    title = "Audio Flamingo 3"
    model_class = "AudioFlamingo3ForConditionalGeneration"
    audio_kwarg = "audio"
    mask_key = "input_features_mask"
    mixed_batches = False
    processor_kwargs: dict = {}
    #: Its processor takes exactly one clip per text row, so a conversation (a clip per user turn) is refused.
    takes_conversation = False

    def _read_max_audio_seconds(self) -> float:
        return float(self.processor.max_audio_len)


class HFGlmAsrBackend(HFAudioFlamingo3Backend):
    """GLM-ASR: a speech recogniser first, but an audio-in/text-out LM that follows prompts."""

    family = "glmasr"
    title = "GLM-ASR"
    model_class = "GlmAsrForConditionalGeneration"


class HFMusicFlamingoBackend(HFAudioFlamingo3Backend):
    """Music Flamingo (nvidia/music-flamingo-hf): AF3 tuned for music; clips are wrapped in
    `<|sound_bos|>`/`<|sound_eos|>` by its processor, `max_audio_len` 1200 s."""

    family = "musicflamingo"
    title = "Music Flamingo"
    model_class = "MusicFlamingoForConditionalGeneration"
