"""A group gap adjusted for voice-level covariates: the Freedman-Lane permutation test.

Voice QC measures (round-trip WER, speaking rate, loudness, pitch ...) can differ between
groups because of the TTS, not because of whom the voices sound like. If a model hears
unintelligible voices worse, a group whose synthetic voices are less intelligible looks
"biased" for the TTS's sake. This test asks whether the groups differ beyond what the
covariates explain, with the voice still the unit of replication:

    voice mean = b0 + covariates . c + group effects + error            (one row per voice)

The statistic is the F statistic of the group terms. Freedman and Lane (1983): fit the
reduced model (covariates only), permute its residuals among voices, add them back to its
fitted values, refit the full model, and recompute F. Under H0 (no group effect given the
covariates) this keeps the covariates' effect in every permuted data set, which is why it
holds its level when covariates and groups are correlated (Anderson & Legendre 1999;
Winkler et al. 2014). Adjusted group estimates are least-squares means: each group's
prediction at the covariates' overall means.

Like the unadjusted gap (gaps.py) it scores each voice on item-adjusted outcomes by default
(items="adjusted"); "common" keeps to the items every voice answered validly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._data import design_problem, drop_empty_voices, group_columns, item_adjusted, reduce_to_voices, require_columns
from .gaps import ITEMS, common_item_rows
from .permutation import monte_carlo_se
from .results import plain

TEST_NAME = "Freedman-Lane permutation test of the group terms, adjusted for voice-level covariates"
CONDITIONS_ON = ("the voices' mean outcomes and covariates; residuals of the covariates-only model are permuted "
                 "among voices, so the p-value refers to the population of voices")


def _rss(residual_maker: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Residual sum of squares of every column of y: y' M y with M = I - X X+."""
    r = residual_maker @ y
    return (r * r).sum(axis=0)


def _residual_maker(x: np.ndarray) -> np.ndarray:
    return np.eye(len(x)) - x @ np.linalg.pinv(x)


def adjusted_gap(df: pd.DataFrame, group, outcome: str, covariates: pd.DataFrame, unit: str = "voice_id",
                 item: str = "item_id", *, n_permutations: int = 10_000, items: str = "adjusted",
                 seed: int | None = 0) -> dict:
    """Covariate-adjusted group estimates and the Freedman-Lane p-value, as plain data.

    covariates: one row per voice, a `unit` column and numeric covariate columns (e.g. the
    voice QC table). Voices without every covariate are an error: dropping them silently
    would change which voices are compared.
    """
    columns = group_columns(group)
    require_columns(covariates, [unit])
    names = [c for c in covariates.columns if c != unit]
    if not names:
        raise ValueError("covariates has no covariate column besides the voice id")
    if items not in ITEMS:
        raise ValueError(f"items must be one of {ITEMS}, got {items!r}")
    rows = common_item_rows(df, outcome, unit, item)[0] if items == "common" else df
    out = {"test": TEST_NAME, "conditions_on": CONDITIONS_ON, "covariates": names, "statistic": None,
           "p_value": None, "mc_se": None, "estimates": {}, "gap": None, "highest": None, "lowest": None,
           "undefined": None}
    if rows.empty:
        return {**out, "undefined": "not testable: no item answered by every voice"}
    voices = drop_empty_voices(reduce_to_voices(rows, columns, outcome, unit, item, binary=False))
    if items == "adjusted" and len(voices.ids):
        voices = item_adjusted(voices)
    problem = design_problem(voices)
    cov = covariates.assign(**{unit: covariates[unit].astype(str)}).set_index(unit)[names]
    missing = [v for v in voices.ids.astype(str) if v not in cov.index or cov.loc[v].isna().any()]
    if missing:
        problem = problem or f"voice(s) {missing[:5]} lack a covariate value"
    z = cov.reindex(voices.ids.astype(str)).to_numpy(float) if not missing else None
    if z is not None:
        varies = z.std(axis=0) > 0  # a constant covariate adds nothing (and is collinear with the intercept)
        z, names = z[:, varies], [name for name, keep in zip(names, varies) if keep]
        z = (z - z.mean(axis=0)) / z.std(axis=0)
    n, k = len(voices.ids), len(voices.labels)
    if problem is None and n - (1 + z.shape[1] + k - 1) < 1:
        problem = f"{n} voices cannot fit {z.shape[1]} covariates and {k} groups with a residual degree of freedom"
    if problem:
        return {**out, "undefined": problem}
    dummies = np.eye(k)[voices.codes][:, 1:]
    reduced = np.column_stack([np.ones(n), z])
    full = np.column_stack([reduced, dummies])
    if np.linalg.matrix_rank(full) < full.shape[1]:
        return {**out, "undefined": "the covariates are collinear with the groups: their effects cannot be "
                                    "separated from a group effect with these voices"}
    y = voices.means
    m0, m1 = _residual_maker(reduced), _residual_maker(full)
    df_group, df_resid = k - 1, n - full.shape[1]

    def f_stat(ys):
        rss0, rss1 = _rss(m0, ys), _rss(m1, ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((rss0 - rss1) / df_group) / (rss1 / df_resid)

    observed = float(f_stat(y[:, None])[0])
    fitted0, resid0 = y - m0 @ y, m0 @ y
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.tile(np.arange(n), (n_permutations, 1)), axis=1)
    null = f_stat(fitted0[:, None] + resid0[perms].T)
    p = float((1 + np.sum(null >= observed * (1 - 1e-9))) / (n_permutations + 1))
    coef = np.linalg.lstsq(full, y, rcond=None)[0]
    ls_means = coef[0] + np.concatenate([[0.0], coef[1 + z.shape[1]:]])  # covariates at their mean (0)
    estimates = dict(zip(voices.labels, map(float, ls_means)))
    hi, lo = max(estimates, key=estimates.get), min(estimates, key=estimates.get)
    return plain({**out, "statistic": observed, "p_value": p, "mc_se": monte_carlo_se(p, n_permutations),
                  "estimates": estimates, "highest": hi, "lowest": lo, "gap": estimates[hi] - estimates[lo],
                  "covariates": names, "n_voices": n, "df": [df_group, df_resid],
                  "method": f"Monte Carlo: {n_permutations} permutations of reduced-model residuals, seed {seed}"})
