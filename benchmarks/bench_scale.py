"""Speed-up of 2 Ray workers over 1 on the tiny model (warm audio cache), printed as a ratio.

  local     : one unsharded in-process run (torch may use every core), for reference
  ray x1    : --executor ray --workers 1 (one shard, one model replica, one CPU)
  ray x2    : --executor ray --workers 2 (two shards, two replicas, one CPU each), then merge

Both Ray runs share one local Ray instance (num_cpus = --cpus), started and warmed up (an
untimed 2-worker run, so worker processes have imported torch) before timing; each time
includes the tasks' model load, the answering and the merge.
Usage: .venv/bin/python benchmarks/bench_scale.py [--items 8] [--cpus 2]
Prints; asserts nothing. Times are wall seconds on this machine; read the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def options(items: int, out: Path):
    from biasbench.runner import RunOptions

    return RunOptions(task="mmlu", model="tiny-qwen2audio", data_source="local", limit=items, output_dir=out,
                      run_id="bench", progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import ray
    from rich.console import Console

    from biasbench.ray_executor import run_with_ray
    from biasbench.runner import run

    quiet = Console(stderr=True, quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(BIASBENCH_CACHE=str(Path(tmp) / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        run(options(args.items, Path(tmp) / "warm"), quiet)  # synthesises every clip, builds the tiny model
        start = time.perf_counter()
        run(options(args.items, Path(tmp) / "local"), quiet)
        local = time.perf_counter() - start

        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {k: os.environ[k] for k in ("BIASBENCH_CACHE", "HF_HUB_OFFLINE",
                                                                         "HF_DATASETS_OFFLINE", "PATH")}})
        times = {}
        try:
            # Untimed warm-up: two Ray workers start and import torch once, so neither timing pays it.
            run_with_ray(options(args.items, Path(tmp) / "ray-warm"), quiet, workers=2)
            for workers in (1, 2):
                start = time.perf_counter()
                result = run_with_ray(options(args.items, Path(tmp) / f"ray{workers}"), quiet, workers=workers)
                times[workers] = time.perf_counter() - start
        finally:
            ray.shutdown()
    print(f"tiny model, {result.n_total} requests ({args.items} items x 18 voices), Ray on {args.cpus} CPUs")
    print(f"  local unsharded : {local:7.2f} s")
    print(f"  ray, 1 worker   : {times[1]:7.2f} s")
    print(f"  ray, 2 workers  : {times[2]:7.2f} s")
    print(f"  speed-up 2 workers over 1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
