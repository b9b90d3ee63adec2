"""One run: task x items x voices -> spoken requests -> batched model calls -> stored answers.

The runner is the only stage that knows every other stage; each of them it meets through
plain data (items, voice specs, cache keys, requests, responses, a tidy table).
"""

from __future__ import annotations

import json
import platform
import re
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path

import pandas as pd
from rich.console import Console
from tqdm import tqdm

import biasbench
from biasbench import conversation
from biasbench.analysis.summary import first_analysis, to_markdown
from biasbench.config import VoicePool, VoiceSpec, stable_hash
from biasbench.errors import BiasbenchError
from biasbench.formats import dumps
from biasbench.models.base import GenerationSettings, Request, takes_conversation
from biasbench.models.registry import ModelChoice, identity_fingerprint, load_backend, resolve_model
from biasbench.paths import checkout_commit
from biasbench.redact import redact_credentials
from biasbench.shard import check_shard, plan_record, select_shard, shard_dir_name, write_planned
from biasbench.store import (SCHEMA_VERSION, RunDir, StoredResponse, check_output_dir, check_run_id, disk_full,
                             stopped_by_full_disk, utc_now)
from biasbench.tasks.loader import Item, Task, answer_columns, item_columns, load_task
from biasbench.tasks.scoring import AUDIO_TOO_LONG
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.cache import AudioCache
from biasbench.tts.synthesis import SynthesisJob, synthesize_all
from biasbench.voices.pool import DEFAULT_POOL, engine_problems, load_pool, pool_fingerprint, unusable_voices

SYNTHESIS_FAILED = "synthesis_failed"
PIPELINE_CHECK_BANNER = ("PIPELINE CHECK: a tiny random model or a simulation answered, not a real speech "
                         "model. These numbers test the harness end to end; they measure no real model.")
PROXY_LABEL_NOTE = ("Voice demographic labels in this pool are proxies (label_source: proxy), not "
                    "self-reported identities.")


@dataclass
class RunOptions:
    task: str
    model: str
    pool: str = DEFAULT_POOL
    output_dir: Path = Path("runs")
    run_id: str | None = None
    resume: bool = False
    limit: int | None = None
    batch_size: int = 8
    dtype: str = "auto"
    device: str = "auto"
    revision: str | None = None
    base_url: str | None = None  # an OpenAI-compatible server for openai: models
    quantization: str | None = None  # hf backend on a GPU: "8bit" or "4bit" (bitsandbytes)
    adapter: str | None = None  # a LoRA adapter folder from `biasbench finetune`
    vllm_options: dict = field(default_factory=dict)  # vllm: tensor/data parallel sizes, max_model_len ...
    data_source: str = "auto"
    allow_unbalanced: bool = False
    allow_data_outside_task: bool = False  # read a task's local data from outside its folder tree
    offline_fallback: bool = False
    long_audio: str = "skip"  # skip: record as audio_too_long; truncate: send the first max seconds
    seed: int = 0
    tts_workers: int | None = None
    audio_cache: Path | None = None
    progress: bool = True
    shard: tuple[int, int] | None = None  # (i, n): answer only shard i of n (biasbench/shard.py)


TEXT_CONTROL_VOICE = "text-control"  # the voice_id of the no-voice control condition


@dataclass
class Planned:
    """One request before it meets the model: an item, spoken by a voice (or as text), one sample."""

    item: Item
    voice: VoiceSpec | None  # None for the text-only control
    condition: str  # "audio" or "text"
    sample_index: int
    job: SynthesisJob | None  # what to synthesise; None for text
    prompt_hash: str
    audio_key: str | None = None
    audio_seconds: float | None = None
    request_key: str = ""  # a multi-turn task: the conversation's key (each turn's: conversation.turn_keys)
    follow_ups: list = field(default_factory=list)  # a multi-turn task: conversation.FollowUp per later turn

    @property
    def voice_id(self) -> str:
        return self.voice.id if self.voice else TEXT_CONTROL_VOICE


@dataclass
class RunResult:
    run_dir: Path
    n_total: int
    n_new: int
    analysis: dict = field(default_factory=dict)
    pipeline_check: bool = False
    text_only: bool = False  # the text control (`text:<model>`): no voices by design
    unanswered: dict = field(default_factory=dict)  # unanswered_record(): requests that could not be made

    @property
    def has_voice_groups(self) -> bool:
        """False for a text-only run (the text: control), which has no voices to compare."""
        return bool(self.analysis.get("groupings"))


def run(options: RunOptions, console: Console | None = None) -> RunResult:
    console = console or Console(stderr=True)
    with ExitStack() as cleanup:  # releases the run directory's lock however the run ends
        try:
            return _run(options, console, cleanup)
        except (sqlite3.Error, OSError) as exc:
            if not disk_full(exc):
                raise
            # Any file of the run (the store, exports, the manifest) on a disk that filled up.
            raise stopped_by_full_disk(getattr(exc, "filename", None) or f"a file under {options.output_dir}",
                                       exc) from None


def _run(options: RunOptions, console: Console, cleanup: ExitStack) -> RunResult:
    check_run_id(options.run_id)
    check_output_dir(options.output_dir)  # before anything slow: a bad folder fails in a second
    task = load_task(options.task, data_source=options.data_source, limit=options.limit,
                     allow_data_outside=options.allow_data_outside_task)
    open_answer = task.open_answer_record()  # an open-answer task's similarity: a missing package fails here
    pool, pool_path = load_pool(options.pool, allow_unbalanced=options.allow_unbalanced)
    unspeakable = engine_problems(pool)
    if unspeakable:  # every clip of such a voice would fail, after a whole run: refuse now
        raise BiasbenchError(f"voice pool {pool_path}: " + "; ".join(unspeakable))
    choice = resolve_model(options.model, offline_fallback=options.offline_fallback)
    _refuse_unusable_pool(pool, pool_path, task, choice)
    if choice.pipeline_check:
        console.print(f"[bold yellow]{PIPELINE_CHECK_BANNER}[/]" + (f"\n{choice.note}" if choice.note else ""))
    backend = load_backend(choice, dtype=options.dtype, device=options.device, revision=options.revision,
                           base_url=options.base_url, quantization=options.quantization,
                           vllm_options=options.vllm_options, adapter=options.adapter)
    _fit_simulation(backend, task)
    _check_conversation(task, choice, backend, options)
    settings = GenerationSettings(max_new_tokens=task.config.max_new_tokens, temperature=task.config.temperature,
                                  top_p=task.config.top_p, seed=options.seed)

    # `text:<model>` (the text control): the text condition only, so no audio is synthesised.
    plan = plan_requests(task, pool, conditions=["text"] if choice.text_only else None)
    # Sharding (biasbench/shard.py): record the whole plan's size and key hash (for `merge`), then
    # keep only this shard's requests, so only their clips are synthesised. No-op when unsharded.
    plan_info = plan_record(plan, check_shard(options.shard))
    plan = select_shard(plan, options.shard)
    cache = AudioCache(options.audio_cache)
    manifest = _manifest(options, task, pool_fingerprint(pool, pool_path), choice, backend, settings)
    manifest["plan"] = plan_info  # sharding: what merge checks completeness against
    if open_answer:  # what the metrics rest on (recomputed from the stored text, so not part of the identity)
        manifest["open_answer"] = open_answer
    _find_moved_run(options, manifest, console)
    # Claimed before synthesis: a second process on this run, or a store that cannot be read,
    # is refused before any slow work, and never sends a request twice.
    run_dir = _open_run_dir(options, manifest)
    cleanup.callback(run_dir.unlock)
    synthesis = synthesize_all(_synthesis_jobs(plan), cache, workers=options.tts_workers, progress=options.progress)
    manifest["synthesis"] = _synthesis_record(synthesis)
    _say_what_was_repaired(synthesis, cache, console)
    if options.shard:
        write_planned(run_dir.path, plan)  # lets merge name exactly what a shard is missing
    for p in plan:
        _attach_audio(p, synthesis, cache)
        p.request_key = _request_key(p, manifest, options.long_audio)

    store = run_dir.open_store()
    try:
        store.add_prompts({p.prompt_hash: (p.item.spoken_text, p.item.text_prompt) for p in plan})
        pending = _pending(plan, store)
        console.print(f"{len(plan)} {_unit(task)} ({len(task.items)} items x {len(pool.voices)} voices x "
                      f"{task.config.samples} samples, conditions: {', '.join(sorted({p.condition for p in plan}))}); "
                      f"{len(plan) - len(pending)} already stored, {len(pending)} to run.")
        failures: list[dict] = []
        n_new = _answer_all(pending, backend, task, settings, options, store, cache, failures)
        table = tidy_table(store.to_frame(), task, pool.voices, manifest)
    finally:
        store.close()
    run_dir.export(table)
    analysis = first_analysis(table, task.config.output_type)
    _write_summary(run_dir, analysis, manifest, choice)
    unanswered = unanswered_record(table, failures, manifest["synthesis"], _planned_rows(plan))
    manifest.update(finished_at=utc_now(), n_responses=len(table),
                    complete=len(table) == _planned_rows(plan) and not unanswered["n"],
                    failed_requests=failures[:100], n_failed_requests=len(failures), unanswered=unanswered,
                    usage=backend.usage() if hasattr(backend, "usage") else None)
    run_dir.write_manifest(manifest)
    return RunResult(run_dir.path, _planned_rows(plan), n_new, analysis, choice.pipeline_check, choice.text_only,
                     unanswered)


def _say_what_was_repaired(synthesis, cache: AudioCache, console: Console) -> None:
    if synthesis.repaired:
        console.print(f"{synthesis.repaired} damaged clips in the audio cache were synthesised again.")
    if synthesis.changed:
        console.print(f"warning: {synthesis.changed} clips in the audio cache {cache.root} had changed since they "
                      "were written (their content no longer matched the digest recorded then: swapped or "
                      "overwritten) and were synthesised again.", markup=False, highlight=False)


def _follow_ups(task: Task) -> list[str]:
    """A multi-turn task's follow-up texts ([] for a single-turn task, or a config made without the field)."""
    return getattr(task.config, "follow_ups", None) or []


def _unit(task: Task) -> str:
    """What one planned unit is: a request, or (a multi-turn task) a conversation of several turns."""
    follow_ups = _follow_ups(task)
    return f"conversations of {len(follow_ups) + 1} turns" if follow_ups else "requests"


def _planned_rows(plan: list[Planned]) -> int:
    """Rows the store holds when the plan is done: one per request, one per turn of a conversation."""
    return sum(1 + len(p.follow_ups) for p in plan)


def _check_conversation(task: Task, choice: ModelChoice, backend, options: RunOptions) -> None:
    """A multi-turn task needs a backend that takes a conversation; refused before any work otherwise."""
    if not _follow_ups(task):
        return
    if not takes_conversation(backend):
        raise BiasbenchError(f"task {task.name} is a conversation (follow_ups), and model {choice.name} "
                             f"(backend {choice.backend}) cannot take one: it answers single turns only. Use a "
                             "backend that carries earlier turns (hf audio LMs, openai:, vllm:, cascade:, text:), "
                             "or a task without follow_ups.")
    if options.shard:
        raise BiasbenchError(f"task {task.name} is a conversation (follow_ups): --shard splits single requests "
                             "and does not split conversations yet; run it unsharded")


def _fit_simulation(backend, task: Task) -> None:
    """A simulated listener (never a model) is told what the task can score, so its planted
    effect shows on any task (biasbench/models/simulated.py)."""
    fit = getattr(backend, "fit_task", None)
    if not callable(fit):
        return
    config = task.config
    phrases = None
    if config.output_type == "generate_categorical":
        from biasbench.tasks.lexicon import category_phrases

        phrases = category_phrases(config, task.path)
    numeric = (config.numeric.min, config.numeric.max) if config.numeric else None
    fit(config.output_type, phrases=phrases, numeric_range=numeric)


def _refuse_unusable_pool(pool: VoicePool, pool_path: Path, task: Task, choice: ModelChoice) -> None:
    """A pool none of whose voices can be spoken (every reference clip or recordings table
    unreadable) would only store `synthesis_failed` rows: refused before any work, naming the files."""
    if choice.text_only or "audio" not in task.config.conditions:
        return
    problems = [problem.removeprefix(f"voice pool {pool_path}: ") for problem in unusable_voices(pool)]
    if problems and len(problems) == len(pool.voices):
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more voices" if len(problems) > 3 else "")
        raise BiasbenchError(f"voice pool {pool_path}: none of its {len(pool.voices)} voices can be spoken: "
                             f"{shown}")


def unanswered_record(table: pd.DataFrame, failures: list[dict], synthesis: dict, n_planned: int) -> dict:
    """The planned requests left without an answer, by reason: their clip could not be made
    (`synthesis_failed` rows) or the model could not be asked (`failures`, not stored).
    A --resume retries both."""
    unspoken = int((table["status"] == SYNTHESIS_FAILED).sum()) if "status" in table else 0
    first = {}
    if unspoken:
        reasons = synthesis.get("failures") or []
        first["synthesis_failed"] = reasons[0]["error"] if reasons else "see the earlier run's manifest"
    if failures:
        first["failed_when_asked"] = failures[0]["error"]
    return {"n": unspoken + len(failures), "of": n_planned, "synthesis_failed": unspoken,
            "failed_when_asked": len(failures), "first_reason": first}


def unanswered_line(record: dict) -> str | None:
    """One line saying how many requests were not answered and why, or None when all were."""
    if not record or not record.get("n"):
        return None
    parts = []
    if record.get("synthesis_failed"):
        parts.append(f"{record['synthesis_failed']} could not be spoken (synthesis failed; first: "
                     f"{record['first_reason'].get('synthesis_failed')})")
    if record.get("failed_when_asked"):
        parts.append(f"{record['failed_when_asked']} failed when asked and were not stored (first: "
                     f"{record['first_reason'].get('failed_when_asked')})")
    return (f"{record['n']} of {record['of']} requests were not answered: {'; '.join(parts)}. "
            "Rerun the same command with --resume to retry them.")


# ---------------------------------------------------------------- planning


def plan_requests(task: Task, pool: VoicePool, conditions: list[str] | None = None) -> list[Planned]:
    """Every (item, condition, voice, sample) the run must answer, in a fixed order.
    `conditions` overrides the task's (the text control plans ["text"] whatever the task says)."""
    conditions = task.config.conditions if conditions is None else conditions
    plan = []
    for item in task.items:
        prompt_hash = stable_hash([item.spoken_text, item.text_prompt, list(item.choices), item.reference])
        for sample in range(task.config.samples):
            if "text" in conditions:
                plan.append(Planned(item, None, "text", sample, None, prompt_hash,
                                    follow_ups=conversation.plan_follow_ups(_follow_ups(task), None, None)))
            if "audio" in conditions:
                plan += [Planned(item, voice, "audio", sample,
                                 SynthesisJob.speak(voice, item.spoken_text, pool.loudness_target), prompt_hash,
                                 follow_ups=conversation.plan_follow_ups(_follow_ups(task), voice,
                                                                         pool.loudness_target))
                         for voice in pool.voices]
    return plan


def _synthesis_jobs(plan: list[Planned]) -> list[SynthesisJob]:
    """Every clip the plan needs, once: each first question, and each follow-up in each voice."""
    jobs = [p.job for p in plan if p.job] + [f.job for p in plan for f in p.follow_ups if f.job]
    return list(dict.fromkeys(jobs))


def _pending(plan: list[Planned], store) -> list[Planned]:
    """What is still to answer: planned requests not stored, or (multi-turn tasks) conversations not
    stored whole."""
    if any(p.follow_ups for p in plan):
        return conversation.pending_conversations(plan, store)
    done = store.done_keys()
    return [p for p in plan if p.request_key not in done]


def _attach_audio(p: Planned, synthesis, cache: AudioCache) -> None:
    if p.job is not None and synthesis.ok(p.job):
        p.audio_key = synthesis.keys[p.job]
        p.audio_seconds = cache.duration(p.audio_key)
    conversation.attach_follow_up_audio(p.follow_ups, synthesis, cache)


def _request_key(p: Planned, manifest: dict, long_audio: str) -> str:
    """Everything that can change this answer. Same key <=> the stored answer is reusable. A
    conversation's key covers its follow-ups too (conversation.conversation_key)."""
    key = _first_turn_key(p, manifest, long_audio)
    return conversation.conversation_key(key, p.follow_ups) if p.follow_ups else key


def _first_turn_key(p: Planned, manifest: dict, long_audio: str) -> str:
    return stable_hash({
        "model": manifest["model"]["identity"],
        "settings": manifest["generation"],
        "scoring": manifest["task"]["scoring"],
        "item": p.item.item_id,
        "prompt": p.prompt_hash,
        "target": p.item.target,
        "condition": p.condition,
        "sample": p.sample_index,
        "voice": p.voice_id,
        "audio": p.audio_key,
        "long_audio": long_audio,
    })


def _find_moved_run(options: RunOptions, manifest: dict, console: Console) -> None:
    """--resume without --run-id, where the derived run directory does not exist: a run in the
    output folder with the same identity (task, pool, model content, settings: the same request
    keys) is that run, under the name it was started with (e.g. the model's folder was renamed).
    Continuing it asks nothing twice. Exactly one such run, or none is chosen."""
    output_dir = Path(options.output_dir)
    derived = output_dir / shard_dir_name(manifest["run_id"], options.shard)
    if not options.resume or options.run_id or derived.exists():
        return
    same = []
    for path in sorted(output_dir.glob("*/manifest.json")):
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a run, or damaged: never a match
        if (isinstance(old, dict) and old.get("identity_hash") == manifest["identity_hash"]
                and isinstance(old.get("plan"), dict) and old["plan"].get("shard") == manifest["plan"]["shard"]
                and isinstance(old.get("run_id"), str)
                and path.parent.name == shard_dir_name(old["run_id"], options.shard)):
            same.append(old["run_id"])
    if len(same) == 1:
        console.print(f"Resuming {output_dir / shard_dir_name(same[0], options.shard)}: the same task, pool, model "
                      "and settings (the model's name or folder differs from when it started).", markup=False)
        manifest["run_id"] = same[0]


def _open_run_dir(options: RunOptions, manifest: dict) -> RunDir:
    """The run's directory, locked for this process, its manifest written and its store readable."""
    run_dir = RunDir(Path(options.output_dir) / shard_dir_name(manifest["run_id"], options.shard))
    run_dir.lock()
    try:
        _claim(run_dir, options, manifest)
    except BaseException:
        run_dir.unlock()
        raise
    return run_dir


def _claim(run_dir: RunDir, options: RunOptions, manifest: dict) -> None:
    if run_dir.exists():
        old = run_dir.read_manifest()
        if old.get("identity_hash") != manifest["identity_hash"]:
            raise BiasbenchError(f"{run_dir.path} holds a run with a different task, pool, model or "
                                 "settings; choose another --run-id or --output-dir (nothing was changed).")
        if not run_dir.store_path.exists():
            raise BiasbenchError(f"{run_dir.store_path} is missing, though {run_dir.manifest_path} says this run "
                                 "was started: its answers would all be asked again. Restore the file, or remove "
                                 f"{run_dir.path} to start the run afresh.")
        # A run stopped before its first answer (a fault in synthesis, say) has nothing to protect.
        if not options.resume and _stored_count(run_dir):
            raise BiasbenchError(f"{run_dir.path} already exists. Pass --resume to continue or re-export "
                                 "it (stored answers are kept and never re-run), or choose another --run-id.")
        manifest["started_at"] = old.get("started_at", manifest["started_at"])
        manifest["resumed_at"] = old.get("resumed_at", []) + [utc_now()]
    run_dir.open_store().close()  # before the manifest: a run with a manifest but no store lost it
    run_dir.create(manifest)


def _stored_count(run_dir: RunDir) -> int:
    store = run_dir.open_store()
    try:
        return store.count()
    finally:
        store.close()


# ---------------------------------------------------------------- answering


def _answer_all(pending: list[Planned], backend, task: Task, settings, options: RunOptions, store,
                cache: AudioCache, failures: list[dict]) -> int:
    limit = backend.max_audio_seconds
    too_long = [p for p in pending if limit and conversation.longest_clip(p) > limit]
    unspoken = [p for p in pending if conversation.clips_missing(p)]
    if too_long and options.long_audio == "skip":
        store.add([row for p in too_long for row in _unanswered_rows(p, AUDIO_TOO_LONG)], supersedes=SYNTHESIS_FAILED)
    store.add([row for p in unspoken for row in _unanswered_rows(p, SYNTHESIS_FAILED)])
    # A slot answered by an earlier run (or a placeholder left beside its retry's answer by an
    # older biasbench) keeps only its answer: one row per planned request, never two.
    store.drop_superseded(SYNTHESIS_FAILED)
    skip = {id(p) for p in unspoken} | ({id(p) for p in too_long} if options.long_audio == "skip" else set())
    todo = sorted((p for p in pending if id(p) not in skip), key=lambda p: p.audio_seconds or 0.0)
    n_new = _answer_in_batches(todo, backend, task, settings, options, store, cache, failures)
    return n_new + _planned_rows(too_long if options.long_audio == "skip" else []) + _planned_rows(unspoken)


def _answer_in_batches(todo: list[Planned], backend, task: Task, settings, options: RunOptions, store,
                       cache: AudioCache, failures: list[dict]) -> int:
    """Answer `todo` (sorted by duration, so each batch holds clips of similar length: little
    padding) batch by batch, storing each batch before the next is answered."""
    limit, size = backend.max_audio_seconds, options.batch_size
    batches = [todo[start:start + size] for start in range(0, len(todo), size)]
    n_new = 0
    # One thread reads the next batch's clips while the model answers this one: a read costs
    # about a millisecond per request, and overlapped it costs no wall time (soundfile reads
    # outside the GIL). One batch ahead at most, so memory stays bounded.
    with tqdm(total=len(todo), desc="answering", unit="req", disable=not options.progress) as bar, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="biasbench-read") as reader:
        free = task.config.output_type == "generate_open"
        upcoming = reader.submit(_requests, batches[0], settings, limit, cache, free) if batches else None
        for index, batch in enumerate(batches):
            requests = upcoming.result()  # a read error surfaces here, for the batch it belongs to
            if index + 1 < len(batches):
                upcoming = reader.submit(_requests, batches[index + 1], settings, limit, cache, free)
            # One transaction per batch, committed before the next batch is answered: a killed
            # run loses at most the batch in flight, and a resumed one skips every stored key.
            # A multi-turn task's batch is whole conversations, answered turn by turn.
            answered = (_answer_conversations(batch, requests, backend, task, limit, cache, failures)
                        if _follow_ups(task) else _answer_batch(batch, requests, backend, task, limit, failures))
            n_new += store.add(answered, supersedes=SYNTHESIS_FAILED)
            bar.update(len(batch))
    return n_new


def _requests(batch: list[Planned], settings, limit, cache: AudioCache, open_answer: bool = False) -> list[Request]:
    return [_request(p, settings, limit, cache, open_answer) for p in batch]


def _ask(backend, task: Task, requests: list[Request]):
    """One batched backend call: option scoring for a logprobs multiple-choice task, generation otherwise."""
    if task.config.output_type == "multiple_choice" and task.config.scoring == "logprobs":
        return backend.score_choices(requests)
    return backend.generate(requests)


def _answer_batch(batch: list[Planned], requests: list[Request], backend, task: Task, limit,
                  failures: list[dict]) -> list[StoredResponse]:
    responses = _ask(backend, task, requests)
    stored = []
    for p, request, response in zip(batch, requests, responses):
        if response.error:  # not stored: a later --resume retries it
            failures.append({"item_id": p.item.item_id, "voice_id": p.voice_id,
                             "error": redact_credentials(response.error)})  # any backend's, a plugin's too
            continue
        stored.append(_stored_response(p, response, task, limit))
    return stored


def _answer_conversations(batch: list[Planned], requests: list[Request], backend, task: Task, limit,
                          cache: AudioCache, failures: list[dict]) -> list[StoredResponse]:
    """A batch of whole conversations (biasbench/conversation.py): each turn one call across the batch."""
    return conversation.answer_conversations(
        batch, requests, lambda turn_requests: _ask(backend, task, turn_requests),
        lambda p, response, turn, key: _stored_response(p, response, task, limit, turn, key), limit, cache, failures)


def _stored_response(p: Planned, response, task: Task, limit, turn: int = 0, key: str | None = None) -> StoredResponse:
    """The stored row of one answer (a conversation's turn `turn`, under its turn key `key`; a follow-up's
    row names the follow-up's clip)."""
    scored = task.scorer(p.item, response.text, response.option_logprobs)
    heard = p.follow_ups[turn - 1] if turn else p
    return StoredResponse(
        request_key=key or p.request_key, turn=turn, item_id=p.item.item_id, voice_id=p.voice_id,
        condition=p.condition, sample_index=p.sample_index, prompt_hash=p.prompt_hash, audio_key=heard.audio_key,
        audio_seconds=heard.audio_seconds,
        audio_truncated=int(bool(limit and heard.audio_seconds and heard.audio_seconds > limit)),
        response_text=response.text,
        option_logprobs=dumps(response.option_logprobs) if response.option_logprobs else None,
        answer=scored.answer, target=_target(p.item), status=scored.status, correct=scored.correct,
        value=scored.value, latency_s=response.latency_s, n_input_tokens=response.n_input_tokens,
        transcript=response.transcript, cer=scored.cer)


def _request(p: Planned, settings: GenerationSettings, limit: float | None, cache: AudioCache,
             open_answer: bool = False) -> Request:
    # Each sample gets its own seed, so n samples of one (item, voice) are n different draws.
    settings = replace(settings, seed=settings.seed + p.sample_index)
    common = dict(request_id=p.request_key, sampling_rate=SAMPLE_RATE, choices=p.item.letters or None,
                  settings=settings, item_id=p.item.item_id, voice_id=p.voice_id, open_answer=open_answer)
    if p.condition == "text":  # the control: what the voice would have said, as text
        return Request(prompt=f"{p.item.spoken_text}\n{p.item.text_prompt}".strip(), audio=None, **common)
    audio = cache.get(p.audio_key)  # read lazily, one batch at a time
    if audio is None:
        raise BiasbenchError(f"audio for voice {p.voice_id}, item {p.item.item_id} vanished from the cache or changed "
                             "since it was checked; rerun the same command with --resume to make it again")
    if limit and len(audio) > limit * SAMPLE_RATE:
        audio = audio[: int(limit * SAMPLE_RATE)]  # the 'truncate' policy, recorded in audio_truncated
    return Request(prompt=p.item.text_prompt, audio=audio, **common)


def _target(item: Item) -> str | None:
    return item.letters[item.target] if item.target is not None else (item.reference or None)


def _unanswered_rows(p: Planned, status: str) -> list[StoredResponse]:
    """A slot that could not be asked (status says why): one row, or one per turn of a conversation."""
    if not p.follow_ups:
        return [_unanswered(p, status)]
    return [replace(_unanswered(p, status), request_key=key, turn=k) for k, key in enumerate(conversation.turn_keys(p))]


def _unanswered(p: Planned, status: str) -> StoredResponse:
    return StoredResponse(
        request_key=p.request_key, item_id=p.item.item_id, voice_id=p.voice_id, condition=p.condition,
        sample_index=p.sample_index, prompt_hash=p.prompt_hash, audio_key=p.audio_key,
        audio_seconds=p.audio_seconds, audio_truncated=0, response_text=None, option_logprobs=None, answer=None,
        target=_target(p.item), status=status, correct=None, value=None, latency_s=None, n_input_tokens=None)


# ---------------------------------------------------------------- outputs


def tidy_table(stored: pd.DataFrame, task: Task, voices: list[VoiceSpec], manifest: dict) -> pd.DataFrame:
    """One row per response, with the voice's labels and the item's metadata beside it."""
    voice_labels = pd.DataFrame([{"voice_id": v.id, "gender": v.gender, "ethnicity": v.ethnicity,
                                  "accent": v.accent, "label_source": v.label_source} for v in voices])
    stratum = task.config.sample.stratify_by
    items = pd.DataFrame([{"item_id": i.item_id, **({"stratum": i.meta.get(stratum)} if stratum else {}),
                           **item_columns(i, task.config)} for i in task.items])
    table = stored.drop(columns=["option_logprobs"]).merge(voice_labels, on="voice_id", how="left")
    if not _follow_ups(task):  # single-turn tasks keep their columns
        table = table.drop(columns=["turn"], errors="ignore")
    table = answer_columns(table.merge(items, on="item_id", how="left"), task)
    table.insert(0, "run_id", manifest["run_id"])
    table.insert(1, "task", task.name)
    table.insert(2, "model", manifest["model"]["name"])
    return table


def _write_summary(run_dir: RunDir, analysis: dict, manifest: dict, choice: ModelChoice) -> None:
    banner = PIPELINE_CHECK_BANNER if choice.pipeline_check else ""
    if "proxy" in manifest["pool"]["label_sources"]:
        banner = f"{banner} {PROXY_LABEL_NOTE}".strip()
    title = f"{manifest['task']['task']} — {manifest['model']['name']} — pool {manifest['pool']['pool']}"
    (run_dir.path / "summary.json").write_text(dumps(
        {"pipeline_check": choice.pipeline_check, "banner": banner, **analysis}, indent=2), encoding="utf-8")
    (run_dir.path / "summary.md").write_text(to_markdown(analysis, title=title, banner=banner), encoding="utf-8")


def _manifest(options: RunOptions, task: Task, pool: dict, choice: ModelChoice, backend, settings) -> dict:
    """Everything needed to redo the run. `identity_hash` covers what makes answers differ."""
    # A model spec may hold a URL (a plugin's NAME:https://...): its credentials go nowhere, the
    # run id, the tables and the summary included (which all take the name from here).
    model = {"requested": redact_credentials(choice.requested), "name": redact_credentials(choice.name),
             "backend": choice.backend,
             "pipeline_check": choice.pipeline_check, "note": choice.note,
             "fingerprint": backend.fingerprint()}
    # Identity follows content, not location: a local model moved elsewhere is the same run.
    model["identity"] = identity_fingerprint(model["fingerprint"])
    task_info = {**task.fingerprint(), "scoring": task.config.scoring, "config": task.config.model_dump()}
    identity = {"task": task_info["items_hash"], "task_config": task_info["config_hash"], "pool": pool["hash"],
                "model": model["identity"], "generation": asdict(settings), "long_audio": options.long_audio}
    identity_hash = stable_hash(identity)
    # Model specs like cascade:a+b or hf:org/name become safe directory names.
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", model["name"]).strip("_")
    run_id = options.run_id or f"{task.name}-{safe_model}-{identity_hash[:10]}"
    return {
        "run_id": run_id, "identity_hash": identity_hash, "started_at": utc_now(),
        "schema_version": SCHEMA_VERSION,
        "harness": {"name": "biasbench", "version": biasbench.__version__, "git_commit": checkout_commit()},
        "command": redact_credentials(" ".join(sys.argv)),
        "options": {k: redact_credentials(str(v)) for k, v in asdict(options).items()},
        "task": task_info, "pool": pool, "model": model, "generation": asdict(settings),
        "long_audio_policy": options.long_audio, "seeds": {"generation": options.seed,
                                                           "sample": task.config.sample.seed},
        "versions": _versions(), "platform": platform.platform(), "python": platform.python_version(),
    }


def _synthesis_record(synthesis) -> dict:
    return {"made": synthesis.made, "reused": synthesis.reused, "failed": synthesis.failed,
            "repaired": synthesis.repaired, "changed": synthesis.changed,
            "failures": [{"voice_id": j.voice_id, "text": j.text[:80], "error": e} for j, e in synthesis.failures[:50]]}


def _versions() -> dict:
    names = ["numpy", "pandas", "scipy", "torch", "transformers", "tokenizers", "soundfile", "statsmodels"]
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found

