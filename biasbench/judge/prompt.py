"""What the judge reads, and how its verdict is read back.

The judge sees the question (the item's text, the same for every voice) and two answers
labelled A and B, nothing else: no voice, no group, no audio, no model name. It ends with a
verdict in double brackets, as in MT-Bench's pairwise judge (Zheng et al. 2023): [[A]],
[[B]] or [[C]] for a tie. The last such token in the reply counts; a reply with none is a
failed judgement (counted and shown, never guessed).
"""

from __future__ import annotations

import hashlib
import re

#: Bump when the template changes: it is part of every judgement's cache key.
PROMPT_VERSION = "pairwise-v1"

TEMPLATE = """You are an impartial judge. A person asked an assistant the question below, and two \
assistants answered. Decide which answer serves the person better: more helpful, relevant, \
accurate, specific and complete, and respectful. Do not let the order of the answers, their \
length alone, or the assistants' style sway you; judge what each answer gives the person.

[Question]
{question}

[Answer A]
{answer_a}
[End of answer A]

[Answer B]
{answer_b}
[End of answer B]

Explain your comparison in at most three sentences, then give your verdict on the last line, \
exactly one of: [[A]] if answer A is better, [[B]] if answer B is better, [[C]] for a tie."""

_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\s*(?:verdict\s*:\s*)?\(?([ABC]|tie)\)?[.!]?\s*$", re.IGNORECASE)
VERDICTS = ("A", "B", "tie")


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    return TEMPLATE.format(question=question.strip(), answer_a=answer_a.strip(), answer_b=answer_b.strip())


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(f"{PROMPT_VERSION}\n{prompt}".encode("utf-8")).hexdigest()[:16]


def parse_verdict(reply: str | None) -> str | None:
    """'A', 'B' or 'tie' from a judge's reply; None when it holds no verdict.

    The last [[A]] / [[B]] / [[C]] counts (a judge may quote the format before deciding);
    a reply that is only a letter ("B", "tie", "Verdict: A") is read too."""
    if not reply:
        return None
    found = _VERDICT.findall(reply)
    letter = found[-1].upper() if found else None
    if letter is None:
        bare = _BARE.match(reply)
        letter = bare.group(1).upper() if bare else None
    return {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}.get(letter) if letter else None


def first_score(verdict: str) -> float:
    """The first-position answer's score: 1 win, 0.5 tie, 0 loss."""
    return {"A": 1.0, "tie": 0.5, "B": 0.0}[verdict]
