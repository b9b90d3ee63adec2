"""Voice pools: schema, honest labels, and the balance rule."""

import pytest

from biasbench.config import load_voice_pool
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.voices.pool import check_balance, load_pool
from conftest import write


def voice(i, gender, ethnicity, label_source="proxy"):
    return (f"  - {{id: v{i}, gender: {gender}, ethnicity: {ethnicity}, accent: en-us, "
            f"label_source: {label_source}, tts: {{backend: espeak-ng, voice: en-us}}}}\n")


def pool_yaml(per_cell=3, drop_last=False):
    lines = ["pool: test\nvoices:\n"]
    i = 0
    for gender in ("female", "male"):
        for ethnicity in ("black", "white", "east_asian"):
            for _ in range(per_cell):
                lines.append(voice(i, gender, ethnicity))
                i += 1
    return "".join(lines[:-1] if drop_last else lines)


def test_shipped_default_pool_is_balanced_and_labelled_as_proxies():
    pool, _ = load_pool("espeak-default")
    report = check_balance(pool)
    assert report.balanced and set(report.counts.values()) == {3} and len(report.counts) == 6
    assert {v.label_source for v in pool.voices} == {"proxy"}
    assert all(v.tts.backend == "espeak-ng" and v.tts.params["voice"] for v in pool.voices)


def test_unbalanced_pool_is_refused_unless_allowed(tmp_path):
    path = write(tmp_path / "uneven.yaml", pool_yaml(drop_last=True))
    message = str(pytest.raises(BiasbenchError, load_pool, str(path)).value)
    assert "unbalanced" in message and "male/east_asian=2" in message and "--allow-unbalanced" in message
    pool, _ = load_pool(str(path), allow_unbalanced=True)
    assert len(pool.voices) == 17


def test_too_few_voices_per_cell(tmp_path):
    report = check_balance(load_voice_pool(write(tmp_path / "small.yaml", pool_yaml(per_cell=2))))
    assert not report.balanced and "at least 3" in report.problems[0]


def test_label_source_must_be_honest_kind(tmp_path):
    text = pool_yaml().replace("label_source: proxy", "label_source: guessed", 1)
    message = str(pytest.raises(ConfigError, load_voice_pool, write(tmp_path / "p.yaml", text)).value)
    assert "p.yaml" in message and "voices.0.label_source" in message and "self_reported" in message


def test_duplicate_ids_and_unknown_fields(tmp_path):
    dup = pool_yaml().replace("id: v1,", "id: v0,")
    assert "duplicate voice id 'v0'" in str(pytest.raises(ConfigError, load_voice_pool, write(tmp_path / "d.yaml", dup)).value)
    extra = pool_yaml().replace("accent: en-us,", "accent: en-us, colour: blue,", 1)
    message = str(pytest.raises(ConfigError, load_voice_pool, write(tmp_path / "e.yaml", extra)).value)
    assert "voices.0.colour" in message and "unknown field" in message


def test_labels_outside_the_design_are_reported(tmp_path):
    text = pool_yaml().replace("ethnicity: black", "ethnicity: martian", 1)
    report = check_balance(load_voice_pool(write(tmp_path / "m.yaml", text)))
    assert any("martian" in p for p in report.problems)


def test_unknown_pool_name_suggests():
    assert "espeak-default" in str(pytest.raises(BiasbenchError, load_pool, "espeak-defualt").value)
