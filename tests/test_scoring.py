"""Answers become a letter and a status; invalid answers and refusals are never 'wrong'."""

import math

import pytest

from biasbench.tasks.scoring import INVALID, REFUSAL, VALID, parse_choice, score_multiple_choice

LETTERS = ("A", "B", "C", "D")
CHOICES = ("Paris", "London", "Rome", "Berlin")


@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("**C**", "C"), ("Answer: D", "D"),
    ("The answer is B) London", "B"), ("I think C is right", "C"), ("A", "A"), ("A. Paris", "A"),
    ("I would say it is A.", "A"), ("It is a city: Rome", "C"),
    ("", None), ("hmm", None), ("a dog", None), ("B or C", None), ("Paris or Rome", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text, LETTERS, CHOICES) == expected


def test_logprobs_pick_the_best_letter():
    scored = score_multiple_choice("", {"A": -2.0, "B": -0.1, "C": -3.0, "D": -4.0}, LETTERS, CHOICES, 1)
    assert (scored.answer, scored.status, scored.correct) == ("B", VALID, 1.0)
    wrong = score_multiple_choice("", {"A": -0.1, "B": -2.0, "C": -3.0, "D": -4.0}, LETTERS, CHOICES, 1)
    assert wrong.correct == 0.0


def test_invalid_and_refusal_are_not_scored():
    invalid = score_multiple_choice("banana", None, LETTERS, CHOICES, 0)
    assert invalid.status == INVALID and invalid.correct is None and invalid.answer is None
    refusal = score_multiple_choice("I'm sorry, but I can't help with that.", None, LETTERS, CHOICES, 0)
    assert refusal.status == REFUSAL and refusal.correct is None


def test_non_finite_logprobs_are_invalid():
    scored = score_multiple_choice("", {"A": -math.inf, "B": math.nan}, LETTERS, CHOICES, 0)
    assert scored.status == INVALID
