"""A simulator of the benchmark's design, for calibration checks and power.

Voices: one per (cell of the label factors) x voices_per_cell; every voice answers every
item once. P(correct) = expit(a + planted group effects + u_voice + w_item), with
u ~ N(0, voice_sd^2) and w ~ N(0, item_sd^2) on the logit scale: real voice-to-voice and
item-to-item variation, so a test that ignores voices is shown to be wrong on it.
`base_rate` is the population-averaged rate of a voice with no planted effect: the
intercept a is solved so that E[expit(a + u + w)] = base_rate.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import optimize, special

DEFAULT_FACTORS = {"gender": ("female", "male"), "ethnicity": ("black", "white", "east_asian")}
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)  # for E[f(Z)], Z ~ N(0, 1)


def marginal_rate(eta, sd: float):
    """E[expit(eta + sd * Z)]: the population-averaged rate at logit eta (Gauss-Hermite)."""
    eta = np.asarray(eta, float)
    values = special.expit(eta[..., None] + sd * _NODES)
    return (values * _WEIGHTS).sum(axis=-1) / np.sqrt(2 * np.pi)


def intercept_for(base_rate: float, sd: float) -> float:
    """The logit intercept whose population-averaged rate is base_rate."""
    if not 0 < base_rate < 1:
        raise ValueError(f"base_rate must be strictly between 0 and 1, got {base_rate}")
    return float(optimize.brentq(lambda a: marginal_rate(a, sd) - base_rate, -40, 40))


def voice_table(factors=None, voices_per_cell: int = 3) -> pd.DataFrame:
    """One row per simulated voice with its labels, balanced over the factor cells."""
    factors = dict(DEFAULT_FACTORS if factors is None else factors)
    if voices_per_cell < 1:
        raise ValueError("voices_per_cell must be at least 1")
    rows = [dict(zip(factors, cell), voice_id=f"v{i:03d}")
            for i, cell in enumerate(c for c in itertools.product(*factors.values()) for _ in range(voices_per_cell))]
    return pd.DataFrame(rows)[["voice_id", *factors]]


def voice_offsets(voices: pd.DataFrame, effects) -> np.ndarray:
    """Per-voice logit offset from effects = {column: {label: offset}} (unlisted labels: 0)."""
    offset = np.zeros(len(voices))
    for column, by_label in (effects or {}).items():
        if column not in voices.columns:
            raise ValueError(f"effect on unknown factor {column!r}; factors: {list(voices.columns[1:])}")
        unknown = set(by_label) - set(voices[column])
        if unknown:
            raise ValueError(f"effect on unknown label(s) {sorted(unknown)} of {column!r}")
        offset += voices[column].map(by_label).fillna(0.0).to_numpy(float)
    return offset


class Draws:
    """Random parts of n_sims data sets, kept so that effects can vary on the same draws.

    Common random numbers make the simulated power curve smooth in the effect size,
    which keeps the search for the minimum detectable gap stable.
    """

    def __init__(self, n_voices: int, n_items: int, n_sims: int, rng):
        self.voice = rng.standard_normal((n_sims, n_voices, 1))
        self.item = rng.standard_normal((n_sims, 1, n_items))
        self.uniform = rng.random((n_sims, n_voices, n_items))

    def outcomes(self, offsets, *, base_rate, voice_sd, item_sd) -> np.ndarray:
        """0/1 outcomes, shape (n_sims, n_voices, n_items)."""
        a = intercept_for(base_rate, float(np.hypot(voice_sd, item_sd)))
        eta = a + np.asarray(offsets)[None, :, None] + voice_sd * self.voice + item_sd * self.item
        return (self.uniform < special.expit(eta)).astype(float)


def simulate_responses(*, factors=None, voices_per_cell: int = 3, n_items: int = 40, base_rate: float = 0.6,
                       effects=None, voice_sd: float = 0.5, item_sd: float = 1.0, invalid_rate: float = 0.0,
                       too_long=None, seed: int | None = 0) -> pd.DataFrame:
    """A tidy table like the benchmark's: one row per (voice, item).

    effects: planted logit offsets, e.g. {"gender": {"male": 0.4}}. invalid_rate: share of
    responses made "invalid" at random (correct = NaN), independent of group.
    too_long: differential missingness as long audio makes it, e.g. {"gender": {"female": 0.3,
    "male": 0.1}}: long items are the hard ones (an item's length falls with its logit effect,
    plus noise), and a voice of a slower group runs past the model's window on a larger share
    of the longest items; those responses get status "audio_too_long" (correct = NaN). With no
    planted effect this makes the slower group look more accurate unless the analysis keeps to
    the items every voice answered.
    """
    rng = np.random.default_rng(seed)
    voices = voice_table(factors, voices_per_cell)
    draws = Draws(len(voices), n_items, 1, rng)
    y = draws.outcomes(voice_offsets(voices, effects), base_rate=base_rate, voice_sd=voice_sd, item_sd=item_sd)[0]
    bad = rng.random(y.shape) < invalid_rate
    long = _too_long(voices, draws.item[0, 0], too_long, rng)
    frame = voices.loc[np.repeat(np.arange(len(voices)), n_items)].reset_index(drop=True)
    frame.insert(0, "item_id", np.tile([f"q{i:04d}" for i in range(n_items)], len(voices)))
    frame["status"] = np.where(long.ravel(), "audio_too_long", np.where(bad.ravel(), "invalid", "valid"))
    frame["correct"] = np.where(bad.ravel() | long.ravel(), np.nan, y.ravel())
    return frame


def _too_long(voices: pd.DataFrame, item_effect: np.ndarray, too_long, rng) -> np.ndarray:
    """(voices, items) mask of clips past the window: the longest items, more of them for slower groups."""
    mask = np.zeros((len(voices), len(item_effect)), bool)
    if not too_long:
        return mask
    length = -item_effect + 0.5 * rng.standard_normal(len(item_effect))  # hard items are long
    rank = np.argsort(np.argsort(-length)) / len(item_effect)  # 0 = the longest item
    share = voice_offsets(voices, too_long)
    return rank[None, :] < share[:, None]
