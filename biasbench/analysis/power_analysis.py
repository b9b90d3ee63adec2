"""Power and minimum detectable gap of the primary test, by simulation.

Each simulated data set is reduced to voice means, and the voice-level permutation test
(the same code as permutation_test) runs on all of them at once: the values passed to
permutation_pvalue carry a trailing axis of simulations, so one set of permutations
serves every data set (each p-value is valid on its own).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._data import LABEL_SEP, group_columns
from .permutation import EXACT_MAX, permutation_pvalue
from .results import DetectableGap, PowerResult
from .simulate import Draws, intercept_for, marginal_rate, voice_table


def _labels(voices: pd.DataFrame, columns) -> np.ndarray:
    return voices[group_columns(columns)].astype(str).agg(LABEL_SEP.join, axis=1).to_numpy()


class _Study:
    """One simulated design and its draws; evaluates the primary test's power at any effect."""

    def __init__(self, group, effect_label, factors, voices_per_cell, n_items, base_rate, voice_sd, item_sd,
                 strata, n_sims, n_permutations, exact_max, seed):
        self.voices = voice_table(factors, voices_per_cell)
        labels = _labels(self.voices, group)
        self.groups = sorted(set(labels))
        self.codes = np.searchsorted(self.groups, labels)
        self.effect_label = self.groups[-1] if effect_label is None else effect_label
        if self.effect_label not in self.groups:
            raise ValueError(f"effect_label {self.effect_label!r} not among the groups {self.groups}")
        self.shifted = (labels == self.effect_label).astype(float)
        self.strata = None if strata is None else pd.factorize(_labels(self.voices, strata))[0]
        self.draws = Draws(len(self.voices), n_items, n_sims, np.random.default_rng(seed))
        self.rates = dict(base_rate=base_rate, voice_sd=voice_sd, item_sd=item_sd)
        self.perm = dict(n_permutations=n_permutations, exact_max=exact_max, seed=seed)
        self.design = dict(group=group_columns(group), effect_label=self.effect_label,
                           factors={k: list(v) for k, v in (factors or {}).items()} or None,
                           voices_per_cell=voices_per_cell, n_items=n_items, strata=strata, n_sims=n_sims,
                           n_permutations=n_permutations, seed=seed, **self.rates)

    def pvalues(self, effect: float) -> np.ndarray:
        y = self.draws.outcomes(effect * self.shifted, **self.rates)
        means = y.mean(axis=2).T  # (voices, sims): the reduction to voice means
        _, p, _, _ = permutation_pvalue(means, self.codes, strata=self.strata, **self.perm)
        return p

    def gap(self, effect: float) -> float:
        """Population-averaged probability gap implied by a logit effect at the base rate."""
        sd = float(np.hypot(self.rates["voice_sd"], self.rates["item_sd"]))
        a = intercept_for(self.rates["base_rate"], sd)
        return float(marginal_rate(a + effect, sd) - self.rates["base_rate"])

    def power(self, effect: float, alpha: float) -> PowerResult:
        rate = float(np.mean(self.pvalues(effect) <= alpha))
        n = self.draws.voice.shape[0]
        return PowerResult(power=rate, mc_se=float(np.sqrt(max(rate * (1 - rate), 1e-12) / n)),
                           effect_logit=float(effect), gap=self.gap(effect), alpha=alpha, n_sims=n,
                           design=self.design)


def _study(group="gender", effect_label=None, factors=None, voices_per_cell=3, n_items=40, base_rate=0.6,
           voice_sd=0.5, item_sd=1.0, strata=None, n_sims=200, n_permutations=999, exact_max=EXACT_MAX, seed=0):
    return _Study(group, effect_label, factors, voices_per_cell, n_items, base_rate, voice_sd, item_sd, strata,
                  n_sims, n_permutations, exact_max, seed)


def power(effect: float = 0.0, *, alpha: float = 0.05, group="gender", effect_label=None, factors=None,
          voices_per_cell: int = 3, n_items: int = 40, base_rate: float = 0.6, voice_sd: float = 0.5,
          item_sd: float = 1.0, strata=None, n_sims: int = 200, n_permutations: int = 999,
          exact_max: int = EXACT_MAX, seed: int | None = 0) -> PowerResult:
    """Rejection rate of the primary test when `effect_label` of `group` is shifted by `effect` logits.

    effect = 0 gives the type I error rate. effect_label defaults to the last sorted label.
    """
    return _study(group, effect_label, factors, voices_per_cell, n_items, base_rate, voice_sd, item_sd, strata,
                  n_sims, n_permutations, exact_max, seed).power(effect, alpha)


def minimum_detectable_gap(*, target_power: float = 0.8, alpha: float = 0.05, group="gender", effect_label=None,
                           factors=None, voices_per_cell: int = 3, n_items: int = 40, base_rate: float = 0.6,
                           voice_sd: float = 0.5, item_sd: float = 1.0, strata=None, n_sims: int = 200,
                           n_permutations: int = 999, exact_max: int = EXACT_MAX, max_effect: float = 6.0,
                           tol: float = 0.01, seed: int | None = 0) -> DetectableGap:
    """Smallest logit effect (and implied probability gap) detected with target_power.

    Bisection on the simulated power curve, on common random numbers; the power reported
    is re-estimated at the answer on fresh simulations (seed + 1), so it is not flattered
    by the search. The answer carries Monte Carlo error (about sqrt(p(1-p)/n_sims) in
    power, so it may read slightly below target); raise n_sims for precision.
    """
    study = _study(group, effect_label, factors, voices_per_cell, n_items, base_rate, voice_sd, item_sd, strata,
                   n_sims, n_permutations, exact_max, seed)
    low, high = 0.0, 0.25
    while study.power(high, alpha).power < target_power:
        low, high = high, high * 2
        if high > max_effect:
            return DetectableGap(None, None, None, target_power, alpha, n_sims, study.design,
                                 undefined=f"power stays below {target_power} up to a logit effect of {max_effect}")
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (low, mid) if study.power(mid, alpha).power >= target_power else (mid, high)
    # the search picked `high` on these draws, which flatters them; re-estimate on fresh ones
    fresh = _study(group, effect_label, factors, voices_per_cell, n_items, base_rate, voice_sd, item_sd, strata,
                   n_sims, n_permutations, exact_max, None if seed is None else seed + 1)
    found = fresh.power(high, alpha)
    return DetectableGap(gap=found.gap, effect_logit=high, power=found.power, target_power=target_power,
                         alpha=alpha, n_sims=n_sims, design=study.design)
