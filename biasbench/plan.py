"""`biasbench plan`: what a run will cost, before anything runs.

Loads the task and pool and resolves the model name (the model itself is not loaded), plans
the requests exactly as `run` does, keys every clip as the audio cache does, and prints:
requests, unique clips and how many are cached, audio hours to synthesise, and an estimate of
model time (GPU hours for local models) and API cost. The per-request figures come from
earlier runs of the same model found under --runs-dir (median `latency_s` of their tidy
tables; `usage.estimated_cost_usd` per request from OpenAI-backend manifests), else from the
stated defaults below; the output says which.

For models whose architecture biasbench knows (biasbench/gpu_estimate.py), GPU hours are also
computed from FLOPs per request on A100/H100/H200, leaving out the requests the run will skip
(clips longer than the model hears, under --long-audio skip), with every assumption printed.
A model that cannot run on this machine (no GPU) is still planned: nothing is loaded.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Optional

import typer

from biasbench.cli_options import include_path_option
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
    long_audio: str = typer.Option("skip", help="as for run: clips over the model's limit are skipped or truncated"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="as for run: requests decoded together"),
    include_path: Optional[list[Path]] = include_path_option(),
):
    """Print the number of requests, clips to synthesise, audio hours and the estimated cost of a run."""
    if long_audio not in ("skip", "truncate"):
        raise BiasbenchError(f"--long-audio must be one of skip, truncate; got {long_audio!r}")
    estimate = plan_estimate(task=task, pool=pool, model=model, limit=limit, data_source=data_source,
                             runs_dir=runs_dir, offline_fallback=offline_fallback,
                             allow_unbalanced=allow_unbalanced, audio_cache=audio_cache, long_audio=long_audio,
                             batch_size=batch_size)
    print(format_estimate(estimate))


def plan_estimate(*, task: str, pool: str, model: str, limit: int | None = None, data_source: str = "auto",
                  runs_dir: Path = Path("runs"), offline_fallback: bool = False, allow_unbalanced: bool = False,
                  audio_cache: Path | None = None, long_audio: str = "skip", batch_size: int = 8) -> dict:
    from biasbench.runner import plan_requests
    from biasbench.tasks.loader import load_task
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.cost import cloning_estimate
    from biasbench.tts.registry import get_tts_backend
    from biasbench.tts.synthesis import job_key
    from biasbench.voices.pool import load_pool

    loaded = load_task(task, data_source=data_source, limit=limit)
    voice_pool, _ = load_pool(pool, allow_unbalanced=allow_unbalanced)
    choice, unavailable = _choice_for_plan(model, offline_fallback)
    plan = plan_requests(loaded, voice_pool, conditions=["text"] if choice.text_only else None)

    cache = AudioCache(audio_cache)
    jobs = [p.job for p in plan if p.job] + [f.job for p in plan for f in p.follow_ups if f.job]  # follow-up clips too
    n_calls = sum(1 + len(p.follow_ups) for p in plan)  # a multi-turn task: one model call per turn
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
    seconds = [None if p.job is None else seconds_by_key[job_key(cache, p.job, versions[p.job.backend])] for p in plan]
    compute = compute_estimate(choice.model, plan, seconds, loaded.config, long_audio, batch_size)
    if compute and measured["latency_s"] is None:  # the FLOP count beats a fixed default
        latency = compute["gpu_hours"]["H100"] * 3600 / max(len(plan), 1)
        latency_source = "computed from FLOPs on one H100, see below"
    return {
        "unavailable_here": unavailable,
        "compute": compute,
        "task": loaded.name, "pool": voice_pool.pool, "model": choice.name, "backend": choice.backend,
        "pipeline_check": choice.pipeline_check,
        "n_requests": n_calls, "n_items": len(loaded.items), "n_voices": len(voice_pool.voices),
        "samples": loaded.config.samples, "conditions": sorted({p.condition for p in plan}),
        "turns": 1 + len(loaded.config.follow_ups or []),
        "n_clips": len(clips), "n_clips_cached": len(cached), "n_clips_to_synthesise": len(clips) - len(cached),
        "audio_hours_to_synthesise": new_seconds / 3600, "audio_hours_cached": cached_seconds / 3600,
        "audio_hours_to_send": request_audio_s / 3600,
        "latency_s_per_request": latency, "latency_source": latency_source,
        "model_hours": n_calls * latency / 3600, "is_api": is_api,
        "cost_per_request_usd": cost_per_request,
        "api_cost_usd": None if cost_per_request is None else cost_per_request * n_calls,
        "cost_source": measured["cost_source"],
        **cloning_estimate([job for key, job in clips.items() if key not in cached]),
    }


def _choice_for_plan(model: str, offline_fallback: bool):
    """The model as `run` resolves it; an alias that cannot run here (no GPU, no hub) is still
    planned (nothing is loaded), with the reason kept for the output."""
    from biasbench.models.registry import ALIASES, ModelChoice, resolve_model

    try:
        return resolve_model(model, offline_fallback=offline_fallback), ""
    except BiasbenchError as exc:
        alias = ALIASES.get(model)
        if alias is None:
            raise
        return ModelChoice(model, alias.name, alias.backend, alias.model, pipeline_check=False), str(exc).split(". ")[0]


def _turns(e: dict) -> str:
    """' x N turns' for a multi-turn task (one model call per turn), else nothing."""
    return f" x {e['turns']} turns" if e.get("turns", 1) > 1 else ""


def compute_estimate(model_id: str, plan, seconds: list, config, long_audio: str, batch_size: int) -> dict | None:
    """GPU hours from FLOPs (biasbench.gpu_estimate) for a model whose architecture is known, else None.
    `seconds[i]` is request i's clip length (None for text requests)."""
    from biasbench.gpu_estimate import SPECS, gpu_hours, request_flops

    spec = SPECS.get(model_id)
    if spec is None:
        return None
    skip = long_audio == "skip"
    kept = [(p, s) for p, s in zip(plan, seconds) if not (skip and s is not None and s > spec.window_s)]
    words = [len(p.item.text_prompt.split()) + (len(p.item.spoken_text.split()) if p.job is None else 0)
             for p, _ in kept]
    flops = [request_flops(spec, s, w) for (_, s), w in zip(kept, words)]
    scored = config.output_type == "multiple_choice" and config.scoring == "logprobs"
    decode_steps = 0 if scored else len(kept) * (config.max_new_tokens - 1)  # upper bound: every answer runs to the cap
    return {"spec": spec, "n_skipped": len(plan) - len(kept), "n_counted": len(kept),
            "flops_per_request": sum(flops) / len(flops) if flops else 0.0, "total_flops": sum(flops),
            "mean_prompt_words": sum(words) / len(words) if words else 0.0, "decode_steps": decode_steps,
            "batch_size": batch_size, "long_audio": long_audio,
            "gpu_hours": gpu_hours(sum(flops), decode_steps, spec, batch_size)}


def format_compute(c: dict) -> list[str]:
    from biasbench.gpu_estimate import GPUS, TEMPLATE_TOKENS, TOKENS_PER_WORD, UTILISATION

    s = c["spec"]
    hours = ", ".join(f"{gpu} {h:.3g} h" for gpu, h in c["gpu_hours"].items())
    return [
        f"  GPU hours (computed):  {hours}  (one GPU; divide by replicas/shards)",
        f"    {c['n_counted']} requests, {c['flops_per_request'] / 1e12:.3g} TFLOP each on average "
        f"({c['total_flops'] / 1e15:.3g} PFLOP); {c['n_skipped']} left out: clips over {s.window_s:.0f} s are "
        + ("skipped by the run (--long-audio skip)" if c["long_audio"] == "skip"
           else "truncated (--long-audio truncate)"),
        f"    assumptions: {s.name}, 2 FLOP per parameter per token; audio encoder {s.encoder_params / 1e9:.2f} B params "
        f"over the padded {s.window_s:.0f} s window ({s.encoder_positions} positions) per clip; LM "
        f"{s.lm_params / 1e9:.2f} B params over {s.audio_tokens_per_s:.0f} audio tokens/s + prompt tokens "
        f"({TOKENS_PER_WORD} per word + {TEMPLATE_TOKENS} template; {c['mean_prompt_words']:.0f} words on average); "
        f"output head {s.head_params / 1e9:.2f} B params on the last position",
        f"    GPUs: " + ", ".join(f"{g} {t:.0f} TFLOP/s bf16, {b} TB/s" for g, (t, b) in GPUS.items())
        + f"; {UTILISATION:.0%} of peak reached (assumed; measure with benchmarks/gpu_check.py)"
        + (f"; {c['decode_steps']} generated tokens at memory bandwidth, batch {c['batch_size']} "
           "(upper bound: every answer runs to max_new_tokens)" if c["decode_steps"] else "; letters scored in one "
           "forward pass (no decoding)"),
    ]


def measured_figures(runs_dir: Path, model_name: str) -> dict:
    """Median per-request latency and mean per-request API cost over earlier runs of `model_name`.
    Runs are matched on the resolved model name (the fingerprint needs the model loaded)."""
    import pandas as pd

    from biasbench.store import check_manifest_fields

    latencies, runs, cost, n_cost = [], [], 0.0, 0
    for manifest_path in sorted(runs_dir.glob("**/manifest.json")) if runs_dir.is_dir() else []:
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            check_manifest_fields(manifest, manifest_path)
        except (OSError, ValueError, BiasbenchError):  # damaged or not a run: nothing to learn from it
            continue
        if (manifest.get("model") or {}).get("name") != model_name:
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
        f"{e['samples']} samples{_turns(e)}; conditions: {', '.join(e['conditions'])})",
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
    if e.get("compute"):
        lines += format_compute(e["compute"])
    if e.get("unavailable_here"):
        lines.append(f"  note: planned only (no model is loaded); {e['unavailable_here']}")
    if e["api_cost_usd"] is not None:
        lines.append(f"  API cost:              ${e['api_cost_usd']:.2f}  ({e['cost_source']})")
    elif e["is_api"]:
        lines.append(f"  API cost:              unknown ({e['cost_source']}; run a small --limit first)")
    return "\n".join(lines)
