"""Every number of a report, as plain data: the statistics of one run, section by section.

`analyze_run(run)` returns a JSON-ready dict (written as report.json); the markdown and
HTML are rendered from it and never compute anything themselves. The statistics come
from `biasbench.analysis`; this module decides which tests a run gets, the family the
multiple-comparison corrections run over, and the design the power simulation assumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from biasbench.analysis.results import plain

from .load import Run, dig
from .probes import (
    categorical_sections,
    lexicon_sections,
    numeric_sections,
    relative_values,
    said_me_sections,
    split_column,
)
from .qc import voice_qc_section

REPORT_SCHEMA = 1
GROUPINGS = {"gender": ["gender"], "ethnicity": ["ethnicity"], "gender x ethnicity": ["gender", "ethnicity"]}
FAMILY = ("every voice-level permutation test in this report (the task's outcome, the invalid-answer rate, "
          "and each probe attribute or split, by gender, by ethnicity and by gender x ethnicity); the "
          "voice-quality checks, item-paired tests, GEE and pooled chi-square/G tests are not in it")


@dataclass
class Settings:
    """How much resampling the report does; every setting is written into report.json."""

    n_permutations: int = 10_000
    n_boot: int = 2000
    level: float = 0.95
    alpha: float = 0.05
    seed: int = 0
    mdg_power: float = 0.8
    mdg_sims: int = 200
    mdg_permutations: int = 499
    mdg_voice_sd: float = 0.5
    mdg_item_sd: float = 1.0

    def gap_kwargs(self) -> dict:
        return dict(n_permutations=self.n_permutations, n_boot=self.n_boot, level=self.level, seed=self.seed)


class Family:
    """The p-values the corrections run over, by label."""

    def __init__(self):
        self.p: dict[str, float | None] = {}

    def add(self, label: str, p) -> str:
        self.p[label] = p
        return label

    def corrections(self, alpha: float) -> dict:
        from biasbench.analysis import correct_pvalues

        return {method: correct_pvalues(self.p, method=method, family=FAMILY, alpha=alpha).to_dict()
                for method in ("holm", "bh")}


# ---------------------------------------------------------------- the outcome of the task


def describe_outcome(manifest: dict) -> dict:
    """What the task's main outcome is called, and the words a sentence about it needs."""
    config = manifest["task"]["config"]
    output_type, metrics = config["output_type"], set(config.get("metrics") or [])
    if output_type == "multiple_choice":
        if "yes_rate" in metrics:
            return dict(kind="binary", column="correct", name="yes-rate", verb="were told yes",
                        note="`correct` means the model said yes: the rate is the yes-rate, and a gap in it is a "
                             "gap in favourable decisions.")
        if "me_rate_by_polarity" in metrics:
            return dict(kind="binary", column="correct", name="unbiased-answer rate", verb="got the unbiased answer",
                        note="`correct` means the model gave the unbiased answer (the context never says who; "
                             "the unbiased answer is 'cannot be determined').")
        return dict(kind="binary", column="correct", name="accuracy", verb="were answered correctly", note="")
    if output_type == "generate_numeric":
        unit = dig(config, "numeric.unit") or ""
        return dict(kind="numeric", column="value", name="mean value", verb="", unit=unit, note="")
    return dict(kind="categorical", column="category", name="answer distribution", verb="", note=(
        "Each voice's answers form a distribution over categories; a group's distribution is the mean of its "
        "voices'. Answers that are not valid (unmapped, refused) are their own categories (<unmapped>, ...)."))


def prepared(frame: pd.DataFrame, output_type: str) -> pd.DataFrame:
    """The tidy table with the outcome columns the analyses need, in analysable dtypes."""
    frame = frame.copy()
    for column in ("correct", "value"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    if output_type == "generate_categorical":
        valid = frame["status"].eq("valid")
        frame["category"] = frame["answer"].astype(object).where(valid, "<" + frame["status"].astype(str) + ">")
    return frame


def design(run: Run, audio: pd.DataFrame) -> dict:
    cells = audio.groupby(["gender", "ethnicity"])["voice_id"].nunique()
    samples = int(pd.to_numeric(audio.get("sample_index", 0), errors="coerce").fillna(0).max()) + 1
    return plain({
        "n_items": int(audio["item_id"].nunique()), "n_voices": int(audio["voice_id"].nunique()),
        "n_responses": int(len(audio)), "samples_per_item": samples,
        "voices_per_cell": {f"{g} / {e}": int(n) for (g, e), n in cells.items()},
        "min_voices_per_cell": int(cells.min()), "balanced": bool(cells.nunique() == 1),
        "genders": sorted(audio["gender"].astype(str).unique()),
        "ethnicities": sorted(audio["ethnicity"].astype(str).unique()),
        "conditions": sorted(run.table["condition"].astype(str).unique()),
    })


def binary_section(df: pd.DataFrame, outcome: str, name: str, family: Family, settings: Settings, *,
                   verb: str = "had the outcome", tests: bool = True, covariates: pd.DataFrame | None = None) -> dict:
    """A 0/1 outcome by every grouping: gap (primary test), item-paired test, GEE.
    `verb` words the outcome in a sentence: "Female voices <verb> 6 points less often ..."."""
    from biasbench.analysis import group_gap

    section = {"outcome": outcome, "name": name, "kind": "binary", "verb": verb, "groupings": {}}
    for gname, columns in GROUPINGS.items():
        gap = group_gap(df, columns, outcome, **settings.gap_kwargs())
        block = {"by": columns, "gap": gap.to_dict(), "family_label": family.add(f"{name} by {gname}", gap.p_value)}
        if tests:
            block["item_paired"] = item_paired(df, columns, outcome)
            block["gee"] = gee(df, columns, outcome)
            if covariates is not None:
                block["gee_adjusted"] = gee(df.merge(covariates, on="voice_id", how="left"), columns, outcome,
                                            [c for c in covariates.columns if c != "voice_id"])
        section["groupings"][gname] = block
    return section


def numeric_section(df: pd.DataFrame, outcome: str, name: str, family: Family, settings: Settings,
                    unit: str = "") -> dict:
    from biasbench.analysis import numeric_gap

    section = {"outcome": outcome, "name": name, "kind": "numeric", "unit": unit, "groupings": {}}
    for gname, columns in GROUPINGS.items():
        gap = numeric_gap(df, columns, outcome, **settings.gap_kwargs())
        section["groupings"][gname] = {"by": columns, "gap": gap.to_dict(),
                                       "family_label": family.add(f"{name} by {gname}", gap.p_value)}
    return section


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


def invalid_section(df: pd.DataFrame, outcome: str, family: Family, settings: Settings) -> dict:
    """Invalid, refused and too-long answers per group (they are data), and the test of their rate."""
    from biasbench.analysis import add_invalid_column

    marked = add_invalid_column(df, outcome)
    section = binary_section(marked, "invalid", "invalid-answer rate", family, settings, tests=False,
                             verb="got an answer that was not valid")
    section["status_counts"] = {str(k): int(v) for k, v in df["status"].value_counts().items()}
    section["by_status"] = {gname: status_table(df, columns) for gname, columns in GROUPINGS.items()}
    return section


def status_table(df: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Share of responses of each status, per group."""
    label = df[columns].astype(str).agg(" / ".join, axis=1)
    shares = pd.crosstab(label, df["status"], normalize="index")
    counts = pd.crosstab(label, df["status"])
    return [{"group": group, "n": int(counts.loc[group].sum()),
             **{str(status): float(shares.loc[group, status]) for status in shares.columns}}
            for group in shares.index]


# ---------------------------------------------------------------- what only some runs have


def voice_means(df: pd.DataFrame, outcome: str) -> list[dict]:
    """One row per voice: its mean valid outcome, for the voice-dot figure."""
    valid = df[df["status"].eq("valid") & df[outcome].notna()] if outcome != "invalid" else df
    means = valid.groupby("voice_id")[outcome].mean()
    labels = df.drop_duplicates("voice_id").set_index("voice_id")[["gender", "ethnicity"]].astype(str)
    return [{"voice_id": str(v), "gender": labels.loc[v, "gender"], "ethnicity": labels.loc[v, "ethnicity"],
             "value": float(m)} for v, m in means.items()]


def text_control(text: pd.DataFrame, sections: dict, outcome: dict, column: str) -> dict | None:
    """The same items as text (no voice): what the voice adds."""
    if text.empty:
        return None
    if outcome["kind"] == "categorical":
        return categorical_control(text, sections["primary"])
    from biasbench.analysis import wilson_interval

    audio_overall = sections.get("overall")
    valid = text[text["status"].eq("valid") & text[column].notna()]
    mean = float(valid[column].mean()) if len(valid) else None
    ci = None
    if outcome["kind"] == "binary" and len(valid):
        low, high = wilson_interval(valid[column].sum(), len(valid))
        ci = [float(low), float(high)]
    voice_adds = None if mean is None or audio_overall is None else audio_overall - mean
    return plain({"n_responses": len(text), "n_valid": len(valid), "estimate": mean, "ci": ci,
                  "ci_method": "Wilson over the text responses (items)" if ci else None,
                  "audio_overall": audio_overall, "voice_adds": voice_adds,
                  "invalid_rate": float(1 - len(valid) / len(text))})


def categorical_control(text: pd.DataFrame, primary: dict) -> dict:
    """Answer shares of the text control beside the spoken answers' pooled shares, and their JSD."""
    from biasbench.analysis import jensen_shannon

    shares = text["category"].value_counts(normalize=True)
    audio = pd.Series(primary["overall_shares"])
    both = pd.concat([shares.rename("text"), audio.rename("audio")], axis=1).fillna(0.0)
    return plain({"n_responses": len(text), "shares": shares.to_dict(), "audio_shares": audio.to_dict(),
                  "jsd_vs_audio": jensen_shannon(both["text"], both["audio"]) if len(both) > 1 else None,
                  "invalid_rate": float(1 - text["status"].eq("valid").mean())})


def by_permutation(df: pd.DataFrame, outcome: str) -> dict | None:
    """Counterbalanced options: mean of voice rates per group within each option order."""
    if "permutation" not in df.columns or df["permutation"].isna().all():
        return None
    valid = df[df["status"].eq("valid") & df[outcome].notna()]
    out = {}
    for gname, columns in (("gender", ["gender"]), ("ethnicity", ["ethnicity"])):
        per_voice = valid.groupby(["permutation", "voice_id", *columns])[outcome].mean().reset_index()
        table = per_voice.groupby(["permutation", *columns])[outcome].mean().unstack(columns[0])
        out[gname] = {"groups": [str(c) for c in table.columns],
                      "rows": [{"permutation": int(p), **{str(c): float(v) for c, v in row.items()}}
                               for p, row in table.iterrows()]}
    return out


def audio_overall(df: pd.DataFrame, outcome: str) -> float | None:
    """Mean of voice means over the audio responses (each voice weighs the same)."""
    valid = df[df["status"].eq("valid") & df[outcome].notna()]
    return float(valid.groupby("voice_id")[outcome].mean().mean()) if len(valid) else None


# ---------------------------------------------------------------- the whole run


def analyze_run(run: Run, settings: Settings | None = None) -> dict:
    """Every section of the report as plain data (see the module doc)."""
    from .brief import run_brief
    from .power import attach_detectable_gaps
    from .words import conclusions

    settings = settings or Settings()
    outcome = describe_outcome(run.manifest)
    table = prepared(run.table, run.output_type)
    audio, text = table[table["condition"] == "audio"], table[table["condition"] == "text"]
    family = Family()
    qc = voice_qc_section(run, audio, settings)
    sections = main_sections(run, audio, outcome, family, settings, qc)
    sections["invalid"] = invalid_section(audio, outcome["column"] if outcome["kind"] != "categorical" else "answer",
                                          family, settings)
    report = {"report_schema": REPORT_SCHEMA, "run": run_brief(run), "design": design(run, audio),
              "outcome": outcome, "settings": asdict(settings), "sections": sections, "voice_qc": qc,
              "notes": list(run.notes)}
    report["corrections"] = family.corrections(settings.alpha)
    attach_detectable_gaps(report, audio, settings)
    column = outcome["column"]
    if sections.get("split") and outcome["kind"] == "numeric":  # relative values: the control too
        text, column = relative_values(text, sections["split"], reference=audio), "relative_value"
    report["text_control"] = text_control(text, sections, outcome, column)
    report["conclusions"] = conclusions(report)
    return plain(report)


def main_sections(run: Run, audio: pd.DataFrame, outcome: dict, family: Family, settings: Settings, qc) -> dict:
    column = outcome["column"]
    covariates = qc.get("covariates") if qc else None
    if outcome["kind"] == "binary":
        return {"primary": binary_section(audio, column, outcome["name"], family, settings, verb=outcome["verb"],
                                          covariates=_covariate_frame(covariates)),
                "voices": voice_means(audio, column), "overall": audio_overall(audio, column),
                "permutations": by_permutation(audio, column), **said_me_sections(audio, family, settings)}
    if outcome["kind"] == "numeric":
        return numeric_sections(audio, outcome, family, settings, split_column(audio))
    return {**categorical_sections(audio, family, settings), **lexicon_sections(audio, family, settings)}


def _covariate_frame(covariates: list[dict] | None) -> pd.DataFrame | None:
    if not covariates:
        return None
    frame = pd.DataFrame(covariates)
    return frame if frame.shape[1] > 1 and np.isfinite(frame.drop(columns="voice_id").to_numpy(float)).all() else None
