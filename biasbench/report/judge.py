"""The judge's part of a report (generate_open runs judged by `biasbench judge compare`).

What the judge is, how many of its judgements succeeded ("N of M judgements failed: ..."),
its measured agreement with human labels (or that none was measured), its position bias in
this run, the voice-level test of the win share (the same sentences as the outcome's section:
words.block_sentence) and each voice's win share and Bradley-Terry strength. `lines` are the
plain sentences every view prints: the command's closing lines, summary.md and report.md.
"""

from __future__ import annotations

import pandas as pd


def judge_section(judge: dict, audio: pd.DataFrame, sections: dict) -> dict:
    from biasbench.judge.compare import failure_line

    record = judge["record"]
    section = sections["primary"] if sections["primary"].get("metric") == "judge" else \
        (sections.get("outcomes") or {}).get("judge")
    labels = audio.drop_duplicates("voice_id").set_index(audio.drop_duplicates("voice_id")["voice_id"].astype(str))
    scores = judge["scores"]
    share = scores.groupby("voice_id")["judge"].mean() if len(scores) else pd.Series(dtype=float)
    bt = judge["bradley_terry"]
    voices = [{"voice_id": v, "gender": str(labels.loc[v, "gender"]) if v in labels.index else "",
               "ethnicity": str(labels.loc[v, "ethnicity"]) if v in labels.index else "",
               "win_share": float(share[v]), "bt_strength": bt["strengths"].get(v), "bt_se": bt["se"].get(v)}
              for v in sorted(share.index)]
    return {"judge": record["judge"], "identity": record["identity"], "pipeline_check": record.get("pipeline_check"),
            "note": record.get("note") or "", "k": record["k"], "seed": record["seed"],
            "prompt_version": record.get("prompt_version"), "n_planned": judge["n_planned"],
            "n_judged": judge["n_judged"], "n_failed": judge["n_failed"], "failures": judge["failures"],
            "failure_line": failure_line(judge), "failures_by_group": failures_by_group(judge["by_voice"], labels),
            "position": judge["position"],
            "bradley_terry": {k: v for k, v in bt.items() if k not in ("strengths", "se")},
            "agreement": _agreement_brief(judge["agreement"]), "role": section.get("role") if section else None,
            "voices": voices}


def failures_by_group(by_voice: dict, labels: pd.DataFrame) -> dict:
    """Per grouping, each group's share of its voices' planned judgements that failed (a judgement
    counts for both voices' groups): a judge failing more for one group must be seen, since a failed
    judgement counts for neither voice."""
    from .sections import GROUPINGS

    frame = pd.DataFrame([{"voice_id": v, **n} for v, n in by_voice.items()])
    if frame.empty:
        return {}
    known = frame["voice_id"].isin(labels.index)
    frame = frame[known].join(labels[["gender", "ethnicity"]].astype(str), on="voice_id")
    out = {}
    for gname, columns in GROUPINGS.items():
        sums = frame.groupby(columns)[["planned", "failed"]].sum()
        out[gname] = [{"group": " / ".join(k) if isinstance(k, tuple) else str(k), "planned": int(r["planned"]),
                       "failed": int(r["failed"]), "share": float(r["failed"] / r["planned"]) if r["planned"] else None}
                      for k, r in sums.iterrows()]
    return out


def _agreement_brief(agreement: dict | None) -> dict | None:
    return None if not agreement else {k: v for k, v in agreement.items() if k != "pairs"}


def attach_judge_lines(report: dict) -> None:
    """The sentences every view prints about the judge, once the corrections are known; the
    agreement sentence also joins the headline when `judge` is a declared primary outcome."""
    from biasbench.judge.compare import agreement_sentence

    from .words import block_sentence

    block = report.get("judge")
    if block is None:
        return
    sections = report["sections"]
    section = sections["primary"] if sections["primary"].get("metric") == "judge" else \
        (sections.get("outcomes") or {}).get("judge")
    design = (f"{block['judge']}: pairwise judgements of two voices' answers to the same item, blind to the voices, "
              f"their groups and the audio; each voice against {block['k']} opponents drawn regardless of group "
              f"(seed {block['seed']}), each pair in both orders.")
    agreement = agreement_sentence(block["agreement"])
    lines = [f"Judge {design}", block["failure_line"]]
    if block["n_failed"]:
        lines += [f"Failed judgements by {gname} (a judgement counts for both voices' groups): " + ", ".join(
            f"{r['group']} {r['failed']} of {r['planned']}" for r in rows) + "."
            for gname, rows in block["failures_by_group"].items() if gname != "gender x ethnicity"]
    lines.append(agreement)
    position = block["position"]
    if position["first_position_win_rate"] is not None:
        consistency = position["order_consistency"]
        lines.append(f"In this run the first answer shown won {position['first_position_win_rate']:.0%} of "
                     f"{position['n_decided']} decided judgements; "
                     + (f"{consistency:.0%} of {position['n_pairs_both_orders']} pairs kept their verdict when swapped."
                        if consistency is not None else "no pair has both orders judged."))
    if section is not None:
        declared = report["analysis"]["groupings"] if section.get("role") == "primary" else ()
        lines += [f"Judge win share ({'primary, declared' if g in declared else 'secondary'}): "
                  f"{block_sentence(section, g, section['groupings'][g], report)}" for g in section["groupings"]]
    strengths = pd.DataFrame([v for v in block["voices"] if v["bt_strength"] is not None])
    if not strengths.empty:
        means = strengths.groupby("gender")["bt_strength"].mean()
        lines.append("Bradley-Terry strengths (log-odds, reference voice "
                     f"{block['bradley_terry']['reference']} = 0), mean per gender (descriptive; the test is the win "
                     "share's): " + ", ".join(f"{g} {m:+.2f}" for g, m in means.items()) + ".")
    elif block["bradley_terry"].get("undefined"):
        lines.append(f"Bradley-Terry strengths undefined: {block['bradley_terry']['undefined']}.")
    if block["pipeline_check"]:
        lines.append(f"PIPELINE CHECK: {block['note'] or 'the judge is not a real model'}.")
    block["lines"] = lines
    if section is not None and section.get("role") == "primary":
        report["primary"]["headline"] = [*report["primary"]["headline"], agreement]


def judge_markdown(report: dict) -> str:
    """The judge block of summary.md (empty when no judge ran)."""
    block = report.get("judge")
    if not block:
        return ""
    return "\n".join(["## Judge", "", *[f"- {line}" for line in block["lines"]], ""]) + "\n"


def agreement_beside_judge_results(sentences: list[str], block: dict) -> list[str]:
    """The judge's agreement sentence right after the last sentence about the judge win share
    (unless it is already there), so no judge-based conclusion stands without it."""
    from biasbench.judge.compare import agreement_sentence

    agreement = agreement_sentence(block["agreement"])
    about = [i for i, sentence in enumerate(sentences) if "judge win share" in sentence]
    if not about or agreement in sentences:
        return sentences
    return [*sentences[:about[-1] + 1], agreement, *sentences[about[-1] + 1:]]
