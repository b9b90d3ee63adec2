"""`biasbench run --executor ray`: the n shards of a run as Ray tasks, then one merge.

No cluster code of our own: each shard is one Ray task (`biasbench.runner.run` with
`shard=(i, n)`), which loads its own model replica -- one GPU per task when the run uses
CUDA, else one CPU -- so Ray's scheduler places one replica per GPU (or CPU worker). Ray
retries a task whose worker died (`max_retries`); the retried shard resumes its own store,
and `INSERT OR IGNORE` on the request key means nothing is lost or stored twice. When all
shards are done the driver merges them (biasbench/merge.py) into `<output_dir>/<run_id>/`,
beside the shard directories `<output_dir>/<run_id>-shard-<i>-of-<n>/`.

Shard directories are always resumed under Ray (a retried task must pick up what its first
attempt stored), so re-running a stopped Ray run continues it; the merged directory is only
replaced with --resume.

Test hook (used by tests/test_scale.py only): BIASBENCH_RAY_KILL_ONCE=<marker>:<shard>:<rows>
makes the worker of shard <shard> of a run whose output_dir holds <marker> SIGKILL itself once
it has stored <rows> responses, unless <marker> exists (it is created just before the kill),
so exactly one attempt dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import threading
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from tqdm import tqdm

from biasbench.errors import BiasbenchError
from biasbench.paths import INCLUDE_PATH_ENV, include_dirs, install_extra

# Environment the shard workers need to see the same caches, hub settings and devices as the driver.
_PASSED_ENV = ("BIASBENCH_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
               "OPENAI_API_KEY", "OPENAI_BASE_URL", "BIASBENCH_RAY_KILL_ONCE", "PATH")
KILL_ONCE_ENV = "BIASBENCH_RAY_KILL_ONCE"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BiasbenchError(f"--executor ray needs Ray: {install_extra('ray')} (or pip install 'ray>=2.9')") from None
    return ray


def run_with_ray(options, console: Console | None = None, *, address: str | None = None, workers: int | None = None,
                 num_cpus: int | None = None, max_retries: int = 3):
    """Run `options` as `workers` shards on Ray and merge them; returns the merged run's RunResult."""
    from biasbench.merge import merge_shards
    from biasbench.models.registry import TEXT_PREFIX
    from biasbench.runner import RunResult

    console = console or Console(stderr=True)
    ray = _import_ray()
    options = replace(options, output_dir=Path(options.output_dir).resolve(), progress=False,
                      audio_cache=Path(options.audio_cache).resolve() if options.audio_cache else None)
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    if include_dirs():  # --include-path folders: shards look up tasks and pools as this process does
        env[INCLUDE_PATH_ENV] = os.pathsep.join(str(folder.resolve()) for folder in include_dirs())
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env})
    try:
        use_gpu = _uses_gpu(options, ray)
        resources = ray.cluster_resources()
        count = workers or max(1, int(resources.get("GPU", 0) if use_gpu else resources.get("CPU", 1)))
        console.print(f"Ray: {count} shards on {resources.get('CPU', 0):.0f} CPUs / {resources.get('GPU', 0):.0f} GPUs "
                      f"(one model replica per {'GPU' if use_gpu else 'CPU'}), up to {max_retries} retries per shard.")
        task = ray.remote(_run_shard).options(max_retries=max_retries, num_gpus=1 if use_gpu else 0,
                                              num_cpus=0 if use_gpu else 1)
        pending = {task.remote(replace(options, shard=(i, count), resume=True)): i for i in range(count)}
        results = _wait_with_progress(ray, pending, options, count)
    finally:
        if started_here:
            ray.shutdown()

    run_id = results[0]["run_id"]
    merged = Path(options.output_dir) / run_id
    if merged.exists():
        if not options.resume:
            raise BiasbenchError(f"{merged} already exists; the shards are stored in {options.output_dir}. Pass "
                                 "--resume to re-merge them (stored answers are kept), or choose another --run-id.")
        shutil.rmtree(merged)
    merge_shards([Path(r["run_dir"]) for r in sorted(results, key=lambda r: r["index"])], merged)
    summary = json.loads((merged / "summary.json").read_text(encoding="utf-8"))
    n_total = json.loads((merged / "manifest.json").read_text(encoding="utf-8"))["plan"]["n_requests"]
    analysis = {k: v for k, v in summary.items() if k not in ("pipeline_check", "banner")}
    return RunResult(merged, n_total, sum(r["n_new"] for r in results), analysis, summary["pipeline_check"],
                     text_only=options.model.startswith(TEXT_PREFIX))


def _uses_gpu(options, ray) -> bool:
    if options.device.startswith("cuda"):
        return True
    if options.device == "cpu":
        return False
    return ray.cluster_resources().get("GPU", 0) > 0


def _wait_with_progress(ray, pending: dict, options, count: int) -> list[dict]:
    """Wait for every shard; the bar counts the responses stored across all shard stores."""
    results, started = [], time.time()
    with tqdm(total=None, desc="answering (all shards)", unit="req") as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in done:
                index = pending.pop(ref)
                result = ray.get(ref)  # a shard's BiasbenchError surfaces here (not retried)
                results.append({**result, "index": index})
                bar.total = result["n_total_run"]
            bar.n = _stored_so_far(Path(options.output_dir), count, started)
            bar.refresh()
    return results


def _stored_so_far(output_dir: Path, count: int, since: float) -> int:
    total = 0
    for store in output_dir.glob(f"*-shard-*-of-{count}/responses.sqlite"):
        try:
            if store.stat().st_mtime + 1 < since:
                continue  # an older run's shards
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.2) as db:
                total += db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        except (OSError, sqlite3.Error):
            pass
    return total


def _run_shard(options) -> dict:
    """One Ray task: one shard, with its own model replica. Runs in a Ray worker process."""
    from biasbench.runner import run

    _arm_kill_once(options)
    result = run(options, Console(stderr=True, quiet=True))
    manifest = json.loads((result.run_dir / "manifest.json").read_text(encoding="utf-8"))
    return {"run_dir": str(result.run_dir), "run_id": manifest["run_id"], "n_new": result.n_new,
            "n_total_run": manifest["plan"]["n_requests"], "complete": manifest.get("complete")}


def _arm_kill_once(options) -> None:
    spec = os.environ.get(KILL_ONCE_ENV)
    if not spec:
        return
    marker, shard, rows = spec.rsplit(":", 2)
    index, count = options.shard
    if int(shard) != index or Path(marker).exists() or Path(marker).resolve().parent != Path(options.output_dir):
        return

    def watch():
        while True:
            for store in Path(options.output_dir).glob(f"*-shard-{index}-of-{count}/responses.sqlite"):
                try:
                    with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=0.2) as db:
                        n = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
                except sqlite3.Error:
                    continue
                if n >= int(rows):
                    Path(marker).write_text(f"killed shard {index} at {n} rows\n")
                    os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
