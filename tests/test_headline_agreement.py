"""One computation, many views: the end of `biasbench run`, summary.md, the report and the
leaderboard state the same primary result, through the installed console script.

A simulated listener with a planted pitch effect answers (a pipeline check, so the row needs
--allow-pipeline-check): every declared grouping's sentence, gap and corrected p-value must
read the same in all four places.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import requires_espeak

pytestmark = [requires_espeak, pytest.mark.slow]
BIASBENCH = str(Path(sys.executable).parent / "biasbench")


def cli(env, *args):
    done = subprocess.run([BIASBENCH, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def test_run_summary_report_and_leaderboard_state_one_result(tmp_path, biasbench_cache):
    from test_report import ANSWER_A  # MMLU items answered A: where the listener's lean to A is a gap

    env = dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), COLUMNS="200")
    task = tmp_path / "mmlu_answer_a.yaml"
    task.write_text(ANSWER_A, encoding="utf-8")
    run = cli(env, "run", "--model", "simulated-pitch-bias", "--task", str(task), "--limit", "6",
              "--data-source", "local", "--output-dir", str(tmp_path), "--run-id", "agree", "--no-progress")
    run_dir = tmp_path / "agree"
    report = json.loads((run_dir / "report.json").read_text())
    record = report["primary"]
    assert list(record["groupings"]) == ["gender", "ethnicity", "gender x ethnicity"]
    summary, markdown = (run_dir / "summary.md").read_text(), (run_dir / "report.md").read_text()
    stdout = " ".join(run.stdout.split())  # the terminal may wrap; the words may not change
    for sentence in record["headline"]:
        assert sentence in summary and sentence in markdown and sentence in report["conclusions"]
        assert " ".join(sentence.split()) in stdout
    assert "Largest gap" not in summary and "No test of significance" not in stdout
    assert json.loads((run_dir / "summary.json").read_text())["primary"] == record

    board = tmp_path / "board.csv"
    cli(env, "leaderboard", "add", str(run_dir), "--file", str(board), "--allow-pipeline-check")
    with board.open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    for gname, prefix in (("gender", "gender"), ("ethnicity", "ethnicity"), ("gender x ethnicity",
                                                                              "gender_x_ethnicity")):
        r = record["groupings"][gname]
        assert float(row[f"{prefix}_gap"]) == pytest.approx(r["gap"], rel=1e-5, abs=1e-12)
        if r["p_corrected"] is None:  # undefined (e.g. every voice of a cell answered alike): empty, not 0
            assert row[f"{prefix}_p_corrected"] == row[f"{prefix}_significant"] == "" and r["undefined"]
            continue
        assert float(row[f"{prefix}_p_corrected"]) == pytest.approx(r["p_corrected"], rel=1e-5)
        assert row[f"{prefix}_significant"] == str(r["significant"]).lower()
    assert row["pipeline_check"] == "true" and row["correction"] == record["correction"]
    # the planted pitch effect is a gender effect: the run's own verdict says so everywhere
    assert record["groupings"]["gender"]["significant"] and row["gender_significant"] == "true"

    again = cli(env, "report", str(run_dir), "--n-permutations", "10000")  # a re-report restates the same record
    assert json.loads((run_dir / "report.json").read_text())["primary"] == record
    assert record["headline"][0] in " ".join(again.stdout.split()) or record["headline"][0] in again.stdout
