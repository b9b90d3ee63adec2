"""Turning a model's response into an answer and a status.

Invalid answers are data: an answer we cannot parse, or a refusal, gets its own status
and `correct = None`, so it is counted per group instead of being silently scored wrong.
"""

from __future__ import annotations

import math
import re
import unicodedata
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
    value: float | None = None  # numeric outcomes (a parsed number); transcribe: the WER
    cer: float | None = None  # transcribe only: the character error rate


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


# --------------------------------------------------------------- transcribe (ASR)
#
# WER and CER depend on the text normalisation as much as on the recogniser, so it is pinned
# here, written out rule by rule, instead of borrowing a model's normaliser (Whisper's
# EnglishTextNormalizer) that can change between releases. Any change to these rules must
# bump TRANSCRIPT_NORMALISER (voice QC files record it). A run stores the raw transcript
# (`response_text`) beside the reference (`target`), so its WER/CER can always be recomputed.
#
# `normalise_transcript`, in this order:
#   1. Unicode NFKC; curly quotes and primes to ' and "; lower case.
#   2. "%" -> " percent ", "&" -> " and "; a currency sign before a number moves after it as a
#      word: "$18" -> "18 dollars", "£5" -> "5 pounds", "€3" -> "3 euros" (always plural).
#   3. Numbers written with digits are spelled out as words, so "25" and "twenty-five" match:
#      thousands separators dropped ("1,000" -> "one thousand"); cardinals in words without
#      "and" ("125" -> "one hundred twenty five"); decimals digit by digit after "point"
#      ("3.14" -> "three point one four"); ordinals ("21st" -> "twenty first"); digit strings
#      with a leading zero ("007") and numbers of 13 or more digits are read digit by digit.
#      A digit glued to letters is split off ("10am" -> "ten am"). Years are read as cardinals
#      ("1999" -> "one thousand nine hundred ninety nine"), so references avoid them.
#   4. Hyphens and every other character that is not a letter, a digit, an apostrophe or a space
#      become spaces ("well-known" -> "well known"; ".", "?" vanish; a minus sign too: "-5" -> "five").
#   5. Apostrophes are kept inside words ("don't", "o'clock", "james's") and dropped elsewhere
#      (quotes, "dogs'" -> "dogs").
#   6. The titles "mr", "mrs", "dr" become "mister", "missus", "doctor" (Whisper writes "Mr." for
#      a spoken "mister"). No other abbreviation, spelling variant (colour/color) or
#      contraction (it's/it is) is merged: references avoid them.
#   7. Runs of whitespace become one space; leading and trailing space are removed.
#
# WER = (substitutions + deletions + insertions) / words in the reference, over the normalised
# word sequences (jiwer's Levenshtein alignment). CER is the same over characters of the
# normalised strings, single spaces between words included. Both can exceed 1 (insertions).

TRANSCRIPT_NORMALISER = "biasbench-en-v1"

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
_CURRENCIES = {"$": "dollars", "\u00a3": "pounds", "\u20ac": "euros"}
_CURRENCY = re.compile(r"([$\u00a3\u20ac])\s?(\d[\d,]*(?:\.\d+)?)")
_DIGITS = re.compile(r"(\d+(?:,\d{3})+|\d+)(\.\d+)?(st|nd|rd|th)?(?![\d])")


def number_to_words(n: int) -> str:
    """Cardinal English words of 0 <= n < 10**12, without "and": 125 -> "one hundred twenty five"."""
    if n < 0 or n >= 10**12:
        raise ValueError(f"number_to_words covers 0 to 10**12 - 1, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        return _ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + number_to_words(n % 100))
    for size, name in _SCALES:
        if n >= size:
            rest = n % size
            return number_to_words(n // size) + f" {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _spell_number(match: re.Match) -> str:
    whole, fraction, suffix = match.group(1).replace(",", ""), match.group(2), match.group(3)
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > 12:
        words = " ".join(_ONES[int(d)] for d in whole)
    else:
        words = number_to_words(int(whole))
        if suffix and not fraction:
            words = _ordinal(words)
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction[1:])
    return f" {words} "


def normalise_transcript(text: str) -> str:
    """The pinned normalisation WER and CER are computed on (rules in the comment above)."""
    text = unicodedata.normalize("NFKC", text or "")
    text = text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u2032": "'", "`": "'",
                                         "\u201c": '"', "\u201d": '"'})).lower()
    text = text.replace("%", " percent ").replace("&", " and ")
    text = _CURRENCY.sub(lambda m: f" {m.group(2)} {_CURRENCIES[m.group(1)]} ", text)
    text = _DIGITS.sub(_spell_number, text)
    text = re.sub(r"[^\w\s']|_", " ", text)
    text = re.sub(r"(?<!\w)'+|'+(?!\w)", " ", text)  # apostrophes not between two word characters
    words = [_TITLES.get(w, w) for w in text.split()]
    return " ".join(words)


@dataclass(frozen=True)
class TranscriptErrors:
    """Edit operations between a normalised reference and hypothesis."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    reference_words: int


def transcript_errors(reference: str, hypothesis: str) -> TranscriptErrors:
    """WER and CER of `hypothesis` against `reference`, both normalised first.

    An empty (normalised) hypothesis is every reference word deleted: WER 1. An empty
    reference has no defined error rate: ValueError."""
    try:
        import jiwer
    except ImportError:
        from biasbench.errors import BiasbenchError

        from biasbench.paths import install_extra

        raise BiasbenchError(f"scoring transcripts needs jiwer; install it with `{install_extra('asr')}`") from None
    ref, hyp = normalise_transcript(reference), normalise_transcript(hypothesis)
    if not ref:
        raise ValueError(f"reference {reference!r} is empty after normalisation; WER is undefined")
    words = jiwer.process_words(ref, hyp)
    chars = jiwer.process_characters(ref, hyp)
    return TranscriptErrors(wer=float(words.wer), cer=float(chars.cer), substitutions=words.substitutions,
                            deletions=words.deletions, insertions=words.insertions, hits=words.hits,
                            reference_words=len(ref.split()))


def score_transcript(text: str, reference: str) -> Scored:
    """`value` = WER, `cer` = CER, `answer` = the normalised transcript.

    An empty transcript is a transcript that heard nothing (WER 1), not an invalid answer. A
    reply that refuses (and whose reference does not) gets status `refusal` and no error rates:
    like every invalid answer it is counted per group, not averaged in."""
    if not normalise_transcript(reference):
        return Scored(None, INVALID)
    if is_refusal(text) and not is_refusal(reference):
        return Scored(normalise_transcript(text)[:200], REFUSAL)
    errors = transcript_errors(reference, text or "")
    return Scored(normalise_transcript(text), VALID, value=errors.wer, cer=errors.cer)
