"""How fast is batch TTS? espeak-ng throughput with 1 worker vs all cores, and cache reuse.

Run: .venv/bin/python benchmarks/bench_tts.py
Prints numbers only; asserts nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without `pip install -e .`: put the project root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from biasbench.tts.cache import AudioCache
from biasbench.tts.synthesis import SynthesisJob, synthesize_all

VOICES = [
    {"voice": "en-us", "variant": "m1"},
    {"voice": "en-gb", "variant": "f2"},
    {"voice": "en-029", "variant": "m3"},
    {"voice": "en-gb-scotland", "variant": "f4"},
]

SUBJECTS = ["The doctor", "My neighbour", "The new manager", "A student", "The pilot"]
ACTIONS = [
    "asked whether the report would be ready by Friday afternoon",
    "explained the results of the experiment to the whole committee",
    "wanted to know how long the repairs on the bridge would take",
    "suggested that we postpone the meeting until after the holidays",
    "could not remember where the spare keys had been left",
    "recommended a quieter restaurant on the other side of town",
    "noticed that the train schedule had changed again this week",
    "offered to help carry the boxes up to the third floor",
]


def sentences(n: int = 40) -> list[str]:
    """n distinct sentences of everyday length (about 3-4 s of speech each)."""
    pairs = [(s, a) for a in ACTIONS for s in SUBJECTS]
    return [f"{s} {a}." for s, a in pairs[:n]]


def make_jobs() -> list[SynthesisJob]:
    # One voice per sentence, cycling, so every accent and gender is exercised.
    return [
        SynthesisJob(f"voice{i % len(VOICES)}", "espeak-ng", VOICES[i % len(VOICES)], text)
        for i, text in enumerate(sentences())
    ]


def timed_run(jobs, cache, workers):
    start = time.perf_counter()
    result = synthesize_all(jobs, cache, workers=workers, progress=False)
    return result, time.perf_counter() - start


def audio_seconds(result, cache) -> float:
    return sum(cache.duration(key) or 0.0 for key in set(result.keys.values()))


def main() -> None:
    jobs = make_jobs()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        rows = {}
        for label, workers in [("1 worker", 1), (f"{cores} workers", cores)]:
            cache = AudioCache(Path(tmp) / label.replace(" ", "_"))
            result, wall = timed_run(jobs, cache, workers)
            rows[label] = (result, wall, audio_seconds(result, cache))
        warm_result, warm_wall = timed_run(jobs, cache, cores)  # same cache as the last run

    print(f"espeak-ng batch synthesis: {len(jobs)} sentences, {cores} CPU cores")
    print(f"{'run':<12}{'made':>6}{'failed':>8}{'audio s':>10}{'wall s':>9}{'audio s / wall s':>19}")
    for label, (result, wall, audio) in rows.items():
        print(f"{label:<12}{result.made:>6}{result.failed:>8}{audio:>10.1f}{wall:>9.3f}{audio / wall:>19.0f}")
    (_, serial_wall, _), (_, parallel_wall, _) = rows.values()
    print(f"parallel speed-up ({cores} workers vs 1): {serial_wall / parallel_wall:.2f}x")
    print(
        f"warm-cache rerun: {warm_wall:.3f} s (made {warm_result.made}, reused "
        f"{warm_result.reused}) vs cold {parallel_wall:.3f} s: "
        f"{parallel_wall / warm_wall:.0f}x faster"
    )


if __name__ == "__main__":
    main()
