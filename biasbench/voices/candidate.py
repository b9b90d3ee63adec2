"""A speaker considered for a voice pool, and the voice id it gets: shared by the pool builder
(voices/build.py) and the natural-speech writer (voices/natural.py), which the builder calls."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from biasbench.voices.recipe import Recipe


@dataclass
class Candidate:
    speaker_id: str
    gender: str
    ethnicity: str
    utterances: list  # rows of the corpus table, sorted by utterance id
    clip: np.ndarray | None = None
    used: list = field(default_factory=list)  # the utterance rows in the clip
    measures: dict = field(default_factory=dict)
    embedding: np.ndarray | None = None


def voice_id(recipe: Recipe, candidate: Candidate) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.\-]+", "-", candidate.speaker_id).strip("-.") or "speaker"
    return f"{recipe.recipe}-{candidate.gender[0]}-{candidate.ethnicity.replace('_', '')}-{safe}"
