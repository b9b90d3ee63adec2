"""Sharding a run: n processes (or machines, or Ray tasks) each answer a fixed part of it.

Which shard a request belongs to is decided by its *plan key*: a sha256 of what identifies
the request inside its run -- item, prompt, condition, voice, sample. Within one run the
model, settings, scoring and long-audio policy are the same for every request, and a
clip's audio key is a function of (voice, spoken text), so the plan key determines the
request key one to one. Unlike the request key it is known *before* synthesis, which is
what lets a shard synthesise only the clips it needs. It depends on nothing but content,
so every machine, in every order, puts a request in the same shard:

    shard_of(key, n) = int(key[:8], 16) % n

A shard runs in its own directory beside the unsharded one, `<run_id>-shard-<i>-of-<n>`,
with its own manifest and store; its manifest keeps the unsharded `run_id` and
`identity_hash` and a `plan` record (the number of requests of the whole run, and a hash
of their sorted plan keys), which is all `biasbench merge` needs to check completeness.
Each shard directory also holds `planned.tsv` (its own plan keys), so a merge can name
exactly what is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError

PLANNED_FILE = "planned.tsv"
_SHARD_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """'1/4' -> (1, 4); None stays None."""
    if spec is None:
        return None
    match = _SHARD_SPEC.match(spec)
    if not match:
        raise BiasbenchError(f"--shard must look like i/n (e.g. 0/4); got {spec!r}")
    return check_shard((int(match.group(1)), int(match.group(2))))


def check_shard(shard: tuple[int, int] | None) -> tuple[int, int] | None:
    if shard is None:
        return None
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise BiasbenchError(f"--shard {index}/{count}: need 0 <= i < n (shards are numbered 0 to n-1)")
    return int(index), int(count)


def plan_key(item_id: str, prompt_hash: str, condition: str, voice_id: str, sample_index: int) -> str:
    return stable_hash([str(item_id), str(prompt_hash), str(condition), str(voice_id), int(sample_index)])


def planned_key(p) -> str:
    """The plan key of a runner.Planned."""
    return plan_key(p.item.item_id, p.prompt_hash, p.condition, p.voice_id, p.sample_index)


def shard_of(key: str, count: int) -> int:
    return int(key[:8], 16) % count


def keys_hash(keys) -> str:
    return stable_hash(sorted(keys))


def plan_record(plan: list, shard: tuple[int, int] | None) -> dict:
    """The manifest's `plan`: size and key hash of the whole run, and of this shard."""
    keys = [planned_key(p) for p in plan]
    record = {"n_requests": len(keys), "keys_hash": keys_hash(keys),
              "key": "sha256 of [item_id, prompt_hash, condition, voice_id, sample_index]", "shard": None}
    if shard is not None:
        index, count = shard
        mine = [k for k in keys if shard_of(k, count) == index]
        record["shard"] = {"index": index, "count": count, "n_requests": len(mine), "keys_hash": keys_hash(mine)}
    return record


def select_shard(plan: list, shard: tuple[int, int] | None) -> list:
    if shard is None:
        return plan
    index, count = shard
    return [p for p in plan if shard_of(planned_key(p), count) == index]


def shard_dir_name(run_id: str, shard: tuple[int, int] | None) -> str:
    return run_id if shard is None else f"{run_id}-shard-{shard[0]}-of-{shard[1]}"


def write_planned(run_dir: Path, plan: list) -> None:
    """`planned.tsv`: plan key, item, voice, condition, sample of every request of this shard."""
    lines = ["plan_key\titem_id\tvoice_id\tcondition\tsample_index"]
    lines += [f"{planned_key(p)}\t{p.item.item_id}\t{p.voice_id}\t{p.condition}\t{p.sample_index}" for p in plan]
    tmp = Path(run_dir) / (PLANNED_FILE + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(Path(run_dir) / PLANNED_FILE)


def read_planned(run_dir: Path) -> dict[str, str] | None:
    """plan key -> a readable description, or None when the file is absent."""
    path = Path(run_dir) / PLANNED_FILE
    if not path.is_file():
        return None
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return {r[0]: f"item {r[1]}, voice {r[2]}, {r[3]}, sample {r[4]}" for r in rows}
