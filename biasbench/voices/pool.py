"""Voice pools: finding them, and checking that they are balanced.

The design is 2 genders x 3 ethnicities with the same number of voices (k >= 3) in every
cell: with fewer voices one odd voice can pass for a group effect, and with unequal cells
group comparisons mix voice effects unevenly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from biasbench.config import VoicePool, find_yaml, load_voice_pool, stable_hash
from biasbench.errors import BiasbenchError
from biasbench.paths import shipped_dir, yaml_files
from biasbench.tts.recorded import attach_recordings
from biasbench.tts.reference import attach_references
from biasbench.tts.registry import CLONING_BACKENDS

GENDERS = ("female", "male")
ETHNICITIES = ("black", "white", "east_asian")
MIN_VOICES_PER_CELL = 3
DEFAULT_POOL = "espeak-default"


@dataclass
class BalanceReport:
    counts: dict[tuple[str, str], int]  # (gender, ethnicity) -> voices
    problems: list[str]

    @property
    def balanced(self) -> bool:
        return not self.problems


def voices_dir() -> Path:
    """The shipped pools (inside the package in a wheel, the checkout's `voices/` otherwise)."""
    return shipped_dir("voices")


def available_pools() -> dict[str, Path]:
    """Pools by name: `voices/` of the user's `--include-path` folders first, then the shipped ones."""
    return yaml_files("voices")


def find_pool(name_or_path: str) -> Path:
    """A pool name (user folders, then shipped pools), or a path to any pool YAML."""
    return find_yaml(name_or_path, available_pools(), "voice pool")


def check_balance(pool: VoicePool) -> BalanceReport:
    counts = Counter((v.gender, v.ethnicity) for v in pool.voices)
    cells = {(g, e): counts.get((g, e), 0) for g in GENDERS for e in ETHNICITIES}
    problems = [f"label {label!r} is outside the design ({', '.join(GENDERS + ETHNICITIES)})"
                for label in sorted({k for pair in counts for k in pair} - set(GENDERS + ETHNICITIES))]
    sizes = set(cells.values())
    if len(sizes) > 1:
        problems.append("cells have different numbers of voices: " +
                        ", ".join(f"{g}/{e}={n}" for (g, e), n in cells.items()))
    if min(sizes) < MIN_VOICES_PER_CELL:
        problems.append(f"every gender x ethnicity cell needs at least {MIN_VOICES_PER_CELL} voices; "
                        f"the smallest has {min(sizes)}")
    return BalanceReport(counts=dict(counts), problems=problems)


def load_pool(name_or_path: str, *, allow_unbalanced: bool = False) -> tuple[VoicePool, Path]:
    path = find_pool(name_or_path)
    pool = load_voice_pool(path)
    # Cloning voices: their reference clip (resolved against the pool file, content-hashed)
    # and transcript become backend params; an unusable clip fails only that voice's clips.
    attach_references(pool, path, CLONING_BACKENDS)
    attach_recordings(pool, path)  # natural-speech voices (backend: recorded): their recordings table
    report = check_balance(pool)
    if not report.balanced and not allow_unbalanced:
        raise BiasbenchError(f"voice pool {path} is unbalanced: " + "; ".join(report.problems)
                             + ". Fix the pool, or pass --allow-unbalanced to run it anyway "
                             "(group comparisons will then be less trustworthy).")
    return pool, path


def engine_problems(pool: VoicePool) -> list[str]:
    """Voices their engine cannot speak as the pool asks (unknown voice or variant), named.
    Engines that can tell (a `voice_problem(params)` method) are asked once per voice; an engine
    that is not installed is left to synthesis, which names it."""
    from biasbench.tts.registry import get_tts_backend, known_backends

    problems, backends = [], {}
    for voice in pool.voices:
        if voice.tts.backend not in known_backends():
            try:
                get_tts_backend(voice.tts.backend)  # raises the message naming the known engines
            except BiasbenchError as err:
                problems.append(f"voice {voice.id!r}: {err}")
            continue
        try:
            if voice.tts.backend not in backends:  # one instance per engine: it caches its voice list
                backends[voice.tts.backend] = get_tts_backend(voice.tts.backend)
            backend = backends[voice.tts.backend]
            problem = backend.voice_problem(voice.tts.params) if hasattr(backend, "voice_problem") else None
        except BiasbenchError:  # the engine is not installed: synthesis says so, naming it
            continue
        if problem:
            problems.append(f"voice {voice.id!r}: {problem}")
    return problems


#: The params a pool loader attaches when a voice's own audio cannot be used (tts.reference, tts.recorded).
UNUSABLE_PARAMS = ("reference_error", "recordings_error")


def unusable_voices(pool: VoicePool) -> list[str]:
    """The voices whose reference clip or recordings table cannot be used, each with its
    problem (which names the file); every clip of such a voice would fail."""
    problems = []
    for voice in pool.voices:
        params = voice.tts.params
        problem = next((params[name] for name in UNUSABLE_PARAMS if name in params), None)
        if problem:
            problems.append(str(problem))
    return problems


def pool_fingerprint(pool: VoicePool, path: Path) -> dict:
    return {
        "pool": pool.pool,
        "path": str(path),
        "hash": stable_hash(pool.model_dump()),
        "n_voices": len(pool.voices),
        "label_sources": sorted({v.label_source for v in pool.voices}),
    }
