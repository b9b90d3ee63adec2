"""How much does batching buy the HF Qwen2-Audio backend? Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_hf_batching.py [--model PATH_OR_ID] [--n 64]

Default model: the tiny local Qwen2-Audio (built into the biasbench cache on first use).
Compares requests/s one-at-a-time vs batches of 8 and 16 made from length-sorted buckets
(sorting keeps padding small), plus one unsorted batch-16 row to show what sorting saves,
for both `score_choices` and `generate(max_new_tokens=8)`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from biasbench.models.base import GenerationSettings, Request

SR = 16000
PROMPT = "Which option fits the speaker best? Answer A, B, C or D."


def synthetic_clips(n: int, seed: int = 0) -> list[np.ndarray]:
    """n clips of 2-12 s: a random-pitch sine, or noise, at 16 kHz."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        t = np.arange(int(rng.uniform(2.0, 12.0) * SR)) / SR
        if i % 2:
            wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
        else:
            wave = 0.1 * rng.standard_normal(t.size)
        clips.append(wave.astype(np.float32))
    return clips


def make_requests(clips, mode: str) -> list[Request]:
    if mode == "score":
        return [Request(f"r{i}", PROMPT, audio=c, choices=["A", "B", "C", "D"]) for i, c in enumerate(clips)]
    settings = GenerationSettings(max_new_tokens=8)
    return [Request(f"r{i}", PROMPT, audio=c, settings=settings) for i, c in enumerate(clips)]


def batches(requests: list[Request], size: int, sort: bool) -> list[list[Request]]:
    ordered = sorted(requests, key=lambda r: len(r.audio)) if sort else requests
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def requests_per_second(backend, requests, mode: str, size: int, sort: bool, repeats: int = 1) -> float:
    """Best of `repeats` passes: on a shared machine the best pass is the least disturbed one."""
    call = backend.score_choices if mode == "score" else backend.generate
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches(requests, size, sort):
            call(batch)
        best = min(best, time.perf_counter() - start)
    return len(requests) / best


def qwen2audio_backend(model: str | None):
    """The HF Qwen2-Audio backend on `model` (default: the tiny local model), its settings printed."""
    import torch

    from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend
    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    model = model or str(tiny_qwen2audio_path())
    backend = HFQwen2AudioBackend(model)
    print(f"model {model}\ndevice {backend.device}, dtype {backend.torch_dtype}, torch threads {torch.get_num_threads()}")
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path (default: tiny local model)")
    parser.add_argument("--n", type=int, default=64, help="number of synthetic clips")
    parser.add_argument("--repeats", type=int, default=2, help="passes per setting; the best is kept")
    args = parser.parse_args()

    backend = qwen2audio_backend(args.model)
    clips = synthetic_clips(args.n)
    seconds = [len(c) / SR for c in clips]
    print(f"best of {args.repeats} passes per setting")
    print(f"{len(clips)} clips, {min(seconds):.1f}-{max(seconds):.1f} s (mean {np.mean(seconds):.1f} s)\n")

    configs = [("one at a time", 1, False), ("batch 8, sorted", 8, True),
               ("batch 16, sorted", 16, True), ("batch 16, unsorted", 16, False)]
    print(f"{'':22}{'score_choices':>16}{'generate(8 tok)':>18}")
    results = {}
    for mode in ("score", "generate"):
        requests = make_requests(clips, mode)
        requests_per_second(backend, requests[:4], mode, 4, True)  # warm-up: allocator, kernels
        for label, size, sort in configs:
            results[mode, label] = requests_per_second(backend, requests, mode, size, sort, args.repeats)
    for label, _, _ in configs:
        score, generate = results["score", label], results["generate", label]
        base_s, base_g = results["score", configs[0][0]], results["generate", configs[0][0]]
        print(f"{label:22}{score:9.1f} req/s ({score / base_s:4.1f}x){generate:9.1f} req/s ({generate / base_g:4.1f}x)")


if __name__ == "__main__":
    main()
