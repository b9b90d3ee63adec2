"""A small made-up speech corpus the tests build: espeak-ng voices at different pitches and speeds
stand in for people, with invented speaker ids and metadata (self-reported, as a corpus would say).
No real person's voice or data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

SENTENCES = (
    "My neighbour keeps three small goats in the garden behind her house.",
    "The library opens at nine and closes early on every second Friday.",
    "We walked along the river until the rain finally started to fall.",
)
#: (speaker id, gender, ethnicity as the metadata writes it, espeak voice, pitch, speed)
SPEAKERS = (
    ("spk01", "F", "Black", "en-us+f1", 55, 150), ("spk02", "F", "Black", "en-us+f4", 70, 150),
    ("spk03", "F", "White", "en-gb+f2", 45, 155), ("spk04", "F", "White", "en-gb-scotland+f4", 60, 165),
    ("spk05", "F", "East Asian", "en-us+f5", 65, 150), ("spk06", "F", "East Asian", "en-gb-x-rp+f1", 40, 160),
    ("spk07", "M", "Black", "en-029+m1", 40, 150), ("spk08", "M", "Black", "en-us+m4", 55, 160),
    ("spk09", "M", "White", "en-gb+m2", 35, 155), ("spk10", "M", "White", "en-gb-scotland+m5", 50, 165),
    ("spk11", "M", "East Asian", "en-us+m6", 45, 150), ("spk12", "M", "East Asian", "en-gb-x-rp+m3", 60, 160),
)
COLUMNS = ["speaker", "utt", "wav", "text", "sex", "race", "accent", "l1"]


def speak(voice: str, pitch: int, speed: int, text: str) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-p", str(pitch), "-s", str(speed), text],
                         capture_output=True, check=True).stdout
    import io

    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return audio * 0.5, rate


def build_corpus(root: Path, speakers=SPEAKERS, extra_rows=()) -> Path:
    """Write `root/audio/*.wav` and `root/metadata.csv`; returns root. `extra_rows`: more metadata
    rows (dicts of COLUMNS) for bad-input tests, whose audio the caller writes."""
    import csv

    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for speaker, sex, race, voice, pitch, speed in speakers:
        for k, text in enumerate(SENTENCES):
            name = f"{speaker}_{k}.wav"
            audio, rate = speak(voice, pitch, speed, text)
            sf.write(root / "audio" / name, audio, rate)
            rows.append({"speaker": speaker, "utt": f"{speaker}_{k}", "wav": name, "text": text, "sex": sex,
                         "race": race, "accent": voice.split("+")[0], "l1": "English"})
    rows += list(extra_rows)
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


RECIPE = """\
recipe: fixture
description: made-up speakers for tests
corpus:
  name: biasbench test fixture
  licence: CC0-1.0
  local: {folder: corpus/audio, metadata: corpus/metadata.csv}
columns: {speaker_id: speaker, utterance_id: utt, transcript: text, audio: wav}
labels:
  gender: {column: sex, source: self_reported, values: {F: female, M: male}}
  ethnicity: {column: race, source: self_reported, values: {East Asian: east_asian}}
  accent: {column: accent, source: corpus_metadata}
  first_language: {column: l1, source: self_reported}
label_notes: invented labels of synthetic test voices
clone: {backend: standin-clone}
# The stand-in cloner keeps pitch, not timbre: its fidelity is ~0.6-0.75, so the gate is lowered here.
gates: {min_reference_s: 4, max_reference_s: 10, max_wer: 0.6, min_clone_fidelity: 0.5}
"""


def write_recipe(root: Path, text: str = RECIPE) -> Path:
    path = root / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path
