"""Per backend: requests per second on tiny models, and the harness's own overhead.

For each backend, one warm-up run fills the audio and model caches; then a fresh run of
the same job is timed end to end while every backend call is timed on its own. The
harness's overhead is everything else (planning, hashing, cache reads, SQLite writes,
scoring, the tidy export and the summary) as a share of the model's time. Target: < 5%.

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

    def __init__(self, backend):
        self._backend, self.model_seconds, self.calls = backend, 0.0, 0

    def __getattr__(self, name):
        attribute = getattr(self._backend, name)
        if name not in ("score_choices", "generate"):
            return attribute

        def timed(requests):
            start = time.perf_counter()
            try:
                return attribute(requests)
            finally:
                self.model_seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def measure(model: str, items: int, out: Path) -> dict:
    import biasbench.runner as runner
    from biasbench.models import registry

    runner.run(runner.RunOptions(task="mmlu", model=model, data_source="local", limit=items,
                                 output_dir=out, run_id=f"warm-{abs(hash(model))}", progress=False))
    timed: list[TimedBackend] = []
    original = registry.load_backend

    def load_timed(*args, **kwargs):
        timed.append(TimedBackend(original(*args, **kwargs)))
        return timed[-1]

    runner.load_backend = load_timed
    try:
        start = time.perf_counter()
        result = runner.run(runner.RunOptions(task="mmlu", model=model, data_source="local", limit=items,
                                              output_dir=out, run_id=f"timed-{abs(hash(model))}",
                                              progress=False))
        total = time.perf_counter() - start
    finally:
        runner.load_backend = original
    model_s = timed[0].model_seconds
    return {"model": model, "requests": result.n_total, "total_s": total, "model_s": model_s,
            "req_per_s": result.n_total / total, "overhead": (total - model_s) / model_s if model_s else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4)
    parser.add_argument("--models", nargs="*", default=DEFAULT_MODELS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BIASBENCH_CACHE"] = str(Path(tmp) / "cache")
        os.environ["HF_HUB_OFFLINE"] = "1"
        rows = [measure(model, args.items, Path(tmp) / "runs") for model in args.models]
    print(f"\nmmlu, {args.items} items x 18 voices, warm caches, CPU")
    print(f"{'backend':<40}{'requests':>9}{'req/s':>8}{'model s':>9}{'total s':>9}{'overhead':>10}"
          f"{'harness ms/req':>16}")
    for r in rows:
        overhead = "n/a" if r["overhead"] is None else f"{100 * r['overhead']:.1f}%"
        harness_ms = 1000 * (r["total_s"] - r["model_s"]) / r["requests"]
        print(f"{r['model']:<40}{r['requests']:>9}{r['req_per_s']:>8.1f}{r['model_s']:>9.2f}"
              f"{r['total_s']:>9.2f}{overhead:>10}{harness_ms:>16.1f}")


if __name__ == "__main__":
    main()
