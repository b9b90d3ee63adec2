"""Loudness as people hear it (ITU-R BS.1770-4, via pyloudnorm), and normalising clips to one target.

Synthesis applies `normalize_loudness` when a pool sets `loudness_target`, so that loudness
cannot differ by voice group; voice QC measures `loudness_lufs` on the same cached clips.
pyloudnorm is a core dependency (pure Python on numpy/scipy): every shipped pool normalises.
"""

from __future__ import annotations

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.tts.base import SAMPLE_RATE

CLIP_LEVEL = 0.999  # a sample at or above this absolute value counts as clipped


def require_pyloudnorm():
    """The pyloudnorm module, or a BiasbenchError naming the missing package."""
    try:
        import pyloudnorm
    except ImportError:
        raise BiasbenchError("measuring and normalising loudness (a pool's loudness_target) needs the package "
                             "pyloudnorm, a core dependency of biasbench: pip install pyloudnorm") from None
    return pyloudnorm


def loudness_lufs(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Integrated loudness (ITU-R BS.1770-4) in LUFS; NaN for audio shorter than one 400 ms block
    or entirely below the -70 LUFS gate."""
    pyloudnorm = require_pyloudnorm()
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < int(0.4 * sr):
        return float("nan")
    value = pyloudnorm.Meter(sr).integrated_loudness(audio)
    return float(value) if np.isfinite(value) else float("nan")


def normalize_loudness(audio: np.ndarray, target_lufs: float = -23.0, sr: int = SAMPLE_RATE,
                       peak_limit: float = CLIP_LEVEL) -> np.ndarray:
    """`audio` scaled to `target_lufs` integrated loudness (EBU R 128's -23 by default).

    One gain for the whole clip (no compression), so the voice's dynamics are untouched. If that
    gain would push a peak past `peak_limit`, the gain is lowered until the peak sits at the
    limit: the clip then stays below the target rather than clipping (check with loudness_lufs).
    Clips too short or too quiet to measure are returned unchanged. float32 in and out."""
    audio = np.asarray(audio, dtype=np.float32)
    measured = loudness_lufs(audio, sr)
    if not np.isfinite(measured):
        return audio.copy()
    gain = 10 ** ((target_lufs - measured) / 20)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak * gain > peak_limit:
        gain = peak_limit / peak
    return (audio * gain).astype(np.float32)
