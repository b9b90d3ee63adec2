"""How fast is batch TTS? Each installed offline engine with 1 worker vs all cores, and cache reuse.

Run: .venv/bin/python benchmarks/bench_tts.py [--backends espeak-ng,flite,...] [--scale 1.0]
     [--loudness-target -23]  (what the shipped pools ask for; 'none' measures raw synthesis)
Prints numbers only; asserts nothing. Engines that are not installed are listed and skipped.
Slow engines speak fewer sentences (see SENTENCES) so the whole run stays within minutes;
throughput is seconds of audio per wall-clock second, so the numbers stay comparable.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without `pip install -e .`: put the project root on the path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from biasbench.tts.cache import AudioCache
from biasbench.tts.registry import OFFLINE_BACKENDS, backend_status
from biasbench.tts.synthesis import SynthesisJob, synthesize_all

#: Voices cycled through per backend, so every speaker and variant is exercised.
VOICES = {
    "espeak-ng": [
        {"voice": "en-us", "variant": "m1"},
        {"voice": "en-gb", "variant": "f2"},
        {"voice": "en-029", "variant": "m3"},
        {"voice": "en-gb-scotland", "variant": "f4"},
    ],
    "flite": [{"voice": "slt"}, {"voice": "rms"}, {"voice": "awb"}, {"voice": "kal16"}],
    "festival": [{"voice": "cmu_us_slt_arctic_hts"}, {"voice": "kal_diphone"}],
    "piper": [{}, {"length_scale": 1.12, "noise_scale": 0.5}],
    "kokoro": [{"voice": "jf_alpha"}, {"voice": "jm_kumo"}, {"voice": "jf_nezumi"}],
}
#: Sentences per backend (before --scale): a few seconds of wall time each on 2 cores.
SENTENCES = {"espeak-ng": 40, "flite": 40, "festival": 16, "piper": 16, "kokoro": 6}

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


def make_jobs(backend: str = "espeak-ng", n: int | None = None, loudness_target: float | None = None
              ) -> list[SynthesisJob]:
    voices = VOICES[backend]
    texts = sentences(n if n is not None else SENTENCES[backend])
    return [
        SynthesisJob(f"{backend}-voice{i % len(voices)}", backend, voices[i % len(voices)], text, loudness_target)
        for i, text in enumerate(texts)
    ]


def timed_run(jobs, cache, workers):
    start = time.perf_counter()
    result = synthesize_all(jobs, cache, workers=workers, progress=False)
    return result, time.perf_counter() - start


def audio_seconds(result, cache) -> float:
    return sum(cache.duration(key) or 0.0 for key in set(result.keys.values()))


def warm_up(backend: str, tmp: Path) -> None:
    """Load models once (and assemble Kokoro's) so the 1-worker run is not charged for it."""
    job = make_jobs(backend, 1)[0]
    synthesize_all([SynthesisJob(job.voice_id, backend, job.params, "Warm up.")],
                   AudioCache(tmp / f"warm-{backend}"), workers=1, progress=False)


def bench_backend(backend: str, n: int, cores: int, tmp: Path, loudness_target: float | None) -> dict:
    jobs = make_jobs(backend, n, loudness_target)
    warm_up(backend, tmp)
    row = {"backend": backend, "clips": len(jobs)}
    for label, workers in (("serial", 1), ("parallel", cores)):
        cache = AudioCache(tmp / f"{backend}-{label}")
        result, wall = timed_run(jobs, cache, workers)
        audio = audio_seconds(result, cache)
        row[label] = {"wall": wall, "audio": audio, "made": result.made, "failed": result.failed}
    warm, warm_wall = timed_run(jobs, cache, cores)  # same cache as the parallel run
    row["warm"] = {"wall": warm_wall, "reused": warm.reused}
    if loudness_target is not None:  # what the normalisation costs: the same clips made raw, 1 worker
        raw, raw_wall = timed_run(make_jobs(backend, n), AudioCache(tmp / f"{backend}-raw"), 1)
        row["normalise_cost"] = row["serial"]["wall"] / raw_wall
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(OFFLINE_BACKENDS),
                        help="comma-separated offline backends (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every sentence count")
    parser.add_argument("--loudness-target", default="-23",
                        help="LUFS every clip is normalised to, as the shipped pools do; 'none' to skip")
    args = parser.parse_args()
    target = None if args.loudness_target.lower() == "none" else float(args.loudness_target)
    cores = os.cpu_count() or 1
    rows, missing = [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ.setdefault("BIASBENCH_CACHE", str(tmp / "biasbench-cache"))  # Kokoro's model
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            status = backend_status(backend)
            if not status.installed:
                missing.append((backend, status.detail))
                continue
            n = max(2, round(SENTENCES[backend] * args.scale))
            rows.append(bench_backend(backend, n, cores, tmp, target))

    print(f"batch synthesis throughput, {cores} CPU cores (audio s per wall s; higher is faster), clips "
          + (f"normalised to {target:g} LUFS ('norm cost': 1-worker time with / without it)" if target is not None
             else "not normalised"))
    header = (f"{'backend':<11}{'clips':>6}{'audio s':>9}{'1 worker':>10}"
              f"{f'{cores} workers':>11}{'speed-up':>10}{'failed':>8}{'warm cache s':>14}{'norm cost':>11}")
    print(header)
    print("-" * len(header))
    for row in rows:
        serial, parallel = row["serial"], row["parallel"]
        print(
            f"{row['backend']:<11}{row['clips']:>6}{serial['audio']:>9.1f}"
            f"{serial['audio'] / serial['wall']:>10.1f}{parallel['audio'] / parallel['wall']:>11.1f}"
            f"{serial['wall'] / parallel['wall']:>9.2f}x{serial['failed'] + parallel['failed']:>8}"
            f"{row['warm']['wall']:>14.3f}"
            + (f"{row['normalise_cost']:>10.2f}x" if "normalise_cost" in row else f"{'-':>11}")
        )
    for backend, detail in missing:
        print(f"{backend:<11} not installed: {detail}")


if __name__ == "__main__":
    main()
