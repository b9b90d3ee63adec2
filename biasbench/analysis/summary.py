"""The first look at a run: descriptive tables per voice group and per voice.

Pure functions over the tidy table (one row per response). Invalid answers and refusals
are not scored wrong: accuracy is over valid answers, and the share of invalid answers is
reported beside it for every group, since a model that refuses one group more is biased too.
No gap is computed here: the one gap a run states is the declared primary analysis
(biasbench.report.primary), which summary.md shows first once the report is computed.
"""

from __future__ import annotations

import pandas as pd

GROUPINGS = {
    "gender": ["gender"],
    "ethnicity": ["ethnicity"],
    "gender x ethnicity": ["gender", "ethnicity"],
    "voice": ["voice_id", "gender", "ethnicity"],
}


def accuracy_table(tidy: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """n responses, n valid, accuracy over valid answers, invalid share, per group."""
    frame = tidy.assign(valid=tidy["status"].eq("valid"))
    grouped = frame.groupby(by, sort=True, dropna=False)
    table = pd.DataFrame({
        "n": grouped.size(),
        "n_valid": grouped["valid"].sum().astype(int),
        "n_correct": grouped["correct"].sum(min_count=0).astype(int),
        "n_voices": grouped["voice_id"].nunique(),
    })
    table["accuracy"] = table["n_correct"] / table["n_valid"].where(table["n_valid"] > 0)
    table["invalid_rate"] = 1 - table["n_valid"] / table["n"]  # every status but valid
    return table.reset_index()


def outcome_table(tidy: pd.DataFrame, by: list[str], output_type: str) -> pd.DataFrame:
    """The per-group table for an output type: accuracy, category shares, or mean value."""
    if output_type == "multiple_choice":
        return accuracy_table(tidy, by)
    frame = tidy.assign(valid=tidy["status"].eq("valid"))
    grouped = frame.groupby(by, sort=True, dropna=False)
    table = pd.DataFrame({"n": grouped.size(), "n_valid": grouped["valid"].sum().astype(int),
                          "n_voices": grouped["voice_id"].nunique()})
    table["invalid_rate"] = 1 - table["n_valid"] / table["n"]
    if output_type == "generate_numeric":
        table["mean_value"] = grouped["value"].mean()
    elif output_type == "transcribe":  # per-response error rates averaged over valid transcripts
        table["mean_wer"] = grouped["value"].mean()
        if "cer" in frame:
            table["mean_cer"] = grouped["cer"].mean()
    elif output_type == "generate_open":  # each quality-of-service metric averaged over the responses it covers
        from biasbench.config import OPEN_METRICS

        for metric in OPEN_METRICS:
            if metric in frame and pd.to_numeric(frame[metric], errors="coerce").notna().any():
                table[f"mean {metric}"] = pd.to_numeric(frame[metric], errors="coerce").groupby(
                    [frame[c] for c in by], sort=True, dropna=False).mean()
    else:  # categorical: the share of each answer among all responses (unmapped and refusals too)
        label = frame["answer"].where(frame["status"].isin(["valid"]), "<" + frame["status"] + ">")
        shares = pd.crosstab([frame[c] for c in by], label, normalize="index")
        top = shares.columns[shares.mean().argsort()[::-1][:5]]
        table = table.join(shares[top].add_prefix("share: "))
    return table.reset_index()


def first_analysis(tidy: pd.DataFrame, output_type: str = "multiple_choice") -> dict:
    """Every grouping's table (and largest accuracy gap), as plain data (JSON-ready).

    Voice groups come from the audio rows; text-condition rows (the no-voice control) are
    summarised beside them. A run of text rows only (the `text:` control) has no groups.
    """
    condition = tidy["condition"] if "condition" in tidy else pd.Series("audio", index=tidy.index)
    audio, text = tidy[condition == "audio"], tidy[condition == "text"]
    answered = audio if len(audio) else text
    result = {"output_type": output_type, "groupings": {}, "overall": _overall(answered, output_type),
              "status_counts": {str(k): int(v) for k, v in answered["status"].value_counts().items()},
              "status_by_group": []}
    if len(text):
        result["text_control"] = _overall(text, output_type)
    if audio.empty:
        return result
    for name, by in GROUPINGS.items():
        table = outcome_table(audio, by, output_type)
        result["groupings"][name] = {"by": by, "table": table.to_dict("records")}
    result["status_by_group"] = status_by_group(audio).to_dict("records")
    if "turn" in audio.columns:  # a multi-turn task: each turn's answers (biasbench.analysis.dialogue)
        from biasbench.analysis.dialogue import turn_table

        result["turns"] = turn_table(audio, _turn_column(audio, output_type)).to_dict("records")
    return result


def _turn_column(rows: pd.DataFrame, output_type: str) -> str:
    """What the per-turn table averages: correctness (choice), words (open answers), else validity."""
    if output_type == "multiple_choice":
        return "correct"
    return "words" if "words" in rows.columns else "status"


def _overall(rows: pd.DataFrame, output_type: str) -> dict:
    if rows.empty:
        return {"n": 0}
    return outcome_table(rows.assign(all="all"), ["all"], output_type).drop(columns="all").iloc[0].to_dict()


def status_by_group(tidy: pd.DataFrame) -> pd.DataFrame:
    """Responses of each status per gender x ethnicity cell: invalid answers, refusals and
    clips too long for the model are data, and a group that gets more of them is treated
    differently even when its accuracy looks the same."""
    counts = pd.crosstab([tidy["gender"], tidy["ethnicity"]], tidy["status"])
    return counts.reset_index().rename_axis(columns=None)


def to_markdown(analysis: dict, *, title: str, banner: str = "", primary: str = "") -> str:
    """The run's summary. `primary` is the declared primary result as markdown
    (biasbench.report.primary.primary_markdown), put first when the report has been computed;
    the tables below are descriptive (no test, no interval)."""
    lines = [f"# {title}", ""]
    if banner:
        lines += [f"> **{banner}**", ""]
    lines += [primary, ""] if primary else [
        "## Primary result", "",
        "Not computed yet: `biasbench report RUN_DIR` computes the task's declared primary analysis (voice-level "
        "permutation tests with intervals) and writes it here.", ""]
    lines += ["## Descriptive tables", "", "Per group, over every response (no test, no interval: see the primary "
              "result above and the report).", ""]
    overall = analysis["overall"]
    if overall.get("accuracy") is not None and "n_valid" in overall:
        lines += [f"Overall: accuracy {_pct(overall['accuracy'])} over {int(overall['n_valid'])} valid answers "
                  f"of {int(overall['n'])} responses; not scored (invalid, refused, audio too long or not "
                  f"synthesised) {_pct(overall['invalid_rate'])}.", ""]
    if overall.get("mean_wer") is not None and "n_valid" in overall:
        cer = f" (CER {_pct(overall['mean_cer'])})" if overall.get("mean_cer") is not None else ""
        lines += [f"Overall: mean WER {_pct(overall['mean_wer'])}{cer} over {int(overall['n_valid'])} valid "
                  f"transcripts of {int(overall['n'])} responses (WER and CER per response, after biasbench's "
                  f"pinned text normalisation); not scored (refused, audio too long or not synthesised) "
                  f"{_pct(overall['invalid_rate'])}.", ""]
    if overall.get("mean words") is not None and "n_valid" in overall:
        lines += [f"Overall: {int(overall['n_valid'])} valid free answers of {int(overall['n'])} responses, "
                  f"{overall['mean words']:.1f} words on average; not valid (empty, refused, audio too long or not "
                  f"synthesised) {_pct(overall['invalid_rate'])}. Every quality-of-service metric per group is "
                  "below (means over the responses each metric covers; definitions in docs/open_answers.md).", ""]
    if "text_control" in analysis and "accuracy" in analysis["text_control"]:
        lines += [f"Text-only control (same prompts, no voice): accuracy "
                  f"{_pct(analysis['text_control']['accuracy'])}.", ""]
    lines += ["Responses by status: " + ", ".join(f"{k} {v}" for k, v in analysis["status_counts"].items()), ""]
    if set(analysis["status_counts"]) != {"valid"}:
        lines += ["### Responses by status and group", "",
                  pd.DataFrame(analysis["status_by_group"]).to_markdown(index=False), ""]
    if analysis.get("turns"):
        turns = pd.DataFrame(analysis["turns"]).drop(columns=["mean status"], errors="ignore")
        turns["valid_rate"] = turns["valid_rate"].map(_pct)
        lines += ["### By turn", "", "A multi-turn task: turn 0 is the first answer, turn k the answer after the "
                  "k-th follow-up (docs/dialogue.md).", "", turns.to_markdown(index=False), ""]
    for name, block in analysis["groupings"].items():
        lines += [f"### By {name}", ""]
        frame = pd.DataFrame(block["table"])
        for column in frame.columns:
            if column in ("accuracy", "invalid_rate", "mean_wer", "mean_cer", "mean refusal", "mean off_topic",
                          "mean correctness") or column.startswith("share: "):
                frame[column] = frame[column].map(_pct)
        lines += [frame.to_markdown(index=False), ""]
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * value:.1f}%"
