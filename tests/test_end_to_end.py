"""`biasbench run` through the real CLI, offline, on the tiny model and all default voices."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import PROJECT, requires_espeak

pytestmark = [requires_espeak, pytest.mark.slow]


@pytest.fixture(scope="module")
def cli_env(biasbench_cache):
    env = dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def biasbench(env, *args, check=True, **kwargs):
    command = [sys.executable, "-m", "biasbench.cli", *args]
    result = subprocess.run(command, env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_args(out_dir, *extra):
    return ["run", "--model", "qwen2audio", "--offline-fallback", "--task", "mmlu", "--data-source", "local",
            "--output-dir", str(out_dir), "--no-progress", *extra]


def stored(run_dir):
    with sqlite3.connect(run_dir / "responses.sqlite") as db:
        return pd.read_sql_query("SELECT * FROM responses", db)


def test_offline_run_is_a_labelled_pipeline_check(cli_env, tmp_path):
    result = biasbench(cli_env, *run_args(tmp_path, "--limit", "2", "--run-id", "e2e"))
    run_dir = tmp_path / "e2e"
    assert "PIPELINE CHECK" in result.stdout and "PIPELINE CHECK" in result.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["model"]["requested"] == "qwen2audio" and manifest["model"]["name"] == "tiny-qwen2audio"
    assert manifest["model"]["pipeline_check"] is True and manifest["complete"] is True
    assert manifest["pool"]["label_sources"] == ["proxy"] and manifest["task"]["source"] == "local"
    for key in ("identity_hash", "versions", "seeds", "generation", "harness"):
        assert manifest[key]
    assert manifest["model"]["fingerprint"]["dtype"] == "float32"

    responses = stored(run_dir)
    assert len(responses) == 2 * 18 and responses["request_key"].is_unique
    assert responses.groupby("item_id")["voice_id"].nunique().eq(18).all()
    valid = responses[responses.status == "valid"]
    assert valid["answer"].isin(list("ABCD")).all() and valid["correct"].isin([0.0, 1.0]).all()
    assert all(abs(sum(pow(2.718281828, v) for v in json.loads(lp).values()) - 1) < 1e-4
               for lp in valid["option_logprobs"])

    tidy = pd.read_parquet(run_dir / "responses.parquet")
    for column in ("item_id", "voice_id", "gender", "ethnicity", "label_source", "prompt_hash", "answer",
                   "correct", "status", "latency_s", "audio_seconds"):
        assert column in tidy.columns
    assert set(tidy.gender) == {"female", "male"} and set(tidy.ethnicity) == {"black", "white", "east_asian"}
    # Identical text for every voice: one prompt hash per item.
    assert tidy.groupby("item_id")["prompt_hash"].nunique().eq(1).all()

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["pipeline_check"] is True and "proxies" in summary["banner"]
    assert set(summary["groupings"]) == {"gender", "ethnicity", "gender x ethnicity", "voice"}
    assert "By gender x ethnicity" in (run_dir / "summary.md").read_text()
    html = (run_dir / "report.html").read_text()  # the full report is written at the end of the run
    assert "PIPELINE CHECK" in html and "proxy" in html and "permutation" in html


def test_rerun_without_resume_is_refused_and_with_resume_reuses_everything(cli_env, tmp_path):
    # --no-report: the report is the offline test's; this one is about what is stored and asked.
    biasbench(cli_env, *run_args(tmp_path, "--limit", "1", "--run-id", "again", "--no-report"))
    refused = biasbench(cli_env, *run_args(tmp_path, "--limit", "1", "--run-id", "again"), check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = biasbench(cli_env, *run_args(tmp_path, "--limit", "1", "--run-id", "again", "--resume",
                                           "--no-report"))
    assert "18 already stored, 0 to run" in resumed.stderr
    assert len(stored(tmp_path / "again")) == 18


def test_killed_run_resumes_without_loss_or_duplicates(cli_env, tmp_path):
    # 3 items x 18 voices, no reports: the kill, the resume and the stored rows are what is tested.
    args = run_args(tmp_path, "--limit", "3", "--batch-size", "2", "--run-id", "killed", "--no-report")
    biasbench(cli_env, *run_args(tmp_path, "--limit", "3", "--run-id", "reference", "--no-report"))  # warms the cache
    process = subprocess.Popen([sys.executable, "-m", "biasbench.cli", *args], env=cli_env, cwd=PROJECT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "killed" / "responses.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        try:
            if store.exists() and len(stored(tmp_path / "killed")) >= 8:
                break
        except (sqlite3.OperationalError, pd.errors.DatabaseError):  # created but no table yet
            pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(stored(tmp_path / "killed"))
    assert 8 <= partial < 54, "the kill should land mid-run"

    biasbench(cli_env, *args, "--resume")
    resumed, reference = stored(tmp_path / "killed"), stored(tmp_path / "reference")
    assert len(resumed) == 54 and resumed["request_key"].is_unique
    merged = resumed.merge(reference, on=["item_id", "voice_id"], suffixes=("", "_ref"))
    assert len(merged) == 54 and (merged["answer"] == merged["answer_ref"]).all()
    assert (merged["request_key"] == merged["request_key_ref"]).all()


@pytest.mark.parametrize("args, expected", [
    (["run", "--model", "qwen2adio"], "Did you mean: qwen2audio"),
    (["run", "--model", "qwen2audio", "--task", "mmlu", "--data-source", "local", "--limit", "1"],
     "--offline-fallback"),
    (["run", "--model", "tiny-qwen2audio", "--task", "nope.yaml"], "nope.yaml"),
    (["run", "--model", "tiny-qwen2audio", "--long-audio", "squash"], "--long-audio"),
])
def test_bad_input_gets_one_clear_message(cli_env, args, expected):
    result = biasbench(cli_env, *args, check=False)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr


def test_missing_espeak_binary_is_explained(cli_env, tmp_path):
    env = dict(cli_env, PATH=str(tmp_path))  # no espeak-ng on PATH
    result = biasbench(env, *run_args(tmp_path, "--limit", "1"), check=False)
    assert result.returncode == 2 and "espeak-ng" in result.stderr and "apt-get install" in result.stderr
