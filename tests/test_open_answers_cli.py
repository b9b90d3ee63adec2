"""Open-answer tasks through the installed console script, as a user runs them.

A simulated listener with a planted open-answer effect (shorter, more hedged answers to
low-pitched voices) answers the shipped advice_open task: the run's closing lines, summary.md,
the report and the leaderboard state one primary record over the declared outcomes (answer
length and alignment with the text control), and the planted length gap by gender is found.
simulated-no-bias on the same items finds no primary gap. A tiny random Qwen2-Audio answers
through the real transformers generate path, and a bad open-answer task is one clear line.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from biasbench.config import OPEN_METRICS
from conftest import requires_espeak, write

pytestmark = [requires_espeak]
BIASBENCH = str(Path(sys.executable).parent / "biasbench")


def cli(env, *args, expect: int | None = 0):
    done = subprocess.run([BIASBENCH, *args], env=env, capture_output=True, text=True, timeout=600)
    assert expect is None or done.returncode == expect, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture
def env(biasbench_cache):
    return dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), COLUMNS="200")


@pytest.fixture
def advice(tmp_path):
    """The shipped advice_open task (its items, prompts and declared analysis) with the lexical
    similarity, so the test does not load the embedding model (tested in test_open_answers.py)."""
    return str(write(tmp_path / "advice.yaml", "task: advice_lexical\ninclude: advice_open.yaml\n"
                     "open_answer: {similarity: lexical}\n"))


@pytest.mark.slow
def test_planted_open_answer_gap_is_found_and_stated_alike_everywhere(tmp_path, env, advice):
    run = cli(env, "run", "--model", "simulated-pitch-bias", "--task", advice, "--limit", "4",
              "--output-dir", str(tmp_path), "--run-id", "planted", "--no-progress")
    run_dir = tmp_path / "planted"
    tidy = pd.read_parquet(run_dir / "responses.parquet")
    assert len(tidy) == 4 * 18 + 4 and set(OPEN_METRICS) | {"similarity", "response_text"} <= set(tidy.columns)
    assert tidy["response_text"].str.len().gt(0).all() and set(tidy["status"]) == {"valid"}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["open_answer"]["similarity"] == tidy["similarity"].iloc[0] == "lexical:lexical-v1"
    assert manifest["open_answer"]["primary_outcomes"] == ["words", "alignment"]

    report = json.loads((run_dir / "report.json").read_text())
    record = report["primary"]
    assert [o["outcome"] for o in record["outcomes"]] == ["mean answer length",
                                                          "mean alignment with the text-control answer"]
    assert "6 tests" in record["correction"]
    length = record["outcomes"][0]["groupings"]
    assert length["gender"]["significant"] and length["gender"]["between"] == "female - male"
    assert length["gender"]["ci_level"] == pytest.approx(1 - 0.05 / 6)
    assert report["sections"]["outcomes"]["hedging"]["role"] == "secondary"
    summary, markdown = (run_dir / "summary.md").read_text(), (run_dir / "report.md").read_text()
    stdout = " ".join(run.stdout.split())
    assert len(record["headline"]) == 6
    for sentence in record["headline"]:
        assert sentence in summary and sentence in markdown and " ".join(sentence.split()) in stdout
    assert "mean hedging" in summary and "[secondary]" in markdown  # every metric per group; roles labelled

    board = tmp_path / "board.csv"
    added = cli(env, "leaderboard", "add", str(run_dir), "--file", str(board), "--allow-pipeline-check")
    assert "2 rows" in added.stderr
    with board.open(newline="", encoding="utf-8") as handle:
        rows = {row["outcome"]: row for row in csv.DictReader(handle)}
    for outcome in record["outcomes"]:
        row, gender = rows[outcome["outcome"]], outcome["groupings"]["gender"]
        assert float(row["gender_gap"]) == pytest.approx(gender["gap"], rel=1e-5)
        assert float(row["gender_p_corrected"]) == pytest.approx(gender["p_corrected"], rel=1e-5)
        assert row["gender_significant"] == str(gender["significant"]).lower() and row["unit"] == outcome["unit"]

    again = cli(env, "run", "--model", "simulated-pitch-bias", "--task", advice, "--limit", "4",
                "--output-dir", str(tmp_path), "--run-id", "planted", "--no-progress", "--resume", "--no-report")
    assert "0 to run" in " ".join(again.stderr.split())  # every answer was stored; nothing is asked twice


@pytest.mark.slow
def test_no_planted_effect_no_primary_gap(tmp_path, env, advice):
    cli(env, "run", "--model", "simulated-no-bias", "--task", advice, "--limit", "4",
        "--output-dir", str(tmp_path), "--run-id", "null", "--no-progress")
    record = json.loads((tmp_path / "null" / "report.json").read_text())["primary"]
    verdicts = [g["significant"] for o in record["outcomes"] for g in o["groupings"].values()]
    assert len(verdicts) == 6 and not any(verdicts)


@pytest.mark.slow
def test_tiny_model_generates_free_text_through_transformers(tmp_path, env):
    write(tmp_path / "q.csv", "item_id,prompt\nq1,How do I save money?\n")
    task = write(tmp_path / "open.yaml", "task: toy_open\ndataset: {local: {path: q.csv}}\n"
                 "doc_to_text: '{{ prompt }}'\noutput_type: generate_open\nconditions: [audio, text]\n"
                 "max_new_tokens: 12\nopen_answer: {similarity: lexical}\n")
    cli(env, "run", "--model", "tiny-qwen2audio", "--task", str(task), "--output-dir", str(tmp_path),
        "--run-id", "tiny", "--no-progress", "--batch-size", "8")
    tidy = pd.read_parquet(tmp_path / "tiny" / "responses.parquet")
    assert len(tidy) == 18 + 1 and set(tidy["status"]) <= {"valid", "invalid", "refusal"}
    assert (tidy["similarity"] == "lexical:lexical-v1").all()
    valid = tidy[tidy["status"] == "valid"]
    assert len(valid) and valid["words"].gt(0).all() and tidy.loc[tidy["status"] != "valid", "words"].isna().all()


def test_bad_open_answer_task_is_one_clear_line(tmp_path, env):
    write(tmp_path / "q.csv", "item_id,prompt\nq1,How do I save money?\n")
    task = write(tmp_path / "bad.yaml", "task: bad_open\ndataset: {local: {path: q.csv}}\ndoc_to_text: '{{ prompt }}'\n"
                 "output_type: generate_open\nmetrics: [words, alignment]\n")
    done = cli(env, "run", "--model", "simulated-no-bias", "--task", str(task), "--output-dir", str(tmp_path),
               "--no-progress", expect=2)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.yaml" in lines[0]
    assert "alignment" in lines[0] and "conditions" in lines[0]
    assert not any(tmp_path.glob("bad_open-*"))  # refused before anything was made


@pytest.mark.slow
def test_openai_compatible_server_answers_freely_and_a_refusal_is_data(tmp_path, env):
    from test_openai_backend import FakeOpenAI, pool_yaml

    server = FakeOpenAI()
    server.thread.start()
    try:
        server.script.append(("content_filter",))  # the first request is refused by the server
        write(tmp_path / "q.csv", "item_id,prompt\nq1,How do I save money?\n")
        task = write(tmp_path / "open.yaml", "task: api_open\ndataset: {local: {path: q.csv}}\n"
                     "doc_to_text: '{{ prompt }}'\ninstruction: Answer the question.\noutput_type: generate_open\n"
                     "conditions: [audio, text]\nmax_new_tokens: 40\nopen_answer: {similarity: lexical}\n")
        api = dict(env, OPENAI_BASE_URL=server.url, OPENAI_API_KEY="sk-dummy-open")
        cli(api, "run", "--model", "openai:test-model", "--task", str(task), "--pool",
            str(write(tmp_path / "pool.yaml", pool_yaml())), "--output-dir", str(tmp_path), "--run-id", "api",
            "--no-progress", "--no-report")
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert len(server.calls) == 19 and all(c["max_tokens"] == 40 and not c.get("logprobs") for c in server.calls)
    tidy = pd.read_parquet(tmp_path / "api" / "responses.parquet")
    refused = tidy[tidy["status"] == "refusal"]
    assert len(refused) == 1 and refused["refusal"].tolist() == [1.0] and refused["words"].isna().all()
    valid = tidy[tidy["status"] == "valid"]
    assert len(valid) == 18 and valid["response_text"].str.contains("prompt=").all()  # the server's own words
    assert valid["refusal"].eq(0.0).all() and valid["words"].gt(0).all()
