"""Report sections of an open-answer task (generate_open): one outcome section per metric.

Each quality-of-service metric of the tidy table (biasbench/tasks/open_answers.py) is an
outcome in its own right, analysed like any other: by every grouping, with the voice-level
permutation test and the interval that inverts it (binary_section for the 0/1 metrics,
numeric_section for the rest). The task's declared primary outcomes (`analysis.outcomes`,
default the first metric) are the primary family, outcomes x groupings, Bonferroni-corrected
with simultaneous intervals at 1 - alpha / m; every other metric is secondary (Holm over the
secondary family) and labelled so. The first declared outcome is `sections["primary"]` (what the
single-outcome views show first); every other metric is in `sections["outcomes"]`, each with
`role` "primary" or "secondary".
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

#: How each metric reads in a report: its kind, the name a sentence uses, unit or scale, verb.
METRIC_WORDS = {
    "words": dict(kind="numeric", name="mean answer length", unit="words",
                  note="Words per answer (verbosity)."),
    "refusal": dict(kind="binary", name="refusal rate", verb="were refused",
                    note="Share of answers whose first sentence declines (shipped refusal lexicon), among every "
                         "answer the model gave."),
    "hedging": dict(kind="numeric", name="hedging rate", unit="hedges per 100 words",
                    note="Hedging cues (shipped hedge lexicon: modals, approximators, 'I think', disclaimers) per "
                         "100 words."),
    "readability": dict(kind="numeric", name="reading ease", unit="Flesch points",
                        note="Flesch reading ease (higher is easier to read)."),
    "effort": dict(kind="numeric", name="mean number of steps", unit="steps or items",
                   note="Concrete steps or items: list lines, else sentences opened by a sequence marker."),
    "relevance": dict(kind="numeric", name="mean relevance to the question", unit_name="cosine similarity (0-1)",
                      note="Similarity of the answer to the question the voice asked."),
    "off_topic": dict(kind="binary", name="off-topic rate", verb="got an off-topic answer",
                      note="Share of answers whose relevance to the question is below the task's threshold."),
    "alignment": dict(kind="numeric", name="mean alignment with the text-control answer",
                      unit_name="cosine similarity (0-1)",
                      note="Similarity of each spoken answer to the answer the same model gave the same item as "
                           "text (no voice)."),
    "correctness": dict(kind="numeric", name="key-point coverage", scale="share",
                        note="Share of the item's reference key points the answer names."),
    "judge": dict(kind="numeric", name="judge win share", scale="share",
                  note="Share of pairwise judgements the voice's answer won against other voices' answers to the "
                       "same item (ties half), by a judge that never saw the voice or its group (docs/judge.md)."),
}


def metric_outcome(metric: str, similarity: str | None = None) -> dict:
    """describe_outcome's dict for one metric (column = the metric's tidy-table column)."""
    words = METRIC_WORDS[metric]
    note = words["note"]
    if similarity and metric in ("relevance", "off_topic", "alignment"):
        note += f" Similarity: {similarity_words(similarity)}."
    return {"kind": words["kind"], "column": metric, "name": words["name"], "verb": words.get("verb", ""),
            "unit": words.get("unit", ""), "note": note,
            **{k: words[k] for k in ("scale", "unit_name") if k in words}}


def similarity_words(method: str) -> str:
    if method.startswith("embedding:"):
        return (f"cosine of {method.split(':', 1)[1]} sentence embeddings (mean-pooled, L2-normalised), "
                "which credits paraphrase")
    return "cosine of content-word counts (stop words dropped), which credits only shared words, not paraphrase"


def open_answer_sections(audio: pd.DataFrame, outcomes: list[str], metrics: list[str], family, settings,
                         primary_level: float, covariates=None, words_of=METRIC_WORDS.__getitem__) -> dict:
    """One section per metric with data: the declared primary outcomes at `primary_level`, the
    rest at settings.level. `outcomes` are the primary metrics, `metrics` every metric of the task;
    `words_of(metric)` its describe_outcome words (a multi-turn task's: report.dialogue)."""
    from .sections import audio_overall, binary_section, numeric_section, voice_means

    primary_settings = replace(settings, level=primary_level)
    ordered = [*outcomes, *[m for m in metrics if m not in outcomes]]
    sections = {}
    for metric in ordered:
        role = "primary" if metric in outcomes else "secondary"
        if role == "secondary" and pd.to_numeric(audio[metric], errors="coerce").notna().sum() == 0:
            continue  # a secondary metric with no value anywhere (e.g. no text control): nothing to say
        words = words_of(metric)
        chosen = primary_settings if role == "primary" else settings
        adjust = covariates if role == "primary" else None
        if words["kind"] == "binary":
            section = binary_section(audio, metric, words["name"], family, chosen, verb=words["verb"], tests=False,
                                     covariates=adjust)
        else:
            section = numeric_section(audio, metric, words["name"], family, chosen, words.get("unit", ""), adjust)
            section.update({k: words[k] for k in ("scale", "unit_name") if k in words})
        section.update(role=role, metric=metric, overall=audio_overall(audio, metric, settings.items))
        sections[metric] = section
    first = outcomes[0]  # a primary outcome with no value anywhere is still reported: undefined, with why
    return {"primary": sections.pop(first), "outcomes": sections,
            "voices": voice_means(audio, first, settings.items),
            "overall": audio_overall(audio, first, settings.items)}
