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

from .fmt import style

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
        between = f"{big['high_group']} - {big['low_group']} (largest: {big['category']})" if big else ""
        return {**common, "gap": result.get("jsd"), "ci": None, "ci_level": None, "p_value": test.get("p_value"),
                "mc_se": (test.get("details") or {}).get("mc_se"), "between": between, "estimates": {},
                "n_voices": result.get("n_voices"), "n_items": result.get("n_items"), "items": None,
                "undefined": result.get("undefined")}
    gap = block["gap"]
    between = f"{gap['highest']} - {gap['lowest']}" if gap.get("highest") else ""
    return {**common, "gap": gap["gap"], "ci": gap["ci"], "ci_level": gap["level"], "p_value": gap["p_value"],
            "mc_se": gap.get("mc_se"),
            "between": between, "estimates": gap["estimates"], "n_voices": gap["n_voices"],
            "n_items": gap["n_items"], "items": gap.get("items"), "undefined": gap.get("undefined")}


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
                                 f"{sum(len(r['groupings']) for r in records)} tests: {names}, each by "
                                 f"{', '.join(records[0]['groupings'])})")
    return plain(record)


def outcome_record(section: dict, report: dict, spec: dict) -> dict:
    """One primary outcome's record: its gap, interval and corrected p by each declared grouping."""
    alpha = spec["alpha"]
    groupings = {g: grouping_result(section, section["groupings"][g], alpha)
                 for g in spec["groupings"] if g in section["groupings"]}
    record = {"outcome": section["name"], "kind": section["kind"], "unit": unit_of(section),
              "test": TEST, "correction": f"{spec['correction'].capitalize()} over the primary family "
                                          f"({len(groupings)} tests: {section['name']} by "
                                          f"{', '.join(groupings)})",
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


def primary_markdown(record: dict) -> str:
    """The primary result as a markdown block (summary.md and the report's opening)."""
    outcome = ", ".join(r["outcome"] for r in record.get("outcomes") or [record])
    lines = ["## Primary result", "",
             f"Declared primary analysis: {outcome} by {', '.join(record['groupings'])}; {record['test']} "
             f"(group labels permuted among voices); {record['correction']}; alpha {record['alpha']}; "
             f"{'items every compared voice answered validly' if record['items'] == 'common' else 'every item'}.",
             ""]
    lines += [f"- {sentence}" for sentence in record["headline"]]
    if record["pipeline_check"]:
        lines += ["", "PIPELINE CHECK: nothing above measures a real speech model."]
    if record["proxy_labels"]:
        lines += ["", "The voices' labels are proxies: a gap is between these voices, not between people of these "
                      "groups."]
    return "\n".join(lines) + "\n"

