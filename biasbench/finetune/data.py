"""Training data for the debiasing fine-tunes: instruction pairs, voice pools, spoken examples.

Text rows (instruction, response) are read from a local JSONL/CSV/Parquet or a hub dataset;
each instruction is spoken by every voice of a TRAINING pool (balanced, and sharing no voice
with the EVALUATION pool, checked by id and by TTS parameters, so the before/after proof is
on voices the model never heard). Responses stay text.

Audio is never held in memory: a `SpokenExample` carries only the audio cache key, and the
collate function (collate.py) reads each batch's clips from the `AudioCache` when it builds
the batch. `CounterfactualSampler` orders the examples so that each batch holds one
instruction spoken by several voices, one per gender x ethnicity cell where it can.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from biasbench.config import VoicePool, VoiceSpec, stable_hash
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.finetune.config import FinetuneConfig, config_path, resolve_pool
from biasbench.store import RunDir
from biasbench.tts.cache import AudioCache, canonical_json
from biasbench.tts.synthesis import SynthesisJob, synthesize_all
from biasbench.voices.pool import check_balance, load_pool, pool_fingerprint

# --------------------------------------------------------------------------- text rows


@dataclass(frozen=True)
class InstructionPair:
    """One training row: what a voice speaks, and the text answer the model should give."""

    pair_id: str
    instruction: str  # spoken by every training voice
    response: str  # the target answer, text
    text_prompt: str = ""  # shown in text beside the clip


def load_instruction_pairs(config: FinetuneConfig, *, data_source: str = "auto") -> tuple[list[InstructionPair], dict]:
    """The SFT rows named by `config.data`, validated; (pairs, where they came from).

    Refuses a dataset without the instruction/response columns (naming the columns it has),
    duplicate ids, and a training set that is empty once blank rows are dropped."""
    from biasbench.tasks.sources import choose_source, load_rows

    path = config_path(config)
    if config.data is None:
        raise ConfigError(path, "data", "SFT needs 'data' (local: {path: ...} and/or hf: {path: ...})")
    source = choose_source(config.data, data_source, path)
    rows = load_rows(config.data, source, path, allow_outside=True)  # the user's own training config, not a task
    wanted = [config.instruction_field, config.response_field, config.text_field, config.data.id_field]
    missing = [c for c in wanted if c is not None and c not in rows.columns]
    if missing:
        raise ConfigError(path, "data", f"the training data has no column(s) {missing}; it has "
                          f"{list(map(str, rows.columns))}. Set instruction_field / response_field / "
                          "text_field / data.id_field to the right column names.")
    if config.limit is not None:
        rows = rows.iloc[: config.limit]
    pairs, blank = [], 0
    for index, row in enumerate(rows.to_dict("records")):
        instruction = _text(row.get(config.instruction_field))
        response = _text(row.get(config.response_field))
        if not instruction or not response:
            blank += 1
            continue
        pair_id = str(row[config.data.id_field]) if config.data.id_field else f"row-{index:05d}"
        text_prompt = _text(row.get(config.text_field)) if config.text_field else config.text_prompt
        pairs.append(InstructionPair(pair_id, instruction, response, text_prompt))
    if not pairs:
        raise ConfigError(path, "data", f"the training set is empty: {len(rows)} rows, {blank} with a blank "
                          f"{config.instruction_field!r} or {config.response_field!r}")
    ids = pd.Series([p.pair_id for p in pairs])
    if ids.duplicated().any():
        raise ConfigError(path, "data.id_field", f"duplicate ids, e.g. {ids[ids.duplicated()].iloc[0]!r}")
    info = {"source": source, "n_rows": len(rows), "n_pairs": len(pairs), "n_blank_dropped": blank,
            "data_hash": data_hash(pairs)}
    if source == "local":
        local = config.data.local
        resolved = [str((path.parent / p).resolve()) for p in local.paths]
        info["path"] = resolved[0] if isinstance(local.path, str) else resolved
    else:
        info["hf"] = config.data.hf.model_dump()
    return pairs, info


def _text(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).strip()


def data_hash(pairs) -> str:
    """sha256 of the rows' content (ids, texts): the same data always gives the same hash."""
    return stable_hash([asdict(p) for p in pairs])


def split_pairs(pairs: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, held out): a seeded `fraction` of the rows held out (at least one when > 0)."""
    if fraction <= 0:
        return list(pairs), []
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_out = max(1, round(fraction * len(pairs)))
    if n_out >= len(pairs):
        raise BiasbenchError(f"eval_fraction {fraction} leaves no training rows out of {len(pairs)}")
    held = set(order[:n_out])
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


# --------------------------------------------------------------------------- evaluation runs


def read_run_table(run_dir, required=("item_id", "voice_id", "gender", "ethnicity")) -> tuple[pd.DataFrame, dict]:
    """(audio rows of a run's tidy table, its manifest); refuses a folder that is not a finished run."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    manifest = run.read_manifest()  # refuses a folder that is not a run
    parquet = run.path / "responses.parquet"
    if not parquet.is_file():
        raise BiasbenchError(f"{run.path} has no responses.parquet; finish the run (or rerun it with --resume)")
    table = pd.read_parquet(parquet)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise BiasbenchError(f"{parquet} lacks the column(s) {missing} needed here; it has "
                             f"{list(map(str, table.columns))}")
    if "condition" in table.columns:
        table = table[table["condition"] == "audio"]
    return table, manifest


def run_items(manifest: dict, run_dir: Path, data_source: str):
    """(task, item_id -> Item) of the run's task, reloaded and checked against the run's items hash."""
    from biasbench.tasks.loader import load_task

    task_info = manifest.get("task", {})
    path = task_info.get("path")
    if not path or not Path(path).is_file():
        raise BiasbenchError(f"the task file of run {run_dir} ({path}) is not here, and the item texts "
                             "are needed. Work where the task file is (or give DPO a pairs JSONL: dpo.pairs).")
    limit = manifest.get("options", {}).get("limit")
    limit = int(limit) if limit not in (None, "None", "") else None
    source = task_info.get("source", "auto") if data_source == "auto" else data_source
    task = load_task(path, data_source=source, limit=limit)
    if task.fingerprint()["items_hash"] != task_info.get("items_hash"):
        raise BiasbenchError(f"the items of task {path} differ from those run {run_dir} answered (items hash "
                             "mismatch): the task or its data changed since the run")
    return task, {item.item_id: item for item in task.items}


# --------------------------------------------------------------------------- pools


@dataclass
class Pools:
    train: VoicePool
    train_path: Path
    eval: VoicePool
    eval_path: Path

    def manifest(self) -> dict:
        return {"train": {**pool_fingerprint(self.train, self.train_path),
                          "voices": [v.id for v in self.train.voices]},
                "eval": {**pool_fingerprint(self.eval, self.eval_path),
                         "voices": [v.id for v in self.eval.voices]}}


def load_pools(config: FinetuneConfig) -> Pools:
    """The training and evaluation pools, each balanced (checked), sharing no voice (checked)."""
    train, train_path = load_pool(resolve_pool(config, config.train_pool))
    evaluation, eval_path = load_pool(resolve_pool(config, config.eval_pool))
    report = check_balance(train)
    if not report.balanced:  # load_pool already refuses; kept explicit for pools built in code
        raise BiasbenchError(f"training pool {train_path} is unbalanced: " + "; ".join(report.problems))
    check_pools_disjoint(train, evaluation, train_name=str(train_path), eval_name=str(eval_path))
    return Pools(train, train_path, evaluation, eval_path)


def voice_signature(voice: VoiceSpec) -> str:
    """What makes a voice sound the way it does: TTS backend + parameters (+ reference clip)."""
    return canonical_json({"backend": voice.tts.backend, "params": voice.tts.params,
                           "reference_clip": voice.reference_clip})


def check_pools_disjoint(train: VoicePool, evaluation: VoicePool, *, train_name: str = "train pool",
                         eval_name: str = "eval pool") -> None:
    """Refuse pools that share a voice, by id or by TTS parameters (the same voice renamed)."""
    eval_ids = {v.id for v in evaluation.voices}
    eval_sigs = {voice_signature(v): v.id for v in evaluation.voices}
    problems = []
    for voice in train.voices:
        if voice.id in eval_ids:
            problems.append(f"voice id {voice.id!r} is in both pools")
        elif voice_signature(voice) in eval_sigs:
            problems.append(f"training voice {voice.id!r} and evaluation voice {eval_sigs[voice_signature(voice)]!r} "
                            f"are the same voice (same TTS backend and parameters: {voice.tts.backend} "
                            f"{voice.tts.params})")
    if problems:
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise BiasbenchError(
            f"the training pool ({train_name}) and the evaluation pool ({eval_name}) overlap:\n  {shown}\n"
            "A debiasing fine-tune is judged on voices it never heard: give train_pool and eval_pool "
            "disjoint voices (different ids AND different TTS parameters).")


# --------------------------------------------------------------------------- spoken examples


@dataclass(frozen=True)
class SpokenExample:
    """One training row spoken by one voice. Holds the audio cache KEY, never the audio."""

    example_id: str
    group: int  # index of the text row: the voices of one group share every text
    group_id: str  # the row's id (instruction pair id, or preference pair id)
    voice_id: str
    gender: str
    ethnicity: str
    audio_key: str
    audio_seconds: float
    text_prompt: str
    response: str = ""  # SFT target
    chosen: str = ""  # DPO
    rejected: str = ""  # DPO


@dataclass
class SpeakReport:
    n_clips: int = 0
    made: int = 0
    reused: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (group id, voice id, error)
    too_long: list[tuple[str, str, float]] = field(default_factory=list)  # (group id, voice id, seconds)

    def as_dict(self) -> dict:
        return {"n_clips": self.n_clips, "made": self.made, "reused": self.reused,
                "n_failed": len(self.failed), "failed": [list(f) for f in self.failed[:20]],
                "n_too_long": len(self.too_long), "too_long": [list(t) for t in self.too_long[:20]]}


def speak_rows(rows: list[dict], pool: VoicePool, cache: AudioCache, *, max_audio_seconds: float | None,
               workers: int | None = None, progress: bool = True) -> tuple[list[SpokenExample], SpeakReport]:
    """Every row spoken by every voice: synthesised into the cache once (reused afterwards).

    `rows`: dicts with `group_id`, `spoken` (the text to speak), `text_prompt`, and `response`
    or `chosen`/`rejected`. A clip that fails or is longer than the model hears in full
    (it would be truncated silently) is left out and reported; none left is an error."""
    voices = pool.voices
    jobs = {(r["group_id"], v.id): SynthesisJob.speak(v, r["spoken"], pool.loudness_target)
            for r in rows for v in voices}
    result = synthesize_all(jobs.values(), cache, workers=workers, progress=progress)
    report = SpeakReport(n_clips=len(set(result.keys.values())), made=result.made, reused=result.reused)
    failed = {job: error for job, error in result.failures}
    examples = []
    for group, row in enumerate(rows):
        for voice in voices:
            job = jobs[(row["group_id"], voice.id)]
            if job in failed or not result.ok(job):
                report.failed.append((row["group_id"], voice.id, failed.get(job, "not synthesised")))
                continue
            key = result.keys[job]
            seconds = float(cache.duration(key) or 0.0)
            if max_audio_seconds is not None and seconds > max_audio_seconds:
                report.too_long.append((row["group_id"], voice.id, seconds))
                continue
            examples.append(SpokenExample(
                example_id=f"{row['group_id']}@{voice.id}", group=group, group_id=row["group_id"], voice_id=voice.id,
                gender=voice.gender, ethnicity=voice.ethnicity, audio_key=key, audio_seconds=seconds,
                text_prompt=row.get("text_prompt", ""), response=row.get("response", ""),
                chosen=row.get("chosen", ""), rejected=row.get("rejected", "")))
    if not examples:
        if report.failed:
            why = f"first failure: {report.failed[0][2]}"
        elif report.too_long:
            why = f"every clip is longer than the {max_audio_seconds:.0f} s the model hears"
        else:
            why = "no rows or no voices"
        raise BiasbenchError(f"no training example could be spoken ({len(rows)} rows x {len(voices)} voices); {why}")
    return examples, report


class SpokenDataset:
    """A map-style dataset of spoken examples (`torch.utils.data.Dataset` protocol).

    Items are plain dicts of metadata (audio cache key, texts, voice); the collate function
    reads the audio. Out-of-range indices raise IndexError, so `iter()` ends cleanly."""

    def __init__(self, examples: list[SpokenExample]):
        if not examples:
            raise BiasbenchError("empty dataset: nothing to train on")
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return asdict(self.examples[index])



# --------------------------------------------------------------------------- sampling


def example_groups(examples: list[SpokenExample]) -> list[list[int]]:
    """Example indices per text row (group), in row order."""
    by_group: dict[int, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        by_group[example.group].append(index)
    return [by_group[g] for g in sorted(by_group)]


class CounterfactualSampler:
    """Index order in which every run of `voices_per_group` consecutive indices is ONE text row
    spoken by that many different voices, balanced over gender x ethnicity cells.

    One epoch visits every (row, voice) example once: each row's voices are split into chunks
    of `voices_per_group` (round-robin over the cells, so a chunk of 6 holds one voice per
    cell), the last chunk is topped up with other voices of the same row, and the chunks of all
    rows are shuffled. The order depends only on (seed, epoch), so a run resumed from a
    checkpoint sees the same batches it would have seen. With `voices_per_group=1` this is a
    plain seeded shuffle."""

    def __init__(self, examples: list[SpokenExample], voices_per_group: int, seed: int = 0):
        self.examples = list(examples)
        self.k = int(voices_per_group)
        self.seed = int(seed)
        self.epoch = 0
        self._groups = example_groups(self.examples)
        self._n_chunks = sum(-(-len(g) // self.k) for g in self._groups)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._n_chunks * self.k

    def chunks(self, epoch: int | None = None) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch if epoch is None else epoch}")
        chunks = []
        for members in self._groups:
            if self.k == 1:
                chunks += [[m] for m in members]
                continue
            cells: dict[tuple[str, str], list[int]] = defaultdict(list)
            for m in members:
                example = self.examples[m]
                cells[(example.gender, example.ethnicity)].append(m)
            keys = sorted(cells)
            rng.shuffle(keys)
            for key in keys:
                rng.shuffle(cells[key])
            interleaved = [cells[key][i] for i in range(max(map(len, cells.values())))
                           for key in keys if i < len(cells[key])]
            for start in range(0, len(interleaved), self.k):
                chunk = interleaved[start:start + self.k]
                spare = [m for m in members if m not in chunk]
                rng.shuffle(spare)
                while len(chunk) < self.k:  # top up from the same row (repeats only if it has < k voices)
                    chunk.append(spare.pop() if spare else rng.choice(members))
                chunks.append(chunk)
        rng.shuffle(chunks)
        return chunks

    def __iter__(self):
        for chunk in self.chunks():
            yield from chunk
