"""A user's own tasks and pools, outside the shipped folders: the README's example, include
paths (--include-path and $BIASBENCH_INCLUDE_PATH), `include:` and data paths."""

import re
import shutil

import pytest
from typer.testing import CliRunner

from biasbench.cli import app
from biasbench.config import load_task_config
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.paths import INCLUDE_PATH_ENV, set_include_paths
from biasbench.tasks.loader import available_tasks, load_task
from biasbench.voices.pool import available_pools, load_pool, voices_dir
from conftest import PROJECT, requires_espeak, write


@pytest.fixture(autouse=True)
def _no_include_paths(monkeypatch):
    monkeypatch.delenv(INCLUDE_PATH_ENV, raising=False)
    set_include_paths(None)
    yield
    set_include_paths(None)


def readme_task_example(containing: str = "include: mmlu.yaml") -> str:
    """The YAML block of the README's 'Adding a task' section that holds `containing`, as printed there."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding a task", 1)[1].split("\n## ", 1)[0]
    return next(block for block in re.findall(r"```yaml\n(.*?)```", section, re.S) if containing in block)


def test_readme_example_works_from_a_folder_outside_tasks(tmp_path):
    path = write(tmp_path / "mine" / "mmlu_physics.yaml", readme_task_example())
    task = load_task(str(path), data_source="local")
    assert task.name == "mmlu_physics" and task.source == "local"
    assert {item.item_id.split("/")[0] for item in task.items} == {"college_physics"}
    assert len(task.items) > 50  # fraction 1.0 of the subject's clean rows
    assert all(len(item.choices) == 4 for item in task.items)


def test_include_path_env_and_option_find_user_tasks_by_name(tmp_path, monkeypatch):
    write(tmp_path / "a" / "mmlu_physics.yaml", readme_task_example())
    write(tmp_path / "b" / "tasks" / "physics_again.yaml", readme_task_example().replace("mmlu_physics", "physics_again"))
    assert "mmlu_physics" not in available_tasks()
    monkeypatch.setenv(INCLUDE_PATH_ENV, f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    tasks = available_tasks()
    assert tasks["mmlu_physics"] == tmp_path / "a" / "mmlu_physics.yaml"
    assert tasks["physics_again"] == tmp_path / "b" / "tasks" / "physics_again.yaml"
    assert "mmlu" in tasks  # the shipped ones stay
    assert load_task("mmlu_physics", data_source="local", limit=2).name == "mmlu_physics"

    monkeypatch.delenv(INCLUDE_PATH_ENV)
    result = CliRunner().invoke(app, ["tasks", "--include-path", str(tmp_path / "a")])
    assert result.exit_code == 0 and "mmlu_physics" in result.output
    assert "mmlu_physics" in CliRunner().invoke(app, ["tasks", "--include-path", str(tmp_path / "a")]).output
    assert "mmlu_physics" not in CliRunner().invoke(app, ["tasks"]).output  # not kept from the last command


def test_user_pool_in_include_path_voices_folder(tmp_path, monkeypatch):
    (tmp_path / "voices").mkdir()
    shutil.copy(voices_dir() / "espeak-default.yaml", tmp_path / "voices" / "my-pool.yaml")
    monkeypatch.setenv(INCLUDE_PATH_ENV, str(tmp_path))
    assert "my-pool" in available_pools() and "espeak-default" in available_pools()
    pool, path = load_pool("my-pool")
    assert path == tmp_path / "voices" / "my-pool.yaml" and len(pool.voices) == 18


def test_a_user_file_may_extend_the_shipped_file_of_the_same_name(tmp_path, monkeypatch):
    write(tmp_path / "mmlu.yaml", "include: mmlu.yaml\nsample: {fraction: 0.02}\n")
    monkeypatch.setenv(INCLUDE_PATH_ENV, str(tmp_path))
    task = load_task("mmlu", data_source="local")
    assert task.path == tmp_path / "mmlu.yaml"
    assert len(task.items) < 200  # the user's sample fraction, the shipped data


def test_missing_include_and_data_name_where_they_looked(tmp_path):
    path = write(tmp_path / "t.yaml", "include: nothere.yaml\ntask: t\n")
    message = str(pytest.raises(ConfigError, load_task, str(path)).value)
    assert "'nothere.yaml' not found" in message and str(tmp_path) in message and "include" in message
    path = write(tmp_path / "u.yaml", readme_task_example().replace("mmlu_redux_clean.csv", "missing.csv"))
    message = str(pytest.raises(ConfigError, load_task, str(path), data_source="local").value)
    assert "dataset.local.path" in message and "missing.csv" in message


def test_include_path_that_is_not_a_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(INCLUDE_PATH_ENV, str(tmp_path / "nope"))
    with pytest.raises(BiasbenchError, match="not a folder"):
        available_tasks()


MC = """task: t
dataset: {local: {path: data.csv}}
doc_to_text: "{{question}}"
doc_to_choice: ["yes", "no"]
doc_to_target: "0"
"""


def test_metrics_are_checked_against_the_known_names(tmp_path):
    path = write(tmp_path / "t.yaml", MC + "metrics: [acuracy]\n")
    message = str(pytest.raises(ConfigError, load_task_config, path).value)
    assert "metrics" in message and "'acuracy' (did you mean 'accuracy'?)" in message
    assert "known: accuracy, yes_rate" in message
    path = write(tmp_path / "t.yaml", MC + "metrics: [wer]\n")  # a transcribe metric
    assert "for output_type multiple_choice" in str(pytest.raises(ConfigError, load_task_config, path).value)


def test_categorical_metrics_may_name_lexicon_attributes_only(tmp_path):
    shipped = available_tasks()["career"].read_text(encoding="utf-8")
    assert "prestige" in load_task(str(available_tasks()["career"]), data_source="local", limit=1).config.metrics
    path = write(tmp_path / "career2.yaml", shipped.replace("task: career", "task: career2")
                 .replace("metrics: [category_shares, prestige", "metrics: [category_shares, prestig"))
    message = str(pytest.raises(ConfigError, load_task, str(path), data_source="local").value)
    assert "'prestig'" in message and "attribute of the lexicon (soc_major_group" in message


def test_lm_eval_names_are_mapped(tmp_path):
    path = write(tmp_path / "lm.yaml", """task: lm
dataset_path: cais/mmlu
dataset_name: college_physics
test_split: test
doc_to_text: "{{question}}"
doc_to_choice: choices
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
generation_kwargs: {max_gen_toks: 8, temperature: 0.0}
metadata: {version: 1.0}
""")
    config = load_task_config(path)
    assert (config.dataset.hf.path, config.dataset.hf.name, config.dataset.hf.split) == ("cais/mmlu", "college_physics",
                                                                                         "test")
    assert config.metrics == ["accuracy"] and config.max_new_tokens == 8


@pytest.mark.parametrize("extra, field, says", [
    ("num_fewshot: 5\n", "num_fewshot", "zero-shot"),
    ("process_docs: !!str x\n", "process_docs", "no Python hooks"),
    ("dataset_path: cais/mmlu\n", "dataset_path", "not both"),
    ("metric_list: [{metric: bleu}]\n", None, "unknown metric 'bleu'"),
    ("generation_kwargs: {until: ['\\n']}\n", "generation_kwargs", "got until"),
])
def test_lm_eval_names_without_a_counterpart_are_refused_saying_why(tmp_path, extra, field, says):
    message = str(pytest.raises(ConfigError, load_task_config, write(tmp_path / "t.yaml", MC + extra)).value)
    assert says in message and (field is None or f"field '{field}'" in message)


def test_ray_shards_look_up_tasks_in_the_same_include_paths(tmp_path, monkeypatch):
    from biasbench import ray_executor
    from biasbench.runner import RunOptions

    started = {}

    class StopAtInit:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            started.update(kwargs)
            raise RuntimeError("stop here")

    monkeypatch.setattr(ray_executor, "_import_ray", StopAtInit)
    set_include_paths([tmp_path])
    with pytest.raises(RuntimeError, match="stop here"):
        ray_executor.run_with_ray(RunOptions(task="mine", model="tiny-qwen2audio", output_dir=tmp_path / "runs"))
    assert started["runtime_env"]["env_vars"][INCLUDE_PATH_ENV] == str(tmp_path.resolve())


# ---------------------------------------------------------------- a new task author's first hour

CAPITALS = "question,answer\n" + "".join(f"Which city is capital number {i}?,{i % 4}\n" for i in range(6))


@requires_espeak
@pytest.mark.slow
def test_the_readme_task_from_scratch_runs_through_the_console_script(tmp_path):
    """The README's from-scratch example, with a data file as it describes (question,answer), run
    as it says: no id_field, so the items get the documented 'item/<row>' ids."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    write(tmp_path / "capitals.csv", CAPITALS)
    task = write(tmp_path / "capitals.yaml", readme_task_example("task: capitals"))
    done = subprocess.run([str(Path(sys.executable).parent / "biasbench"), "run", "--task", str(task), "--model",
                           "simulated-pitch-bias", "--limit", "5", "--no-progress", "--no-report", "-o", "runs"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1", BIASBENCH_CACHE=str(tmp_path / "cache")))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    tidy = pd.read_parquet(run_dir / "responses.parquet")
    assert sorted(tidy["item_id"].unique()) == [f"item/{i:05d}" for i in range(5)] and len(tidy) == 5 * 18


def test_yaml_numbers_are_text_and_unquoted_yes_no_is_refused_with_the_fix(tmp_path):
    config = load_task_config(write(tmp_path / "n.yaml", MC.replace('["yes", "no"]', "[1, 2.5]").replace('"0"', "0")))
    assert config.doc_to_choice == ["1", "2.5"] and config.doc_to_target == "0"
    unquoted = MC.replace('["yes", "no"]', "[yes, no]")
    message = str(pytest.raises(ConfigError, load_task_config, write(tmp_path / "t.yaml", unquoted)).value)
    assert "field 'doc_to_choice'" in message and "quote the option text" in message


def test_without_id_field_items_get_the_documented_ids(tmp_path):
    write(tmp_path / "capitals.csv", CAPITALS + "Which city is capital number 0?,0\n")  # a repeated row is fine
    task = load_task(str(write(tmp_path / "t.yaml", readme_task_example("task: capitals"))))
    assert [item.item_id for item in task.items] == [f"item/{i:05d}" for i in range(7)]
    strata = write(tmp_path / "s.yaml", readme_task_example("task: capitals") + "sample: {stratify_by: answer}\n")
    ids = sorted(item.item_id for item in load_task(str(strata)).items)
    assert ids[:3] == ["0/00000", "0/00001", "0/00002"] and len(ids) == 7


LM_EVAL_COMMON = 'doc_to_text: question\ndoc_to_choice: "{{ choices }}"\ndoc_to_target: answer\n'


@pytest.mark.parametrize("name, dataset", [
    ("csv file", "dataset_path: capitals.csv\n"),
    ("jsonl file", "dataset_path: data/capitals.jsonl\n"),
    ("parquet file", "dataset_path: ./capitals.parquet\n"),
    ("json builder, one file", "dataset_path: json\ndataset_kwargs: {data_files: data/capitals.jsonl}\n"),
    ("json builder, JSON Lines named .json", "dataset_path: json\ndataset_kwargs: {data_files: lines.json}\n"),
    ("json builder, split", "dataset_path: json\ntest_split: test\n"
                             "dataset_kwargs: {data_files: {train: nope.json, test: records.json}}\n"),
    ("csv builder, list", "dataset_path: csv\ndataset_kwargs: {data_files: [capitals.csv]}\n"),
    ("parquet builder, glob", "dataset_path: parquet\ndataset_kwargs: {data_files: '*.parquet'}\n"),
    ("jsonl builder", "dataset_path: jsonl\ndataset_kwargs:\n  data_files:\n    test: data/capitals.jsonl\n"),
])
def test_lm_eval_local_data_forms_are_read_from_disk_never_the_hub(tmp_path, monkeypatch, name, dataset):
    """lm-eval's ways of naming local data all load the same three items, from disk: the hub check and
    the hub loader are never called, with or without --data-source."""
    import json

    import pandas as pd

    from biasbench.tasks import sources

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked for a local file")

    monkeypatch.setattr(sources, "hub_reachable", no_hub)
    monkeypatch.setattr(sources, "_load_hf", no_hub)
    rows = [{"question": f"Capital of {c}?", "choices": ["Paris", "Rome", "Madrid"], "answer": i}
            for i, c in enumerate(["France", "Italy", "Spain"])]
    write(tmp_path / "capitals.csv", "question,choices,answer\n" + "".join(
        f'{r["question"]},"{json.dumps(r["choices"]).replace(chr(34), chr(34) * 2)}",{r["answer"]}\n' for r in rows))
    write(tmp_path / "data" / "capitals.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "lines.json", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "records.json", json.dumps(rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "capitals.parquet")
    path = write(tmp_path / "lm.yaml", "task: lm\n" + dataset + LM_EVAL_COMMON)
    for source in ("auto", "local"):
        task = load_task(str(path), data_source=source)
        assert task.source == "local" and [i.spoken_text for i in task.items] == [r["question"] for r in rows]
        assert [(i.choices, i.target) for i in task.items] == [(("Paris", "Rome", "Madrid"), i) for i in range(3)]


@pytest.mark.parametrize("dataset, field, says", [
    ("dataset_path: gone.csv\n", "dataset.local.path", "file 'gone.csv' not found"),
    ("dataset_path: ../outside.csv\n", "dataset.local.path", "--allow-data-outside-task"),
    ("dataset_path: json\ndataset_kwargs: {data_files: '../*.csv'}\n", "dataset.local.path",
     "--allow-data-outside-task"),
    ("dataset_path: json\n", "dataset_kwargs", "data_files"),
    ("dataset_path: json\ndataset_kwargs: {data_files: x.json, field: data}\n", "dataset_kwargs", "field has no"),
    ("dataset_path: json\ndataset_kwargs: {data_files: {train: x.json, dev: y.json}}\n", "dataset_kwargs.data_files",
     "no split 'test'"),
    ("dataset_path: cais/mmlu\ndataset_kwargs: {trust_remote_code: true}\n", "dataset_kwargs", "no dataset_kwargs"),
    ("dataset_path: capitals.csv\noutput_type: generate_until\n", "output_type", "generate_categorical"),
])
def test_lm_eval_local_data_mistakes_are_named(tmp_path, dataset, field, says):
    write(tmp_path / "outside.csv", "question,answer\nx,0\n")
    write(tmp_path / "task" / "capitals.csv", "question,answer\nx,0\n")
    path = write(tmp_path / "task" / "lm.yaml", "task: lm\n" + dataset + 'doc_to_text: "{{question}}"\n'
                 "doc_to_choice: ['yes', 'no']\ndoc_to_target: 0\n")
    message = str(pytest.raises(ConfigError, load_task, str(path)).value)
    assert f"field '{field}'" in message and says in message, message


def test_a_broken_draft_in_an_include_folder_does_not_hide_the_other_tasks(tmp_path):
    write(tmp_path / "good.yaml", MC)
    write(tmp_path / "draft.yaml", MC + "doc_to_txt: typo\n")
    result = CliRunner().invoke(app, ["tasks", "--include-path", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    import json

    rows = {row["task"]: row for row in json.loads(result.output)}
    assert rows["good"]["output_type"] == "multiple_choice" and "mmlu" in rows
    assert rows["draft"]["output_type"] == "(invalid)" and "doc_to_txt" in rows["draft"]["description"]
