"""Turning a model's response into an answer and a status.

Invalid answers are data: an answer we cannot parse, or a refusal, gets its own status
and `correct = None`, so it is counted per group instead of being silently scored wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

VALID, INVALID, REFUSAL, AUDIO_TOO_LONG = "valid", "invalid", "refusal", "audio_too_long"

_REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|no)?t|cannot|won'?t|am unable to|'m unable to|am not able to)\s+"
    r"(?:help|answer|assist|provide|comply|determine)|as an ai\b|i'm sorry, but)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Scored:
    answer: str | None  # the chosen option letter, or None
    status: str
    correct: float | None  # 1.0 / 0.0 when valid, None otherwise


def score_multiple_choice(text: str, option_logprobs: dict | None, letters, choices, target: int) -> Scored:
    """Prefer the log-probability answer; otherwise parse the generated text."""
    if option_logprobs:
        finite = {k: v for k, v in option_logprobs.items() if v is not None and math.isfinite(v)}
        answer = max(finite, key=finite.get) if finite else None
    else:
        answer = parse_choice(text, letters, choices)
    if answer is None:
        status = REFUSAL if is_refusal(text) else INVALID
        return Scored(None, status, None)
    return Scored(answer, VALID, float(answer == letters[target]))


def is_refusal(text: str) -> bool:
    return bool(_REFUSAL.search(text or ""))


def parse_choice(text: str, letters, choices) -> str | None:
    """Find the one option a free-text answer names, or None when it is ambiguous or absent.

    Accepts 'B', '(B)', 'B.', '**B**', 'Answer: B', 'The answer is B) Paris', 'I think C',
    and an answer that quotes exactly one option's text. Option letters must be capitals,
    and a capital 'A' mid-sentence is read as the article, not as option A.
    """
    if not text or not text.strip():
        return None
    letter = f"[{''.join(letters)}]"
    alone = r"(?<![A-Za-z'])({})(?![A-Za-z'])".format(letter)
    stated = re.search(rf"(?i:\banswer\b)\W{{0,6}}(?:(?i:is)\W{{0,4}})?{alone}", text)
    if stated:  # "The answer is B"
        return stated.group(1)
    mentioned = set(re.findall(alone, text))
    for pattern in (rf"^\W*{alone}", rf"{alone}\W*$"):  # a letter leading or ending the reply
        found = re.search(pattern, text.strip())
        if found and not mentioned - {found.group(1), "A"}:  # ... and no rival letter
            return found.group(1)
    if len(mentioned - {"A"}) == 1:
        return (mentioned - {"A"}).pop()
    lowered = text.lower()
    named = [letters[i] for i, option in enumerate(choices) if option and option.lower() in lowered]
    return named[0] if len(named) == 1 else None
