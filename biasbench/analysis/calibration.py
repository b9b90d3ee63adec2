"""Simulated designs that check the primary test's level and power where answers go missing
and where groups differ in size and spread (benchmarks/calibration.py prints the long runs;
tests/test_primary_calibration.py the short ones).

Each data set is reduced to one value per voice by each item rule ("adjusted", "common",
"all"; gaps.py), and the voice values of all data sets go through one vectorised call of
the voice-level permutation test (simulations on a trailing axis), so a few hundred data
sets take seconds. Designs:

* "differential": no voice effect; 5 voices per gender x ethnicity cell, 60 items; female
  voices run past the model's window on 35% of the longest (hardest) items, male on 5%.
* "random": 3 voices per cell; each answer missing with probability 0.23 at random (the main
  job's share of `audio_too_long`); `effect` (logit) planted on male voices.
* "unequal": two groups of 15 and 6 voices, voice SD 0.3 and 1.2 on the logit scale, 40
  items, no missing answers; `effect` planted on the smaller group.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ._data import additive_voice_effects
from .permutation import permutation_pvalue
from .simulate import intercept_for, simulate_responses

RULES = ("adjusted", "common", "all")


def voice_values(y: np.ndarray, rule: str) -> np.ndarray:
    """One value per voice from a voices x items array with NaN where no valid answer (NaN
    for every voice when the rule keeps no item)."""
    present = ~np.isnan(y)
    if rule == "all":
        return np.nanmean(y, axis=1)
    if rule == "common":
        keep = present.all(axis=0)
        return y[:, keep].mean(axis=1) if keep.any() else np.full(len(y), np.nan)
    voice, item = np.nonzero(present)
    return additive_voice_effects(voice, item, y[voice, item], y.shape[0], y.shape[1])


def design_arrays(design: str, seed: int, *, n_items: int = 120, effect: float = 0.0):
    """(voices x items outcomes with NaN for missing answers, group code per voice)."""
    if design == "unequal":
        rng = np.random.default_rng(seed)
        codes = np.repeat([0, 1], [15, 6])
        sd = np.where(codes == 0, 0.3, 1.2)
        eta = (intercept_for(0.6, float(np.hypot(0.6, 1.0))) + effect * (codes == 1) + sd * rng.standard_normal(21))
        eta = eta[:, None] + rng.standard_normal((1, 40))
        return (rng.random(eta.shape) < special.expit(eta)).astype(float), codes
    if design == "differential":
        table = simulate_responses(voices_per_cell=5, n_items=60, seed=seed,
                                   too_long={"gender": {"female": 0.35, "male": 0.05}})
    elif design == "random":
        table = simulate_responses(voices_per_cell=3, n_items=n_items, seed=seed, invalid_rate=0.23,
                                   effects={"gender": {"male": effect}} if effect else None)
    else:
        raise ValueError(f"unknown design {design!r}")
    voices = table.drop_duplicates("voice_id")
    y = table["correct"].to_numpy(float).reshape(len(voices), -1)  # voice-major, as simulated
    return y, (voices["gender"].to_numpy() == "male").astype(int)


def rejection_rate(design: str, rule: str = "adjusted", *, n_sims: int = 200, n_items: int = 120,
                   effect: float = 0.0, statistic: str = "auto", n_permutations: int = 199, alpha: float = 0.05,
                   seed0: int = 0) -> float:
    """Share of `n_sims` simulated data sets in which the voice-level permutation test rejects
    at `alpha` (a data set whose rule keeps no item counts as not rejected)."""
    values, codes = [], None
    for seed in range(seed0, seed0 + n_sims):
        y, codes = design_arrays(design, seed, n_items=n_items, effect=effect)
        values.append(voice_values(y, rule))
    values = np.column_stack(values)
    testable = ~np.isnan(values).any(axis=0)
    if not testable.any():
        return 0.0
    _, p, _, _ = permutation_pvalue(values[:, testable], codes, statistic=statistic, n_permutations=n_permutations,
                                    seed=seed0)
    return float(np.sum(np.asarray(p) <= alpha) / n_sims)
