"""Turning a model's response into an answer and a status.

Invalid answers are data: an answer we cannot parse, or a refusal, gets its own status
and `correct = None`, so it is counted per group instead of being silently scored wrong.
"""

from __future__ import annotations

import math
from pathlib import Path
import re
from dataclasses import dataclass

VALID, INVALID, REFUSAL, AUDIO_TOO_LONG = "valid", "invalid", "refusal", "audio_too_long"
UNMAPPED, OUT_OF_RANGE = "unmapped", "out_of_range"

_REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|no)?t|cannot|won'?t|am unable to|'m unable to|am not able to)\s+"
    r"(?:help|answer|assist|provide|comply|determine)|as an ai\b|i'm sorry, but)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Scored:
    answer: str | None  # option letter, category, or the number as text; None if none found
    status: str
    correct: float | None = None  # multiple choice: 1.0 / 0.0 when valid, None otherwise
    value: float | None = None  # numeric outcomes (a parsed number)


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


# --------------------------------------------------------------- categorical


def normalise_answer(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces: the form phrases are matched in."""
    return " ".join(re.sub(r"[^\w\s']", " ", (text or "").lower()).split())


def score_categorical(text: str, phrases: dict[str, str]) -> Scored:
    """Map free text to a category by the LONGEST known phrase it contains (as whole words).

    `phrases` maps a normalised phrase to its category. Longest-first means "nurse
    practitioner" wins over "nurse". An answer naming nothing known is kept as `unmapped`
    with its text, so unknown answers are reported, not dropped.
    """
    if is_refusal(text):
        return Scored(None, REFUSAL)
    normal = normalise_answer(text)
    if not normal:
        return Scored(None, INVALID)
    padded = f" {normal} "
    for phrase in sorted(phrases, key=len, reverse=True):
        if f" {phrase} " in padded:
            return Scored(phrases[phrase], VALID)
    return Scored(normal[:80], UNMAPPED)


# --------------------------------------------------------------- numeric

_NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\s?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?\s*(k|thousand|m|million|%)?(?![\w])",
                     re.IGNORECASE)
_SCALE = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "%": 1.0}


def parse_numbers(text: str) -> list[float]:
    """Every number in the text, with thousands separators and k/thousand/million suffixes."""
    found = []
    for whole, fraction, suffix in _NUMBER.findall(text or ""):
        value = float(whole.replace(",", "") + (fraction or ""))
        found.append(value * _SCALE.get((suffix or "").lower(), 1.0))
    return found


def score_numeric(text: str, low: float | None, high: float | None) -> Scored:
    """One number, or the midpoint of a stated range ("50,000 to 60,000"); checked against
    the task's plausible range, where out-of-range answers get their own status."""
    if is_refusal(text):
        return Scored(None, REFUSAL)
    numbers = parse_numbers(text)
    if not numbers:
        return Scored(None, INVALID)
    value = numbers[0] if len(numbers) == 1 else (numbers[0] + numbers[1]) / 2
    if (low is not None and value < low) or (high is not None and value > high):
        return Scored(f"{value:g}", OUT_OF_RANGE, value=value)
    return Scored(f"{value:g}", VALID, value=value)


# --------------------------------------------------------------- per task


def make_scorer(config, task_path):
    """A function (item, response_text, option_logprobs) -> Scored for this task's output type."""
    if config.output_type == "multiple_choice":
        return lambda item, text, logprobs: score_multiple_choice(text, logprobs, item.letters, item.choices,
                                                                  item.target)
    if config.output_type == "generate_numeric":
        low, high = config.numeric.min, config.numeric.max
        return lambda item, text, logprobs: score_numeric(text, low, high)
    phrases = category_phrases(config, task_path)
    return lambda item, text, logprobs: score_categorical(text, phrases)


def category_phrases(config, task_path) -> dict[str, str]:
    """Normalised phrase -> category, from the YAML's `categories` and its `lexicon` CSV."""
    from biasbench.tasks.lexicon import load_lexicon

    phrases = {}
    if config.lexicon:
        phrases.update(load_lexicon(Path(task_path).parent / config.lexicon).phrases)
    for category, names in (config.categories or {}).items():
        for name in [category, *names]:
            phrases[normalise_answer(name)] = category
    return phrases
