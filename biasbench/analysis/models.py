"""Model-based test: GEE logistic regression with voices as clusters.

logit P(correct) = intercept + group + item fixed effects (+ voice covariates such as
ASR WER or speaking rate, when asked for). Voices are the clusters, with an exchangeable
working correlation, so the standard errors account for voice-to-voice variation. With
few voices (18-30) the ordinary sandwich is too small; the default is statsmodels'
bias-reduced (Mancl-DeRouen) sandwich, and the joint Wald test of the group terms is
still only approximately calibrated: the permutation test is the primary test. The
bias-reduced sandwich needs an (n x n) matrix per voice, n = that voice's responses, so
past `BIAS_REDUCED_MAX` responses per voice (`cov_type="auto"`) the robust sandwich
with the small-sample factor G/(G-1) (G voices) is used instead, and recorded.

Items with the same outcome in every included response carry no information about the
group contrast once item effects are in the model (their fixed effect runs to +/-
infinity), so they are dropped and counted. Many items make the dense fixed-effect design
slow: past `max_item_effects` informative items, item effects are left out
(`item_effects="none"`, recorded in details). Every group answers the same items in the
balanced crossed design, so the group contrast stays fair; the calibration table in
docs/statistics.md checks both settings (40 items: fixed; 200 items: none).
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

from ._data import design_problem, drop_empty_voices, reduce_to_voices, require_columns
from .results import TestResult

BIAS_REDUCED_MAX = 500  # responses per voice; the per-voice n x n matrices grow as n^2
CONDITIONS_ON = ("the model (logistic, item effects, exchangeable within-voice correlation) and large-sample "
                 "theory in the number of voices; voices are clusters, so it targets the population of voices, "
                 "but with few voices it is only approximately calibrated")


def _design(voices, item_effects: str, covariates: np.ndarray | None):
    """Design matrix (intercept, group dummies vs the first label, item dummies, covariates)."""
    n_g = len(voices.labels)
    group = voices.codes[voices.row_voice]
    blocks = [np.ones((len(group), 1)), (group[:, None] == np.arange(1, n_g)[None, :]).astype(float)]
    if item_effects == "fixed":
        items = pd.factorize(voices.row_item)[0]
        blocks.append((items[:, None] == np.arange(1, items.max() + 1)[None, :]).astype(float))
    if covariates is not None:
        blocks.append(covariates)
    return np.hstack(blocks)


def _voice_covariates(df, covariates, unit, voices) -> np.ndarray | None:
    """Per-response matrix of standardised voice-level covariates (one value per voice)."""
    if not covariates:
        return None
    covariates = [covariates] if isinstance(covariates, str) else list(covariates)
    require_columns(df, covariates)
    per_voice = df.groupby(unit)[covariates].mean().reindex(voices.ids)
    if per_voice.isna().any().any():
        missing = per_voice.columns[per_voice.isna().any()].tolist()
        raise ValueError(f"voice covariate(s) {missing} missing for some voices")
    values = per_voice.to_numpy(float)
    sd = values.std(axis=0)
    if (sd == 0).any():
        raise ValueError(f"voice covariate(s) {[c for c, s in zip(covariates, sd) if s == 0]} are constant")
    return ((values - values.mean(axis=0)) / sd)[voices.row_voice]


def _informative_items(voices):
    """Keep responses to items whose outcomes vary (others have no information under item effects)."""
    n_i = voices.n_items
    sums = np.bincount(voices.row_item, voices.row_value, n_i)
    counts = np.bincount(voices.row_item, minlength=n_i)
    keep_item = (sums > 0) & (sums < counts)
    return keep_item[voices.row_item], int((counts > 0).sum() - keep_item.sum())


def gee_test(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
             item: str = "item_id", *, item_effects: str = "auto", max_item_effects: int = 100,
             covariates=None, cov_type: str = "auto", nan_policy: str = "exclude") -> TestResult:
    """Joint Wald test that all group log-odds ratios are 0, from a voice-clustered GEE logit."""
    if item_effects not in ("auto", "fixed", "none"):
        raise ValueError(f"item_effects must be 'auto', 'fixed' or 'none', got {item_effects!r}")
    voices = drop_empty_voices(reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary=True))
    x_cov = _voice_covariates(df, covariates, unit, voices)
    common = dict(test="GEE logistic (voice clusters, exchangeable), Wald test of group", conditions_on=CONDITIONS_ON,
                  n_voices=len(voices.ids), n_items=voices.n_items)
    problem = design_problem(voices)
    if problem:
        return TestResult(statistic=None, p_value=None, undefined=problem, **common)
    keep, n_dropped = _informative_items(voices)
    n_items_left = len(np.unique(voices.row_item[keep]))
    if item_effects == "auto":
        item_effects = "fixed" if n_items_left <= max_item_effects else "none"
    if item_effects == "none":
        keep, n_dropped = np.ones(len(keep), bool), 0
    sub = _subset_rows(voices, keep)
    exog = _design(sub, item_effects, None if x_cov is None else x_cov[keep])
    n_clusters = len(voices.ids)
    if cov_type == "auto":
        cov_type = "bias_reduced" if np.bincount(sub.row_voice).max() <= BIAS_REDUCED_MAX else "robust"
    scaling = n_clusters / (n_clusters - 1) if cov_type == "robust" else 1.0
    details = {"groups": voices.labels, "reference": voices.labels[0], "item_effects": item_effects,
               "items_dropped_no_variation": n_dropped, "covariates": covariates, "cov_type": cov_type,
               "scaling_factor": scaling}
    model = sm.GEE(sub.row_value, exog, groups=sub.row_voice, family=sm.families.Binomial(),
                   cov_struct=sm.cov_struct.Exchangeable())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = model.fit(cov_type=cov_type, scaling_factor=scaling, maxiter=100)
        except (np.linalg.LinAlgError, ValueError) as error:
            return TestResult(statistic=None, p_value=None, undefined=f"GEE fit failed: {error}", details=details,
                              **common)
    details["warnings"] = sorted({str(w.message)[:200] for w in caught})
    n_g = len(voices.labels)
    beta, cov = np.asarray(fit.params)[1:n_g], np.asarray(fit.cov_params())[1:n_g, 1:n_g]
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(cov))):
        return TestResult(statistic=None, p_value=None, undefined="GEE estimates not finite (separation?)",
                          details=details, **common)
    wald = float(beta @ np.linalg.solve(cov, beta))
    se = np.sqrt(np.diag(cov))
    details.update(df=n_g - 1, log_odds_ratio=dict(zip(voices.labels[1:], beta)),
                   se=dict(zip(voices.labels[1:], se)), odds_ratio=dict(zip(voices.labels[1:], np.exp(beta))),
                   working_correlation=float(np.asarray(fit.model.cov_struct.dep_params).ravel()[0]))
    return TestResult(statistic=wald, p_value=float(stats.chi2.sf(wald, n_g - 1)),
                      method=f"Wald chi-square, df {n_g - 1}, {cov_type} sandwich", details=details, **common)


def _subset_rows(voices, rows):
    """A shallow view of the response-level arrays restricted to `rows`."""
    return replace(voices, row_voice=voices.row_voice[rows], row_item=voices.row_item[rows],
                   row_value=voices.row_value[rows])
