"""`biasbench judge agreement LABELS --judge SPEC`: how far a judge agrees with people.

A labelled set is a JSONL or CSV file, one pair per line/row: `prompt` (or `item`), the
question; `answer_a`, `answer_b`, the two answers; `human`, the people's preference: `a`,
`b` or `tie`. Optional: `id` (default: the line number) and `source` (`illustrative` marks
a set that is an example, not a validation; reports say so). Every problem is one error
naming the file, the line and the field.

Each pair is judged in both orders (a shown first, then b shown first). As in MT-Bench's
pairwise protocol, a verdict that changes when the answers are swapped counts as a tie; a
pair either of whose judgements failed is counted as failed and left out of the agreement.
Reported: agreement (share of pairs where the judge's verdict equals the human one) with a
Wilson interval, Cohen's kappa over the three categories, and position bias: the first
position's win rate over the decided judgements, and the share of pairs whose verdict
survives the swap.
"""

from __future__ import annotations

import csv
from pathlib import Path

from biasbench.errors import BiasbenchError
from biasbench.formats import jsonl_objects

from .prompt import judge_prompt, parse_verdict, prompt_hash

FIELDS = ("prompt", "answer_a", "answer_b", "human")
HUMAN = {"a": "a", "b": "b", "tie": "tie"}


def load_labels(path: Path) -> list[dict]:
    """The checked pairs of a labelled set (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise BiasbenchError(f"{path}: no such labelled set (expected a .jsonl or .csv file)")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise BiasbenchError(f"{path}: a labelled set is a .jsonl or .csv file; got {suffix or 'no suffix'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BiasbenchError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if suffix == ".jsonl":
        records = jsonl_objects(path, text)
    else:
        records = list(enumerate(csv.DictReader(text.splitlines()), 2))
    if not records:
        raise BiasbenchError(f"{path}: no labelled pairs (expected lines with {', '.join(FIELDS)})")
    return [_check(path, n, row) for n, row in records]


def _check(path: Path, n: int, row: dict) -> dict:
    if "prompt" not in row and "item" in row:
        row = {**row, "prompt": row["item"]}
    for field in FIELDS:
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            got = "missing" if value is None else f"{value!r}"
            raise BiasbenchError(f"{path}, line {n}, field '{field}': expected a non-empty text, got {got}")
    human = HUMAN.get(row["human"].strip().lower())
    if human is None:
        raise BiasbenchError(f"{path}, line {n}, field 'human': expected a, b or tie, got {row['human']!r}")
    return {"id": str(row.get("id") or n), "line": n, "prompt": row["prompt"], "answer_a": row["answer_a"],
            "answer_b": row["answer_b"], "human": human, "source": str(row.get("source") or "")}


def cohens_kappa(judge: list[str], human: list[str]) -> float | None:
    """Cohen's kappa of two raters over the same cases (None when chance agreement is 1)."""
    n = len(judge)
    if n == 0:
        return None
    categories = sorted(set(judge) | set(human))
    observed = sum(j == h for j, h in zip(judge, human)) / n
    expected = sum((judge.count(c) / n) * (human.count(c) / n) for c in categories)
    return None if expected >= 1 else (observed - expected) / (1 - expected)


def combine(first: str, swapped: str) -> str:
    """The pair's verdict from its two orders ('a', 'b', 'tie', mapped back); a flip is a tie."""
    return first if first == swapped else "tie"


def measure(pairs: list[dict], ask, *, level: float = 0.95) -> dict:
    """Agreement metrics; `ask(prompts) -> [(verdict | None, error | None)]` in 'A'/'B'/'tie' terms."""
    from biasbench.analysis.rates import wilson_interval

    prompts = []
    for pair in pairs:
        prompts += [judge_prompt(pair["prompt"], pair["answer_a"], pair["answer_b"]),
                    judge_prompt(pair["prompt"], pair["answer_b"], pair["answer_a"])]
    verdicts = ask(prompts)
    rows, failures, decided, first_wins = [], [], 0, 0
    for i, pair in enumerate(pairs):
        (v1, e1), (v2, e2) = verdicts[2 * i], verdicts[2 * i + 1]
        for v in (v1, v2):
            if v in ("A", "B"):
                decided += 1
                first_wins += v == "A"
        if v1 is None or v2 is None:
            failures.append({"id": pair["id"], "error": e1 or e2})
            continue
        forward = {"A": "a", "B": "b", "tie": "tie"}[v1]
        swapped = {"A": "b", "B": "a", "tie": "tie"}[v2]
        rows.append({"id": pair["id"], "human": pair["human"], "forward": forward, "swapped": swapped,
                     "judge": combine(forward, swapped)})
    n = len(rows)
    agree = sum(r["judge"] == r["human"] for r in rows)
    ci = wilson_interval(agree, n, level) if n else (None, None)
    return {"n_pairs": n, "n_labelled": len(pairs), "n_failed": len(failures), "failures": failures[:5],
            "agreement": agree / n if n else None, "agreement_ci": [float(ci[0]), float(ci[1])] if n else None,
            "level": level, "kappa": cohens_kappa([r["judge"] for r in rows], [r["human"] for r in rows]),
            "first_position_win_rate": first_wins / decided if decided else None, "n_decided": decided,
            "order_consistency": sum(r["forward"] == r["swapped"] for r in rows) / n if n else None,
            "illustrative": any(p["source"] == "illustrative" for p in pairs), "pairs": rows}


def asker(judge, store=None, batch_size: int = 8, label: str = "labels"):
    """ask() for measure(): through the judge, cached in `store` (a JudgementStore) when given."""
    def ask(prompts: list[str]) -> list[tuple]:
        out: list[tuple | None] = [None] * len(prompts)
        digests = [prompt_hash(p) for p in prompts]
        cached = {}
        if store is not None:
            frame = store.frame(judge.identity)
            frame = frame[frame["item_id"].eq(label) & frame["verdict"].notna()]
            cached = dict(zip(frame["prompt_hash"], frame["verdict"]))
        todo = [i for i, d in enumerate(digests) if d not in cached]
        for i, d in enumerate(digests):
            if d in cached:
                out[i] = (cached[d], None)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            rows = []
            for i, reply in zip(batch, judge.ask([prompts[i] for i in batch])):
                verdict = None if reply.error else parse_verdict(reply.text)
                error = reply.error or (None if verdict else "no verdict in the reply")
                out[i] = (verdict, error)
                rows.append((label, 0, f"pair-{i // 2}", "swapped" if i % 2 else "forward", digests[i], verdict,
                             reply.text, error))
            if store is not None:
                store.add(judge.identity, rows)
        return out
    return ask


def agreement_lines(result: dict, judge_name: str) -> list[str]:
    from .compare import agreement_sentence

    lines = [f"Judge {judge_name} on {result['labels']}: {result['n_pairs']} of {result['n_labelled']} labelled pairs "
             "judged in both orders."]
    if result["n_failed"]:
        lines.append(f"{result['n_failed']} of {result['n_labelled']} pairs failed (" + "; ".join(
            f"{f['id']}: {f['error']}" for f in result["failures"][:3]) + "); they are left out of the agreement.")
    if result["n_pairs"]:
        lines.append(agreement_sentence(result))
    return lines
