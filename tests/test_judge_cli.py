"""The pairwise judge through the installed console script, as a user runs it.

One finished open-answer run (the simulated listener's planted effect: shorter answers to
low-pitched voices) is judged by simulated judges: one with a planted preference for longer
answers finds the gap by gender and every view (closing lines, summary.md, report.md,
report.json) states the same sentences and the judge's agreement (not measured, then
measured on the shipped illustrative set); a rerun makes no judgement twice; a judge with no
preference finds no gap; a failing judge's failures are counted and the command exits 3; a
tiny text LLM judges through the real transformers path; bad input is one clear line.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from importlib.resources import files
from pathlib import Path

import pytest

from conftest import requires_espeak, write
from test_open_answers_cli import cli, env  # noqa: F401  (the console script, and its environment fixture)

pytestmark = [requires_espeak]

LABELS = str(files("biasbench.judge") / "data" / "illustrative_pairs.jsonl")
FAST = ("--n-permutations", "1999", "--mdg-sims", "20")  # the report's resampling, kept short in tests


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, biasbench_cache):
    """A generate_open run of the shipped advice_open (4 items, 18 voices, lexical similarity)."""
    root = tmp_path_factory.mktemp("judged")
    task = write(root / "advice.yaml", "task: advice_lexical\ninclude: advice_open.yaml\n"
                 "open_answer: {similarity: lexical}\n")
    env = dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), HF_HUB_OFFLINE="1")
    cli(env, "run", "--model", "simulated-pitch-bias", "--task", str(task), "--limit", "4", "--output-dir",
        str(root), "--run-id", "planted", "--no-progress", "--no-report")
    return root / "planted"


@pytest.fixture
def run_dir(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))


@pytest.mark.slow
def test_planted_preference_is_found_and_stated_alike_everywhere(run_dir, env):
    measured = cli(env, "judge", "agreement", LABELS, "--judge", "simulated-judge-length", "--run", str(run_dir))
    assert "16 of 16 labelled pairs" in measured.stdout and "ILLUSTRATIVE set, not a validation" in measured.stdout
    done = cli(env, "judge", "compare", str(run_dir), "--judge", "simulated-judge-length", *FAST)
    report = json.loads((run_dir / "report.json").read_text())
    block = report["judge"]
    assert block["n_planned"] == block["n_judged"] > 0 and block["n_failed"] == 0
    with sqlite3.connect(run_dir / "judgements.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM judgements WHERE verdict IS NOT NULL AND item_id NOT LIKE 'labels:%'"
                          ).fetchone()[0] == block["n_planned"]
    section = report["sections"]["outcomes"]["judge"]
    assert section["role"] == "secondary" and section["groupings"]["gender"]["p_corrected"] < 0.05
    assert section["groupings"]["gender"]["gap"]["highest"] == "female"  # longer answers, preferred
    summary, markdown = (run_dir / "summary.md").read_text(), (run_dir / "report.md").read_text()
    stdout = " ".join(done.stdout.split())
    assert f"All {block['n_planned']} planned judgements have a verdict." in stdout
    for line in block["lines"]:
        assert line in summary and line in markdown and " ".join(line.split()) in stdout
    assert "Judge agreement with human labels: 69%" in markdown and "Judge agreement not measured" not in markdown
    conclusions = report["conclusions"]  # the secondary judge gap, then the agreement beside it
    at = next(i for i, c in enumerate(conclusions) if "judge win share" in c)
    assert conclusions[at + 1].startswith("Judge agreement with human labels: 69%")
    assert len(block["voices"]) == 18
    bt = block["bradley_terry"]  # a judge that always prefers the longest answer can separate the voices
    assert (bt["undefined"] is None) == all(v["bt_strength"] is not None for v in block["voices"])
    assert bt["undefined"] is None or f"Bradley-Terry strengths undefined: {bt['undefined']}" in markdown

    again = cli(env, "judge", "compare", str(run_dir), "--judge", "simulated-judge-length", "--no-report")
    assert f"({block['n_planned']} cached, 0 made now)" in again.stdout  # resumed: nothing judged twice
    assert "Judge agreement with human labels: 69%" in again.stdout


@pytest.mark.slow
def test_a_judge_without_preference_finds_no_gap(run_dir, env):
    """The voice-level test of the run's win shares, as the report computes it (numeric_section's
    numeric_gap on the table with the judge column), finds nothing by any grouping."""
    from biasbench.analysis import numeric_gap
    from biasbench.report.analyze import prepared, with_judge
    from biasbench.report.load import load_run

    done = cli(env, "judge", "compare", str(run_dir), "--judge", "simulated-judge-random", "--seed", "3",
               "--no-report")
    assert "Judge agreement not measured" in done.stdout
    run = load_run(run_dir)
    audio = with_judge(prepared(run.table, run.output_type), run).query("condition == 'audio'")
    for columns in (["gender"], ["ethnicity"], ["gender", "ethnicity"]):
        assert numeric_gap(audio, columns, "judge", n_permutations=999).p_value > 0.05 / 3


@pytest.mark.slow
def test_failed_judgements_are_counted_shown_and_exit_3(run_dir, env):
    done = cli(env, "judge", "compare", str(run_dir), "--judge", "simulated-judge-flaky", "--no-report", expect=3)
    line = next(x for x in done.stdout.splitlines() if "judgements failed" in x)
    failed, planned = (int(w) for w in line.split()[0:3:2])
    assert 0 < failed < planned and "no verdict in the reply" in line and "SimulatedError" in line
    with sqlite3.connect(run_dir / "judgements.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM judgements WHERE error IS NOT NULL").fetchone()[0] == failed


@pytest.mark.slow
def test_a_tiny_text_llm_judges_through_transformers(run_dir, env):
    """Its replies are random text: each is judged, and one without a verdict is a counted failure."""
    import pandas as pd

    table = pd.read_parquet(run_dir / "responses.parquet")
    table[table["item_id"] == table["item_id"].iloc[0]].to_parquet(run_dir / "responses.parquet")  # one item
    done = cli(env, "judge", "compare", str(run_dir), "--judge", "hf-text:tiny-qwen2-text", "--opponents", "1",
               "--max-new-tokens", "8", "--batch-size", "16", "--no-report", expect=None)
    assert done.returncode in (0, 3) and "planned" in done.stdout
    record = json.loads((run_dir / "judge.json").read_text())
    assert record["fingerprint"]["backend"] == "hf-causal-lm" and record["pipeline_check"]


@pytest.mark.parametrize("args, message", [
    (["judge", "compare", "{run}", "--judge", "simulated-judge-nope"], "unknown simulated judge"),
    (["judge", "compare", "{run}/missing", "--judge", "simulated-judge-length"], "is not a directory"),
    (["judge", "agreement", "{run}/labels.jsonl", "--judge", "simulated-judge-length"],
     "labels.jsonl, line 1, field 'human': expected a, b or tie, got 'maybe'"),
    (["judge", "agreement", LABELS, "--judge", "simulated-judge-length", "--run", "{run}/missing"],
     "not a run directory"),
])
def test_bad_input_is_one_clear_line(run_dir, env, args, message):
    write(run_dir / "labels.jsonl", '{"prompt": "q", "answer_a": "x", "answer_b": "y", "human": "maybe"}\n')
    done = cli(env, *[a.replace("{run}", str(run_dir)) for a in args], expect=2)
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_help_fits_80_columns(env):
    for command in (["judge", "--help"], ["judge", "compare", "--help"], ["judge", "agreement", "--help"]):
        done = cli(dict(env, COLUMNS="80"), *command)
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout


@pytest.mark.slow
def test_an_openai_compatible_judge_is_sent_text_only_and_nothing_about_the_voice(run_dir, env):
    """On the wire: every request holds one text part (no audio) naming no voice id or group."""
    from test_openai_backend import FakeOpenAI

    fake = FakeOpenAI()
    fake.rules.append(lambda body: ("say", "Answer B is more specific. [[B]]"))
    fake.thread.start()
    try:
        done = cli(dict(env, OPENAI_API_KEY="sk-test-judge"), "judge", "compare", str(run_dir), "--judge",
                   "openai:judge-model", "--base-url", fake.url, "--no-report", "--batch-size", "32",
                   "--opponents", "1")
    finally:
        fake.httpd.shutdown()
        fake.httpd.server_close()
    record = json.loads((run_dir / "judge.json").read_text())
    assert len(fake.calls) == record["n_planned"] and "All" in done.stdout
    import pandas as pd

    voice_ids = set(pd.read_parquet(run_dir / "responses.parquet")["voice_id"].dropna())
    words = {"female", "male", "black", "white", "asian", "espeak", "voice", "gender", "ethnic"} | voice_ids
    for body in fake.calls:
        [part] = body["messages"][-1]["content"]
        assert part["type"] == "text" and "[Answer A]" in part["text"]
        assert not any(w.lower() in part["text"].lower() for w in words), part["text"]
