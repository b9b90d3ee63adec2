"""The one audio format the harness uses (mono float32 at SAMPLE_RATE), and getting there.

Kept apart from synthesis.py, which imports the TTS registry: every engine module converts its
output with `to_harness_audio`, and importing it from here keeps them out of an import circle
(engine -> synthesis -> registry -> engine). scipy is imported only when a rate is converted,
so importing an engine (and the CLI) stays fast.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from biasbench.tts.base import SAMPLE_RATE


def to_harness_audio(audio: np.ndarray, sr: int) -> np.ndarray:
    """Any backend output -> mono float32 at SAMPLE_RATE (the one format the harness uses)."""
    samples = np.asarray(audio)
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples / float(np.iinfo(samples.dtype).max + 1)  # int PCM -> [-1, 1)
    samples = samples.astype(np.float32, copy=False)
    if samples.ndim == 2:  # soundfile layout: (frames, channels)
        samples = samples.mean(axis=1)
    return np.ascontiguousarray(resample(samples, sr, SAMPLE_RATE), dtype=np.float32)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Mono float32 audio from `sr_from` to `sr_to` Hz (unchanged when they are equal).

    Polyphase resampling with the reduced ratio (22050 -> 16000 is 320/441): exact rate,
    built-in anti-alias filter, no FFT-length artefacts."""
    audio = np.asarray(audio, dtype=np.float32)
    if int(sr_from) == int(sr_to):
        return audio
    from scipy.signal import resample_poly  # about 0.3 s to import: only when a rate is converted

    common = gcd(int(sr_from), int(sr_to))
    return resample_poly(audio, int(sr_to) // common, int(sr_from) // common).astype(np.float32)
