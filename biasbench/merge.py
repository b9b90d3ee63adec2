"""`biasbench merge SHARD_DIR... --output RUN_DIR` (the command is in cli.py): n shard directories -> one run directory.

Checked before anything is written: every directory is a shard of the same run (same
identity_hash, same plan, same n), each index 0..n-1 is given exactly once, every shard is
complete and holds only its own requests, and the union is exactly the planned requests
(count and hash of the sorted plan keys, from the manifests; see biasbench/shard.py). The
output holds one manifest, one responses.sqlite, the tidy exports and the summary, built by
the same code as an unsharded run, so its content is the same.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace

from biasbench.errors import BiasbenchError
from biasbench.shard import keys_hash, plan_key, read_planned, shard_dir_name, shard_of
from biasbench.store import _COLUMNS, RunDir, utc_now

_SHOW = 20  # how many missing/duplicated requests a message names


def merge_shards(shard_dirs: list[Path], output: Path) -> dict:
    shards = [_read_shard(Path(d)) for d in shard_dirs]
    if not shards:
        raise BiasbenchError("merge needs at least one shard directory")
    first = shards[0]
    _check_same_run(shards)
    count = first["shard"]["count"]
    _check_indices(shards, count, first["manifest"]["run_id"])
    frames = [_check_shard_rows(s, count) for s in shards]
    _check_union(shards, frames)

    out = RunDir(Path(output))
    if out.exists() or out.store_path.exists():
        raise BiasbenchError(f"{out.path} already holds a run; choose another --output (nothing was changed)")
    manifest = _merged_manifest(shards)
    out.create({**manifest, "complete": False})  # marked complete only once everything is written
    _copy_rows(shards, out)
    _write_outputs(out, manifest)
    return {"n_shards": len(shards), "n_responses": manifest["n_responses"], "run_dir": out.path}


# ---------------------------------------------------------------- checks


def _read_shard(path: Path) -> dict:
    run_dir = RunDir(path)
    manifest = run_dir.read_manifest()
    plan = manifest.get("plan")
    if not plan:
        raise BiasbenchError(f"{path}: its manifest has no plan record (written by a biasbench without "
                             "sharding); re-run the shards with this version")
    if not plan.get("shard"):
        raise BiasbenchError(f"{path} is an unsharded run, not a shard; merge takes the directories "
                             "written by `biasbench run --shard i/n`")
    if not run_dir.store_path.is_file():
        raise BiasbenchError(f"{path} has no responses.sqlite; run the shard (again, with --resume)")
    return {"path": path, "dir": run_dir, "manifest": manifest, "plan": plan, "shard": plan["shard"]}


def _describe(s: dict) -> str:
    m = s["manifest"]
    return (f"{s['path']} (run {m.get('run_id')}, identity {m.get('identity_hash', '')[:10]}, task "
            f"{m.get('task', {}).get('task')}, model {m.get('model', {}).get('name')}, "
            f"shard {s['shard']['index']}/{s['shard']['count']})")


def _check_same_run(shards: list[dict]) -> None:
    first = shards[0]
    for s in shards[1:]:
        for what, get in (("run identity (task, pool, model, settings)", lambda x: x["manifest"]["identity_hash"]),
                          ("plan (requests planned)", lambda x: (x["plan"]["n_requests"], x["plan"]["keys_hash"])),
                          ("shard count n", lambda x: x["shard"]["count"]),
                          ("run id", lambda x: x["manifest"]["run_id"])):
            if get(s) != get(first):
                raise BiasbenchError(f"these shards come from different runs: their {what} differ.\n  "
                                     f"{_describe(first)}\n  {_describe(s)}\nNothing was written.")


def _check_indices(shards: list[dict], count: int, run_id: str) -> None:
    seen: dict[int, list[str]] = {}
    for s in shards:
        seen.setdefault(s["shard"]["index"], []).append(str(s["path"]))
    twice = {i: paths for i, paths in seen.items() if len(paths) > 1}
    if twice:
        raise BiasbenchError("shard given more than once: " + "; ".join(
            f"shard {i}/{count} in {', '.join(paths)}" for i, paths in sorted(twice.items())) + ". Nothing was written.")
    missing = [i for i in range(count) if i not in seen]
    if missing:
        raise BiasbenchError(f"missing {len(missing)} of {count} shards: "
                             + ", ".join(f"{i} ({shard_dir_name(run_id, (i, count))})" for i in missing)
                             + ". Run them with `biasbench run ... --shard i/n`, then merge all n. Nothing was written.")


def _rows(s: dict) -> list[tuple]:
    with sqlite3.connect(f"file:{s['dir'].store_path}?mode=ro", uri=True) as db:
        return db.execute("SELECT request_key, item_id, prompt_hash, condition, voice_id, sample_index "
                          "FROM responses").fetchall()


def _check_shard_rows(s: dict, count: int) -> dict[str, str]:
    """plan key -> request key of the shard's rows, after checking they are its own and complete."""
    index, expected = s["shard"]["index"], s["shard"]["n_requests"]
    keys: dict[str, str] = {}
    for request_key, item_id, prompt_hash, condition, voice_id, sample in _rows(s):
        key = plan_key(item_id, prompt_hash, condition, voice_id, sample)
        if shard_of(key, count) != index:
            raise BiasbenchError(f"{s['path']} holds a response of shard {shard_of(key, count)}, not {index} "
                                 f"(item {item_id}, voice {voice_id}); it is not a clean shard. Nothing was written.")
        if key in keys:
            raise BiasbenchError(f"{s['path']} holds two responses for item {item_id}, voice {voice_id}, "
                                 f"{condition}, sample {sample} (e.g. re-synthesised audio after a resume); "
                                 "re-run that shard into a fresh directory. Nothing was written.")
        keys[key] = request_key
    if len(keys) != expected or keys_hash(keys) != s["shard"]["keys_hash"]:
        planned = read_planned(s["path"]) or {}
        missing = [desc for key, desc in planned.items() if key not in keys]
        shown = "; ".join(missing[:_SHOW]) + (f"; ... ({len(missing) - _SHOW} more)" if len(missing) > _SHOW else "")
        raise BiasbenchError(f"shard {index}/{count} at {s['path']} is incomplete: {len(keys)} of {expected} "
                             f"planned responses stored" + (f"; missing: {shown}" if missing else "")
                             + ". Rerun that shard with --resume (failed requests are retried). Nothing was written.")
    return keys


def _check_union(shards: list[dict], frames: list[dict[str, str]]) -> None:
    plan = shards[0]["plan"]
    union: dict[str, str] = {}
    for s, keys in zip(shards, frames):
        dup = [k for k in keys if k in union]
        if dup:
            raise BiasbenchError(f"{len(dup)} requests of {s['path']} are also in another shard. Nothing was written.")
        union.update(keys)
    if len(union) != plan["n_requests"] or keys_hash(union) != plan["keys_hash"]:
        raise BiasbenchError(f"the shards hold {len(union)} requests, but the run planned {plan['n_requests']} "
                             "(or different ones); were the shards run with the same options? Nothing was written.")
    if len(set(union.values())) != len(union):
        raise BiasbenchError("two shards stored the same request key. Nothing was written.")


# ---------------------------------------------------------------- output


def _merged_manifest(shards: list[dict]) -> dict:
    shards = sorted(shards, key=lambda s: s["shard"]["index"])
    manifests = [s["manifest"] for s in shards]
    manifest = dict(manifests[0])
    manifest["plan"] = {**manifest["plan"], "shard": None}
    manifest["options"] = {**manifest.get("options", {}), "shard": "None"}
    manifest["started_at"] = min(m.get("started_at", "") for m in manifests)
    manifest["synthesis"] = {
        "made": sum(m["synthesis"]["made"] for m in manifests),
        "reused": sum(m["synthesis"]["reused"] for m in manifests),
        "failed": sum(m["synthesis"]["failed"] for m in manifests),
        "failures": [f for m in manifests for f in m["synthesis"].get("failures", [])][:50]}
    manifest["failed_requests"] = [f for m in manifests for f in m.get("failed_requests") or []][:100]
    manifest["n_failed_requests"] = sum(m.get("n_failed_requests") or 0 for m in manifests)
    usages = [m.get("usage") for m in manifests if m.get("usage")]
    manifest["usage"] = _sum_usage(usages) if usages else None
    manifest["merged_from"] = [{"path": str(s["path"]), "shard": s["shard"]["index"],
                                "started_at": m.get("started_at"), "finished_at": m.get("finished_at"),
                                "n_responses": m.get("n_responses")} for s, m in zip(shards, manifests)]
    manifest["merged_at"] = utc_now()
    manifest.pop("resumed_at", None)
    return manifest


def _sum_usage(usages: list[dict]) -> dict:
    total = dict(usages[0])
    for usage in usages[1:]:
        for key, value in usage.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(total.get(key), (int, float)):
                total[key] = total[key] + value
    return total


def _copy_rows(shards: list[dict], out: RunDir) -> None:
    store = out.open_store()
    columns = ", ".join(_COLUMNS)
    try:
        for s in sorted(shards, key=lambda s: s["shard"]["index"]):
            store.db.execute("ATTACH DATABASE ? AS shard", (str(s["dir"].store_path),))
            with store.db:
                store.db.execute(f"INSERT OR IGNORE INTO responses ({columns}) SELECT {columns} FROM shard.responses")
                if store.db.execute("SELECT 1 FROM shard.sqlite_master WHERE name='prompts'").fetchone():
                    store.db.execute("INSERT OR IGNORE INTO prompts SELECT * FROM shard.prompts")
            store.db.execute("DETACH DATABASE shard")
    finally:
        store.close()


def _write_outputs(out: RunDir, manifest: dict) -> None:
    """The tidy table and summary, by the runner's own code, from the task and pool it ran."""
    from biasbench.analysis.summary import first_analysis
    from biasbench.config import stable_hash
    from biasbench.runner import _write_summary, tidy_table
    from biasbench.tasks.loader import load_task
    from biasbench.voices.pool import load_pool

    options = manifest.get("options", {})
    limit = options.get("limit")
    # The shards' own permission (recorded with their options) to read data outside the task's tree.
    outside = str(options.get("allow_data_outside_task")) == "True"
    task = load_task(manifest["task"]["path"], data_source=manifest["task"]["source"],
                     limit=None if limit in (None, "None") else int(limit), allow_data_outside=outside)
    if task.fingerprint()["items_hash"] != manifest["task"]["items_hash"]:
        raise BiasbenchError(f"task {manifest['task']['path']} no longer gives the items the shards ran; "
                             "cannot rebuild the tidy table (the merged store was written).")
    pool, _ = load_pool(manifest["pool"]["path"], allow_unbalanced=True)
    if stable_hash(pool.model_dump()) != manifest["pool"]["hash"]:
        raise BiasbenchError(f"voice pool {manifest['pool']['path']} changed since the shards ran; "
                             "cannot rebuild the tidy table (the merged store was written).")
    store = out.open_store()
    try:
        table = tidy_table(store.to_frame(), task, pool.voices, manifest)
    finally:
        store.close()
    out.export(table)
    analysis = first_analysis(table, task.config.output_type)
    _write_summary(out, analysis, manifest, SimpleNamespace(pipeline_check=manifest["model"]["pipeline_check"]))
    manifest.update(finished_at=utc_now(), n_responses=len(table),
                    complete=len(table) == manifest["plan"]["n_requests"])
    out.write_manifest(manifest)
