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
from conftest import PROJECT, write


@pytest.fixture(autouse=True)
def _no_include_paths(monkeypatch):
    monkeypatch.delenv(INCLUDE_PATH_ENV, raising=False)
    set_include_paths(None)
    yield
    set_include_paths(None)


def readme_task_example() -> str:
    """The YAML block of the README's 'Adding a task' section, as printed there."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Adding a task", 1)[1]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


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
doc_to_choice: [yes, no]
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
