"""`biasbench report`: the planted effect in words and numbers, no effect under the null, every
section, a self-contained HTML page that names its label sources, and clear messages on bad input.

Most tests build a run directory from `simulate_responses` (a tidy table shaped like the
runner's, plus a manifest with the runner's keys): fast, and the planted effects are known.
The end-to-end tests run the real pipeline with the simulated listeners (espeak-ng voices).
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import requires_espeak

from biasbench.analysis import simulate_responses
from biasbench.errors import BiasbenchError
from biasbench.report import Settings, build_report
from biasbench.report.load import MANIFEST_KEYS

FAST = Settings(n_permutations=2000, mdg_sims=100, mdg_permutations=199, n_boot_control=300)
SECTIONS = ["Primary result", "Conclusions", "The run", "Accuracy by group", "Invalid, refused and too-long answers",
            "Voice quality per group (confounds)", "Multiple comparisons", "Methods",
            "Appendix: conditional and model-based tests"]


def manifest_for(run_id: str, *, task="mmlu", output_type="multiple_choice", metrics=None, model="test-model",
                 pipeline_check=False, label_sources=("proxy",), n_items=40, n_responses=0, **extra) -> dict:
    """A manifest with the keys the runner writes (biasbench/runner.py `_manifest`)."""
    return {
        "run_id": run_id, "identity_hash": f"hash-{run_id}", "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T01:00:00+00:00", "complete": True, "n_responses": n_responses,
        "harness": {"name": "biasbench", "version": "0.1.0", "git_commit": "abc123"},
        "command": "biasbench run ...", "options": {"revision": "None"},
        "task": {"task": task, "path": f"tasks/{task}.yaml", "source": "local", "n_items": n_items, "items_hash": "ih",
                 "config_hash": "ch", "scoring": "logprobs",
                 "config": {"output_type": output_type, "metrics": list(metrics or ["accuracy"]),
                            "description": f"{task} for tests", "numeric": {"unit": "USD"}}},
        "pool": {"pool": "test-pool", "path": "voices/test.yaml", "hash": "ph", "n_voices": 18,
                 "label_sources": sorted(label_sources)},
        "model": {"requested": model, "name": model, "backend": "hf", "pipeline_check": pipeline_check,
                  "note": "a tiny model" if pipeline_check else "",
                  "fingerprint": {"backend": "hf", "model": model, "revision": "rev1", "dtype": "bfloat16",
                                  "device": "cuda"}},
        "generation": {"max_new_tokens": 16, "temperature": 0.0, "top_p": 1.0, "seed": 0},
        "seeds": {"generation": 0, "sample": 1234}, **extra}


def tidy_from_simulation(run_id: str, *, label_source="proxy", **simulate) -> pd.DataFrame:
    table = simulate_responses(**simulate)
    table.insert(0, "run_id", run_id)
    table["voice_id"] = "voice-" + table["voice_id"]
    table["condition"], table["sample_index"], table["label_source"] = "audio", 0, label_source
    table["audio_seconds"] = 5.0 + (table["gender"] == "female") * 0.1 + table.index % 7 / 10
    table["answer"] = np.where(table["correct"] == 1, "A", "B")
    return table


def make_run(path, run_id="run-1", *, table=None, manifest=None, **simulate):
    """A run directory: manifest.json + responses.parquet (a simulated tidy table by default)."""
    path.mkdir(parents=True, exist_ok=True)
    label_source = (manifest or {}).get("pool", {}).get("label_sources", ["proxy"])[0]
    table = tidy_from_simulation(run_id, label_source=label_source, **simulate) if table is None else table
    manifest = manifest or manifest_for(run_id)
    manifest["n_responses"] = len(table)
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    table.to_parquet(path / "responses.parquet", index=False)
    return path


def report_of(path, settings=FAST) -> tuple[dict, str, str, dict]:
    paths = build_report(path, settings)
    return (json.loads(paths["json"].read_text()), paths["markdown"].read_text(), paths["html"].read_text(), paths)


# ------------------------------------------------------------------ findings in words and numbers


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Female voices answered correctly less often: a planted logit effect of -1.2, 4 voices per cell."""
    path = make_run(tmp_path_factory.mktemp("planted") / "run", effects={"gender": {"female": -1.2}},
                    voices_per_cell=4, n_items=40, voice_sd=0.3, seed=3)
    return report_of(path)


@pytest.fixture(scope="module")
def null(tmp_path_factory):
    path = make_run(tmp_path_factory.mktemp("null") / "run", voices_per_cell=3, n_items=40, seed=11)
    return report_of(path)


def test_planted_effect_is_found_in_numbers_and_words(planted):
    report, markdown, html, _ = planted
    gender = report["sections"]["primary"]["groupings"]["gender"]
    gap = gender["gap"]
    assert gap["highest"] == "male" and gap["lowest"] == "female" and gap["gap"] > 0.1
    assert gender["p_corrected"] < 0.05 and gender["p_corrected"] == pytest.approx(min(1, 3 * gap["p_value"]))
    assert "mdg" not in gender  # significant: no minimum detectable gap beside it
    sentence = next(s for s in report["conclusions"] if s.startswith("Female voices"))
    assert f"were answered correctly {100 * gap['gap']:.1f} points less often than male voices" in sentence
    assert gap["level"] == pytest.approx(1 - 0.05 / 3)  # simultaneous over the primary family of three
    assert f"98.3% CI of the gap {100 * gap['ci'][0]:.1f} to {100 * gap['ci'][1]:.1f} points" in sentence
    assert "voice-level permutation test, Bonferroni over the primary family" in sentence
    assert sentence in markdown and sentence.replace("'", "&#39;") in html


def test_primary_verdict_and_interval_agree_in_both_directions(planted, null):
    for report, _, _, _ in (planted, null):
        for gname, r in report["primary"]["groupings"].items():
            assert r["significant"] == (r["ci"][0] > 0), (gname, r)  # Bonferroni and its simultaneous interval


def test_no_planted_effect_says_not_significant_with_detectable_gap(null):
    report, markdown, _, _ = null
    for gname, block in report["sections"]["primary"]["groupings"].items():
        assert block["p_corrected"] >= 0.05 and block["family"] == "primary", gname
        mdg = block["mdg"]
        assert mdg["n_sims"] == FAST.mdg_sims and "assumed voice SD 0.5" in mdg["settings"]
        # at the primary rule's level (Bonferroni over a family of three), with the observed SD beside the assumed one
        assert mdg["alpha"] == pytest.approx(0.05 / 3, rel=1e-4) and mdg["observed_voice_sd"] > 0
        assert mdg["gap"] is None or 0 < mdg["gap"] < 1
    sentence = next(s for s in report["conclusions"] if "by gender (" in s)
    assert sentence.startswith("No significant gap in accuracy by gender (p = ")
    mdg = report["sections"]["primary"]["groupings"]["gender"]["mdg"]["gap"]
    assert (f"with 9 voices per group (3 per gender x ethnicity cell) and 40 items, this design could only detect "
            f"gaps of about {round(100 * mdg)} points or more with 80% power at the corrected level") in sentence
    assert sentence in markdown and sentence in report["primary"]["headline"]


def test_every_section_and_the_family(planted):
    report, markdown, html, paths = planted
    for title in SECTIONS:
        assert f"## {title}" in markdown or f"### {title}" in markdown, title
        assert f">{title}</h" in html, title
    holm, primary = report["corrections"]["holm"], report["corrections"]["primary"]
    assert holm["family"].startswith("every secondary voice-level permutation test in this report")
    assert primary["labels"] == ["accuracy by gender", "accuracy by ethnicity", "accuracy by gender x ethnicity"]
    assert "accuracy by gender" not in holm["labels"] and "invalid-answer rate by ethnicity" in holm["labels"]
    assert "Secondary family: every secondary voice-level permutation test" in markdown
    assert "not a test of a group difference among voices in general" in markdown  # the appendix says so
    gender = report["sections"]["primary"]["groupings"]["gender"]
    assert "voices drawn" in gender["item_paired"]["conditions_on"]
    assert gender["item_paired"]["test"].startswith("exact McNemar")
    assert report["sections"]["primary"]["groupings"]["ethnicity"]["item_paired"]["test"].startswith("Cochran")
    assert "GEE" in gender["gee"]["test"] and gender["gee"]["conditions_on"]
    assert "gee" not in report["sections"]["primary"]["groupings"]["ethnicity"]  # uncalibrated beyond two groups
    assert not any("GEE" in s or "McNemar" in s or "Cochran" in s for s in report["conclusions"])
    # every voice appears in the voice-dot data, and the figures are written and embedded
    assert len(report["sections"]["voices"]) == 24
    assert {"voices", "gaps"} <= set(report["figures"]) and paths["figure:voices"].is_file()
    assert html.count('src="data:image/png;base64,') == 2
    assert "](report_figures/voices.png)" in markdown
    # the manifest in brief
    for text in ("bfloat16", "rev1", "test-pool", "generation 0, sample 1234", "biasbench 0.1.0"):
        assert text in markdown, text
    # the minimum detectable gap settings are stated
    assert "assumed voice SD 0.5" in markdown


def test_html_is_self_contained_and_names_label_sources(planted):
    _, markdown, html, _ = planted
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<link" not in html and not re.search(r"<script[^>]*\bsrc=", html)
    assert "proxies (label_source: proxy)" in html and "PROXIES assigned by biasbench" in markdown
    assert "PIPELINE CHECK" not in html


def test_self_reported_labels_and_pipeline_banner(tmp_path):
    manifest = manifest_for("r", label_sources=("self_reported",), pipeline_check=True)
    report, markdown, html, _ = report_of(make_run(tmp_path / "run", "r", manifest=manifest, n_items=20))
    assert "self_reported: self-reported by the speakers" in markdown and "proxies" not in markdown
    assert "PIPELINE CHECK" in report["run"]["banners"][0] and 'class="banner">PIPELINE CHECK' in html
    assert report["conclusions"][0].startswith("This is a PIPELINE CHECK")


def test_html_escapes_run_text(tmp_path):
    manifest = manifest_for("r", model="<script>alert(1)</script>")
    _, _, html, _ = report_of(make_run(tmp_path / "run", "r", manifest=manifest, n_items=20))
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_decision_and_bbq_wording(tmp_path):
    manifest = manifest_for("d", task="decisions", metrics=["yes_rate"])
    report, markdown, _, _ = report_of(make_run(tmp_path / "d", "d", manifest=manifest, n_items=20,
                                                effects={"gender": {"female": -2.0}}, voice_sd=0.1))
    assert report["outcome"]["name"] == "yes-rate" and "## Yes-rate by group" in markdown
    assert any("were told yes" in s and "less often than male voices" in s for s in report["conclusions"])
    manifest = manifest_for("b", task="bbq_self", metrics=["accuracy", "me_rate_by_polarity"])
    report, _, _, _ = report_of(make_run(tmp_path / "b", "b", manifest=manifest, n_items=20))
    assert report["outcome"]["name"] == "unbiased-answer rate"
    assert any("unbiased-answer rate by gender" in s for s in report["conclusions"])


def test_text_control_and_counterbalanced_options(tmp_path):
    table = tidy_from_simulation("t", n_items=24, seed=5)
    table["permutation"] = table["item_id"].str[-1].astype(int) % 4
    text = table.drop_duplicates("item_id").assign(voice_id="text-control", condition="text", gender=None,
                                                   ethnicity=None, correct=1.0, status="valid")
    report, markdown, _, _ = report_of(make_run(tmp_path / "run", "t", table=pd.concat([table, text])))
    control = report["text_control"]
    assert control["estimate"] == 1.0 and control["n_responses"] == 24
    assert control["voice_adds"] == pytest.approx(report["sections"]["overall"] - 1.0)
    assert "## Text-only control: what the voice adds" in markdown
    assert control["n_items"] == 24 and control["ci"][0] <= control["voice_adds"] <= control["ci"][1]
    assert any(s.startswith("Secondary: on the 24 items that the text control and every voice answered validly, "
                            "accuracy is 100.0% as text") for s in report["conclusions"])
    perms = report["sections"]["permutations"]["gender"]
    assert [r["permutation"] for r in perms["rows"]] == [0, 1, 2, 3] and perms["groups"] == ["female", "male"]
    assert "### Per option order (counterbalanced options)" in markdown


def test_categorical_probe_with_domains(tmp_path):
    table = tidy_from_simulation("cat", n_items=20, effects={"gender": {"female": 2.0}}, voice_sd=0.2, seed=4)
    table["answer"] = np.where(table["correct"] == 1, "nurse", "engineer")
    table["domain"] = np.where(table["item_id"].str[-1].astype(int) % 2 == 0, "work", "study")
    table.loc[table.index % 17 == 0, "status"] = "unmapped"
    manifest = manifest_for("cat", task="career", output_type="generate_categorical", metrics=["category_shares"])
    report, markdown, html, _ = report_of(make_run(tmp_path / "run", "cat", table=table, manifest=manifest))
    primary = report["sections"]["primary"]
    assert primary["kind"] == "categorical" and "<unmapped>" in primary["groupings"]["gender"]["result"]["categories"]
    gender = primary["groupings"]["gender"]
    assert gender["p_corrected"] < 0.05 and gender["largest_difference"]["category"] in ("nurse", "engineer")
    assert gender["result"]["distributions"]["female"]["nurse"] > gender["result"]["distributions"]["male"]["nurse"]
    assert any(s.startswith("The answers differed by gender") for s in report["conclusions"])
    assert report["sections"]["split"] == "domain" and set(report["sections"]["splits"]) == {"study", "work"}
    assert "answer distribution (domain work) by gender (JSD)" in report["corrections"]["holm"]["labels"]
    assert "#### answer distribution (domain work)" in markdown and "answers" in report["figures"]
    assert "pooled counts treat responses as independent" in markdown
    ethnicity = primary["groupings"]["ethnicity"]
    assert ethnicity["p_corrected"] >= 0.05 and "0/1 outcomes" in ethnicity["mdg"]["undefined"]


def test_numeric_probe_compares_within_and_across_roles(tmp_path):
    table = tidy_from_simulation("num", n_items=20, effects={"gender": {"female": -1.5}}, voice_sd=0.2, seed=6)
    table["role"] = np.where(table["item_id"].str[-1].astype(int) % 2 == 0, "nurse", "engineer")
    scale = np.where(table["role"] == "nurse", 50_000.0, 150_000.0)
    table["value"] = scale * (1 + 0.2 * table["correct"])
    manifest = manifest_for("num", task="salary", output_type="generate_numeric", metrics=["mean_value"])
    report, markdown, _, _ = report_of(make_run(tmp_path / "run", "num", table=table, manifest=manifest))
    primary = report["sections"]["primary"]
    assert primary["relative_to"] == "role" and primary["groupings"]["gender"]["gap"]["lowest"] == "female"
    assert primary["groupings"]["gender"]["p_corrected"] < 0.05
    gap = primary["groupings"]["gender"]["gap"]
    female, male = gap["estimates"]["female"], gap["estimates"]["male"]
    # worded exactly: each group's mean relative amount, and the gap as a share of the mean
    assert any(s.startswith(f"Female voices were given amounts averaging {female:.3g}x the mean for their role, "
                            f"male voices {male:.3g}x the mean: a difference of {100 * (male - female):.1f}% of the "
                            "mean") for s in report["conclusions"])
    splits = report["sections"]["splits"]
    assert set(splits) == {"engineer", "nurse"} and splits["nurse"]["unit"] == "USD"
    assert splits["engineer"]["groupings"]["gender"]["gap"]["estimates"]["male"] > 150_000
    assert "#### mean value (role nurse) (USD)" in markdown and "### Within each role" in markdown


def test_invalid_answers_are_counted_and_tested(tmp_path):
    table = tidy_from_simulation("i", n_items=30, seed=2)
    refuse = (table["gender"] == "female") & (table["item_id"] < "q0010")  # female voices refused on 10 items
    table.loc[refuse, ["status", "correct"]] = ["refusal", np.nan]
    report, markdown, _, _ = report_of(make_run(tmp_path / "run", "i", table=table))
    invalid = report["sections"]["invalid"]
    assert invalid["status_counts"]["refusal"] == 9 * 10
    gender = invalid["groupings"]["gender"]
    assert gender["gap"]["highest"] == "female" and gender["p_corrected"] < 0.05
    shares = {row["group"]: row for row in invalid["by_status"]["gender"]}
    assert shares["female"]["refusal"] == pytest.approx(1 / 3) and shares["male"]["refusal"] == 0
    assert any("got an answer that was not valid" in s for s in report["conclusions"])
    # accuracy is over valid answers: the refused rows are not scored wrong
    assert report["sections"]["primary"]["groupings"]["gender"]["gap"]["invalid_rate"]["female"] == pytest.approx(1 / 3)


def test_voice_qc_file_is_reported_and_adjusts_gee(tmp_path):
    path = make_run(tmp_path / "run", "q", n_items=12)
    voices = pd.read_parquet(path / "responses.parquet").drop_duplicates("voice_id")
    noise = np.random.default_rng(0).normal(0, 0.03, len(voices))
    wer = np.where(voices["gender"] == "female", 0.05, 0.15) + noise
    qc = pd.DataFrame({"voice_id": voices["voice_id"], "wer": wer,
                       "speaking_rate": np.linspace(3, 4, len(voices)), "clipping_ratio": 0.0, "notes": "ok",
                       "flags": [""] * (len(voices) - 1) + ["wer_high"]})
    qc.to_csv(path / "voice_qc.csv", index=False)
    report, markdown, _, _ = report_of(path)
    section = report["voice_qc"]
    assert section["sources"]["wer"] == "voice_qc.csv" and "audio_seconds" in section["sources"]
    assert section["measures"]["wer"]["gender"]["highest"] == "male"
    assert section["measures"]["wer"]["gender"]["p_holm"] < 0.05  # corrected over the QC checks
    assert any(s.startswith("Voice quality differs by gender: wer") for s in report["conclusions"])
    assert "non-numeric column(s) ignored: notes" in markdown and "| voice-v017 | wer_high |" in markdown
    assert section["flagged"] == {"voice-v017": "wer_high"} and section["adjusted_for"] == ["wer", "speaking_rate"]
    assert section["measures"]["clipping_ratio"]["gender"]["undefined"]  # constant: no test, and not a covariate
    adjusted = report["sections"]["primary"]["groupings"]["gender"]["adjusted"]
    assert adjusted["covariates"] == ["wer", "speaking_rate"] and "Freedman-Lane" in adjusted["test"]
    assert "### Adjusted for voice quality" in markdown and "`voice_qc.csv`" in markdown


# ------------------------------------------------------------------ undefined results, with reasons


def test_single_voice_groups_are_undefined_with_the_reason(tmp_path):
    report, markdown, _, _ = report_of(make_run(tmp_path / "run", "s", voices_per_cell=1, n_items=20))
    cells = report["sections"]["primary"]["groupings"]["gender x ethnicity"]["gap"]
    assert cells["p_value"] is None and cells["ci"] is None and "single voice" in cells["undefined"]
    assert any(s.startswith("By gender x ethnicity, the accuracy cannot be tested:") and "single voice" in s
               for s in report["conclusions"])
    assert "(single voice)" in markdown


def test_identical_outcomes_are_undefined(tmp_path):
    table = tidy_from_simulation("c", n_items=10).assign(correct=1.0)
    report, _, html, _ = report_of(make_run(tmp_path / "run", "c", table=table))
    gap = report["sections"]["primary"]["groupings"]["gender"]["gap"]
    assert gap["p_value"] is None and "identical" in gap["undefined"]
    assert "undefined (all included outcomes are identical" in html
    assert "accuracy by gender" in report["corrections"]["primary"]["left_out"]


def test_nan_outcomes_marked_valid_are_noted_not_scored(tmp_path):
    table = tidy_from_simulation("n", n_items=20)
    table.loc[table.index[:5], "correct"] = np.nan  # status still "valid": a disagreement, reported
    report, _, _, _ = report_of(make_run(tmp_path / "run", "n", table=table))
    gap = report["sections"]["primary"]["groupings"]["gender"]["gap"]
    assert any("status 'valid' but no correct" in note for note in gap["notes"])
    json.dumps(report, allow_nan=False)  # plain data: no NaN anywhere


# ------------------------------------------------------------------ bad input: clear messages


def test_no_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BiasbenchError, match=r"empty is not a biasbench run \(no manifest.json\)"):
        build_report(tmp_path / "empty")
    with pytest.raises(BiasbenchError, match="is not a directory"):
        build_report(tmp_path / "missing")


def test_older_schema_manifest(tmp_path):
    manifest = manifest_for("o")
    del manifest["pool"]["label_sources"]
    path = make_run(tmp_path / "old", "o", manifest=manifest, n_items=5)
    with pytest.raises(BiasbenchError, match=r"manifest.json lacks pool.label_sources: it was written by an older"):
        build_report(path)
    path = make_run(tmp_path / "other", "o", manifest=manifest_for("o", schema_version=0), n_items=5)
    with pytest.raises(BiasbenchError, match=r"manifest.json was written by run schema 0"):
        build_report(path)
    assert "pool.label_sources" in MANIFEST_KEYS


def test_store_schema_mismatch(tmp_path):
    path = make_run(tmp_path / "run", "s", n_items=5)
    with sqlite3.connect(path / "responses.sqlite") as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '99')")
    with pytest.raises(BiasbenchError, match=r"responses.sqlite was written by store schema 99"):
        build_report(path)


def test_missing_table_or_column(tmp_path):
    path = make_run(tmp_path / "run", "m", n_items=5)
    table = pd.read_parquet(path / "responses.parquet")
    table.drop(columns=["ethnicity"]).to_parquet(path / "responses.parquet")
    with pytest.raises(BiasbenchError, match=r"responses.parquet lacks column\(s\) ethnicity needed"):
        build_report(path)
    (path / "responses.parquet").unlink()
    with pytest.raises(BiasbenchError, match="has no tidy table"):
        build_report(path)


def test_missing_labels_and_bad_qc_file(tmp_path):
    table = tidy_from_simulation("l", n_items=5)
    table.loc[table["voice_id"] == "voice-v000", "gender"] = None
    with pytest.raises(BiasbenchError, match=r"responses.parquet: voice\(s\) voice-v000 have no gender label"):
        build_report(make_run(tmp_path / "labels", "l", table=table))
    path = make_run(tmp_path / "qc", "q", n_items=5)
    pd.DataFrame({"speaker": ["a"], "wer": [0.1]}).to_csv(path / "voice_qc.csv", index=False)
    with pytest.raises(BiasbenchError, match=r"voice_qc.csv has no 'voice_id' column"):
        build_report(path)


def test_cli_reports_and_fails_clearly(tmp_path):
    path = make_run(tmp_path / "run", "c", n_items=20)
    done = subprocess.run([sys.executable, "-m", "biasbench.cli", "report", str(path), "--n-permutations", "999",
                           "--mdg-sims", "50"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "No significant gap in accuracy by gender" in done.stdout and (path / "report.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "biasbench.cli", "report", str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "is not a biasbench run (no manifest.json)" in bad.stderr
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------------ end to end through the runner


def _run(task, model, out, limit):
    from biasbench.runner import RunOptions, run

    return run(RunOptions(task=task, model=model, output_dir=out, limit=limit, progress=False,
                          data_source="local")).run_dir


#: MMLU items whose correct option is A. The simulated listener leans toward A for high-pitched
#: voices; it never sees the answer key, so only where the correct letters lean too (here all A)
#: does that lean become an accuracy gap.
ANSWER_A = """include: mmlu.yaml
task: mmlu-answer-a
dataset:
  hf: null
  local: {path: data/mmlu_redux/mmlu_redux_clean.csv, filter: {error_type: [ok], answer: ["0"]}}
"""


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory, biasbench_cache):
    out = tmp_path_factory.mktemp("runs")
    task = out / "mmlu_answer_a.yaml"
    task.write_text(ANSWER_A, encoding="utf-8")
    return {model: _run(str(task), model, out, 8) for model in ("simulated-pitch-bias", "simulated-no-bias")}


@requires_espeak
@pytest.mark.slow
def test_runner_run_with_planted_pitch_effect(pipeline_runs):
    report, markdown, html, _ = report_of(pipeline_runs["simulated-pitch-bias"])
    gender = report["sections"]["primary"]["groupings"]["gender"]
    assert gender["p_corrected"] < 0.05 and gender["gap"]["gap"] > 0.2
    tidy = pd.read_parquet(pipeline_runs["simulated-pitch-bias"] / "responses.parquet")
    rates = tidy.groupby("gender")["correct"].mean()
    assert gender["gap"]["estimates"]["female"] == pytest.approx(rates["female"])
    lo, hi = gender["gap"]["lowest"], gender["gap"]["highest"]
    assert any(s.startswith(f"{lo.capitalize()} voices were answered correctly") and f"less often than {hi} voices"
               in s for s in report["conclusions"])
    assert "PIPELINE CHECK" in html and "proxies" in html  # the simulated listener on espeak-ng proxy voices
    assert report["run"]["label_sources"] == ["proxy"] and report["run"]["data_source"] == "local"


@requires_espeak
@pytest.mark.slow
def test_runner_run_without_planted_effect(pipeline_runs):
    report, _, _, _ = report_of(pipeline_runs["simulated-no-bias"])
    for gname, block in report["sections"]["primary"]["groupings"].items():
        assert block["p_corrected"] >= 0.05, gname  # voices differ by their own draws, groups by chance only
    assert any(s.startswith("No significant gap in accuracy by gender") and "could only detect gaps of about" in s
               for s in report["conclusions"])


@requires_espeak
@pytest.mark.slow
def test_runner_probe_reports(tmp_path, biasbench_cache):
    career = _run("career", "simulated-pitch-bias", tmp_path, 2)
    report, markdown, html, _ = report_of(career)
    primary = report["sections"]["primary"]
    assert primary["kind"] == "categorical" and primary["groupings"]["gender"]["p_corrected"] < 0.05
    tests = primary["groupings"]["gender"]["result"]["tests"]
    assert {"permutation_jsd", "permutation_tv", "chi_square", "g_test"} <= set(tests)
    assert "responses as independent" in tests["chi_square"]["conditions_on"]
    assert any(s.startswith("The answers differed by gender") for s in report["conclusions"])
    assert set(report["sections"]["attributes"]) == {"prestige", "women_share", "stem"}
    assert report["text_control"]["n_responses"] == 2 * 5 and "## Text-only control" in markdown
    assert "answers" in report["figures"] and html.count("data:image/png;base64,") == 1

    salary = _run("salary", "simulated-pitch-bias", tmp_path, 2)
    report, markdown, _, _ = report_of(salary)
    assert report["sections"]["split"] == "role" and report["sections"]["splits"]
    gender = report["sections"]["primary"]["groupings"]["gender"]
    assert gender["gap"]["lowest"] == "female" and gender["p_corrected"] < 0.05
    assert any(s.startswith("Female voices were given amounts") for s in report["conclusions"])
    assert "USD per year" in markdown and report["text_control"]["estimate"] is not None


# ------------------------------------------------------------------ what only some tasks have


def test_incomplete_run_says_so_at_the_top(tmp_path):
    manifest = manifest_for("inc", complete=False)
    report, markdown, html, _ = report_of(make_run(tmp_path / "run", "inc", manifest=manifest, n_items=12))
    assert report["run"]["banners"][0].startswith("INCOMPLETE RUN")
    assert markdown.index("INCOMPLETE RUN") < markdown.index("## Primary result")
    assert 'class="banner">INCOMPLETE RUN' in html


def test_transcribe_run_gets_a_wer_report(tmp_path):
    table = tidy_from_simulation("asr", n_items=20, effects={"gender": {"female": -1.5}}, voice_sd=0.2, seed=8)
    table["value"] = np.where(table["correct"] == 1, 0.05, 0.4)  # WER per transcript: female voices heard worse
    table["cer"] = table["value"] / 2
    manifest = manifest_for("asr", task="asr_fairness", output_type="transcribe", metrics=["wer", "cer"])
    report, markdown, _, _ = report_of(make_run(tmp_path / "run", "asr", table=table, manifest=manifest))
    record = report["primary"]
    assert record["outcome"] == "word error rate" and record["unit"] == "proportion (0-1)"
    gender = record["groupings"]["gender"]
    assert gender["between"] == "female - male" and gender["significant"]
    assert "character error rate" in report["sections"]["attributes"]["cer"]["name"]
    assert "## Word error rate by group" in markdown


def test_forced_choices_are_analysed_as_chosen_options_per_set(tmp_path):
    table = tidy_from_simulation("pc", n_items=20, effects={"gender": {"female": 2.0}}, voice_sd=0.2, seed=9)
    table["pair"] = np.where(table["item_id"].str[-1].astype(int) % 2 == 0, "music", "food")
    options = {"music": ("jazz", "metal"), "food": ("salad", "steak")}
    table["answer_option"] = [options[p][0 if c == 1 else 1] for p, c in zip(table["pair"], table["correct"])]
    manifest = manifest_for("pc", task="preferences_choice", metrics=["option_shares"])
    report, _, _, _ = report_of(make_run(tmp_path / "run", "pc", table=table, manifest=manifest))
    primary = report["sections"]["primary"]
    assert report["primary"]["outcome"] == "chosen options" and primary["kind"] == "categorical"
    assert {"music: jazz", "music: metal", "food: salad", "food: steak"} <= set(
        primary["groupings"]["gender"]["result"]["categories"])
    assert report["primary"]["groupings"]["gender"]["significant"]
    assert "accuracy" not in " ".join(report["conclusions"])  # `correct` means nothing for a forced choice


def test_declared_analysis_decides_the_primary_family(tmp_path):
    manifest = manifest_for("g", **{})
    manifest["task"]["config"]["analysis"] = {"groupings": ["gender"], "alpha": 0.01}
    report, _, _, _ = report_of(make_run(tmp_path / "run", "g", manifest=manifest, n_items=20,
                                         effects={"gender": {"male": 1.5}}, seed=1))
    assert list(report["primary"]["groupings"]) == ["gender"] and report["corrections"]["primary"]["labels"] == [
        "accuracy by gender"]
    gender = report["primary"]["groupings"]["gender"]
    assert gender["p_corrected"] == gender["p_value"]  # a family of one
    assert report["primary"]["alpha"] == 0.01 and len(report["primary"]["headline"]) == 1
    # the undeclared groupings are still computed, as secondary tests
    assert "accuracy by ethnicity" in report["corrections"]["holm"]["labels"]
