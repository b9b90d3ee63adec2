"""The interface every TTS backend implements, and the audio format the harness uses."""

from __future__ import annotations

from typing import Protocol

import numpy as np

#: Every clip the harness stores or sends to a model is 16 kHz mono float32.
SAMPLE_RATE = 16000


class TTSBackend(Protocol):
    name: str

    def version(self) -> str:
        """The engine's version: part of the cache key, so an upgrade re-synthesises."""

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        """Speak `text` with the voice described by `params`; return (waveform, rate)."""
