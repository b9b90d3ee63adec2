"""The sections every kind of outcome shares: one outcome by every grouping, with its tests.

Kept apart from analyze.py (which decides which sections a run gets) and probes.py (the
probe tasks' sections), so that both use these without importing each other. `family` is
analyze.Family (collects each test's p-value for the corrections) and `settings` an
analyze.Settings; neither is imported here, so no module imports back.
"""

from __future__ import annotations

import pandas as pd

GROUPINGS = {"gender": ["gender"], "ethnicity": ["ethnicity"], "gender x ethnicity": ["gender", "ethnicity"]}


def binary_section(df: pd.DataFrame, outcome: str, name: str, family, settings, *,
                   verb: str = "had the outcome", tests: bool = True, covariates: pd.DataFrame | None = None) -> dict:
    """A 0/1 outcome by every grouping: the gap (primary test), the gap adjusted for voice QC
    covariates, and the appendix tests (item-paired, GEE) that are never used in conclusions.
    `verb` words the outcome in a sentence: "Female voices <verb> 6 points less often ..."."""
    from biasbench.analysis import group_gap

    section = {"outcome": outcome, "name": name, "kind": "binary", "verb": verb, "groupings": {}}
    for gname, columns in GROUPINGS.items():
        gap = group_gap(df, columns, outcome, **settings.gap_kwargs())
        block = {"by": columns, "gap": gap.to_dict(), "family_label": family.add(f"{name} by {gname}", gap.p_value)}
        if tests:  # appendix only: see APPENDIX_NOTE
            block["item_paired"] = item_paired(df, columns, outcome)
            if gname == "gender":  # calibrated only roughly, and only for two groups (docs/statistics.md)
                block["gee"] = gee(df, columns, outcome)
        if covariates is not None:
            block["adjusted"] = adjusted(df, columns, outcome, covariates, settings)
        section["groupings"][gname] = block
    return section


def numeric_section(df: pd.DataFrame, outcome: str, name: str, family, settings,
                    unit: str = "", covariates: pd.DataFrame | None = None) -> dict:
    from biasbench.analysis import numeric_gap

    section = {"outcome": outcome, "name": name, "kind": "numeric", "unit": unit, "groupings": {}}
    for gname, columns in GROUPINGS.items():
        gap = numeric_gap(df, columns, outcome, **settings.gap_kwargs())
        block = {"by": columns, "gap": gap.to_dict(), "family_label": family.add(f"{name} by {gname}", gap.p_value)}
        if covariates is not None:
            block["adjusted"] = adjusted(df, columns, outcome, covariates, settings)
        section["groupings"][gname] = block
    return section


def adjusted(df, columns, outcome, covariates: pd.DataFrame, settings) -> dict:
    """The gap adjusted for the voice QC covariates (Freedman-Lane), or why it is undefined."""
    from biasbench.analysis import adjusted_gap

    return _safe(lambda: adjusted_gap(df, columns, outcome, covariates, n_permutations=settings.n_permutations,
                                      items=settings.items, seed=settings.seed), "covariate-adjusted test")


def item_paired(df, columns, outcome) -> dict:
    """McNemar for two groups, Cochran's Q for more: conditional on the voices drawn."""
    from biasbench.analysis import cochran_q_by_item, mcnemar_by_item

    labels = df[columns].astype(str).drop_duplicates()
    test = mcnemar_by_item if len(labels) == 2 else cochran_q_by_item
    return _safe(lambda: test(df, columns, outcome).to_dict(), "item-paired test")


def gee(df, columns, outcome, covariates=None) -> dict:
    from biasbench.analysis import gee_test

    return _safe(lambda: gee_test(df, columns, outcome, covariates=covariates).to_dict(), "GEE")


def _safe(compute, test: str) -> dict:
    """A test's result, or an undefined result carrying the reason the data gave."""
    try:
        return compute()
    except ValueError as exc:
        return {"test": test, "statistic": None, "p_value": None, "undefined": str(exc)}


def adjusted_voice_scores(df: pd.DataFrame, outcome: str) -> pd.Series:
    """Each voice's item-adjusted mean valid outcome (analysis/_data.additive_voice_effects), by
    voice id: the values the primary test compares under items="adjusted"."""
    from biasbench.analysis._data import drop_empty_voices, item_adjusted, reduce_to_voices

    valid = df[df["status"].eq("valid") & df[outcome].notna()]
    if valid.empty:
        return pd.Series(dtype=float)
    voices = item_adjusted(drop_empty_voices(reduce_to_voices(valid, "voice_id", outcome, binary=False)))
    return pd.Series(voices.means, index=voices.ids.astype(str))


def voice_means(df: pd.DataFrame, outcome: str, items: str = "all") -> list[dict]:
    """One row per voice: its mean valid outcome (items="adjusted": its item-adjusted mean, the
    value the primary test compares), for the voice-dot figure."""
    valid = df[df["status"].eq("valid") & df[outcome].notna()] if outcome != "invalid" else df
    means = adjusted_voice_scores(df, outcome) if items == "adjusted" else valid.groupby("voice_id")[outcome].mean()
    labels = df.drop_duplicates("voice_id").set_index("voice_id")[["gender", "ethnicity"]].astype(str)
    return [{"voice_id": str(v), "gender": labels.loc[v, "gender"], "ethnicity": labels.loc[v, "ethnicity"],
             "value": float(m)} for v, m in means.items()]


def audio_overall(df: pd.DataFrame, outcome: str, items: str = "adjusted") -> float | None:
    """Mean of voice means over the audio responses (each voice weighs the same), computed as
    the gaps compute them (items="adjusted": item-adjusted voice means; "common": on the items
    every voice answered validly)."""
    if items == "adjusted":
        scores = adjusted_voice_scores(df, outcome)
        return float(scores.mean()) if len(scores) else None
    if items == "common":
        from biasbench.analysis import common_item_rows

        df = common_item_rows(df, outcome)[0]
    valid = df[df["status"].eq("valid") & df[outcome].notna()]
    return float(valid.groupby("voice_id")[outcome].mean().mean()) if len(valid) else None
