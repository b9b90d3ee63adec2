"""Statistics for voice-group gaps: rates, CIs, tests, effect sizes, calibration and power.

Pure functions over the tidy table (one row per response: item_id, voice_id, gender,
ethnicity, status, outcome). The voice is the unit of replication (DESIGN.md): the
primary test permutes group labels among voices; item-level tests are labelled as
conditional on the voices drawn. See docs/statistics.md for the choices and their checks.

Names are loaded on first use (PEP 562): `import biasbench.analysis.summary`, which the
runner needs, then does not pay for scipy and statsmodels (about 1.5 s).
"""

from importlib import import_module

_EXPORTS = {
    "reduce_to_voices": "_data", "adjusted_gap": "adjusted", "common_item_rows": "gaps",
    "categorical_gap": "categorical", "jensen_shannon": "categorical",
    "cohens_d": "effects", "cohens_h": "effects", "odds_ratio": "effects", "risk_difference": "effects",
    "group_gap": "gaps", "numeric_gap": "gaps",
    "gee_test": "models",
    "correct_pvalues": "multitest",
    "cochran_q_by_item": "paired", "exact_mcnemar_p": "paired", "item_majority_table": "paired",
    "mcnemar_by_item": "paired",
    "count_arrangements": "permutation", "enumerate_arrangements": "permutation",
    "permutation_pvalue": "permutation", "permutation_test": "permutation",
    "minimum_detectable_gap": "power_analysis", "power": "power_analysis",
    "add_invalid_column": "rates", "bootstrap_group_means": "rates", "group_rates": "rates",
    "voice_rates": "rates", "wilson_interval": "rates",
    "CategoricalResult": "results", "CorrectionResult": "results", "DetectableGap": "results",
    "GapResult": "results", "PairGap": "results", "PowerResult": "results", "TestResult": "results",
    "simulate_responses": "simulate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
