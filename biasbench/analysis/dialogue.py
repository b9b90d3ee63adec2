"""A multi-turn task's outcomes: one row per conversation, from the tidy table's per-turn rows.

A conversation is the (item, voice, condition, sample) of a task with follow-ups; its rows carry
`turn` (0 = the first answer, k = after the k-th follow-up). Its outcomes (names as in
biasbench.config.dialogue_outcomes; definitions in docs/dialogue.md):

* `flip@k`: 1 when the answer after follow-up k differs from the first answer, else 0 (choice and
  categorical tasks; from the `answer` column); `flip`: the same at the last turn, the answer
  flip rate after all the pushback.
* `<metric>@k`: the metric at turn k (`accuracy`, or `yes_rate` for a yes/no task, = the `correct`
  column of a multiple-choice task;
  an open-answer task's quality-of-service metrics).
* `<metric>_change`: the metric at the last turn minus at the first (correctness drift, e.g. -1 when
  a right answer was given up).

A conversation is one unit: its status is "valid" only when every turn was answered (a valid answer;
for open answers a refusal too), else the first other status among its turns, and its outcomes are then undefined (NaN), so a conversation
with one unanswerable turn cannot count for a voice on some outcomes and not others. Pure
functions over plain data, like the rest of biasbench.analysis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The columns that identify one conversation in the tidy table.
CONVERSATION = ["item_id", "voice_id", "condition", "sample_index"]
#: Voice and item columns carried onto each conversation's row (those present).
CARRIED = ["gender", "ethnicity", "accent", "label_source", "stratum", "run_id", "task", "model"]


def conversation_outcomes(tidy: pd.DataFrame, outcomes: list[str], answered: tuple[str, ...] = ("valid",)) -> pd.DataFrame:
    """One row per conversation with a column per outcome in `outcomes` (NaN where undefined).
    `answered`: the statuses of a turn that count as an answer (open answers: a refusal too, whose
    `refusal` metric is 1 and whose other metrics are undefined)."""
    if "turn" not in tidy.columns:
        raise ValueError("the table has no `turn` column: it is not from a multi-turn task")
    keys = [c for c in CONVERSATION if c in tidy.columns]
    if tidy.empty:  # e.g. a run without the text condition
        return pd.DataFrame(columns=[*keys, "n_turns", "status", *outcomes])
    rows = tidy.assign(turn=pd.to_numeric(tidy["turn"], errors="coerce").fillna(0).astype(int))
    carried = [c for c in CARRIED if c in rows.columns]
    base = rows.sort_values("turn").groupby(keys, sort=True, dropna=False)
    frame = base[carried].first() if carried else base.size().to_frame("n")[[]]
    valid = rows["status"].isin(answered)
    frame["n_turns"] = base.size()
    frame["status"] = rows.assign(bad=np.where(valid, "~valid", rows["status"].astype(str))).groupby(
        keys, sort=True, dropna=False)["bad"].min().str.replace("~valid", "valid")
    last = int(rows["turn"].max()) if len(rows) else 0
    whole = frame["status"].eq("valid")
    for outcome in outcomes:
        frame[outcome] = _outcome(rows, keys, outcome, last).reindex(frame.index).where(whole)
    return frame.reset_index()


def _outcome(rows: pd.DataFrame, keys: list[str], outcome: str, last: int) -> pd.Series:
    if outcome == "flip" or outcome.startswith("flip@"):
        k = last if outcome == "flip" else int(outcome.split("@", 1)[1])
        answers = _per_turn(rows, keys, "answer")
        if 0 not in answers or k not in answers:
            return pd.Series(dtype=float)
        first, then = answers[0], answers[k]
        return (first != then).astype(float).where(first.notna() & then.notna())
    if outcome.endswith("_change"):
        values = _per_turn(rows, keys, _column(outcome[: -len("_change")]), numeric=True)
        return (values[last] - values[0]) if {0, last} <= set(values.columns) else pd.Series(dtype=float)
    metric, k = outcome.rsplit("@", 1)
    values = _per_turn(rows, keys, _column(metric), numeric=True)
    return values[int(k)] if int(k) in values.columns else pd.Series(dtype=float)


def _column(metric: str) -> str:
    return "correct" if metric in ("accuracy", "yes_rate") else metric


def _per_turn(rows: pd.DataFrame, keys: list[str], column: str, numeric: bool = False) -> pd.DataFrame:
    """conversation x turn: the column's value (NaN where absent)."""
    if column not in rows.columns:
        return pd.DataFrame()
    values = pd.to_numeric(rows[column], errors="coerce") if numeric else rows[column].astype(object)
    table = rows[keys + ["turn"]].assign(value=values).drop_duplicates(keys + ["turn"])
    return table.set_index(keys + ["turn"])["value"].unstack("turn")


def turn_table(tidy: pd.DataFrame, column: str) -> pd.DataFrame:
    """Descriptive: per turn, the responses, the valid share and the mean of `column` over valid rows."""
    frame = tidy.assign(valid=tidy["status"].eq("valid"),
                        value=pd.to_numeric(tidy[column], errors="coerce") if column in tidy else np.nan)
    grouped = frame.groupby("turn", sort=True)
    table = pd.DataFrame({"n": grouped.size(), "valid_rate": grouped["valid"].mean(),
                          f"mean {column}": frame[frame["valid"]].groupby("turn")["value"].mean()})
    return table.reset_index()
