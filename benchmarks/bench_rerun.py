"""First run vs reruns with warm caches, side by side, on the tiny model and all default voices.

  cold    : empty cache: builds the tiny model, synthesises every clip, answers every request
  warm    : same cache, new run directory: model and audio reused, every request answered again
  resume  : the finished run again with --resume: nothing to synthesise or answer

Usage: .venv/bin/python benchmarks/bench_rerun.py [--items 10]
Prints; asserts nothing. Times are wall seconds on this machine; read the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed_run(items: int, out: Path, run_id: str, resume: bool = False) -> float:
    from biasbench.runner import RunOptions, run

    start = time.perf_counter()
    run(RunOptions(task="mmlu", model="tiny-qwen2audio", data_source="local", limit=items, output_dir=out,
                   run_id=run_id, resume=resume, progress=False))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BIASBENCH_CACHE"] = str(Path(tmp) / "cache")
        os.environ["HF_HUB_OFFLINE"] = "1"
        out = Path(tmp) / "runs"
        cold = timed_run(args.items, out, "cold")
        warm = timed_run(args.items, out, "warm")
        resume = timed_run(args.items, out, "warm", resume=True)
    requests = args.items * 18
    print(f"\n{args.items} MMLU items x 18 voices = {requests} requests, tiny-qwen2audio on CPU")
    print(f"{'run':<8}{'seconds':>10}{'vs cold':>10}")
    for name, seconds in [("cold", cold), ("warm", warm), ("resume", resume)]:
        print(f"{name:<8}{seconds:>10.2f}{cold / seconds:>9.1f}x")


if __name__ == "__main__":
    main()
