"""The declared primary analysis of a run: the one computation every output states.

A task declares its primary analysis (`analysis:` in the task YAML, recorded in the run's
manifest): the primary outcome by each declared grouping, tested by the voice-level
permutation test, Bonferroni-corrected over that family alone (so each gap's interval,
simultaneous at level 1 - alpha/m, excludes 0 exactly when the gap is significant). `primary_results(report)` picks
those numbers out of the report's sections once; the end of `biasbench run`, `summary.md`,
the report's first section and the leaderboard all print this record and nothing else as
the result, so they cannot disagree. Every other test in a report is secondary.
"""

from __future__ import annotations

from biasbench.analysis.results import plain

from .fmt import between as between_words
from .fmt import pct, style

GROUPING_COLUMNS = {"gender": ["gender"], "ethnicity": ["ethnicity"], "gender x ethnicity": ["gender", "ethnicity"]}
TEST = "voice-level permutation test"


def analysis_spec(manifest: dict) -> dict:
    """The task's declared analysis (defaults where the task declares none). An open-answer task's
    `outcomes` are filled in: its declared primary metrics, else the first of its metrics."""
    from biasbench.config import OPEN_METRICS, AnalysisSpec

    config = (manifest.get("task") or {}).get("config") or {}
    declared = config.get("analysis") or {}
    spec = AnalysisSpec(**declared).model_dump()
    if config.get("follow_ups"):  # a multi-turn task: its conversation outcomes (report/dialogue.py)
        from .dialogue import every_outcome

        spec["outcomes"] = list(declared.get("outcomes") or every_outcome(config)[:1])
    elif config.get("output_type") == "generate_open":
        spec["outcomes"] = list(declared.get("outcomes") or (config.get("metrics") or OPEN_METRICS)[:1])
    return spec


def primary_family_size(spec: dict) -> int:
    """Tests in the primary family: each declared outcome (one, unless an open-answer task declares
    several) by each declared grouping."""
    return len(spec["groupings"]) * len(spec.get("outcomes") or [None])


def run_family_size(report: dict) -> int:
    """Tests in the primary family as run: the declared ones less any refused (never below 1)."""
    correction = (report.get("corrections") or {}).get("primary")
    if not correction:
        return primary_family_size(report["analysis"])
    return max(1, len(correction["labels"]) - len(correction["left_out"]))


def primary_sections(report: dict) -> list[dict]:
    """The sections of the declared primary outcomes: `primary`, then any other outcome the task
    declares primary (open-answer tasks: sections["outcomes"] with role "primary")."""
    sections = report["sections"]
    return [sections["primary"], *[s for s in (sections.get("outcomes") or {}).values() if s.get("role") == "primary"]]


def primary_labels(report: dict, spec: dict) -> list[str]:
    """Family labels of the declared primary tests (each primary outcome by each declared grouping)."""
    labels = []
    for section in primary_sections(report):
        groupings = section["groupings"]
        labels += [groupings[g]["family_label"] for g in spec["groupings"] if g in groupings]
    return labels


def unit_of(section: dict) -> str:
    """The unit a gap of this section is in: never mixed within one leaderboard column."""
    if section["kind"] == "categorical":
        return "Jensen-Shannon divergence (bits)"
    kind = style(section)
    if kind == "rate":
        return "proportion (0-1)"
    if kind == "relative":
        return "ratio to the mean"
    return section.get("unit") or section.get("unit_name") or "value"  # unit_name: a unitless scale's name


def grouping_result(section: dict, block: dict, alpha: float) -> dict:
    """One grouping's primary numbers: estimate, interval, raw and corrected p, significance."""
    p_corrected = block.get("p_corrected")
    common = {"p_corrected": p_corrected, "significant": p_corrected is not None and p_corrected < alpha}
    if section["kind"] == "categorical":
        result = block["result"]
        test = (result.get("tests") or {}).get("permutation_jsd") or {}
        big = block.get("largest_difference") or {}
        between = (between_words(big["high_group"], big["low_group"], result.get("jsd")) if big else "")
        if between and between != "no difference":
            between += f" (largest: {big['category']})"
        return {**common, "gap": result.get("jsd"), "ci": None, "ci_level": None, "p_value": test.get("p_value"),
                "mc_se": (test.get("details") or {}).get("mc_se"), "between": between, "estimates": {},
                "n_voices": result.get("n_voices"), "n_items": result.get("n_items"), "items": None,
                "undefined": result.get("undefined")}
    gap = block["gap"]
    between = between_words(gap.get("highest"), gap.get("lowest"), gap["gap"], len(gap["estimates"]))
    return {**common, "gap": gap["gap"], "ci": gap["ci"] if gap["p_value"] is not None else None,
            "ci_level": gap["level"] if gap["p_value"] is not None else None, "p_value": gap["p_value"],
            "mc_se": gap.get("mc_se"),
            "between": between, "estimates": gap["estimates"], "n_voices": gap["n_voices"],
            "n_items": gap["n_items"] if gap["p_value"] is not None else None, "items": gap.get("items"),
            "studentised": "Welch" in (gap.get("test") or ""), "undefined": gap.get("undefined")}


def primary_results(report: dict, spec: dict) -> dict:
    """The record every output states (see the module docstring). With several declared outcomes
    (an open-answer task), the record is the first outcome's, and `outcomes` lists one record per
    outcome; the headline holds every outcome's sentences and the correction names the whole family."""
    records = [outcome_record(section, report, spec) for section in primary_sections(report)]
    record = dict(records[0])
    if len(records) > 1:
        names = ", ".join(r["outcome"] for r in records)
        record.update(outcomes=records, headline=[sentence for r in records for sentence in r["headline"]],
                      correction=f"{spec['correction'].capitalize()} over the primary family ("
                                 f"{sum(len(tested(r)) for r in records)} tests: {names}, each by "
                                 f"{', '.join(records[0]['groupings'])}{refused_words(records)})")
    record.update(invalid_by_group=invalid_by_group(report, spec), invalid_warnings=invalid_warnings(report),
                  n_items_run=report["design"]["n_items"], n_items_tested=items_tested(records))
    return plain(record)


def tested(record: dict) -> list[str]:
    """The declared groupings whose test was run (a refused grouping is not in the family)."""
    return [g for g, r in record["groupings"].items() if r["p_value"] is not None]


def refused_words(records: list[dict]) -> str:
    refused = sorted({g for r in records for g, block in r["groupings"].items() if block["p_value"] is None})
    return f"; not testable, so not in the family: {', '.join(refused)}" if refused else ""


def items_tested(records: list[dict]) -> int | None:
    """The fewest items any primary test used (None when none was run)."""
    counts = [block["n_items"] for r in records for block in r["groupings"].values()
              if block["p_value"] is not None and block.get("n_items") is not None]
    return min(counts) if counts else None


def invalid_by_group(report: dict, spec: dict) -> dict:
    """Per declared grouping: each group's share of answers that are not valid, by status (the
    report's invalid section, computed once)."""
    by_status = (report["sections"].get("invalid") or {}).get("by_status") or {}
    out = {}
    for gname in spec["groupings"]:
        rows = []
        for row in by_status.get(gname) or []:
            statuses = {k: v for k, v in row.items() if k not in ("group", "n", "valid") and v}
            rows.append({"group": row["group"], "n": row["n"], "invalid": 1 - row.get("valid", 0.0),
                         "statuses": dict(sorted(statuses.items(), key=lambda kv: -kv[1]))})
        out[gname] = rows
    return out


def invalid_warnings(report: dict) -> list[str]:
    """The report's warning where a group's invalid rate differs significantly (words.py)."""
    from .words import section_sentences

    section = report["sections"].get("invalid")
    if not section:
        return []
    return [f"Warning: the invalid-answer rate differs between groups. {sentence}"
            for sentence in section_sentences(section, report, only_significant=True)]


def outcome_record(section: dict, report: dict, spec: dict) -> dict:
    """One primary outcome's record: its gap, interval and corrected p by each declared grouping."""
    alpha = spec["alpha"]
    groupings = {g: grouping_result(section, section["groupings"][g], alpha)
                 for g in spec["groupings"] if g in section["groupings"]}
    run = [g for g, r in groupings.items() if r["p_value"] is not None]
    refused = [g for g in groupings if g not in run]
    record = {"outcome": section["name"], "kind": section["kind"], "unit": unit_of(section),
              "test": TEST, "correction": f"{spec['correction'].capitalize()} over the primary family "
                                          f"({len(run)} test{'' if len(run) == 1 else 's'}: {section['name']} by "
                                          f"{', '.join(run) or 'none'}"
                                          + (f"; not testable, so not in the family: {', '.join(refused)}"
                                             if refused else "") + ")",
              "alpha": alpha, "items": spec["items"], "groupings": groupings,
              "pipeline_check": report["run"]["pipeline_check"], "proxy_labels": report["run"]["proxy_labels"]}
    record["headline"] = headline_sentences(section, record, report)
    return record


def headline_sentences(section: dict, record: dict, report: dict) -> list[str]:
    """One sentence per declared grouping (words.block_sentence: the groups, the gap in the
    outcome's units, its interval, the corrected p and the test; the detectable gap when not
    significant), the same words wherever the primary result is shown."""
    from .words import block_sentence

    return [block_sentence(section, gname, section["groupings"][gname], report) for gname in record["groupings"]]


def items_sentence(record: dict) -> str:
    """How many items the primary test used, when fewer than the run holds ('' otherwise)."""
    used, held = record.get("n_items_tested"), record.get("n_items_run")
    if used is None or held is None or used >= held:
        return ""
    return (f"The primary test used {used} of the run's {held} items "
            + ("(those every compared voice answered validly)." if record["items"] == "common" else
               "(the items with a valid answer)."))


def invalid_lines(record: dict) -> list[str]:
    """Each declared grouping's shares of answers that are not valid, by group and status (none
    when every answer was valid: ALL_VALID says so)."""
    out = []
    if not any(row["invalid"] for rows in (record.get("invalid_by_group") or {}).values() for row in rows):
        return out
    for gname, rows in (record.get("invalid_by_group") or {}).items():
        if not rows:
            continue
        parts = []
        for row in rows:
            kinds = ", ".join(f"{k} {pct(v)}" for k, v in row["statuses"].items())
            parts.append(f"{row['group']} {pct(row['invalid'])}" + (f" ({kinds})" if kinds else ""))
        out.append(f"by {gname}: " + "; ".join(parts))
    return out


INVALID_HEAD = "Answers that were not valid (left out of the outcome, counted here):"
ALL_VALID = "Every answer was valid: none was left out of the outcome."


def unequal_sentence(record: dict) -> str:
    """Where group sizes differ, the test is studentised: say so next to the result ('' otherwise)."""
    unequal = [g for r in record.get("outcomes") or [record] for g, block in r["groupings"].items()
               if block.get("studentised")]
    if not unequal:
        return ""
    return (f"Groups differ in size by {', '.join(dict.fromkeys(unequal))}: there the test is studentised (the Welch "
            "test of the highest against the lowest group, its p-value from permuting group labels among voices), "
            "which keeps its level when the groups also differ in spread.")


def primary_markdown(record: dict) -> str:
    """The primary result as a markdown block (summary.md, the end of `biasbench run` and the
    report's opening)."""
    from biasbench.analysis.gaps import ITEM_WORDS

    outcome = ", ".join(r["outcome"] for r in record.get("outcomes") or [record])
    lines = ["## Primary result", "",
             f"Declared primary analysis: {outcome} by {', '.join(record['groupings'])}; {record['test']} "
             f"(group labels permuted among voices); {record['correction']}; alpha {record['alpha']}; "
             f"{ITEM_WORDS.get(record['items'], record['items'])}.",
             ""]
    lines += [f"- {sentence}" for sentence in record["headline"]]
    for sentence in (items_sentence(record), unequal_sentence(record)):
        if sentence:
            lines += ["", sentence]
    invalid = invalid_lines(record)
    if invalid:
        lines += ["", INVALID_HEAD, *[f"- {line}" for line in invalid]]
    elif record.get("invalid_by_group"):
        lines += ["", ALL_VALID]
    if record.get("invalid_warnings"):
        lines += ["", *record["invalid_warnings"]]
    if record["pipeline_check"]:
        lines += ["", "PIPELINE CHECK: nothing above measures a real speech model."]
    if record["proxy_labels"]:
        lines += ["", "The voices' labels are proxies: a gap is between these voices, not between people of these "
                      "groups."]
    return "\n".join(lines) + "\n"

