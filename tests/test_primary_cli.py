"""Issue 20 through the installed console script: what every view of the primary result says
when answers are missing, groups are unequal, a grouping is refused, nothing differs, or the
invalid rates differ.

Each run directory is built from a designed tidy table (tests/test_report.py `make_run`, plus
the summary the runner writes), then `biasbench report` and `biasbench leaderboard add` run
as a user runs them; the end of `biasbench run` is checked on one real pipeline run with the
simulated listener (espeak-ng voices).
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_espeak
from test_report import make_run, manifest_for, tidy_from_simulation

BIASBENCH = str(Path(sys.executable).parent / "biasbench")


def cli(*args, env=None):
    done = subprocess.run([BIASBENCH, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, COLUMNS="200", **(env or {})))
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def designed_run(path: Path, table, analysis: dict | None = None, board: bool = True) -> dict:
    """A run directory with the runner's summary, reported (and added to a leaderboard) through the
    console script; returns report.json, report.md, summary.md and the leaderboard row."""
    from biasbench.analysis.summary import first_analysis, to_markdown

    manifest = manifest_for(path.name)
    if analysis:
        manifest["task"]["config"]["analysis"] = analysis
    make_run(path, path.name, table=table, manifest=manifest)
    summary = first_analysis(table, "multiple_choice")
    (path / "summary.json").write_text(json.dumps({"pipeline_check": False, "banner": "", **summary}), "utf-8")
    (path / "summary.md").write_text(to_markdown(summary, title=path.name), "utf-8")
    cli("report", str(path), "--n-permutations", "999", "--mdg-sims", "20")
    row = None
    if board:
        csv_file = path.parent / f"{path.name}.csv"
        cli("leaderboard", "add", str(path), "--file", str(csv_file))
        with csv_file.open(newline="", encoding="utf-8") as handle:
            (row,) = list(csv.DictReader(handle))
    return {"report": json.loads((path / "report.json").read_text()), "md": (path / "report.md").read_text(),
            "summary": (path / "summary.md").read_text(), "row": row}


def too_long(table, mask):
    """Mark rows as clips too long for the model (no outcome)."""
    table.loc[mask, "status"] = "audio_too_long"
    table.loc[mask, "correct"] = np.nan
    return table


# ---------------------------------------------------------------- 1. missing answers


@pytest.fixture(scope="module")
def slow_female(tmp_path_factory):
    """Female voices' clips run past the window 40% of the time, male 5% (1 and 5 at once)."""
    table = tidy_from_simulation("slow", voices_per_cell=3, n_items=40, seed=6)
    rng = np.random.default_rng(0)
    share = np.where(table["gender"] == "female", 0.4, 0.05)
    table = too_long(table, rng.random(len(table)) < share)
    return table, designed_run(tmp_path_factory.mktemp("slow") / "slow", table)


def test_missing_answers_keep_every_item_and_views_say_how_many_were_tested(slow_female, tmp_path):
    adjusted = slow_female[1]
    record = adjusted["report"]["primary"]
    assert record["items"] == "adjusted" and record["n_items_tested"] == record["n_items_run"] == 40
    assert adjusted["row"]["n_items_tested"] == adjusted["row"]["n_items"] == "40"
    assert "item-adjusted outcomes" in adjusted["summary"] and "The primary test used" not in adjusted["summary"]

    table = tidy_from_simulation("common", voices_per_cell=3, n_items=40, seed=5, invalid_rate=0.08)
    common = designed_run(tmp_path / "common", too_long(table, table["status"] == "invalid"), {"items": "common"})
    record = common["report"]["primary"]
    used = record["n_items_tested"]
    assert used < 40 and record["groupings"]["gender"]["n_items"] == used
    sentence = f"The primary test used {used} of the run's 40 items"
    assert sentence in common["summary"] and sentence in common["md"]
    assert common["row"]["n_items_tested"] == str(used) and common["row"]["n_items"] == "40"

    # no item that every voice answered: one clear sentence (in process: the same code as the CLI's)
    from biasbench.report import Settings, build_report

    nothing = tidy_from_simulation("none", voices_per_cell=3, n_items=20, seed=1, invalid_rate=0.6)
    manifest = manifest_for("none")
    manifest["task"]["config"]["analysis"] = {"items": "common"}
    paths = build_report(make_run(tmp_path / "none", "none", table=nothing, manifest=manifest),
                         Settings(n_permutations=199, mdg_sims=20))
    words = "By gender, the accuracy is not testable: no item answered by every voice"
    assert words in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["primary"]["n_items_tested"] is None


# ---------------------------------------------------------------- 2. unequal groups


def test_unequal_group_sizes_get_the_studentised_test_and_say_so(tmp_path):
    table = tidy_from_simulation("uneq", voices_per_cell=5, n_items=30, seed=8)
    male = sorted(table.loc[table["gender"] == "male", "voice_id"].unique())
    kept = {v for v in male if int(v.split("v")[-1]) % 5 < 2}  # 2 male voices per ethnicity: 15 vs 6
    table = table[(table["gender"] == "female") | table["voice_id"].isin(kept)]
    run = designed_run(tmp_path / "uneq", table, board=False)
    gender = run["report"]["sections"]["primary"]["groupings"]["gender"]["gap"]
    assert gender["n_voices_by_group"] == {"female": 15, "male": 6} and "Welch" in gender["test"]
    assert (gender["p_value"] > 0.05 / 3) == (gender["ci"][0] <= 0)
    assert run["report"]["primary"]["groupings"]["gender"]["studentised"]
    assert "Groups differ in size by gender" in run["summary"] and "Groups differ in size by gender" in run["md"]
    ethnicity = run["report"]["sections"]["primary"]["groupings"]["ethnicity"]["gap"]
    assert "Welch" not in ethnicity["test"]  # 7 voices per ethnicity: the range statistic stays


# ---------------------------------------------------------------- 3. a refused grouping


def test_a_refused_grouping_leaves_the_family_and_the_interval_level(tmp_path):
    table = tidy_from_simulation("refused", voices_per_cell=3, n_items=30, seed=3,
                                 effects={"gender": {"male": 1.5}}, voice_sd=0.2)
    cell = sorted(table.loc[(table["gender"] == "female") & (table["ethnicity"] == "black"), "voice_id"].unique())
    table = table[~table["voice_id"].isin(cell[1:])]  # one voice left in that cell
    run = designed_run(tmp_path / "refused", table)
    record = run["report"]["primary"]
    assert "(2 tests: accuracy by gender, ethnicity; not testable, so not in the family: gender x ethnicity)" \
        in record["correction"]
    for gname in ("gender", "ethnicity"):
        assert record["groupings"][gname]["ci_level"] == pytest.approx(0.975)
    assert record["groupings"]["gender x ethnicity"]["ci_level"] is None
    assert "97.5% CI" in run["md"] and "98.3%" not in run["md"] and "98.3%" not in run["summary"]
    assert run["row"]["ci_level"] == "0.975"
    gender = record["groupings"]["gender"]
    assert gender["significant"] == (gender["ci"][0] > 0)  # significant exactly when the interval excludes 0


# ---------------------------------------------------------------- 4. nothing differs


def test_a_run_where_nothing_differs_reads_as_a_tie(tmp_path):
    table = tidy_from_simulation("tie", voices_per_cell=3, n_items=20, seed=2)
    table["correct"] = (table["item_id"].str[-1].astype(int) % 2).astype(float)  # every voice answers alike
    table["status"] = "valid"
    run = designed_run(tmp_path / "tie", table)
    record = run["report"]["primary"]
    assert record["groupings"]["gender"]["between"] == "no difference"
    assert record["groupings"]["ethnicity"]["between"] == "all groups equal"
    assert run["row"]["gender_between"] == "no difference"
    for text in (run["md"], run["summary"]):
        assert not re.search(r"-0(\.0+)?\b", text), re.search(r".{40}-0(\.0+)?\b.{20}", text)
        assert "female - female" not in text and "black - black" not in text
        assert "all groups equal, every group at 50.0%" in text and "Every answer was valid" in text
    assert (tmp_path / "tie" / "report_figures" / "voices.png").is_file()


def test_answers_distributed_alike_read_as_no_difference(tmp_path):
    """A preference probe where every voice answers alike: no '-0.000 bits', no 'black - black'."""
    table = tidy_from_simulation("prefs", voices_per_cell=3, n_items=20, seed=4)
    table["answer"] = np.where(table["item_id"].str[-1].astype(int) % 2 == 0, "nurse", "engineer")
    table["status"] = "valid"
    manifest = manifest_for("prefs", task="career", output_type="generate_categorical", metrics=["category_shares"])
    path = make_run(tmp_path / "prefs", "prefs", table=table, manifest=manifest)
    cli("report", str(path), "--n-permutations", "999", "--mdg-sims", "20")
    markdown = (path / "report.md").read_text()
    record = json.loads((path / "report.json").read_text())["primary"]
    assert "-0.000" not in markdown and "black - black" not in markdown and "female - female" not in markdown
    assert {r["between"] for r in record["groupings"].values()} == {"no difference"}
    assert "No difference in the answers by ethnicity: every group's answers were distributed alike" in markdown


def test_flat_axes_and_zero_are_printed_plainly():
    import matplotlib.pyplot as plt

    from biasbench.report.figures import readable
    from biasbench.report.fmt import between, bits, gap_interval, num, pct, points, signed_points

    assert (pct(-1e-17), points(-1e-16), signed_points(-1e-16), num(-1e-14), bits(-1e-17)) == \
        ("0%", "0 points", "0 points", "0", "0 bits")
    assert gap_interval({"kind": "binary"}, [-1e-15, 1e-15]) == "0 to 0 points"
    assert between("black", "black", 0.0, 3) == "all groups equal" and between("f", "m", 0.1) == "f - m"
    fig, ax = plt.subplots()
    ax.scatter([0, 1, 2], [40 + 1e-11, 40, 40 - 1e-11])
    readable(ax, "y", span=5)
    fig.canvas.draw()
    assert ax.yaxis.get_major_formatter().get_offset() == ""
    assert ax.get_ylim() == pytest.approx((35, 45))
    plt.close(fig)


# ---------------------------------------------------------------- 5. invalid shares


def test_invalid_shares_and_their_warning_stand_beside_the_primary_result(slow_female):
    table, run = slow_female
    record = run["report"]["primary"]
    female = next(r for r in record["invalid_by_group"]["gender"] if r["group"] == "female")
    assert female["invalid"] == pytest.approx((table["gender"].eq("female") & table["status"].ne("valid")).sum()
                                              / table["gender"].eq("female").sum())
    line = re.search(r"- by gender: female [0-9.]+% \(audio_too_long [0-9.]+%\); male", run["summary"])
    assert line and line.group(0) in run["md"]
    warning = record["invalid_warnings"][0]
    assert warning.startswith("Warning: the invalid-answer rate differs between groups")
    assert warning in run["summary"] and warning in run["md"] and warning in run["report"]["conclusions"]


@requires_espeak
@pytest.mark.slow
def test_the_end_of_a_run_states_the_invalid_shares(tmp_path, biasbench_cache):
    done = cli("run", "--model", "simulated-no-bias", "--task", "mmlu", "--limit", "4", "--data-source", "local",
               "--output-dir", str(tmp_path), "--run-id", "shares", "--no-progress",
               env={"BIASBENCH_CACHE": str(biasbench_cache)})
    summary = (tmp_path / "shares" / "summary.md").read_text()
    stdout = " ".join(done.stdout.split())
    lines = [line for line in summary.splitlines() if line.startswith("- by ")]
    if lines:  # some answers not valid: each grouping's shares, in both views
        assert "Answers that were not valid (left out of the outcome, counted here):" in summary
        assert [line[:12] for line in lines] == ["- by gender:", "- by ethnici", "- by gender "]
    else:
        lines = ["Every answer was valid: none was left out of the outcome."]
        assert lines[0] in summary
    for line in lines:
        assert " ".join(line.split()) in stdout
