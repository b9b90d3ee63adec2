"""Task YAMLs: validation with clear errors, inheritance, sandboxed templates, sampling."""

import pandas as pd
import pytest

from biasbench.config import SampleSpec, load_task_config
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.tasks.loader import available_tasks, load_task
from biasbench.tasks.sampling import stratified_sample
from conftest import write

DATA = "item_id,subject,question,choices,answer\n" + "\n".join(
    f'q{i:02d},{"bio" if i % 2 else "chem"},What is {i}?,"[""{i}"", ""x"", ""y"", ""z""]",0' for i in range(20)
)

TASK = """
task: toy
dataset:
  local: {path: toy.csv}
doc_to_text: "{{ question }}{% for o in choices %} {{ letters[loop.index0] }}: {{ o }}.{% endfor %}"
instruction: "Reply with a letter."
doc_to_choice: choices
doc_to_target: "{{ answer }}"
"""


@pytest.fixture
def toy(tmp_path):
    write(tmp_path / "toy.csv", DATA)
    return write(tmp_path / "toy.yaml", TASK)


def test_task_renders_identical_text_and_target(toy):
    task = load_task(str(toy))
    assert len(task.items) == 20 and task.source == "local"
    item = task.items[0]
    assert item.spoken_text == "What is 0? A: 0. B: x. C: y. D: z."
    assert item.text_prompt == "Reply with a letter."
    assert item.choices == ("0", "x", "y", "z") and item.target == 0 and item.letters == ("A", "B", "C", "D")


def test_spoken_instruction_moves_into_the_audio(toy, tmp_path):
    write(tmp_path / "spoken.yaml", "include: toy.yaml\ninstruction_mode: spoken\n")
    item = load_task(str(tmp_path / "spoken.yaml")).items[0]
    assert item.spoken_text.endswith("D: z. Reply with a letter.") and item.text_prompt == ""


def test_unknown_field_names_file_and_field(toy, tmp_path):
    path = write(tmp_path / "typo.yaml", TASK + "doc_to_txt: oops\n")
    with pytest.raises(ConfigError) as err:
        load_task_config(path)
    assert "typo.yaml" in str(err.value) and "doc_to_txt" in str(err.value) and "unknown field" in str(err.value)


def test_missing_and_badly_typed_fields(tmp_path):
    path = write(tmp_path / "bad.yaml", "task: Bad Name\ndataset: {}\nsample: {fraction: 2}\n")
    message = str(pytest.raises(ConfigError, load_task_config, path).value)
    for expected in ("bad.yaml", "field 'task'", "field 'doc_to_text': required", "sample.fraction"):
        assert expected in message


def test_output_type_needs_its_fields(tmp_path):
    path = write(tmp_path / "mc.yaml", "task: t\ndataset: {local: {path: x.csv}}\ndoc_to_text: x\n")
    assert "needs the field 'doc_to_choice'" in str(pytest.raises(ConfigError, load_task_config, path).value)
    path = write(tmp_path / "cat.yaml", "task: t\ndataset: {local: {path: x.csv}}\ndoc_to_text: x\n"
                 "output_type: generate_categorical\n")
    assert "needs 'categories' or 'lexicon'" in str(pytest.raises(ConfigError, load_task_config, path).value)
    path = write(tmp_path / "greedy.yaml", "task: t\ndataset: {local: {path: x.csv}}\ndoc_to_text: x\n"
                 "output_type: generate_categorical\ncategories: {a: [a]}\nsamples: 5\n")
    assert "temperature" in str(pytest.raises(ConfigError, load_task_config, path).value)


def test_malformed_yaml(tmp_path):
    path = write(tmp_path / "broken.yaml", "task: [unclosed\n")
    assert "malformed YAML" in str(pytest.raises(ConfigError, load_task_config, path).value)


def test_template_with_missing_field_names_the_field(toy, tmp_path):
    write(tmp_path / "missing.yaml", "include: toy.yaml\ndoc_to_text: '{{ questoin }}'\n")
    message = str(pytest.raises(ConfigError, load_task, str(tmp_path / "missing.yaml")).value)
    assert "doc_to_text" in message and "questoin" in message and "q00" in message


def test_template_sandbox_blocks_python_internals(toy, tmp_path):
    write(tmp_path / "evil.yaml", "include: toy.yaml\ndoc_to_text: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n")
    with pytest.raises(ConfigError, match="template error"):
        load_task(str(tmp_path / "evil.yaml"))


def test_unreadable_data_file(toy, tmp_path):
    (tmp_path / "toy.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    message = str(pytest.raises(ConfigError, load_task, str(toy)).value)
    assert "toy.csv" in message


def test_missing_data_file_and_bad_target(toy, tmp_path):
    write(tmp_path / "nofile.yaml", "include: toy.yaml\ndataset: {local: {path: nope.csv}}\n")
    assert "nope.csv" in str(pytest.raises(ConfigError, load_task, str(tmp_path / "nofile.yaml")).value)
    write(tmp_path / "target.yaml", "include: toy.yaml\ndoc_to_target: '{{ question }}'\n")
    assert "doc_to_target" in str(pytest.raises(ConfigError, load_task, str(tmp_path / "target.yaml")).value)


def test_unknown_task_suggests_near_names():
    message = str(pytest.raises(BiasbenchError, load_task, "mmul").value)
    assert "Did you mean: mmlu" in message


def test_stratified_sample_is_deterministic_and_keeps_every_stratum():
    rows = pd.DataFrame({"item_id": [f"{s}/{i:03d}" for s in "abc" for i in range(50)],
                         "subject": [s for s in "abc" for _ in range(50)]})
    spec = SampleSpec(fraction=0.1, stratify_by="subject", seed=7)
    first = stratified_sample(rows, spec)
    shuffled = stratified_sample(rows.sample(frac=1, random_state=3), spec)
    assert first["item_id"].tolist() == shuffled["item_id"].tolist()
    assert first.groupby("subject").size().tolist() == [5, 5, 5]
    other_seed = stratified_sample(rows, SampleSpec(fraction=0.1, stratify_by="subject", seed=8))
    assert other_seed["item_id"].tolist() != first["item_id"].tolist()
    # One stratum's sample does not depend on which other strata are present.
    only_a = stratified_sample(rows[rows.subject == "a"], spec)
    assert only_a["item_id"].tolist() == first[first.subject == "a"]["item_id"].tolist()


def test_shipped_mmlu_task_offline():
    assert "mmlu" in available_tasks()
    task = load_task("mmlu", data_source="local")
    subjects = {item.item_id.split("/")[0] for item in task.items}
    assert len(subjects) == 57
    assert 500 <= len(task.items) <= 580  # 10% of the 5,330 'ok' rows, per subject
    assert all(len(item.choices) == 4 and 0 <= item.target < 4 for item in task.items)
    assert task.fingerprint() == load_task("mmlu", data_source="local").fingerprint()


def test_declared_analysis_is_validated_and_kept_out_of_the_config_hash(toy, tmp_path):
    path = write(tmp_path / "bad_analysis.yaml", TASK + "analysis: {groupings: [race], correction: fdr}\n")
    message = str(pytest.raises(ConfigError, load_task_config, path).value)
    for expected in ("bad_analysis.yaml", "analysis.groupings", "analysis.correction", "'gender'", "'bonferroni'"):
        assert expected in message, expected
    write(tmp_path / "declared.yaml", "include: toy.yaml\nanalysis: {groupings: [gender], alpha: 0.01}\n")
    declared, default = load_task(str(tmp_path / "declared.yaml")), load_task(str(toy))
    assert declared.config.analysis.groupings == ["gender"] and default.config.analysis.items == "adjusted"
    # the analysis plan does not change a single answer, so runs with either plan share their identity
    assert declared.fingerprint()["config_hash"] == default.fingerprint()["config_hash"]
    assert declared.config.model_dump()["analysis"]["alpha"] == 0.01  # recorded in the manifest
    assert "analysis" not in default.config.model_dump()  # defaults: stated in the docs, not repeated
