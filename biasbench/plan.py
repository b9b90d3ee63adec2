"""`biasbench plan`: what a run will cost, before anything runs.

Loads the task and pool and resolves the model name (the model itself is not loaded), plans
the requests exactly as `run` does, keys every clip as the audio cache does, and prints:
requests, unique clips and how many are cached, audio hours to synthesise, and an estimate of
model time (GPU hours for local models) and API cost. The per-request figures come from
earlier runs of the same model found under --runs-dir (median `latency_s` of their tidy
tables; `usage.estimated_cost_usd` per request from OpenAI-backend manifests), else from the
stated defaults below; the output says which.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import typer

from biasbench.errors import BiasbenchError

# Defaults when no earlier run of the model is found (stated in the output).
DEFAULT_LATENCY_S = {"api": 1.0, "local": 0.25}  # seconds per request (batched local model / API)
DEFAULT_WORDS_PER_MINUTE = 150.0  # speech rate for clips not synthesised yet


def plan_command(
    task: str = typer.Option("mmlu", "--task", "-t"),
    pool: str = typer.Option("espeak-default", "--pool", "-p"),
    model: str = typer.Option(..., "--model", "-m"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    data_source: str = typer.Option("auto", help="auto, hf or local"),
    runs_dir: Path = typer.Option(Path("runs"), "--runs-dir", help="where earlier runs (their manifests) are"),
    offline_fallback: bool = typer.Option(False, "--offline-fallback"),
    allow_unbalanced: bool = typer.Option(False, "--allow-unbalanced"),
    audio_cache: Optional[Path] = typer.Option(None, "--audio-cache", hidden=True),
):
    """Print the number of requests, clips to synthesise, audio hours and the estimated cost of a run."""
    estimate = plan_estimate(task=task, pool=pool, model=model, limit=limit, data_source=data_source,
                             runs_dir=runs_dir, offline_fallback=offline_fallback,
                             allow_unbalanced=allow_unbalanced, audio_cache=audio_cache)
    print(format_estimate(estimate))


def plan_estimate(*, task: str, pool: str, model: str, limit: int | None = None, data_source: str = "auto",
                  runs_dir: Path = Path("runs"), offline_fallback: bool = False, allow_unbalanced: bool = False,
                  audio_cache: Path | None = None) -> dict:
    from biasbench.models.registry import resolve_model
    from biasbench.runner import plan_requests
    from biasbench.tasks.loader import load_task
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.cost import cloning_estimate
    from biasbench.tts.registry import get_tts_backend
    from biasbench.tts.synthesis import job_key
    from biasbench.voices.pool import load_pool

    loaded = load_task(task, data_source=data_source, limit=limit)
    voice_pool, _ = load_pool(pool, allow_unbalanced=allow_unbalanced)
    choice = resolve_model(model, offline_fallback=offline_fallback)
    plan = plan_requests(loaded, voice_pool, conditions=["text"] if choice.text_only else None)

    cache = AudioCache(audio_cache)
    jobs = [p.job for p in plan if p.job]
    versions = {}
    clips: dict[str, object] = {}
    for job in jobs:
        if job.backend not in versions:
            try:
                versions[job.backend] = get_tts_backend(job.backend).version()
            except BiasbenchError:
                versions[job.backend] = "unavailable"
        clips.setdefault(job_key(cache, job, versions[job.backend]), job)
    cached = {key for key in clips if cache.has(key)}
    cached_seconds = sum(cache.duration(key) or 0.0 for key in cached)
    new_seconds = sum(len(job.text.split()) / DEFAULT_WORDS_PER_MINUTE * 60 for key, job in clips.items()
                      if key not in cached)
    seconds_by_key = {key: (cache.duration(key) if key in cached else
                            len(job.text.split()) / DEFAULT_WORDS_PER_MINUTE * 60) for key, job in clips.items()}
    request_audio_s = sum(seconds_by_key.get(job_key(cache, p.job, versions[p.job.backend]), 0.0)
                          for p in plan if p.job)

    is_api = choice.backend in ("openai",) or choice.name.startswith("openai:")
    measured = measured_figures(Path(runs_dir), choice.name)
    if measured["latency_s"] is not None:
        latency, latency_source = measured["latency_s"], (f"measured: median of {measured['n_latency']} "
                                                          f"responses in {len(measured['runs'])} earlier run(s)")
    else:
        latency = DEFAULT_LATENCY_S["api" if is_api else "local"]
        latency_source = f"default ({latency} s/request; no earlier run of {choice.name} under {runs_dir})"
    cost_per_request = measured["cost_per_request"]
    return {
        "task": loaded.name, "pool": voice_pool.pool, "model": choice.name, "backend": choice.backend,
        "pipeline_check": choice.pipeline_check,
        "n_requests": len(plan), "n_items": len(loaded.items), "n_voices": len(voice_pool.voices),
        "samples": loaded.config.samples, "conditions": sorted({p.condition for p in plan}),
        "n_clips": len(clips), "n_clips_cached": len(cached), "n_clips_to_synthesise": len(clips) - len(cached),
        "audio_hours_to_synthesise": new_seconds / 3600, "audio_hours_cached": cached_seconds / 3600,
        "audio_hours_to_send": request_audio_s / 3600,
        "latency_s_per_request": latency, "latency_source": latency_source,
        "model_hours": len(plan) * latency / 3600, "is_api": is_api,
        "cost_per_request_usd": cost_per_request,
        "api_cost_usd": None if cost_per_request is None else cost_per_request * len(plan),
        "cost_source": measured["cost_source"],
        **cloning_estimate([job for key, job in clips.items() if key not in cached]),
    }


def measured_figures(runs_dir: Path, model_name: str) -> dict:
    """Median per-request latency and mean per-request API cost over earlier runs of `model_name`.
    Runs are matched on the resolved model name (the fingerprint needs the model loaded)."""
    import pandas as pd

    latencies, runs, cost, n_cost = [], [], 0.0, 0
    for manifest_path in sorted(runs_dir.glob("**/manifest.json")) if runs_dir.is_dir() else []:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("model", {}).get("name") != model_name:
            continue
        if manifest.get("merged_from"):  # its shards are counted on their own
            continue
        parquet = manifest_path.parent / "responses.parquet"
        if parquet.is_file():
            try:
                values = pd.read_parquet(parquet, columns=["latency_s"])["latency_s"].dropna()
            except Exception:  # noqa: BLE001 - an unreadable old export is just skipped
                values = []
            if len(values):
                latencies += [float(v) for v in values]
                runs.append(str(manifest_path.parent))
        usage = manifest.get("usage") or {}
        if usage.get("estimated_cost_usd") is not None and manifest.get("n_responses"):
            cost += float(usage["estimated_cost_usd"])
            n_cost += int(manifest["n_responses"])
    return {"latency_s": statistics.median(latencies) if latencies else None, "n_latency": len(latencies),
            "runs": runs, "cost_per_request": cost / n_cost if n_cost else None,
            "cost_source": (f"measured: usage.estimated_cost_usd over {n_cost} responses of earlier runs"
                            if n_cost else "no earlier run recorded an API cost for this model")}


def format_estimate(e: dict) -> str:
    lines = [
        f"Plan: task {e['task']}, pool {e['pool']}, model {e['model']} ({e['backend']})"
        + ("  [pipeline check model]" if e["pipeline_check"] else ""),
        f"  requests:              {e['n_requests']}  ({e['n_items']} items x {e['n_voices']} voices x "
        f"{e['samples']} samples; conditions: {', '.join(e['conditions'])})",
        f"  unique clips:          {e['n_clips']}  ({e['n_clips_cached']} cached, "
        f"{e['n_clips_to_synthesise']} to synthesise)",
        f"  audio to synthesise:   {e['audio_hours_to_synthesise']:.3f} h  (estimated at "
        f"{DEFAULT_WORDS_PER_MINUTE:.0f} words/min; cached: {e['audio_hours_cached']:.3f} h)",
        f"  audio sent to model:   {e['audio_hours_to_send']:.3f} h",
        f"  per-request latency:   {e['latency_s_per_request']:.4g} s  ({e['latency_source']})",
        f"  {'API time' if e['is_api'] else 'GPU/model time'}:        {e['model_hours']:.3f} h  (one replica; divide by replicas/shards)",
    ]
    if e.get("n_clips_to_clone"):
        lines.append(f"  voice cloning (GPU):   {e['cloning_hours']:.3f} h for {e['n_clips_to_clone']} clips  "
                     f"({e['cloning_source']})")
    if e["api_cost_usd"] is not None:
        lines.append(f"  API cost:              ${e['api_cost_usd']:.2f}  ({e['cost_source']})")
    elif e["is_api"]:
        lines.append(f"  API cost:              unknown ({e['cost_source']}; run a small --limit first)")
    return "\n".join(lines)
