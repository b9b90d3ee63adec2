"""Median fundamental frequency (pitch) of a voice, in Hz: a QC covariate and what the stand-in
cloning engine matches. Plain numpy autocorrelation per 40 ms frame over voiced frames (loud
enough, clear periodicity), 60-400 Hz: enough for a per-voice median, not a pitch tracker."""

from __future__ import annotations

import numpy as np

FMIN, FMAX = 60.0, 400.0
FRAME_S, HOP_S = 0.04, 0.02
MIN_PERIODICITY = 0.5  # normalised autocorrelation peak a frame needs to count as voiced
MIN_LEVEL_DBFS = -40.0


def frame_pitches(audio: np.ndarray, sr: int) -> np.ndarray:
    """The pitch (Hz) of every voiced frame."""
    audio = np.asarray(audio, dtype=np.float64)
    size, hop = int(FRAME_S * sr), int(HOP_S * sr)
    lo, hi = int(sr / FMAX), int(sr / FMIN)
    pitches = []
    for start in range(0, len(audio) - size, hop):
        frame = audio[start:start + size] - audio[start:start + size].mean()
        energy = float(frame @ frame)
        if energy <= 0 or 10 * np.log10(energy / size + 1e-20) < MIN_LEVEL_DBFS:
            continue
        corr = np.correlate(frame, frame, mode="full")[size - 1:] / energy
        lag = lo + int(np.argmax(corr[lo:hi]))
        if corr[lag] >= MIN_PERIODICITY:
            pitches.append(sr / lag)
    return np.asarray(pitches)


def median_pitch_hz(audio: np.ndarray, sr: int) -> float:
    """Median pitch over voiced frames; NaN when no frame is voiced."""
    pitches = frame_pitches(audio, sr)
    return float(np.median(pitches)) if pitches.size else float("nan")
