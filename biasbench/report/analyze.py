"""Every number of a report, as plain data: the statistics of one run, section by section.

`analyze_run(run)` returns a JSON-ready dict (written as report.json); the markdown and
HTML are rendered from it and never compute anything themselves. The statistics come
from `biasbench.analysis`; this module decides which tests a run gets, the family the
multiple-comparison corrections run over, and the design the power simulation assumes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
from .primary import analysis_spec, primary_family_size, primary_labels, primary_results
from .sections import GROUPINGS, audio_overall, binary_section, voice_means
from .qc import voice_qc_section

REPORT_SCHEMA = 3
FAMILY = ("every secondary voice-level permutation test in this report (the invalid-answer rate, each probe "
          "attribute or split, and the primary outcome by any grouping the task did not declare, by gender, by "
          "ethnicity and by gender x ethnicity); the declared primary tests form their own family, and the "
          "voice-quality checks, covariate-adjusted tests and appendix tests are in neither")
PRIMARY_FAMILY = "the task's declared primary analysis: its primary outcome by each declared grouping"


@dataclass
class Settings:
    """How much resampling the report does; every setting is written into report.json."""

    n_permutations: int = 10_000
    level: float = 0.95
    alpha: float = 0.05
    seed: int = 0
    mdg_power: float = 0.8
    mdg_sims: int = 200
    mdg_permutations: int = 499
    mdg_voice_sd: float = 0.5
    mdg_item_sd: float = 1.0
    n_boot_control: int = 2000  # bootstrap replicates of the voice-vs-text contrast
    items: str = "adjusted"  # the task's analysis.items: how the gaps treat missing answers (gaps.py)

    def gap_kwargs(self) -> dict:
        return dict(n_permutations=self.n_permutations, level=self.level, seed=self.seed, items=self.items)


class Family:
    """The p-values the corrections run over, by label."""

    def __init__(self):
        self.p: dict[str, float | None] = {}

    def add(self, label: str, p) -> str:
        self.p[label] = p
        return label

    def corrections(self, alpha: float, primary: list[str]) -> dict:
        """Bonferroni over the declared primary tests; Holm and BH over every other test (secondary)."""
        from biasbench.analysis import correct_pvalues

        secondary = {label: p for label, p in self.p.items() if label not in primary}
        out = {method: correct_pvalues(secondary, method=method, family=FAMILY, alpha=alpha).to_dict()
               for method in ("holm", "bh")}
        out["primary"] = correct_pvalues({label: self.p[label] for label in primary}, method="bonferroni",
                                         family=PRIMARY_FAMILY, alpha=alpha).to_dict()
        return out


# ---------------------------------------------------------------- the outcome of the task


def describe_outcome(manifest: dict) -> dict:
    """What the task's main outcome is called, and the words a sentence about it needs."""
    config = manifest["task"]["config"]
    output_type, metrics = config["output_type"], set(config.get("metrics") or [])
    if config.get("follow_ups"):  # a multi-turn task: its first declared conversation outcome
        from .dialogue import dialogue_outcome

        return dialogue_outcome(analysis_spec(manifest)["outcomes"][0])
    if output_type == "multiple_choice" and "option_shares" in metrics:
        return dict(kind="categorical", column="category", name="chosen options", verb="", note=(
            "A forced choice has no right answer: the outcome is which option each voice was recommended, within "
            "each option set (`pair`). Categories are 'option set: option', so a group's distribution differs "
            "only where its voices were steered to other options within the same sets (every voice answers every "
            "set equally often). Answers that are not valid are their own categories (<invalid>, ...)."))
    if output_type == "transcribe":
        return dict(kind="numeric", column="value", name="word error rate", verb="", scale="share", note=(
            "Word error rate of each transcript against the reference text (after biasbench's pinned text "
            "normalisation), averaged per voice: lower is better."))
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
    if output_type == "generate_open":  # the first declared primary metric (the others: sections["outcomes"])
        from .open_answers import metric_outcome

        return metric_outcome(analysis_spec(manifest)["outcomes"][0], dig(manifest, "open_answer.similarity"))
    return dict(kind="categorical", column="category", name="answer distribution", verb="", note=(
        "Each voice's answers form a distribution over categories; a group's distribution is the mean of its "
        "voices'. Answers that are not valid (unmapped, refused) are their own categories (<unmapped>, ...)."))


def prepared(frame: pd.DataFrame, output_type: str) -> pd.DataFrame:
    """The tidy table with the outcome columns the analyses need, in analysable dtypes."""
    frame = frame.copy()
    from biasbench.config import OPEN_METRICS

    for column in ("correct", "value", *(OPEN_METRICS if output_type == "generate_open" else ())):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    valid = frame["status"].eq("valid")
    if output_type == "generate_categorical":
        frame["category"] = frame["answer"].astype(object).where(valid, "<" + frame["status"].astype(str) + ">")
    elif output_type == "multiple_choice" and {"pair", "answer_option"} <= set(frame.columns):
        chosen = frame["pair"].astype(str) + ": " + frame["answer_option"].astype(str)
        frame["category"] = chosen.where(valid & frame["answer_option"].notna(), "<" + frame["status"].astype(str) + ">")
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


def text_control(text: pd.DataFrame, audio: pd.DataFrame, sections: dict, outcome: dict, column: str,
                 settings: Settings) -> dict | None:
    """The same items as text (no voice): what hearing a voice changes, on the same items.

    The contrast keeps to the items every voice answered validly and the text condition
    answered validly too (a voice's too-long clips must not make the spoken items easier
    than the text ones), and carries a two-way bootstrap interval: voices and items are
    both resampled, since both are samples (the voices of a pool, the items of a task).
    """
    if text.empty:
        return None
    if outcome["kind"] == "categorical":
        return categorical_control(text, sections["primary"])
    from biasbench.analysis import common_item_rows

    valid_text = text[text["status"].eq("valid") & text[column].notna()]
    common, _ = common_item_rows(audio, column)
    items = sorted(set(common["item_id"]) & set(valid_text["item_id"]))
    out = {"n_responses": len(text), "n_valid": len(valid_text), "n_items": len(items),
           "n_items_text": int(text["item_id"].nunique()), "invalid_rate": float(1 - len(valid_text) / len(text)),
           "estimate": None, "audio_overall": None, "voice_adds": None, "ci": None,
           "ci_method": f"{round(100 * settings.level)}% percentile two-way bootstrap over voices and items "
                        f"({settings.n_boot_control} replicates, seed {settings.seed})"}
    if not items:
        return plain(out)
    spoken = common[common["item_id"].isin(items) & common[column].notna()]
    grid = spoken.pivot_table(index="voice_id", columns="item_id", values=column, aggfunc="mean")[items].to_numpy()
    said = valid_text.groupby("item_id")[column].mean().reindex(items).to_numpy()
    rng = np.random.default_rng(settings.seed)
    n_v, n_i, reps = grid.shape[0], grid.shape[1], settings.n_boot_control
    boot = np.empty(reps)
    for r in range(reps):
        v, i = rng.integers(0, n_v, n_v), rng.integers(0, n_i, n_i)
        boot[r] = grid[np.ix_(v, i)].mean() - said[i].mean()
    alpha = 1 - settings.level
    out.update(estimate=float(said.mean()), audio_overall=float(grid.mean()), voice_adds=float(grid.mean() - said.mean()),
               ci=[float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))])
    return plain(out)


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


# ---------------------------------------------------------------- the whole run


def analyze_run(run: Run, settings: Settings | None = None) -> dict:
    """Every section of the report as plain data (see the module doc)."""
    from .brief import run_brief
    from .power import attach_detectable_gaps
    from .words import conclusions

    spec = analysis_spec(run.manifest)
    settings = replace(settings or Settings(), alpha=spec["alpha"], items=spec["items"])
    outcome = describe_outcome(run.manifest)
    table = with_judge(prepared(run.table, run.output_type), run)
    audio, text = table[table["condition"] == "audio"], table[table["condition"] == "text"]
    turns, audio, text = conversations(run.manifest, audio, text)
    qc = voice_qc_section(run, turns, settings)
    # The primary gaps' intervals are simultaneous over the primary family (level 1 - alpha/m):
    # a gap is significant after Bonferroni exactly when its interval excludes 0. m counts the
    # tests actually run: when a declared grouping is refused (e.g. a cell with one voice), the
    # sections are computed again at the level of the smaller family.
    m = primary_family_size(spec)
    while True:
        family = Family()
        sections = main_sections(run, audio, outcome, family, settings, qc, round(1 - settings.alpha / m, 10))
        report = {"sections": sections}
        run_tests = sum(family.p[label] is not None for label in primary_labels(report, spec))
        if run_tests in (0, m):
            break
        m = run_tests
    sections["invalid"] = invalid_section(turns, _invalid_column(run.manifest, outcome), family, settings)
    report = {"report_schema": REPORT_SCHEMA, "run": run_brief(run), "design": design(run, turns),
              "outcome": outcome, "analysis": spec, "settings": asdict(settings), "sections": sections,
              "voice_qc": qc, "notes": list(run.notes) + open_answer_notes(run)}
    if run.judge is not None:
        from .judge import judge_section

        report["judge"] = judge_section(run.judge, audio, sections)
    report["corrections"] = family.corrections(settings.alpha, primary_labels(report, spec))
    attach_detectable_gaps(report, audio, settings)
    report["primary"] = primary_results(report, spec)
    if report.get("judge"):
        from .judge import attach_judge_lines

        attach_judge_lines(report)
    column = outcome["column"]
    if sections.get("split") and outcome["kind"] == "numeric":  # relative values: the control too
        text, column = relative_values(text, sections["split"], reference=audio), "relative_value"
        audio = relative_values(audio, sections["split"])
    report["text_control"] = text_control(text, audio, sections, outcome, column, settings)
    report["conclusions"] = conclusions(report)
    if report.get("judge"):
        from .judge import agreement_beside_judge_results

        report["conclusions"] = agreement_beside_judge_results(report["conclusions"], report["judge"])
    return plain(report)


def conversations(manifest: dict, audio: pd.DataFrame, text: pd.DataFrame):
    """(per-turn audio rows, the frames the outcome sections read): a multi-turn task's sections read
    one row per conversation (biasbench.analysis.dialogue); every other task's, the rows themselves."""
    from .dialogue import every_outcome, is_dialogue

    if not is_dialogue(manifest):
        return audio, audio, text
    from biasbench.analysis.dialogue import conversation_outcomes

    config = manifest["task"]["config"]
    every = every_outcome(config)
    # an open answer's refusal is an answer (its `refusal` metric is the outcome), not a missing turn
    answered = ("valid", "refusal") if config.get("output_type") == "generate_open" else ("valid",)
    return (audio, conversation_outcomes(audio, every, answered), conversation_outcomes(text, every, answered))


def _invalid_column(manifest: dict, outcome: dict) -> str:
    """The per-turn column whose absence marks an answer not valid (a multi-turn task: its status)."""
    from .dialogue import is_dialogue

    if is_dialogue(manifest):
        return "status"
    return outcome["column"] if outcome["kind"] != "categorical" else "answer"


def with_judge(table: pd.DataFrame, run: Run) -> pd.DataFrame:
    """An open-answer table with the judge's win share per (item, voice) as column `judge`
    (empty where no judge ran, or where that voice's judgements of the item all failed)."""
    if run.output_type != "generate_open":
        return table
    table = table.drop(columns=["judge"], errors="ignore")
    scores = run.judge["scores"][["item_id", "voice_id", "judge"]] if run.judge is not None else None
    if scores is None or scores.empty:
        return table.assign(judge=np.nan)
    keys = table[["item_id", "voice_id"]].astype(str)
    merged = keys.merge(scores, on=["item_id", "voice_id"], how="left")
    judge = merged["judge"].to_numpy(float, copy=True)
    judge[~table["condition"].eq("audio").to_numpy()] = np.nan
    return table.assign(judge=judge)


def open_answer_notes(run: Run) -> list[str]:
    """What an open-answer run's metrics rest on (the manifest's record), for the Methods."""
    record = run.manifest.get("open_answer")
    if run.output_type != "generate_open" or not record:
        return []
    from .open_answers import similarity_words

    threshold = record.get("off_topic_below")
    return [f"Open-answer metrics (docs/open_answers.md): similarity {record['similarity']}, "
            f"{similarity_words(record['similarity'])}; off-topic when "
            + (f"relevance < {threshold}" if threshold is not None else "no content word is shared with the question")
            + f"; lexicons {', '.join(record.get('lexicons') or [])}; primary outcomes "
            f"{', '.join(record.get('primary_outcomes') or [])}, the other metrics secondary."]


def main_sections(run: Run, audio: pd.DataFrame, outcome: dict, family: Family, settings: Settings, qc,
                  primary_level: float) -> dict:
    """The outcome's sections: the primary one at `primary_level`, the secondary ones at settings.level."""
    column = outcome["column"]
    covariates = _covariate_frame(qc.get("covariates") if qc else None)
    primary = replace(settings, level=primary_level)
    from .dialogue import dialogue_sections, every_outcome, is_dialogue

    if is_dialogue(run.manifest):
        spec = analysis_spec(run.manifest)
        return dialogue_sections(audio, spec["outcomes"], every_outcome(run.manifest["task"]["config"]), family,
                                 settings, primary_level, covariates)
    if run.output_type == "generate_open":
        from .open_answers import open_answer_sections

        spec, config = analysis_spec(run.manifest), run.manifest["task"]["config"]
        metrics = list(config.get("metrics") or spec["outcomes"])
        if run.judge is not None and "judge" not in metrics:  # judged after the run: a secondary outcome
            metrics.append("judge")
        sections = open_answer_sections(audio, spec["outcomes"], metrics, family, settings, primary_level, covariates)
        if run.judge is None and "judge" in spec["outcomes"]:  # declared, but no judge has compared the answers
            judge = sections["primary"] if spec["outcomes"][0] == "judge" else sections["outcomes"]["judge"]
            for block in judge["groupings"].values():
                block["gap"]["undefined"] = ("no judge has compared this run's answers yet (`biasbench judge compare "
                                             "RUN_DIR --judge SPEC`)")
        return sections
    if outcome["kind"] == "binary":
        return {"primary": binary_section(audio, column, outcome["name"], family, primary, verb=outcome["verb"],
                                          covariates=covariates),
                "voices": voice_means(audio, column, settings.items),
                "overall": audio_overall(audio, column, settings.items),
                "permutations": by_permutation(audio, column), **said_me_sections(audio, family, settings)}
    if outcome["kind"] == "numeric":
        return numeric_sections(audio, outcome, family, settings, split_column(audio), covariates, primary)
    return {**categorical_sections(audio, family, primary, outcome["name"]), **lexicon_sections(audio, family, settings)}


def _covariate_frame(covariates: list[dict] | None) -> pd.DataFrame | None:
    if not covariates:
        return None
    frame = pd.DataFrame(covariates)
    return frame if frame.shape[1] > 1 and np.isfinite(frame.drop(columns="voice_id").to_numpy(float)).all() else None
