"""Per backend: requests per second on tiny models, and the harness's own overhead.

For each backend, one warm-up run fills the audio and model caches; then a fresh run of
the same job is timed end to end while every backend call, and the backend's loading, is
timed on its own. Loading the model is backend time, not harness time, so it is reported
apart (`load s`) and left out of the overhead. The harness's overhead is everything else
(planning, hashing, cache reads, SQLite writes, scoring, the tidy export and the summary)
as a share of the model calls' time. Target: < 5%.

The overhead is split by when it happens: `setup` (task, pool, plan, clip keys, manifest:
before the first model call), `loop` (reading clips, scoring and storing answers, between
the first call and the last; shown per request) and `finish` (tidy table, exports,
analysis, summary: after the last call). Setup and finish are mostly fixed per run, so
with few items they dominate; the loop's ms/req is what a long run pays per request, and
`loop %` (the loop's harness time as a share of model time) is the overhead a long run
tends to (plus the small per-request part of setup: keying clips and requests).

Usage: .venv/bin/python benchmarks/bench_overhead.py [--items 4] [--models tiny-qwen2audio ...]
Prints; asserts nothing. The machine is noisy: read the ratios, and rerun.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_MODELS = ["tiny-qwen2audio", "tiny-qwen2.5-omni", "tiny-audio-flamingo-3",
                  "cascade:tiny-whisper+tiny-qwen2-text", "text:tiny-qwen2audio"]


class TimedBackend:
    """Wraps a backend; adds up the wall time spent inside its model calls."""

    def __init__(self, backend, load_seconds: float):
        self._backend, self.load_seconds = backend, load_seconds
        self.model_seconds, self.calls = 0.0, 0
        self.first_start = self.last_end = None

    def __getattr__(self, name):
        attribute = getattr(self._backend, name)
        if name not in ("score_choices", "generate"):
            return attribute

        def timed(requests):
            start = time.perf_counter()
            try:
                return attribute(requests)
            finally:
                self.last_end = time.perf_counter()
                self.first_start = self.first_start or start
                self.model_seconds += self.last_end - start
                self.calls += 1
        return timed


def measure(model: str, items: int, out: Path) -> dict:
    from biasbench import runner
    from biasbench.models import registry

    runner.run(runner.RunOptions(task="mmlu", model=model, data_source="local", limit=items,
                                 output_dir=out, run_id=f"warm-{abs(hash(model))}", progress=False))
    timed: list[TimedBackend] = []
    original = registry.load_backend

    def load_timed(*args, **kwargs):
        start = time.perf_counter()
        backend = original(*args, **kwargs)
        timed.append(TimedBackend(backend, time.perf_counter() - start))
        return timed[-1]

    runner.load_backend = load_timed
    try:
        start = time.perf_counter()
        result = runner.run(runner.RunOptions(task="mmlu", model=model, data_source="local", limit=items,
                                              output_dir=out, run_id=f"timed-{abs(hash(model))}",
                                              progress=False))
        end = time.perf_counter()
    finally:
        runner.load_backend = original
    backend = timed[0]
    model_s, load_s = backend.model_seconds, backend.load_seconds
    harness = (end - start) - load_s - model_s
    return {"model": model, "requests": result.n_total, "total_s": end - start, "model_s": model_s,
            "load_s": load_s, "harness_s": harness, "req_per_s": result.n_total / (end - start),
            "overhead": harness / model_s if model_s else None,
            # The first version of this benchmark counted loading as harness time: kept for comparison.
            "overhead_with_load": (end - start - model_s) / model_s if model_s else None,
            "setup_s": backend.first_start - start - load_s,
            "loop_s": backend.last_end - backend.first_start - model_s,
            "finish_s": end - backend.last_end}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BIASBENCH_CACHE"] = str(Path(tmp) / "cache")
        os.environ["HF_HUB_OFFLINE"] = "1"
        rows = [measure(model, args.items, Path(tmp) / "runs") for model in args.models]
    print(f"\nmmlu, {args.items} items x 18 voices, warm caches, CPU. overhead = harness s / model s; "
          "(+load) counts model loading as harness time, as the first version of this benchmark did")
    print(f"{'backend':<38}{'reqs':>5}{'req/s':>7}{'load s':>7}{'model s':>8}{'total s':>8}{'harness s':>10}"
          f"{'overhead':>9}{'(+load)':>8}{'ms/req':>7} |{'setup ms':>9}{'loop ms/req':>12}{'loop %':>7}"
          f"{'finish ms':>10}")
    for r in rows:
        print(_row(r))


def _row(r: dict) -> str:
    def percent(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"
    return (f"{r['model']:<38}{r['requests']:>5}{r['req_per_s']:>7.1f}{r['load_s']:>7.2f}{r['model_s']:>8.2f}"
            f"{r['total_s']:>8.2f}{r['harness_s']:>10.3f}{percent(r['overhead']):>9}"
            f"{percent(r['overhead_with_load']):>8}{1000 * r['harness_s'] / r['requests']:>7.1f} |"
            f"{1000 * r['setup_s']:>9.0f}{1000 * r['loop_s'] / r['requests']:>12.2f}"
            f"{percent(r['loop_s'] / r['model_s'] if r['model_s'] else None):>7}{1000 * r['finish_s']:>10.0f}")


if __name__ == "__main__":
    main()
