"""Whisper through transformers as a ModelBackend: `hf:openai/whisper-large-v3` on a GPU.

The transcription itself is the cascade control's `WhisperASR` (biasbench/models/cascade.py):
`WhisperForConditionalGeneration` + `WhisperProcessor`, one padded batch per call, greedy,
language forced to English. This wrapper only makes it answer the runner directly, for the
`transcribe` task type (ASR fairness). Offline, the same code runs on the tiny random Whisper of
biasbench/models/tiny/controls.py (alias `tiny-whisper`): a pipeline check, its text is noise.
"""

from __future__ import annotations

import time

from biasbench.errors import BiasbenchError
from biasbench.models.base import Request, Response


def is_whisper_checkpoint(model: str, *, revision: str | None = None, trust_remote_code: bool = False) -> bool:
    """True when the checkpoint's config says model_type 'whisper' (False when unreadable)."""
    from biasbench.models.families import read_model_config

    config = read_model_config(model, revision=revision, trust_remote_code=trust_remote_code)
    return getattr(config, "model_type", None) == "whisper" if config is not None else False


class HFWhisperBackend:
    """ModelBackend: each request's clip -> its Whisper transcript, batched, greedy.

    Takes the `hf` backend's keyword arguments; `quantization` and `trust_remote_code` are not
    used by Whisper (refused / ignored). Clips longer than the model's window (30 s) are handled
    by the runner's --long-audio policy through `max_audio_seconds`.
    """

    def __init__(self, model: str, *, revision: str | None = None, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, quantization: str | None = None, local_files_only: bool = False,
                 language: str | None = "en", max_new_tokens: int | None = None):
        from biasbench.models.cascade import WhisperASR

        if quantization:
            raise BiasbenchError("quantization is not supported for Whisper ASR models; load it in bf16/fp16")
        self.asr = WhisperASR(model, revision, dtype, device, local_files_only, language, max_new_tokens)
        self.max_audio_seconds: float | None = self.asr.max_audio_seconds
        self._fingerprint: dict | None = None

    def fingerprint(self) -> dict:
        import torch
        import transformers

        if self._fingerprint is None:
            self._fingerprint = {**self.asr.fingerprint(), "backend": "hf-whisper",
                                 "transformers": transformers.__version__, "torch": torch.__version__}
        return dict(self._fingerprint)

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        for r in requests:
            if r.audio is None:
                raise BiasbenchError("an ASR model transcribes audio; it cannot answer a text-only request "
                                     "(the text control condition). Use conditions: [audio] for ASR models.")
        try:
            clips = [self.asr.check(r) for r in requests]
        except ValueError as exc:
            raise BiasbenchError(str(exc)) from None
        start = time.perf_counter()
        texts = self.asr.transcribe(clips)
        latency = (time.perf_counter() - start) / len(requests)
        return [Response(r.request_id, text=t, latency_s=latency) for r, t in zip(requests, texts)]

    def score_choices(self, requests: list[Request]) -> list[Response]:
        raise BiasbenchError("an ASR model cannot answer multiple choice: it only transcribes. Use it with a "
                             "transcribe task (e.g. asr_fairness), or as the ASR half of a cascade.")
