"""Which answers the judge compares: label-blind, seeded, both orders.

For each item (and sample), every voice with a valid answer is compared with k opponents
drawn at random from the other voices with a valid answer, whatever their group, and each
drawn pair is judged twice, once in each order (position swapped). The plan is a function
of the item ids, the voice ids and the seed only, never of the voices' labels: relabelling
the voices leaves it unchanged, so the judge's comparisons are exchangeable under the null
of no group effect and the voice-level permutation test of the win shares stays valid.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Comparison:
    """One judgement to make: `first`'s answer shown as A, `second`'s as B."""

    item_id: str
    sample_index: int
    first: str  # voice ids
    second: str


def draw_pairs(voices: list[str], k: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Unordered pairs (sorted) such that each voice meets min(k, n-1) drawn opponents or more."""
    voices = sorted(voices)
    pairs: set[tuple[str, str]] = set()
    for v in voices:
        others = [o for o in voices if o != v]
        for o in rng.choice(others, size=min(k, len(others)), replace=False) if others else []:
            pairs.add(tuple(sorted((v, str(o)))))
    return sorted(pairs)


def comparison_plan(answers: pd.DataFrame, k: int = 3, seed: int = 0) -> list[Comparison]:
    """Every judgement of a run: `answers` has item_id, sample_index, voice_id (one row per valid
    answer). Each drawn pair comes in both orders; the draw is seeded by (seed, item, sample)."""
    if k < 1:
        raise ValueError("k (opponents per voice) must be at least 1")
    plan = []
    for (item, sample), rows in answers.groupby(["item_id", "sample_index"], sort=True):
        rng = np.random.default_rng([seed, zlib.crc32(str(item).encode("utf-8")), int(sample)])
        for a, b in draw_pairs(rows["voice_id"].astype(str).unique().tolist(), k, rng):
            plan += [Comparison(str(item), int(sample), a, b), Comparison(str(item), int(sample), b, a)]
    return plan
