"""The whole real-voices chain through the console script, offline: build a pool from a made-up
corpus (tests/corpus_fixture.py) -> clone it (with the stand-in cloning engine, `standin-clone`:
F5-TTS and MaskGCT need a GPU) -> QC with speaker embeddings -> run -> report."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import PROJECT, requires_espeak
from corpus_fixture import SPEAKERS, build_corpus, write_recipe

pytestmark = [requires_espeak, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")]


def biasbench(env, *args):
    script = Path(sys.executable).parent / "biasbench"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "biasbench.cli"]
    result = subprocess.run([*command, *args], env=env, cwd=PROJECT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"biasbench {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_build_clone_qc_run_report(tmp_path, biasbench_cache):
    pytest.importorskip("resemblyzer")
    env = dict(os.environ, BIASBENCH_CACHE=str(biasbench_cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]))
    build_corpus(tmp_path / "corpus", SPEAKERS[0::2])  # one made-up speaker per cell
    recipe = write_recipe(tmp_path)
    pool = tmp_path / "pools" / "fixture-real.yaml"

    biasbench(env, "voices", "build", str(recipe), "--per-cell", "1", "--seed", "0", "--out", str(pool),
              "--clone", "--allow-unbalanced")
    built = json.loads(pool.with_suffix(".build.json").read_text())
    assert built["clone"] is True and all(len(cell["chosen"]) == 1 for cell in built["cells"].values())

    qc_csv = tmp_path / "voice_qc.csv"
    biasbench(env, "voices", "qc", str(pool), "--n-sentences", "1", "--out", str(qc_csv), "--no-progress")
    qc = pd.read_csv(qc_csv, keep_default_na=False, na_values=[""])
    for column in ("wer", "speaking_rate", "pitch_hz", "snr_db", "loudness_lufs", "clone_fidelity",
                   "nearest_voice", "nearest_similarity"):
        assert column in qc.columns and qc[column].notna().all(), column
    assert qc["clone_fidelity"].between(0, 1).all()
    assert json.loads(qc_csv.with_suffix(".json").read_text())["speaker_embeddings"]["by_cell"]["n_between_pairs"] == 15

    biasbench(env, "run", "--model", "simulated-no-bias", "--task", "mmlu", "--data-source", "local", "--limit", "2",
              "--pool", str(pool), "--allow-unbalanced", "--output-dir", str(tmp_path / "runs"), "--run-id", "chain",
              "--no-progress", "--no-report")  # the report is made below, with the QC table
    run_dir = tmp_path / "runs" / "chain"
    tidy = pd.read_parquet(run_dir / "responses.parquet")
    audio = tidy[tidy.condition == "audio"]
    assert set(audio.label_source) == {"self_reported"} and audio.voice_id.nunique() == 6
    assert (audio.status == "valid").all()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["pool"]["label_sources"] == ["self_reported"]

    biasbench(env, "report", str(run_dir), "--voice-qc", str(qc_csv), "--n-permutations", "99", "--mdg-sims", "20")
    assert (run_dir / "voice_qc.csv").read_bytes() == qc_csv.read_bytes()
    assert json.loads((run_dir / "report.json").read_text())["voice_qc"]
    assert "self-reported" in (run_dir / "report.html").read_text()
