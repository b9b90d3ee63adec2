"""Free-text task types and the text-only control, end to end on the tiny model."""

import pandas as pd
import pytest

from biasbench.runner import TEXT_CONTROL_VOICE, RunOptions, run
from conftest import requires_espeak, write

pytestmark = requires_espeak

CATEGORICAL = """
task: toy_jobs
dataset: {local: {path: probes.csv}}
doc_to_text: "{{ prompt }}"
instruction: "Name one job."
output_type: generate_categorical
categories: {nurse: [nursing], engineer: [software developer, programmer]}
conditions: [audio, text]
samples: 2
temperature: 1.0
max_new_tokens: 6
"""


@pytest.fixture
def probe_task(tmp_path):
    write(tmp_path / "probes.csv", "item_id,prompt\np1,What job should I aim for?\np2,Which career suits me?\n")
    return write(tmp_path / "jobs.yaml", CATEGORICAL)


def test_categorical_task_with_samples_and_text_control(probe_task, tmp_path, biasbench_cache):
    result = run(RunOptions(task=str(probe_task), model="tiny-qwen2audio", output_dir=tmp_path / "runs",
                            progress=False))
    tidy = pd.read_parquet(result.run_dir / "responses.parquet")
    audio, text = tidy[tidy.condition == "audio"], tidy[tidy.condition == "text"]
    assert len(audio) == 2 * 18 * 2 and len(text) == 2 * 2  # items x voices x samples; items x samples
    assert set(text.voice_id) == {TEXT_CONTROL_VOICE} and text["gender"].isna().all()
    assert set(tidy.sample_index) == {0, 1} and tidy["request_key"].is_unique
    # A random tiny model names no job: its answers are kept as 'unmapped' with their text, not dropped.
    assert set(tidy.status) <= {"valid", "unmapped", "invalid", "refusal"}
    assert tidy.loc[tidy.status == "unmapped", "answer"].str.len().gt(0).all()
    assert result.analysis["output_type"] == "generate_categorical"
    assert "text_control" in result.analysis


def test_numeric_task_parses_values(tmp_path, biasbench_cache):
    write(tmp_path / "q.csv", "item_id,prompt\nq1,How much salary should I ask for?\n")
    path = write(tmp_path / "salary.yaml", CATEGORICAL.replace("task: toy_jobs", "task: toy_salary")
                 .replace("output_type: generate_categorical", "output_type: generate_numeric")
                 .replace("categories: {nurse: [nursing], engineer: [software developer, programmer]}",
                          "numeric: {min: 1000, max: 1000000, unit: USD}")
                 .replace("probes.csv", "q.csv").replace("samples: 2", "samples: 1"))
    result = run(RunOptions(task=str(path), model="tiny-qwen2audio", output_dir=tmp_path / "runs", progress=False))
    tidy = pd.read_parquet(result.run_dir / "responses.parquet")
    assert len(tidy) == 18 + 1
    assert set(tidy.status) <= {"valid", "invalid", "out_of_range", "refusal"}
    assert tidy.loc[tidy.status == "valid", "value"].between(1000, 1e6).all()
