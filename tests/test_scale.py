"""Sharded runs, `biasbench merge`, `biasbench plan` and the Ray executor, offline on the tiny model.

Every run here is mmlu --limit 2 on the default pool (36 requests)."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pandas as pd
import pytest

from conftest import PROJECT, requires_espeak

from biasbench.errors import BiasbenchError
from biasbench.merge import merge_shards
from biasbench.runner import RunOptions, run
from biasbench.shard import parse_shard, plan_key, shard_of

# One worker builds the module's runs and Ray cluster (xdist_group), not each worker its own.
pytestmark = [requires_espeak, pytest.mark.slow, pytest.mark.xdist_group("scale")]
N_REQUESTS = 2 * 18


def options(out, **kw):
    base = dict(task="mmlu", model="qwen2audio", offline_fallback=True, data_source="local", limit=2,
                output_dir=out, run_id="r", progress=False)
    return RunOptions(**{**base, **kw})


def responses(run_dir):
    with sqlite3.connect(run_dir / "responses.sqlite") as db:
        return pd.read_sql_query("SELECT * FROM responses ORDER BY request_key", db)


def assert_same_answers(run_dir, reference_dir):
    got, ref = responses(run_dir), responses(reference_dir)
    assert len(got) == N_REQUESTS and got["request_key"].is_unique
    assert list(got["request_key"]) == list(ref["request_key"])
    for column in ("item_id", "voice_id", "answer", "status", "correct"):
        assert list(got[column]) == list(ref[column]), column
    # Log-probabilities agree to float precision (batches are composed differently per shard).
    for a, b in zip(got["option_logprobs"], ref["option_logprobs"]):
        a, b = json.loads(a), json.loads(b)
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)


@pytest.fixture(scope="module")
def runs(biasbench_cache, tmp_path_factory):
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    root = tmp_path_factory.mktemp("scale")
    full = run(options(root / "full")).run_dir
    shards = [run(options(root / "sharded", shard=(i, 2))).run_dir for i in range(2)]
    other = run(options(root / "other", limit=1, shard=(1, 2))).run_dir  # a shard of a different run
    return {"root": root, "full": full, "shards": shards, "other": other}


def test_shard_spec_and_partition_are_stable():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(BiasbenchError, match="--shard"):
            parse_shard(bad)
    key = plan_key("q1", "abc", "audio", "v1", 0)
    assert key == plan_key("q1", "abc", "audio", "v1", 0) and shard_of(key, 4) == int(key[:8], 16) % 4


def test_two_shards_merged_equal_the_unsharded_run(runs):
    shard_dirs = runs["shards"]
    assert [d.name for d in shard_dirs] == ["r-shard-0-of-2", "r-shard-1-of-2"]
    sizes = [len(responses(d)) for d in shard_dirs]
    assert sum(sizes) == N_REQUESTS and all(sizes)
    manifest = json.loads((shard_dirs[0] / "manifest.json").read_text())
    full_manifest = json.loads((runs["full"] / "manifest.json").read_text())
    assert manifest["identity_hash"] == full_manifest["identity_hash"]
    assert manifest["plan"]["n_requests"] == N_REQUESTS
    assert manifest["plan"]["keys_hash"] == full_manifest["plan"]["keys_hash"]
    assert manifest["synthesis"]["made"] + manifest["synthesis"]["reused"] == sizes[0]  # only its own clips

    merged = runs["root"] / "merged"
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "biasbench.cli", "merge", *map(str, shard_dirs), "--output",
                             str(merged)], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_answers(merged, runs["full"])
    drop = ["created_at", "latency_s"]
    tidy = pd.read_parquet(merged / "responses.parquet").drop(columns=drop)
    assert tidy.equals(pd.read_parquet(runs["full"] / "responses.parquet").drop(columns=drop))
    assert json.loads((merged / "summary.json").read_text()) == json.loads((runs["full"] / "summary.json").read_text())
    merged_manifest = json.loads((merged / "manifest.json").read_text())
    assert merged_manifest["complete"] is True and merged_manifest["n_responses"] == N_REQUESTS
    assert merged_manifest["run_id"] == "r" and len(merged_manifest["merged_from"]) == 2


def test_missing_duplicated_foreign_and_incomplete_shards_are_refused(runs, tmp_path):
    s0, s1 = runs["shards"]
    with pytest.raises(BiasbenchError, match=r"missing 1 of 2 shards: 1 \(r-shard-1-of-2\)"):
        merge_shards([s0], tmp_path / "a")
    with pytest.raises(BiasbenchError, match=r"shard given more than once: shard 0/2"):
        merge_shards([s0, s0, s1], tmp_path / "b")
    with pytest.raises(BiasbenchError, match=r"different runs: their run identity"):
        merge_shards([s0, runs["other"]], tmp_path / "c")
    with pytest.raises(BiasbenchError, match=r"unsharded run"):
        merge_shards([runs["full"]], tmp_path / "d")

    broken = tmp_path / "broken" / s1.name
    shutil.copytree(s1, broken)
    with sqlite3.connect(broken / "responses.sqlite") as db:
        item, voice = db.execute("SELECT item_id, voice_id FROM responses LIMIT 1").fetchone()
        db.execute("DELETE FROM responses WHERE item_id=? AND voice_id=?", (item, voice))
    with pytest.raises(BiasbenchError, match=rf"incomplete: \d+ of \d+ .*missing: item {item}, voice {voice}"):
        merge_shards([s0, broken], tmp_path / "e")
    assert not any((tmp_path / x).exists() for x in "abcde")  # nothing written on refusal


def test_plan_counts_requests_and_cached_clips(runs, tmp_path):
    from biasbench.plan import format_estimate, plan_estimate

    estimate = plan_estimate(task="mmlu", pool="espeak-default", model="qwen2audio", limit=2, data_source="local",
                             runs_dir=runs["root"], offline_fallback=True)
    assert estimate["n_requests"] == N_REQUESTS and estimate["n_clips"] == N_REQUESTS
    assert estimate["n_clips_cached"] == N_REQUESTS  # the runs above synthesised them all
    assert estimate["latency_source"].startswith("measured")
    text = format_estimate(estimate)
    assert f"requests:              {N_REQUESTS}" in text and "GPU/model time" in text

    fresh = plan_estimate(task="mmlu", pool="espeak-default", model="qwen2audio", limit=3, data_source="local",
                          runs_dir=runs["root"] / "nowhere", offline_fallback=True,
                          audio_cache=tmp_path / "empty-cache")
    assert fresh["n_requests"] == 3 * 18 and fresh["n_clips_to_synthesise"] == 3 * 18
    assert fresh["latency_source"].startswith("default") and fresh["audio_hours_to_synthesise"] > 0


# ---------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_cluster(biasbench_cache, tmp_path_factory):
    ray = pytest.importorskip("ray")
    from biasbench.ray_executor import KILL_ONCE_ENV

    kill_dir = tmp_path_factory.mktemp("ray-killed")
    env = {k: os.environ[k] for k in ("BIASBENCH_CACHE", "PATH") if k in os.environ}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", **{KILL_ONCE_ENV: f"{kill_dir / 'killed.marker'}:1:4"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield kill_dir
    ray.shutdown()


def test_ray_run_equals_the_unsharded_run(runs, ray_cluster, tmp_path):
    from biasbench.ray_executor import run_with_ray

    result = run_with_ray(options(tmp_path), workers=2)
    assert result.run_dir == tmp_path / "r" and result.n_total == N_REQUESTS
    assert_same_answers(result.run_dir, runs["full"])
    assert not (ray_cluster / "killed.marker").exists()  # the kill hook only fires in its own output dir


def test_ray_retries_a_killed_worker_without_loss_or_duplicates(runs, ray_cluster):
    from biasbench.ray_executor import run_with_ray

    result = run_with_ray(options(ray_cluster, batch_size=2), workers=2)
    marker = ray_cluster / "killed.marker"
    assert marker.exists(), "shard 1's first attempt should have been killed"
    killed_at = int(marker.read_text().split(" at ")[1].split()[0])
    shard1 = len(responses(ray_cluster / "r-shard-1-of-2"))
    assert 4 <= killed_at < shard1, "the kill should land mid-shard"
    assert_same_answers(result.run_dir, runs["full"])


def test_merge_keeps_the_shards_permission_to_read_data_outside_the_task(biasbench_cache, tmp_path):
    """Shards run with --allow-data-outside-task merge without the flag: the manifest carries it."""
    data = tmp_path / "elsewhere" / "items.csv"
    data.parent.mkdir()
    shutil.copy(PROJECT / "tasks" / "data" / "mmlu_redux" / "mmlu_redux_clean.csv", data)
    task = tmp_path / "tasks" / "outside.yaml"
    task.parent.mkdir()
    yaml_text = (PROJECT / "tasks" / "mmlu.yaml").read_text()
    task.write_text(yaml_text.replace("path: data/mmlu_redux/mmlu_redux_clean.csv", f"path: {data}"))
    shards = [run(options(tmp_path / "sharded", task=str(task), model="simulated-no-bias", offline_fallback=False,
                          shard=(i, 2), allow_data_outside_task=True)).run_dir for i in range(2)]
    with pytest.raises(BiasbenchError, match="--allow-data-outside-task"):  # the guard itself still holds
        run(options(tmp_path / "refused", task=str(task), model="simulated-no-bias", offline_fallback=False))
    merge_shards(shards, tmp_path / "merged")
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["n_responses"] == N_REQUESTS
