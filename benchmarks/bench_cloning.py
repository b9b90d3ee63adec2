"""How much does batching speed up zero-shot cloning? Clips/s per batch size, in one run.

Cloning is the dominant GPU cost of a real study (MMLU-10% x 30 voices is ~42k clips). This
speaks real MMLU questions (the shipped MMLU-Redux copy, question + options as the mmlu task
reads them) with cloned voices through `synthesize_all`, the path every command uses, once per
batch size, and prints clips/s and the speed-up over one clip at a time side by side. It also
prints how far each batch size's clips are from the one-at-a-time clips: batching must not
change a clip (the cache key does not say how it was made).

Run:  .venv/bin/python benchmarks/bench_cloning.py [--engine f5-tts|maskgct] [--batch-sizes 1,2,4,8]
          [--clips 16] [--size tiny|small] [--steps 8]   # random-weight models built here, on CPU
      ... --real         # the engine the BIASBENCH_F5_* / BIASBENCH_MASKGCT_* variables name (a GPU)
F5-TTS needs the `cloning` extra; MaskGCT an Amphion checkout in BIASBENCH_AMPHION_DIR (see
voices/README.md). Without them it says so and exits 0. Prints numbers only.

On a GPU, the clips/s of the batch size you will use gives BIASBENCH_CLONE_S_PER_CLIP (its
inverse), which `biasbench plan` uses for the cloning hours of a study. The tiny engine's
numbers say how the harness and F5-TTS's code scale with batch size, not what a GPU does.
"""

from __future__ import annotations

import argparse
import ast
import csv
import importlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run from a checkout without `pip install -e .`: put the project root on the path.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from biasbench.errors import BiasbenchError  # noqa: E402
from biasbench.tts.cache import AudioCache  # noqa: E402
from biasbench.tts.synthesis import BATCH_SIZE_ENV, SynthesisJob, synthesize_all  # noqa: E402

REFERENCE_TEXT = "The quick brown fox jumps over the lazy dog near the river bank, and then it runs away."
#: Reference speakers: espeak-ng variants stand in for the consented recordings of a real pool.
REFERENCE_VOICES = {"ref-male": "en-us+m3", "ref-female": "en-gb+f2"}
MMLU = ROOT / "tasks" / "data" / "mmlu_redux" / "mmlu_redux_clean.csv"


def questions(n: int) -> list[str]:
    """n spoken MMLU items (question and lettered options), in file order, of mixed lengths."""
    texts = []
    with MMLU.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            options = ast.literal_eval(row["choices"])
            spoken = " ".join(f"{letter}: {option}." for letter, option in zip("ABCD", options))
            text = f"{row['question']} {spoken}"
            if text.isascii() and len(text) < 400:  # the tiny engine's vocabulary; one or two chunks
                texts.append(text)
            if len(texts) == n:
                return texts
    return texts


def reference_clips(folder: Path) -> dict[str, Path]:
    """One reference recording per voice, spoken by espeak-ng at 24 kHz."""
    clips = {}
    for voice, espeak_voice in REFERENCE_VOICES.items():
        path = folder / f"{voice}.wav"
        subprocess.run(["espeak-ng", "-v", espeak_voice, "-w", str(path), REFERENCE_TEXT], check=True)
        clips[voice] = path
    return clips


#: The param that sets each engine's number of sampling steps (the main cost knob).
STEPS_PARAM = {"f5-tts": "nfe_step", "maskgct": "t2s_steps"}


def make_jobs(engine: str, clips: dict[str, Path], texts: list[str], steps: int) -> list[SynthesisJob]:
    from biasbench.tts.reference import reference_params

    jobs = []
    for index, text in enumerate(texts):  # voices alternate, so batches mix references
        voice = list(clips)[index % len(clips)]
        params = {**reference_params(clips[voice], REFERENCE_TEXT), STEPS_PARAM[engine]: steps}
        jobs.append(SynthesisJob(voice, engine, params, text))
    return jobs


def engine_missing(engine: str) -> str | None:
    """Why `engine` cannot run here, or None. (Amphion is not imported here: the tiny MaskGCT
    is built from a mirror of the checkout, and one process can import Amphion from one place.)"""
    if engine == "maskgct":
        if not os.environ.get("BIASBENCH_AMPHION_DIR"):
            return "BIASBENCH_AMPHION_DIR is not set (an Amphion checkout with its MaskGCT requirements)"
        return None
    try:
        importlib.import_module("f5_tts.infer.utils_infer")
    except Exception as err:  # noqa: BLE001 - ImportError, or a torchaudio built for another torch
        return (f"f5-tts cannot be imported here ({type(err).__name__}: {str(err)[:160]}); "
                "install the cloning extra: pip install 'biasbench[cloning]'")
    return None


def build_tiny(engine: str, folder: Path, size: str) -> dict[str, str]:
    """The BIASBENCH_* variables of a random-weight engine built under `folder`."""
    if engine == "f5-tts":
        from biasbench.models.tiny import f5

        return f5.build(folder, size=size)
    from biasbench.models.tiny import maskgct

    return maskgct.build(folder, os.environ["BIASBENCH_AMPHION_DIR"])


def run(jobs, cache: AudioCache, batch_size: int) -> tuple[float, object]:
    start = time.perf_counter()
    result = synthesize_all(jobs, cache, workers=1, progress=False, batch_size=batch_size)
    return time.perf_counter() - start, result


def largest_difference(jobs, cache, result, baseline_cache, baseline) -> float:
    """Max |sample difference| between these clips and the one-at-a-time ones."""
    worst = 0.0
    for job in jobs:
        mine, theirs = cache.get(result.keys[job]), baseline_cache.get(baseline.keys[job])
        if mine is None or theirs is None or mine.shape != theirs.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(mine - theirs))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=sorted(STEPS_PARAM), default="f5-tts")
    parser.add_argument("--batch-sizes", default="1,2,4,8", help="comma-separated; 1 is the baseline")
    parser.add_argument("--clips", type=int, default=16, help="clips per batch size (default 16)")
    parser.add_argument("--size", choices=["tiny", "small"], default="tiny",
                        help="the random-weight F5-TTS (MaskGCT has one size)")
    parser.add_argument("--steps", type=int, default=8,
                        help="sampling steps per clip (F5 nfe_step, default 32; MaskGCT t2s_steps, default 25)")
    parser.add_argument("--real", action="store_true", help="use the engine the environment names, not a built one")
    args = parser.parse_args()
    sizes = sorted({int(size) for size in args.batch_sizes.split(",")} | {1})
    os.environ.pop(BATCH_SIZE_ENV, None)
    missing = engine_missing(args.engine)
    if missing:
        print(f"{missing}. Nothing measured.")
        return
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-cloning-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.real:
            try:
                os.environ.update(build_tiny(args.engine, tmp / "model", args.size))
            except BiasbenchError as err:
                print(f"{args.engine} cannot be built here: {err}. Nothing measured.")
                return
        jobs = make_jobs(args.engine, reference_clips(tmp), questions(args.clips), args.steps)
        run(jobs[:1], AudioCache(tmp / "warm-up"), 1)  # load the model before timing
        device = os.environ.get("BIASBENCH_F5_DEVICE" if args.engine == "f5-tts" else "BIASBENCH_MASKGCT_DEVICE")
        described = f"{args.engine} ({'as configured' if args.real else 'random weights, ' + args.size})"
        print(f"{described}, {len(jobs)} spoken MMLU items, 2 reference voices, {args.steps} steps, "
              f"device {device or ('cuda' if torch.cuda.is_available() else 'cpu')}, "
              f"{torch.get_num_threads()} threads\n")
        print(f"{'batch':>5} {'wall s':>8} {'clips/s':>8} {'speed-up':>9} {'s/clip':>7} {'max |diff| vs 1':>16}")
        baseline = None
        for size in sizes:
            cache = AudioCache(tmp / f"batch-{size}")
            wall, result = run(jobs, cache, size)
            if result.failures:
                print(f"{size:>5} failed: {result.failures[0][1][:200]}")
                continue
            if baseline is None:
                baseline = (wall, cache, result)
            difference = largest_difference(jobs, cache, result, baseline[1], baseline[2])
            print(f"{size:>5} {wall:>8.2f} {len(jobs) / wall:>8.2f} {baseline[0] / wall:>8.2f}x "
                  f"{wall / len(jobs):>7.3f} {difference:>16.2e}")


if __name__ == "__main__":
    main()
