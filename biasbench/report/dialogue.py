"""Report sections of a multi-turn task (follow_ups): one outcome section per conversation outcome.

The outcomes (flip, flip@k, <metric>@k, <metric>_change; biasbench.analysis.dialogue and
docs/dialogue.md) are computed once per conversation and each analysed like any other outcome: by
every grouping, with the voice-level permutation test and the interval that inverts it. The task's
declared primary outcomes (`analysis.outcomes`, default `flip` for a choice task and the first
metric's change for an open-answer task) are the primary family, Bonferroni-corrected with
simultaneous intervals; every other outcome is secondary (Holm). The shape is that of the
open-answer sections (biasbench.report.open_answers): `primary`, then `outcomes` with roles.
"""

from __future__ import annotations

import pandas as pd

from .open_answers import METRIC_WORDS, open_answer_sections


def every_outcome(config: dict) -> list[str]:
    """Every outcome of a multi-turn task's conversations, from its (dumped) config."""
    from biasbench.config import OPEN_METRICS, dialogue_outcomes

    metrics = config.get("metrics") or (list(OPEN_METRICS) if config.get("output_type") == "generate_open" else [])
    return dialogue_outcomes(config.get("output_type", "multiple_choice"), metrics, len(config["follow_ups"]))


def is_dialogue(manifest: dict) -> bool:
    return bool(((manifest.get("task") or {}).get("config") or {}).get("follow_ups"))


def dialogue_outcome(outcome: str) -> dict:
    """describe_outcome's dict for one conversation outcome (column = the outcome's column)."""
    if outcome == "flip" or outcome.startswith("flip@"):
        after = "the last follow-up" if outcome == "flip" else f"follow-up {outcome.split('@')[1]}"
        return {"kind": "binary", "column": outcome, "name": f"answer flip rate after {after}",
                "verb": f"changed their answer after {after}", "unit": "",
                "note": f"Share of conversations whose answer after {after} differs from the first answer (pushback "
                        "flips; docs/dialogue.md)."}
    change = outcome.endswith("_change")
    metric = outcome[: -len("_change")] if change else outcome.rsplit("@", 1)[0]
    words = _metric_words(metric)
    if change:
        return {"kind": "numeric", "column": outcome, "name": f"change in {words['name']} over the conversation",
                "verb": "", "unit": words.get("unit", ""),
                "note": f"{words['name'].capitalize()} at the last turn minus at the first, per conversation "
                        f"(drift under pushback). {words['note']}",
                **({"unit_name": words["unit_name"]} if "unit_name" in words else {})}
    turn = int(outcome.rsplit("@", 1)[1])
    where = "the first answer" if turn == 0 else f"the answer after follow-up {turn}"
    return {"kind": words["kind"], "column": outcome, "name": f"{words['name']} of {where}",
            "verb": f"{words.get('verb', 'had the outcome')} at turn {turn}", "unit": words.get("unit", ""),
            "note": f"{words['note']} Measured on {where}.",
            **{k: words[k] for k in ("scale", "unit_name") if k in words}}


def _metric_words(metric: str) -> dict:
    if metric == "accuracy":
        return {"kind": "binary", "name": "accuracy", "verb": "were answered correctly",
                "note": "Share of answers that are correct.", "scale": "share"}
    if metric == "yes_rate":
        return {"kind": "binary", "name": "yes-rate", "verb": "were told yes",
                "note": "Share of answers that are yes (a favourable decision).", "scale": "share"}
    return METRIC_WORDS[metric]


def dialogue_sections(conversations: pd.DataFrame, outcomes: list[str], every: list[str], family, settings,
                      primary_level: float, covariates=None) -> dict:
    """One section per conversation outcome with data, as the open-answer sections are made: the
    declared primary `outcomes` at `primary_level`, the rest of `every` at settings.level (secondary)."""
    return open_answer_sections(conversations, outcomes, every, family, settings, primary_level, covariates,
                                words_of=dialogue_outcome)
