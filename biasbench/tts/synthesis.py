"""Turn (voice, text) jobs into cached clips, in parallel, once each.

A benchmark speaks every question with every voice, and many runs share both; so jobs
are keyed by content, already-cached clips are reused, and one bad voice or text is
reported rather than allowed to stop the other thousands of clips.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from tqdm import tqdm

from biasbench.errors import BiasbenchError
from biasbench.tts.audio import resample, to_harness_audio  # noqa: F401 - also imported from here
from biasbench.tts.base import SAMPLE_RATE, BatchedTTSBackend, TTSBackend
from biasbench.tts.cache import AudioCache
from biasbench.tts.loudness import normalize_loudness, require_pyloudnorm
from biasbench.tts.registry import get_tts_backend


@dataclass(frozen=True)
class SynthesisJob:
    """One clip to make. `backend` is a registry name; do not mutate `params` after use."""

    voice_id: str
    backend: str
    params: dict
    text: str
    # The pool's `loudness_target` (LUFS): the clip is normalised to it after synthesis.
    loudness_target: float | None = None

    @classmethod
    def speak(cls, voice, text: str, loudness_target: float | None = None) -> SynthesisJob:
        """The job that says `text` in `voice` (a VoiceSpec); pass the pool's loudness_target."""
        return cls(voice.id, voice.tts.backend, voice.tts.params, text, loudness_target)

    def __hash__(self) -> int:
        # params is a dict (unhashable) and may even hold bad values, so leave it out of
        # the hash; equality still compares it, which is all correctness needs.
        return hash((self.voice_id, self.backend, self.text, self.loudness_target))


#: Params that say where an input lies -> the param that says what it is. Only the second
#: enters the cache key, so a pool folder moved or shared between machines keeps its clips.
LOCATED_BY_CONTENT = {"reference_audio": "reference_sha256", "recordings_path": "recordings_sha256"}


def job_key(cache: AudioCache, job: SynthesisJob, backend_version: str) -> str:
    """The cache key of `job`'s clip: everything that determines its samples."""
    params = {name: value for name, value in job.params.items()
              if not (name in LOCATED_BY_CONTENT and LOCATED_BY_CONTENT[name] in job.params)}
    return cache.key(job.backend, backend_version, params, job.text, loudness_target=job.loudness_target)


@dataclass
class SynthesisResult:
    """What synthesize_all did. Counts are of unique clips; failures are per job."""

    keys: dict[SynthesisJob, str] = field(default_factory=dict)  # every keyed job
    made: int = 0  # clips synthesised by this call
    reused: int = 0  # clips that were already cached
    failed: int = 0  # clips that could not be made
    repaired: int = 0  # of `made`: clips whose cached file was damaged (cut short, empty)
    changed: int = 0  # of `made`: clips whose cached file no longer matched its digest (swapped, overwritten)
    failures: list[tuple[SynthesisJob, str]] = field(default_factory=list)
    _failed_jobs: set = field(default_factory=set, repr=False)
    _failed_seen: int = field(default=-1, repr=False)  # len(failures) when _failed_jobs was built

    def ok(self, job: SynthesisJob) -> bool:
        """True when `job`'s clip is in the cache."""
        if self._failed_seen != len(self.failures):  # built once, not per call: runs ask per job
            self._failed_jobs = {failed for failed, _ in self.failures}
            self._failed_seen = len(self.failures)
        return job in self.keys and job not in self._failed_jobs


def synthesize_all(
    jobs,
    cache: AudioCache,
    workers: int | None = None,
    progress: bool = True,
    batch_size: int | None = None,
) -> SynthesisResult:
    """Make every job's clip that is not cached yet, `workers` at a time (default: all cores).

    Engines that speak in batches (the cloning engines) get up to `batch_size` clips per call
    (default: BIASBENCH_TTS_BATCH_SIZE, else the engine's own default); the others one each.

    An unknown backend raises BiasbenchError before any work starts, and so does a missing
    engine when no job could run (every job would fail the same way); when other engines can,
    each job of the missing one is recorded as failed (naming its voice) and the rest go on.
    A failure of one clip is recorded and the rest go on.
    """
    jobs = list(jobs)
    result = SynthesisResult()
    backends = _resolve_backends(jobs)
    versions = _versions(backends)
    missing = {name: message for name, message in versions.items() if isinstance(message, BiasbenchError)}
    if missing and len(missing) == len(versions):
        raise next(iter(missing.values()))
    for job in (job for job in jobs if job.backend in missing):
        result.failures.append((job, f"voice {job.voice_id!r}: {missing[job.backend]}"))
        result.failed += 1
    jobs = [job for job in jobs if job.backend not in missing]
    by_key = _assign_keys(jobs, versions, cache, result)
    states = {key: cache.state(key) for key in by_key}
    todo = [key for key, state in states.items() if state != "ok"]
    if any(by_key[key][0].loudness_target is not None for key in todo):
        require_pyloudnorm()  # stops here, naming the package, rather than failing every clip
    result.reused = len(by_key) - len(todo)
    units = _work_units(todo, by_key, backends, batch_size)
    errors = _make_clips(units, by_key, backends, cache, workers, progress)
    for key, message in errors.items():
        result.failures += [(job, message) for job in by_key[key]]
    result.made = len(todo) - len(errors)
    result.failed += len(errors)
    result.repaired = sum(1 for key in todo if states[key] == "damaged" and key not in errors)
    result.changed = sum(1 for key in todo if states[key] == "changed" and key not in errors)
    return result


def _resolve_backends(jobs: list[SynthesisJob]) -> dict[str, TTSBackend]:
    return {name: get_tts_backend(name) for name in sorted({job.backend for job in jobs})}


def _versions(backends: dict[str, TTSBackend]) -> dict[str, str | BiasbenchError]:
    """Each backend's version, or the error saying it is not installed."""
    versions: dict[str, str | BiasbenchError] = {}
    for name, backend in backends.items():
        try:
            versions[name] = backend.version()
        except BiasbenchError as err:
            versions[name] = err
    return versions


def _assign_keys(jobs, versions, cache, result) -> dict[str, list[SynthesisJob]]:
    """Key every job; group jobs by key so each distinct clip is made once."""
    by_key: dict[str, list[SynthesisJob]] = {}
    for job in jobs:
        try:
            key = job_key(cache, job, versions[job.backend])
        except BiasbenchError as err:  # e.g. params that are not JSON
            result.failures.append((job, str(err)))
            result.failed += 1
            continue
        result.keys[job] = key
        by_key.setdefault(key, []).append(job)
    return by_key


#: Clips per batch for engines that speak in batches, on every machine (overrides their default).
BATCH_SIZE_ENV = "BIASBENCH_TTS_BATCH_SIZE"


def batch_size_for(backend: TTSBackend, requested: int | None = None) -> int:
    """How many clips `backend` gets per call: 1 unless it speaks in batches."""
    if not isinstance(backend, BatchedTTSBackend):
        return 1
    if requested is None:
        requested = batch_size_from_env()
    return max(1, requested if requested is not None else backend.default_batch_size())


def batch_size_from_env() -> int | None:
    """BIASBENCH_TTS_BATCH_SIZE as a number, None when unset; BiasbenchError when it is not one."""
    value = os.environ.get(BATCH_SIZE_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BiasbenchError(f"{BATCH_SIZE_ENV}={value!r}: expected a whole number of clips, 1 or more")
    return int(value)


def _work_units(todo, by_key, backends, batch_size) -> list[list[str]]:
    """The keys to make together: batches for engines that speak in batches, else one each."""
    if batch_size is None and todo:
        batch_size = batch_size_from_env()  # read (and refused when bad) whichever engines the pool uses
    units: list[list[str]] = []
    for name, backend in backends.items():
        keys = [key for key in todo if by_key[key][0].backend == name]
        size = batch_size_for(backend, batch_size) if keys else 1
        if size > 1:
            # Clips of similar length in one batch: the shorter ones are padded to the longest.
            keys.sort(key=lambda key: len(by_key[key][0].text))
        units += [keys[start:start + size] for start in range(0, len(keys), size)]
    return units


def _make_clips(units, by_key, backends, cache, workers, progress) -> dict[str, str]:
    """Synthesise and store each unit of keys in a thread pool; return key -> error."""
    if not units:
        return {}
    # Threads suffice: the engines do their work in subprocesses or C code, not Python.
    pool = ThreadPoolExecutor(max_workers=max(1, workers or os.cpu_count() or 1))
    errors: dict[str, str] = {}
    bar = tqdm(total=sum(map(len, units)), desc="synthesising", unit="clip", disable=not progress)
    try:
        futures: dict[Future, list[str]] = {}
        for keys in units:
            jobs = [by_key[key][0] for key in keys]  # all jobs under one key would make identical audio
            backend = backends[jobs[0].backend]
            make = _make_one if len(keys) == 1 else _make_batch
            futures[pool.submit(make, jobs, backend, cache, keys)] = keys
        for future in as_completed(futures):
            errors.update(future.result())
            if errors:
                bar.set_postfix(failed=len(errors))
            bar.update(len(futures[future]))
    except BaseException:
        # Ctrl-C or SIGTERM: drop queued jobs, and never wait on an engine call that hangs (a
        # network TTS): the clips already stored stay, each written atomically.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown(wait=True)
    return errors


def _make_one(jobs, backend: TTSBackend, cache: AudioCache, keys) -> dict[str, str]:
    """Make and store one clip; return {key: error} instead of raising."""
    try:
        made = backend.synthesize(jobs[0].text, jobs[0].params)
    except Exception as err:  # noqa: BLE001 - one broken clip must not stop the batch
        made = err
    return _store(jobs[0], made, cache, keys[0])


def _make_batch(jobs, backend: BatchedTTSBackend, cache: AudioCache, keys) -> dict[str, str]:
    """Make and store a batch of clips in one engine call; return {key: error} of those that failed."""
    try:
        made = backend.synthesize_batch([(job.text, job.params) for job in jobs])
        if len(made) != len(jobs):
            raise BiasbenchError(f"{backend.name} returned {len(made)} clips for a batch of {len(jobs)}")
    except Exception as err:  # noqa: BLE001 - a failed batch fails its clips, not the run
        made = [err] * len(jobs)
    errors: dict[str, str] = {}
    for job, output, key in zip(jobs, made, keys):
        errors.update(_store(job, output, cache, key))
    return errors


def _store(job: SynthesisJob, made, cache: AudioCache, key: str) -> dict[str, str]:
    """Put `made` (waveform, rate) in the cache as harness audio; {key: message} when it is an error."""
    try:
        if isinstance(made, Exception):
            raise made
        audio, sr = made
        audio = to_harness_audio(audio, sr)
        if job.loudness_target is not None:
            audio = normalize_loudness(audio, job.loudness_target)
        cache.put(key, audio, SAMPLE_RATE)
    except BiasbenchError as err:
        return {key: str(err)}
    except Exception as err:  # noqa: BLE001 - one broken clip must not stop the batch
        return {key: f"{type(err).__name__}: {err}"}
    return {}
