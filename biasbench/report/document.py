"""The report as a list of blocks (headings, paragraphs, tables, figures), built from report.json.

Markdown and HTML are two renderings of the same blocks (render.py), so they always say
the same thing. A block is a dict: {"h": text, "level": 2}, {"p": text, "style": ...},
{"list": [...]}, {"table": [[...]], "columns": [...]}, {"figure": name, "caption": ...}.
"""

from __future__ import annotations

from .fmt import between, difference, fixed, gap_interval, interval, num, pct, pval, value
from .primary import ALL_VALID, INVALID_HEAD, invalid_lines, items_sentence, run_family_size, unequal_sentence
from .qc import QC_TABLE_COLUMNS
from .words import signed_change

QC_CONTRACT = ("Voice-quality contract: a `voice_qc.csv` (or `voice_qc.parquet`) in the run directory, one row "
               "per voice: a `voice_id` column matching the tidy table, any numeric columns (the QC stage, "
               "`biasbench voices qc`, writes wer, cer, speaking_rate, duration_s, loudness_lufs, clipping_ratio, "
               "silence_ratio; with `--classifier` also classifier_share, and the text columns classifier_label "
               "and classifier_agrees) and optionally `flags` (outlier flags, listed); other non-numeric columns "
               "are ignored. Columns named " + ", ".join(QC_TABLE_COLUMNS) + " in the tidy table itself are used "
               "too, averaged per voice, and the mean clip length per voice (audio_seconds) always is.")


def h(text, level=2):
    return {"h": text, "level": level}


def p(text, style=""):
    return {"p": text, "style": style}


def table(columns, rows, caption=""):
    return {"table": [[str(c) for c in row] for row in rows], "columns": columns, "caption": caption}


def build_blocks(report: dict, figures: dict) -> list[dict]:
    run = report["run"]
    blocks = [h(f"Bias report: {run['task']} — {run['model']} — pool {run['pool']}", 1)]
    blocks += [p(text, "banner") for text in run["banners"]]
    blocks += primary_blocks(report)
    blocks += [h("Conclusions"), {"list": report["conclusions"]}]
    blocks += run_blocks(report)
    blocks += outcome_blocks(report, figures)
    blocks += judge_blocks(report)
    blocks += invalid_blocks(report)
    blocks += text_control_blocks(report)
    blocks += qc_blocks(report)
    blocks += correction_blocks(report)
    blocks += method_blocks(report)
    blocks += appendix_blocks(report)
    return blocks


def primary_blocks(report: dict) -> list[dict]:
    """The declared primary analysis and its result: the same record the run's last lines,
    summary.md and the leaderboard print (report/primary.py)."""
    record = report["primary"]
    outcomes = record.get("outcomes") or [record]  # several declared outcomes: open-answer tasks
    rows = [[*([o["outcome"]] if len(outcomes) > 1 else []), g, r["between"] or "", _gap_text(o, r), _ci_text(o, r),
             pval(r["p_value"]), "" if r.get("mc_se") is None else f"{r['mc_se']:.2g}", pval(r["p_corrected"]),
             "yes" if r["significant"] else "no"] for o in outcomes for g, r in o["groupings"].items()]
    from biasbench.analysis.gaps import ITEM_WORDS

    items = ITEM_WORDS.get(record["items"], record["items"])
    m = run_family_size(report)
    units = "; ".join(f"{o['outcome']}: {o['unit']}" for o in outcomes) if len(outcomes) > 1 else record["unit"]
    return [h("Primary result"),
            p(f"Declared before the run (the task's `analysis:`): {', '.join(o['outcome'] for o in outcomes)} by "
              f"{', '.join(record['groupings'])}; {record['test']} (group labels permuted among voices); "
              f"{record['correction']}; alpha {record['alpha']}; on {items}. Everything else in this report is "
              "secondary."),
            {"list": record["headline"]},
            table([*(["outcome"] if len(outcomes) > 1 else []), "grouping", "highest - lowest", "gap", "interval",
                   "p (raw)", "Monte Carlo SE of p", "p (corrected)", "significant"], rows,
                  f"Gap unit: {units}. Intervals are simultaneous over the primary family "
                  f"(level 1 - alpha / {m}, Bonferroni), so a gap that is not significant after "
                  "correction always has 0 inside its interval."),
            *primary_notes(record)]


def primary_notes(record: dict) -> list[dict]:
    """What stands next to the primary result in every view (primary.primary_markdown): the items
    the test used, a studentised test for unequal groups, invalid shares per group, warnings."""
    blocks = [p(sentence) for sentence in (items_sentence(record), unequal_sentence(record)) if sentence]
    if invalid_lines(record):
        blocks += [p(INVALID_HEAD), {"list": invalid_lines(record)}]
    elif record.get("invalid_by_group"):
        blocks.append(p(ALL_VALID))
    return blocks + [p(warning) for warning in record.get("invalid_warnings") or []]


def _gap_text(record: dict, r: dict) -> str:
    if r["gap"] is None:
        return "undefined"
    return f"{fixed(100 * r['gap'], 1)} points" if record["unit"] == "proportion (0-1)" else num(r["gap"])


def _ci_text(record: dict, r: dict) -> str:
    if not r["ci"]:
        return "n/a" if record["kind"] == "categorical" else "undefined"
    level = f"{100 * r['ci_level']:.3g}%: "
    if record["unit"] == "proportion (0-1)":
        return f"{level}{fixed(100 * r['ci'][0], 1)} to {fixed(100 * r['ci'][1], 1)} points"
    return f"{level}{num(r['ci'][0])} to {num(r['ci'][1])}"


# ---------------------------------------------------------------- the run


def run_blocks(report: dict) -> list[dict]:
    run, d = report["run"], report["design"]
    rows = [("run id", run["run_id"]), ("model", f"{run['model']} (requested as {run['requested']})"),
            ("backend", run["backend"]), ("precision (dtype)", run["precision"]), ("quantisation", run["quantisation"]),
            ("revision", run["revision"]), ("adapter", run["adapter"]), ("device", run["device"]),
            ("task", f"{run['task']} ({run['output_type']})"), ("data source", run["data_source"]),
            ("voice pool", f"{run['pool']} ({d['n_voices']} voices)"),
            ("label sources", "; ".join(run["label_sources_text"])),
            ("seeds", ", ".join(f"{k} {v}" for k, v in run["seeds"].items()) or "not recorded"),
            ("generation", ", ".join(f"{k} {v}" for k, v in run["generation"].items()) or "not recorded"),
            ("harness", f"biasbench {run['harness_version']} (commit {run['git_commit'] or 'unknown'})"),
            ("started / finished", f"{run['started_at']} / {run['finished_at'] or 'not finished'}"),
            ("complete", str(run["complete"])), ("pipeline check", "YES: " + run["pipeline_note"]
                                                 if run["pipeline_check"] else "no")]
    cells = ", ".join(f"{k} {v}" for k, v in d["voices_per_cell"].items())
    design = (f"{d['n_items']} items x {d['n_voices']} voices x {d['samples_per_item']} sample(s) = "
              f"{d['n_responses']} spoken responses; conditions: {', '.join(d['conditions'])}. Voices per gender x "
              f"ethnicity cell: {cells}" + ("" if d["balanced"] else " (UNBALANCED)") + ".")
    out = [h("The run"), table(["field", "value"], rows), p(design)]
    if run["task_description"]:
        out.append(p(f"Task: {run['task_description']}"))
    return out


# ---------------------------------------------------------------- outcomes


def _outcomes_title(report: dict) -> str:
    """The heading of the other outcomes: a conversation's (multi-turn tasks), or open answers' metrics."""
    keys = [report["sections"]["primary"].get("metric") or "", *(report["sections"].get("outcomes") or {})]
    if any(key == "flip" or "@" in key or key.endswith("_change") for key in keys):
        return "Other outcomes of the conversations: flips, each turn, change over the turns (declared primary first)"
    return "Other quality-of-service metrics of the answers (declared primary outcomes first, then secondary)"


def outcome_blocks(report: dict, figures: dict) -> list[dict]:
    sections, outcome = report["sections"], report["outcome"]
    out = [h(f"{outcome['name'][:1].upper()}{outcome['name'][1:]} by group")]
    if outcome.get("note"):
        out.append(p(outcome["note"], "note"))
    primary = sections["primary"]
    if primary["kind"] == "categorical":
        out += categorical_blocks(primary)
    else:
        out += gap_section_blocks(primary, report, level=None if primary["kind"] == "binary" else 3)
    out += [{"figure": name, "caption": figures[name][1]} for name in ("voices", "gaps", "answers") if name in figures]
    out += adjusted_blocks(primary)
    extras = (("Probe attributes of the answers", "attributes"), (f"Within each {sections.get('split')}", "splits"),
              ("Answers naming the speaker ('Me')", "said_me"),
              (_outcomes_title(report), "outcomes"))
    for title, key in extras:
        if sections.get(key):
            out.append(h(title, 3))
            for section in sections[key].values():
                if section["kind"] == "categorical":
                    out += [h(section["name"], 4), *categorical_blocks(section)]
                else:
                    out += gap_section_blocks(section, report, level=4)
    if sections.get("permutations"):
        out += permutation_blocks(sections["permutations"])
    return out


def group_rows(section: dict) -> list[list]:
    rows = []
    for gname, block in section["groupings"].items():
        gap = block["gap"]
        for label, estimate in gap["estimates"].items():
            ci = gap["ci_by_group"].get(label)
            why = "" if ci else (" (single voice)" if gap["n_voices_by_group"].get(label, 0) < 2 else "")
            rows.append([gname, label, gap["n_voices_by_group"].get(label), value(section, estimate),
                         (interval(ci, lambda v: value(section, v)) + why) if estimate is not None else "undefined",
                         pct(gap["invalid_rate"].get(label))])
    return rows


def gap_rows(section: dict) -> list[list]:
    rows = []
    for gname, block in section["groupings"].items():
        gap = block["gap"]
        size = difference(section, gap["gap"])
        mdg = block.get("mdg") or {}
        mdg_text = (f"{100 * mdg['gap']:.0f} points" if mdg.get("gap") is not None else
                    ("n/a (not 0/1)" if "0/1" in str(mdg.get("undefined")) else mdg.get("undefined") or "")) \
            if mdg else ("" if block.get("p_corrected") is not None else "")
        ci = gap_interval(section, gap["ci"])
        test = pval(gap["p_value"]) if gap["p_value"] is not None else f"undefined ({gap['undefined']})"
        pair = between(gap["highest"], gap["lowest"], gap["gap"], len(gap["estimates"]))
        rows.append([gname, pair, size, ci, test,
                     pval(block.get("p_corrected")), _family(block), pval(block.get("p_bh")), mdg_text])
    return rows


GAP_COLUMNS = ["grouping", "highest - lowest", "gap", "interval (level in Methods)", "permutation p (raw)",
               "corrected", "family", "BH", "minimum detectable gap (if not significant)"]


def _family(block: dict) -> str:
    return {"primary": "primary (Bonferroni)", "secondary": "secondary (Holm)"}.get(block.get("family"), "")


def gap_section_blocks(section: dict, report: dict, level: int | None = 3) -> list[dict]:
    unit = f" ({section['unit']})" if section.get("unit") else ""
    role = f" [{section['role']}]" if section.get("role") else ""  # open-answer metrics: primary or secondary
    heading = [h(f"{section['name']}{unit}{role}", level)] if level else []
    return heading + [
            table(["grouping", "group", "voices", section["name"], "CI (t interval on voice means)",
                   "invalid rate"], group_rows(section)),
            table(GAP_COLUMNS, gap_rows(section),
                  "Primary test: voice-level permutation test (group labels permuted among voices); conditions on "
                  "the voices' mean outcomes, generalises to new voices drawn like these. Corrected: Bonferroni over "
                  "the primary family, Holm (and BH) over the secondary tests; the families are listed under "
                  "Multiple comparisons.")]


def adjusted_blocks(section: dict) -> list[dict]:
    """Each gap adjusted for the voice QC covariates (Freedman-Lane), beside the unadjusted one."""
    rows = []
    for gname, block in section["groupings"].items():
        result = block.get("adjusted")
        if not result:
            continue
        if result.get("p_value") is None:
            rows.append([gname, "", "undefined", "", f"undefined ({result.get('undefined')})"])
            continue
        rows.append([gname, between(result["highest"], result["lowest"], result["gap"]),
                     difference(section, result["gap"]),
                     difference(section, block["gap"]["gap"]), pval(result["p_value"])])
    if not rows:
        return []
    covariates = next(b["adjusted"].get("covariates") for b in section["groupings"].values() if b.get("adjusted"))
    return [h("Adjusted for voice quality", 3),
            table(["grouping", "highest - lowest (adjusted)", "adjusted gap", "unadjusted gap", "permutation p (raw)"],
                  rows, "Secondary (a sensitivity analysis): group means at the pool's average "
                  f"{', '.join(covariates or [])} (least-squares means of a voice-level regression), tested by the "
                  "Freedman-Lane permutation test (residuals of the covariates-only model permuted among voices), "
                  "which holds its level when voice quality differs between groups.")]


def appendix_blocks(report: dict) -> list[dict]:
    """Item-paired and model-based tests: shown for completeness, never used in conclusions."""
    section, rows = report["sections"]["primary"], []
    for gname, block in section["groupings"].items():
        for key in ("item_paired", "gee"):
            test = block.get(key)
            if test:
                result = (pval(test["p_value"]) if test.get("p_value") is not None
                          else f"undefined ({test['undefined']})")
                rows.append([gname, test["test"], num(test.get("statistic")), result, test.get("conditions_on", "")])
    if not rows:
        return []
    return [h("Appendix: conditional and model-based tests"),
            p(APPENDIX_NOTE, "note"),
            table(["grouping", "test", "statistic", "p (raw)", "conditions on"], rows)]


APPENDIX_NOTE = (
    "Not used in any conclusion, not corrected, and not a test of a group difference among voices in general. "
    "McNemar and Cochran's Q pair the groups by item and condition on the voices drawn: a small p says that these "
    "particular voices were answered differently, and with hundreds of items they reject for group differences "
    "that new voices would not show (61-98% false positives at 540 items in simulation). The GEE (gender only) "
    "is only approximately calibrated with so few voices; for ethnicity and gender x ethnicity it over-rejects "
    "and is not computed (docs/statistics.md).")


def categorical_blocks(section: dict) -> list[dict]:
    top = section["top_categories"]
    rows, tests = [], []
    for gname, block in section["groupings"].items():
        result = block["result"]
        for label, dist in (result.get("distributions") or {}).items():
            rows.append([gname, label, *[pct(dist.get(c, 0.0)) for c in top]])
        found = result.get("tests") or {}
        tests.append([gname, num(result.get("jsd")), _test_p(found, "permutation_jsd"), pval(block.get("p_corrected")),
                      pval(block.get("p_bh")), num(result.get("tv")), _test_p(found, "permutation_tv"),
                      _test_p(found, "chi_square"), _test_p(found, "g_test"), result.get("undefined") or ""])
    return [table(["grouping", "group", *top], rows, "Share of answers (mean over the group's voices)."),
            table(["grouping", "JSD (bits)", "permutation p (JSD)", "corrected", "BH", "TV", "permutation p (TV)",
                   "chi-square p (pooled)", "G p (pooled)", "undefined because"], tests,
                  "Primary: voice-level permutation tests of the Jensen-Shannon divergence and the total variation "
                  "distance between the groups' mean voice distributions. The chi-square and G tests on pooled "
                  "counts treat responses as independent: they ignore voices, over-reject when voices vary, and "
                  "are descriptive only.")]


def _test_p(tests: dict, name: str) -> str:
    return pval(tests[name]["p_value"]) if name in tests else "undefined"


def permutation_blocks(perms: dict) -> list[dict]:
    out = [h("Per option order (counterbalanced options)", 3)]
    for gname, data in perms.items():
        rows = [[r["permutation"], *[pct(r.get(g)) for g in data["groups"]]] for r in data["rows"]]
        out.append(table(["option order", *data["groups"]], rows, f"Mean of voice rates by {gname} in each cyclic "
                                                                   "order of the options."))
    return out


# ---------------------------------------------------------------- invalid, control, QC


def invalid_blocks(report: dict) -> list[dict]:
    section = report["sections"]["invalid"]
    rows = []
    for gname, groups in section["by_status"].items():
        for row in groups:
            rows.append([gname, row["group"], row["n"], ", ".join(f"{k} {pct(v)}" for k, v in row.items()
                                                                   if k not in ("group", "n"))])
    return [h("Invalid, refused and too-long answers"),
            p("Answers that are not valid (unparseable, refused, audio too long for the model, not synthesised) "
              "are data: counted per group here, never scored wrong. Their rate is tested like any outcome."),
            table(["grouping", "group", "responses", "share by status"], rows),
            table(GAP_COLUMNS, gap_rows(section), "Gap in the invalid-answer rate (any status but valid).")]


def text_control_blocks(report: dict) -> list[dict]:
    control = report.get("text_control")
    if not control:
        return []
    primary = report["sections"]["primary"]
    if primary["kind"] == "categorical":
        rows = [[c, pct(control["shares"].get(c, 0.0)), pct(control["audio_shares"].get(c, 0.0))]
                for c in primary["top_categories"]]
        return [h("Text-only control: what the voice adds"),
                table(["answer", "text only (no voice)", "spoken (all voices, pooled)"], rows,
                      f"{control['n_responses']} text answers; Jensen-Shannon divergence between the text and the "
                      f"spoken answers {num(control['jsd_vs_audio'])} bits.")]
    def fmt(v):
        return value(primary, v)

    rows = [["text only (no voice)", control["n_responses"], fmt(control["estimate"]), pct(control["invalid_rate"])],
            ["audio (mean of voices)", "", fmt(control["audio_overall"]), ""]]
    change = signed_change(primary, control["voice_adds"])
    ci = ("undefined" if not control["ci"] else
          f"{signed_change(primary, control['ci'][0])} to {signed_change(primary, control['ci'][1])}")
    return [h("Text-only control: what the voice adds"),
            table(["condition", "responses", f"{report['outcome']['name']} on the common items", "invalid rate"], rows,
                  f"On the {control['n_items']} of {control['n_items_text']} items that the text control and every "
                  f"voice answered validly. What the voice adds (audio minus text): {change}, 95% CI {ci} "
                  f"({control['ci_method']}).")]


def qc_blocks(report: dict) -> list[dict]:
    qc = report.get("voice_qc")
    out = [h("Voice quality per group (confounds)")]
    if not qc:
        return out + [p("No voice-quality measures in this run.", "note"), p(QC_CONTRACT, "note")]
    rows = []
    for measure, by in qc["measures"].items():
        for gname, gap in by.items():
            values = ", ".join(f"{k} {num(v)}" for k, v in gap["estimates"].items())
            test = pval(gap["p_value"]) if gap["p_value"] is not None else f"undefined ({gap['undefined']})"
            rows.append([measure, qc["sources"][measure], gname, values, test])
    out.append(table(["measure", "source", "grouping", "mean of voices per group", "permutation p (raw)"], rows,
                     "Checks of the design, not results about the model; not in the correction family."))
    if qc.get("adjusted_for"):
        out.append(p(f"The gaps 'adjusted for voice quality' include {', '.join(qc['adjusted_for'])} as standardised "
                     "voice-level covariates."))
    if qc.get("flagged"):
        out.append(table(["voice", "QC flags"], [[v, f] for v, f in qc["flagged"].items()],
                         "Voices the QC stage flagged as outliers within the pool."))
    out += [p(note, "note") for note in qc.get("notes", [])]
    return out + [p(QC_CONTRACT, "note")]


def correction_blocks(report: dict) -> list[dict]:
    primary, holm, bh = (report["corrections"][k] for k in ("primary", "holm", "bh"))
    rows = [[label, pval(raw), pval(adj)] for label, raw, adj in
            zip(primary["labels"], primary["p_values"], primary["p_adjusted"])]
    out = [h("Multiple comparisons"),
           p(f"Primary family: {primary['family']}; Bonferroni, alpha {primary['alpha']}. These are the only tests the "
             "primary result rests on."),
           table(["primary test", "p (raw)", "Bonferroni"], rows)]
    if holm["labels"] or holm["left_out"]:
        rows = [[label, pval(raw), pval(h_), pval(b_)]
                for label, raw, h_, b_ in zip(holm["labels"], holm["p_values"], holm["p_adjusted"], bh["p_adjusted"])]
        left = f" Left out as undefined: {', '.join(holm['left_out'])}." if holm["left_out"] else ""
        out += [p(f"Secondary family: {holm['family']}. Holm controls the family-wise error rate; "
                  f"Benjamini-Hochberg (BH) the false discovery rate; alpha {holm['alpha']}.{left}"),
                table(["secondary test", "p (raw)", "Holm", "BH"], rows)]
    return out


def method_blocks(report: dict) -> list[dict]:
    s = report["settings"]
    items = [
        "Group estimate: the mean of its voices' rates (each voice weighs the same); the voice is the unit of "
        "replication.",
        "Intervals of a group: t interval on its voice means. Intervals of a gap: simultaneous intervals for every "
        "pairwise difference, by inverting the permutation test (the difference plus or minus the largest range of "
        "group means the test does not reject), so a gap's interval includes 0 exactly when its uncorrected test "
        "is not significant at the interval's level. The declared primary gaps use the level 1 - alpha / m for a "
        f"primary family of m tests run (Bonferroni; {100 * (1 - s['alpha'] / run_family_size(report)):.3g}% "
        "here, the Bonferroni rule of the primary family), so a primary gap is significant exactly when its "
        "interval excludes 0; every "
        f"other interval is at {int(100 * s['level'])}%, uncorrected. A group with one voice has no interval.",
        "Items: " + ({"adjusted": "the gaps and the overall score use every valid answer, each voice scored by its "
                                  "least-squares mean under an additive voice + item model (each answer compared with "
                                  "the other voices' answers to the same item), so missing answers (clips too long "
                                  "for the model, unparseable answers, failed synthesis) neither fake a gap nor "
                                  "throw away the answers of the voices that did answer; the voice-vs-text contrast "
                                  "keeps to the items every voice and the text answered.",
                      "common": "the gaps, the overall score and the voice-vs-text contrast use only the items that "
                                "every compared voice answered validly (the task declares items: common), so missing "
                                "answers cannot fake a gap."}.get(s.get("items", "adjusted"),
                                                                  "every item each voice answered (the task declares "
                                                                  "items: all).")
                     + " The invalid rates are computed on every response and tested on their own."),
        "Monte Carlo error: a p-value from B random permutations carries a standard error of about "
        "sqrt(p (1 - p) / B), given beside each primary p-value (none when every arrangement is enumerated).",
        f"Primary test: voice-level permutation test ({s['n_permutations']} random permutations, or every arrangement "
        "when there are at most 20,000), seed "
        f"{s['seed']}.",
        f"Minimum detectable gap: simulated power of the primary test ({s['mdg_sims']} data sets, "
        f"{s['mdg_permutations']} permutations each) at power {s['mdg_power']}, alpha {s['alpha']}, with the run's "
        f"voices per cell, items and observed rate, and an assumed voice SD {s['mdg_voice_sd']} and item SD "
        f"{s['mdg_item_sd']} on the logit scale. Computed for 0/1 outcomes only.",
        "Results that cannot be computed say 'undefined' with the reason (a group with a single voice, identical "
        "outcomes everywhere, no valid answer), never a number.",
    ]
    return [h("Methods"), {"list": items + [f"Note: {n}" for n in report.get("notes", [])]}]


def judge_blocks(report: dict) -> list[dict]:
    """The pairwise judge (biasbench/report/judge.py): what it is, its failures, its measured
    agreement (or that none was measured), and each voice's win share and Bradley-Terry strength."""
    block = report.get("judge")
    if not block:
        return []
    bt = block["bradley_terry"]
    rows = [[v["voice_id"], v["gender"], v["ethnicity"], f"{v['win_share']:.3f}",
             "" if v["bt_strength"] is None else f"{v['bt_strength']:+.3f}",
             "" if v["bt_se"] is None else f"{v['bt_se']:.3f}"] for v in block["voices"]]
    position = ("" if bt.get("position") is None else
                f" First-position advantage (the model's intercept): {bt['position']:+.3f} "
                f"(SE {bt['position_se']:.3f}) on the log-odds scale.")
    caption = (f"Bradley-Terry: {bt['model']}; reference voice {bt['reference']} (strength 0); "
               f"{bt['n_judgements']} judgements." + position if not bt.get("undefined") else
               f"Bradley-Terry strengths undefined: {bt['undefined']}.")
    return [h("Pairwise judge"), {"list": block["lines"]},
            table(["voice", "gender", "ethnicity", "win share", "Bradley-Terry strength", "SE"], rows, caption)]
