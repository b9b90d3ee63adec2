"""Qwen2-Audio through Hugging Face transformers, batched, on one device.

A thin family of `HFAudioLMBackend` (see hf_audio_lm.py for the shared machinery: left
padding, one-forward-pass option scoring, greedy/sampled generation, fingerprint). What is
Qwen2-Audio's own: `Qwen2AudioForConditionalGeneration`, its processor and chat template
(one `<|audio_bos|><|AUDIO|><|audio_eos|>` per clip, expanded by the processor), clips as
`audio=` with the mask under `feature_attention_mask`, and the 30 s Whisper window as the
longest clip it hears.
"""

from __future__ import annotations

from biasbench.models.hf_audio_lm import (  # noqa: F401  (re-exported: cascade.py imports them from here)
    HFAudioLMBackend,
    _hash_local_model,
    _pick_device,
    _pick_dtype,
    _position_ids,
    _resolve_revision,
)


class HFQwen2AudioBackend(HFAudioLMBackend):
    """ModelBackend for Qwen2-Audio checkpoints (hub id or local folder)."""

    family = "qwen2_audio"
    title = "Qwen2-Audio"
    model_class = "Qwen2AudioForConditionalGeneration"
    audio_kwarg = "audio"
    mask_key = "feature_attention_mask"
    fingerprint_family = False  # keeps the fingerprint (and so the cache keys) of earlier runs

    def _read_max_audio_seconds(self) -> float:
        # The feature extractor pads/truncates every clip to chunk_length seconds (30 for
        # Qwen2-Audio); anything longer would be cut silently, so it is the hard limit.
        return float(self._feature_extractor().chunk_length)
