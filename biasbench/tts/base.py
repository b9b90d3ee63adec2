"""The interface every TTS backend implements, and the audio format the harness uses."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

#: Every clip the harness stores or sends to a model is 16 kHz mono float32.
SAMPLE_RATE = 16000


class TTSBackend(Protocol):
    name: str

    def version(self) -> str:
        """The engine's version: part of the cache key, so an upgrade re-synthesises."""

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        """Speak `text` with the voice described by `params`; return (waveform, rate)."""


@runtime_checkable
class BatchedTTSBackend(Protocol):
    """A backend that speaks several clips in one forward pass (the GPU cloning engines).

    A batch's clips must come out as they would one at a time (the cache key does not say
    how a clip was made), so an engine pads and masks rather than letting clips interact."""

    def synthesize_batch(self, requests: list[tuple[str, dict]]) -> list[tuple[np.ndarray, int] | Exception]:
        """(text, params) pairs -> per request (waveform, rate), or the error that clip met:
        one bad clip must not fail the others."""

    def default_batch_size(self) -> int:
        """Clips per batch when the user sets none (may depend on the device)."""
