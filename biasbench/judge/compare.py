"""`biasbench judge compare RUN_DIR --judge SPEC`: judge a generate_open run's answers in pairs.

The run's valid spoken answers are compared in the label-blind design (design.py), each
judgement cached in RUN_DIR/judgements.sqlite (store.py); `judge.json` records the judge,
the design and what happened. `judge_outcomes` is the one computation every view uses (the
command's closing lines, report.json/md/html, summary.md, the leaderboard when `judge` is a
declared primary outcome): it rebuilds the plan from the run's table and the recorded design
and reads the stored verdicts, so a judgement outside the plan never counts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from biasbench.errors import BiasbenchError
from biasbench.formats import dumps

from .design import Comparison, comparison_plan
from .prompt import PROMPT_VERSION, judge_prompt, parse_verdict, prompt_hash
from .scores import bradley_terry, position_summary, win_shares
from .store import FILE, JudgementStore, read_judgements

RECORD = "judge.json"
AGREEMENT = "judge_agreement.json"


def judged_answers(table: pd.DataFrame, where: Path) -> pd.DataFrame:
    """The valid spoken answers a judge compares, with the question each voice asked."""
    missing = [c for c in ("spoken_text", "response_text") if c not in table.columns]
    if missing:
        raise BiasbenchError(f"{where}: the tidy table lacks {', '.join(missing)}; the judge needs the question and "
                             "the answers (re-export the run with `biasbench export`)")
    rows = table[table["condition"].eq("audio") & table["status"].eq("valid") & table["response_text"].notna()].copy()
    rows["sample_index"] = pd.to_numeric(rows.get("sample_index", 0), errors="coerce").fillna(0).astype(int)
    rows[["item_id", "voice_id"]] = rows[["item_id", "voice_id"]].astype(str)
    return rows[["item_id", "sample_index", "voice_id", "spoken_text", "response_text"]]


def planned(answers: pd.DataFrame, k: int, seed: int) -> list[tuple[Comparison, str, str]]:
    """(comparison, prompt, prompt hash) for every judgement of the design."""
    lookup = answers.set_index(["item_id", "sample_index", "voice_id"])
    out = []
    for c in comparison_plan(answers, k, seed):
        first, second = lookup.loc[(c.item_id, c.sample_index, c.first)], lookup.loc[(c.item_id, c.sample_index, c.second)]
        prompt = judge_prompt(str(first["spoken_text"] or ""), str(first["response_text"]), str(second["response_text"]))
        out.append((c, prompt, prompt_hash(prompt)))
    return out


def _key(c: Comparison, digest: str) -> tuple:
    return (c.item_id, c.sample_index, c.first, c.second, digest)


def judge_run(run_dir: Path, judge, *, k: int = 3, seed: int = 0, batch_size: int = 8, echo=None) -> dict:
    """Make every judgement of the design the store lacks; returns the judge record."""
    from biasbench.report.load import load_run

    run = load_run(run_dir)
    if run.output_type != "generate_open":
        raise BiasbenchError(f"{run.path}: the judge compares free answers; this run's task has output_type "
                             f"{run.output_type} (expected generate_open)")
    plan = planned(judged_answers(run.table, run.table_file), k, seed)
    store = JudgementStore(run.path / FILE)
    try:
        done = store.done(judge.identity)
        todo = [entry for entry in plan if _key(entry[0], entry[2]) not in done]
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            replies = judge.ask([prompt for _, prompt, _ in batch])
            rows = []
            for (c, _, digest), reply in zip(batch, replies):
                verdict = None if reply.error else parse_verdict(reply.text)
                error = reply.error or (None if verdict else f"no verdict in the reply: {(reply.text or '')[:60]!r}")
                rows.append((c.item_id, c.sample_index, c.first, c.second, digest, verdict, reply.text, error))
            store.add(judge.identity, rows)
            if echo:
                echo(f"judged {min(start + batch_size, len(todo))} of {len(todo)}")
    finally:
        store.close()
    record = {"judge": judge.name, "identity": judge.identity, "fingerprint": judge.fingerprint,
              "pipeline_check": judge.pipeline_check, "note": judge.note, "k": k, "seed": seed,
              "prompt_version": PROMPT_VERSION, "n_planned": len(plan), "n_cached": len(plan) - len(todo),
              "n_new": len(todo)}
    (run.path / RECORD).write_text(dumps(record, indent=2), encoding="utf-8")
    return record


def judge_outcomes(run_path: Path, table: pd.DataFrame, table_file: Path) -> dict | None:
    """Everything the views state about a run's judge, or None when no judge ran on it."""
    path = Path(run_path) / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        k, seed, identity = int(record["k"]), int(record["seed"]), str(record["identity"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BiasbenchError(f"{path}: not a judge record ({exc}); rerun `biasbench judge compare`") from None
    plan = planned(judged_answers(table, table_file), k, seed)
    keys = {_key(c, digest) for c, _, digest in plan}
    stored = read_judgements(Path(run_path) / FILE, identity)
    if len(stored):
        stored["sample_index"] = stored["sample_index"].astype(int)
        in_plan = [tuple(r) in keys for r in stored[["item_id", "sample_index", "first", "second", "prompt_hash"]]
                   .itertuples(index=False)]
        stored = stored[in_plan]
    ok = stored[stored["verdict"].notna()] if len(stored) else stored
    errors = Counter(str(e).split(":")[0] if str(e).startswith("no verdict") else str(e)
                     for e in stored.loc[stored["verdict"].isna(), "error"]) if len(stored) else Counter()
    n_failed = len(plan) - len(ok)
    planned_by_voice = Counter(v for c, _, _ in plan for v in (c.first, c.second))
    judged_by_voice = Counter([*ok["first"], *ok["second"]]) if len(ok) else Counter()
    by_voice = {v: {"planned": int(n), "failed": int(n - judged_by_voice.get(v, 0))}
                for v, n in sorted(planned_by_voice.items())}
    return {"record": record, "n_planned": len(plan), "n_judged": int(len(ok)), "n_failed": int(n_failed),
            "by_voice": by_voice,
            "n_not_attempted": int(len(plan) - len(stored)),
            "failures": [{"error": e, "n": int(n)} for e, n in errors.most_common(5)],
            "scores": win_shares(ok), "bradley_terry": bradley_terry(ok), "position": position_summary(ok),
            "agreement": read_agreement(Path(run_path), identity)}


def read_agreement(run_path: Path, identity: str) -> dict | None:
    path = run_path / AGREEMENT
    if not path.is_file():
        return None
    try:
        return (json.loads(path.read_text(encoding="utf-8")) or {}).get(identity)
    except ValueError as exc:
        raise BiasbenchError(f"{path}: not valid JSON ({exc}); rerun `biasbench judge agreement ... --run`") from None


def failure_line(outcomes: dict) -> str:
    """'N of M judgements failed: ...' (or that none did): what every view says about failures."""
    n, m = outcomes["n_failed"], outcomes["n_planned"]
    if not n:
        return f"All {m} planned judgements have a verdict."
    why = "; ".join(f"{f['n']} {f['error']}" for f in outcomes["failures"])
    if outcomes["n_not_attempted"]:
        why = "; ".join(filter(None, [why, f"{outcomes['n_not_attempted']} not attempted yet"]))
    return (f"{n} of {m} judgements failed ({why}); those judgements count for neither voice. Rerun `biasbench judge "
            "compare` with the same judge to retry them.")


def agreement_sentence(agreement: dict | None) -> str:
    """The judge's measured agreement with human labels, or that none was measured: stated beside
    every judge-based result."""
    if not agreement:
        return ("Judge agreement not measured: no labelled set was judged by this judge (`biasbench judge "
                "agreement LABELS --judge SPEC --run RUN_DIR`), so how far its preferences track people's is unknown.")
    lo, hi = agreement["agreement_ci"]
    kappa = agreement.get("kappa")
    return (f"Judge agreement with human labels: {agreement['agreement']:.0%} ({round(100 * agreement['level'])}% "
            f"Wilson interval {lo:.0%}-{hi:.0%}) on {agreement['n_pairs']} labelled pairs of {agreement['labels']}"
            f"{' (ILLUSTRATIVE set, not a validation)' if agreement.get('illustrative') else ''}; Cohen's kappa "
            f"{'undefined' if kappa is None else f'{kappa:.2f}'}; first-position win rate "
            f"{_pct(agreement.get('first_position_win_rate'))}, verdict kept when the answers were swapped in "
            f"{_pct(agreement.get('order_consistency'))} of pairs.")


def _pct(value) -> str:
    return "undefined" if value is None else f"{value:.0%}"
