"""The report's conclusions in plain words a non-statistician can act on.

Every sentence names the groups, the size of the difference in the outcome's own units,
its interval, the corrected p-value and the test; a non-significant result says what
size of gap the design could have detected, since "not significant" is not "no gap".
"""

from __future__ import annotations

from .fmt import (bits, difference, fixed, gap_interval, missing, num, pct, points, pval, signed_points, style, value,
                  voices)

TEST = "voice-level permutation test"


def corrected(block: dict) -> str:
    """'p = 0.012, voice-level permutation test, Bonferroni over the primary family' (or Holm, secondary)."""
    rule = ("Bonferroni over the primary family" if block.get("family") == "primary" else
            "Holm over the secondary tests")
    return f"{pval(block['p_corrected'])}, {TEST}, {rule}"


def conclusions(report: dict) -> list[str]:
    """The primary result first (the same sentences as every other output), then what is secondary."""
    out = []
    if report["run"]["pipeline_check"]:
        out.append("This is a PIPELINE CHECK: the answers come from a tiny random model or a simulation, so "
                   "nothing below measures a real speech model.")
    out += report["primary"]["headline"]
    out += adjusted_sentences(report)
    secondary = [*section_sentences(report["sections"]["primary"], report, only_significant=True,
                                    skip=report["analysis"]["groupings"])]
    for key in ("attributes", "splits", "said_me", "outcomes"):
        for section in (report["sections"].get(key) or {}).values():
            declared = report["analysis"]["groupings"] if section.get("role") == "primary" else ()  # in the headline
            secondary += section_sentences(section, report, only_significant=True, skip=declared)
    out += [f"Secondary: {sentence}" for sentence in secondary]
    out += invalid_sentences(report)
    if report.get("text_control"):
        out.append(text_control_sentence(report))
    out += qc_sentences(report)
    if report["run"]["proxy_labels"]:
        out.append("The voices' labels are proxies: read every gap above as a gap between these particular voices, "
                   "not between people of these groups.")
    return out


def adjusted_sentences(report: dict) -> list[str]:
    """Each declared gap, adjusted for the voice QC covariates (secondary: a sensitivity analysis)."""
    section, out = report["sections"]["primary"], []
    for gname in report["analysis"]["groupings"]:
        result = (section["groupings"].get(gname) or {}).get("adjusted")
        if not result or result.get("p_value") is None:
            continue
        hi, lo = result["highest"], result["lowest"]
        out.append(f"Secondary: adjusted for voice quality ({', '.join(result['covariates'])}), the gap by {gname} is "
                   f"{difference(section, result['gap'])} ({voices(hi).lower()} {value(section, result['estimates'][hi])} "
                   f"vs {voices(lo).lower()} {value(section, result['estimates'][lo])}; {pval(result['p_value'])} "
                   "uncorrected, Freedman-Lane voice-level permutation test).")
    return out


def section_sentences(section: dict, report: dict, only_significant: bool = False, skip=()) -> list[str]:
    alpha = report["settings"]["alpha"]
    out = []
    for gname, block in section["groupings"].items():
        if gname in skip:
            continue
        significant = block.get("p_corrected") is not None and block["p_corrected"] < alpha
        if only_significant and not significant:
            continue
        out.append(block_sentence(section, gname, block, report))
    return out


def block_sentence(section: dict, gname: str, block: dict, report: dict) -> str:
    if section["kind"] == "categorical":
        return categorical_sentence(section, gname, block, report)
    gap = block["gap"]
    if gap["p_value"] is None:
        observed = _observed(gap, section)
        reason = str(gap["undefined"])
        verb = "is" if reason.startswith("not testable: ") else "cannot be tested:"
        return (f"By {gname}, the {section['name']} {verb} {reason}"
                + (f" (observed: {observed})." if observed else "."))
    if block["p_corrected"] < report["settings"]["alpha"]:
        return significant_sentence(section, gname, block)
    return null_sentence(section, gname, block, report)


def ci_name(gap: dict) -> str:
    """'95% CI', or '98.3% CI' for a primary gap (its level is Bonferroni-adjusted over the
    primary family, so an interval never excludes 0 for a gap that is not significant)."""
    return f"{100 * gap['level']:.3g}% CI"


def _observed(gap: dict, section: dict) -> str:
    estimates = {k: v for k, v in gap["estimates"].items() if v is not None}
    return ", ".join(f"{voices(k)} {value(section, v)}" for k, v in estimates.items())


def significant_sentence(section: dict, gname: str, block: dict) -> str:
    gap, hi, lo = block["gap"], block["gap"]["highest"], block["gap"]["lowest"]
    est, p = gap["estimates"], corrected(block)
    if section["kind"] == "binary" and len(est) == 2:
        return (f"{voices(lo)} {section.get('verb') or 'had the outcome'} {points(gap['gap'])} "
                f"less often than {voices(hi).lower()} ({pct(est[lo])} vs {pct(est[hi])}; {ci_name(gap)} of the gap "
                f"{gap_interval(section, gap['ci'])}; {p}).")
    if len(est) == 2 and section.get("relative_to"):
        return (f"{voices(lo)} were given amounts averaging {value(section, est[lo])} for their "
                f"{section['relative_to']}, {voices(hi).lower()} {value(section, est[hi])}: a difference of "
                f"{difference(section, gap['gap'])} of the mean ({ci_name(gap)} {gap_interval(section, gap['ci'])}; {p}).")
    if len(est) == 2:
        return (f"{voices(lo)} got a {section['name']} {difference(section, gap['gap'])} lower than "
                f"{voices(hi).lower()} ({value(section, est[lo])} vs {value(section, est[hi])}; {ci_name(gap)} of the "
                f"difference {gap_interval(section, gap['ci'])}; {p}).")
    return (f"By {gname}, the {section['name']} differed: highest for {voices(hi).lower()} "
            f"({value(section, est[hi])}), lowest for {voices(lo).lower()} ({value(section, est[lo])}), a gap of "
            f"{difference(section, gap['gap'])} ({ci_name(gap)} of the difference between these two "
            f"groups {gap_interval(section, gap['ci'])}; {p}).")


def null_sentence(section: dict, gname: str, block: dict, report: dict) -> str:
    gap = block["gap"]
    hi, lo = gap["highest"], gap["lowest"]
    if gap["gap"] == 0 or difference(section, gap["gap"]).startswith("0 "):
        observed = f"all groups equal, every group at {value(section, gap['estimates'][hi])}"
    else:
        observed = (f"{voices(hi).lower()} {value(section, gap['estimates'][hi])} vs {voices(lo).lower()} "
                    f"{value(section, gap['estimates'][lo])}")
    text = (f"No significant gap in {section['name']} by {gname} ({corrected(block)}; "
            f"observed {observed}; gap {difference(section, gap['gap'])}, {ci_name(gap)} {gap_interval(section, gap['ci'])})")
    return text + detectable_clause(block, gap, report) + "."


def detectable_clause(block: dict, gap: dict, report: dict) -> str:
    mdg = block.get("mdg") or {}
    if mdg.get("gap") is None:
        return ("; no minimum detectable gap is given for this outcome" if "0/1" in str(mdg.get("undefined"))
                else (f"; this design is too small to detect even very large gaps reliably ({mdg['undefined']})"
                      if mdg.get("undefined") else ""))
    counts = sorted(set(gap["n_voices_by_group"].values()))
    per_group = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
    cells = report["design"]["min_voices_per_cell"]
    where = "" if block["by"] == ["gender", "ethnicity"] else f" ({cells} per gender x ethnicity cell)"
    observed = mdg.get("observed_voice_sd")
    sd = (f"assuming a voice SD of {mdg['assumed_voice_sd']} on the logit scale"
          + (f", observed {observed:.2f}" if observed is not None else ""))
    return (f"; with {per_group} voices per group{where} and {gap['n_items']} items, this design could only detect "
            f"gaps of about {round(100 * mdg['gap'])} points or more with 80% power at the corrected level "
            f"({sd})")


def categorical_sentence(section: dict, gname: str, block: dict, report: dict) -> str:
    result = block["result"]
    what = section["name"].replace("answer distribution", "answers")  # "answers (domain music)"
    jsd_test = (result.get("tests") or {}).get("permutation_jsd")
    if result.get("undefined") or not jsd_test or jsd_test.get("p_value") is None:
        return f"By {gname}, the {what} cannot be compared: {result.get('undefined') or 'no test'}."
    big = block["largest_difference"]
    where = (f"'{big['category']}' was {pct(big['high_share'])} of the answers to {voices(big['high_group']).lower()} "
             f"and {pct(big['low_share'])} of those to {voices(big['low_group']).lower()}")
    p = corrected(block)
    if block["p_corrected"] < report["settings"]["alpha"]:
        return (f"The {what} differed by {gname} (Jensen-Shannon divergence {bits(result['jsd'])}; {p}). "
                f"The largest difference: {where}.")
    if result["jsd"] is not None and float(bits(result["jsd"]).split()[0]) == 0:
        return (f"No difference in the {what} by {gname}: every group's answers were distributed alike (Jensen-Shannon "
                f"divergence {bits(result['jsd'])}; {p}). No minimum detectable difference is given for distributions.")
    return (f"No significant difference in the {what} by {gname} (Jensen-Shannon divergence {bits(result['jsd'])}; "
            f"{p}); the largest difference ({where}) is within what voice-to-voice variation produces. "
            "No minimum detectable difference is given for distributions.")


def invalid_sentences(report: dict) -> list[str]:
    section = report["sections"]["invalid"]
    counts = section["status_counts"]
    total = sum(counts.values())
    bad = total - counts.get("valid", 0)
    if not bad:
        return ["Every answer was valid (no unparseable answers, refusals or clips too long for the model)."]
    kinds = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "valid")
    out = [f"{bad} of {total} answers ({pct(bad / total)}) were not valid ({kinds}); they are counted per group, "
           "never scored wrong."]
    return out + list(report["primary"].get("invalid_warnings") or [])  # computed once, in the primary record


def text_control_sentence(report: dict) -> str:
    control, outcome = report["text_control"], report["outcome"]
    primary = report["sections"]["primary"]
    if outcome["kind"] == "categorical":
        top = max(control["shares"], key=control["shares"].get)
        return (f"The same items as text, with no voice: the most frequent answer was '{top}' "
                f"({pct(control['shares'][top])} of the text answers, {pct(control['audio_shares'].get(top, 0.0))} of "
                f"the spoken ones); Jensen-Shannon divergence between text and spoken answers "
                f"{num(control['jsd_vs_audio'])} bits.")
    if missing(control["estimate"]):
        return ("The text-only control (same items, no voice) has no item that it and every voice answered validly, "
                "so the voice and text conditions cannot be compared.")
    change = signed_change(primary, control["voice_adds"])
    low, high = control["ci"]
    return (f"Secondary: on the {control['n_items']} items that the text control and every voice answered validly, "
            f"{outcome['name']} is {value(primary, control['estimate'])} as text with no voice and "
            f"{value(primary, control['audio_overall'])} spoken (mean of the voices): hearing a voice changes it by "
            f"{change} (95% CI {signed_change(primary, low)} to {signed_change(primary, high)}, two-way bootstrap "
            "over voices and items).")


def signed_change(section: dict, change) -> str:
    kind = style(section)
    if missing(change):
        return "undefined"
    if kind == "rate":
        return signed_points(change)
    if kind == "relative":
        return "0% of the mean" if fixed(100 * change, 1) == "0" else f"{100 * change:+.1f}% of the mean"
    return f"{'+' if change >= 0 else '-'}{num(abs(change))} {section.get('unit', '')}".strip()


def qc_sentences(report: dict) -> list[str]:
    qc = report.get("voice_qc")
    if not qc:
        return []
    out = []
    if qc.get("flagged"):
        out.append(f"The voice QC flagged {len(qc['flagged'])} voice(s) as outliers "
                   f"({'; '.join(f'{v}: {f}' for v, f in qc['flagged'].items())}); check them before trusting a gap.")
    for measure, by in qc["measures"].items():
        for gname, gap in by.items():
            if gap.get("p_holm") is not None and gap["p_holm"] < report["settings"]["alpha"]:
                hi, lo = gap["highest"], gap["lowest"]
                out.append(f"Voice quality differs by {gname}: {measure} averages {num(gap['estimates'][hi])} for "
                           f"{voices(hi).lower()} and {num(gap['estimates'][lo])} for {voices(lo).lower()} "
                           f"({pval(gap['p_holm'])}, voice-level permutation test, Holm over the voice-quality "
                           f"checks); part of any gap by {gname} may come from this rather than from whom the "
                           "voices sound like.")
    return out
