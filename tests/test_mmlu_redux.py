"""The MMLU-Redux normaliser on tiny messy fixtures, the build script, and the shipped table."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from biasbench.errors import ConfigError
from biasbench.tasks.mmlu_redux import (
    CLEAN_COLUMNS,
    filter_ok,
    normalise_mmlu_redux,
    read_subject_csv,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "tasks" / "data" / "mmlu_redux"
ABCD = "['a', 'b', 'c', 'd']"


def _write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> Path:
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


@pytest.fixture
def messy_dir(tmp_path: Path) -> Path:
    src = tmp_path / "raw"
    src.mkdir()
    # Comma file, CRLF line ends, one bad row of each kind.
    _write(
        src / "mmlu_alpha.csv",
        "question,choices,answer,error_type,source,correct_answer,potential_reason\n"
        f'"Two\nlines ","{ABCD}",0,ok,src,,\n'
        + 'Broken choices,"[\'a\', \'b\'",1,ok,src,,\n'
        + 'Three choices,"[\'a\', \'b\', \'c\']",1,ok,src,,\n'
        + f'Answer too big,"{ABCD}",4,ok,src,,\n'
        + f'  ,"{ABCD}",1,ok,src,,\n'
        + 'Code in choices,"__import__(\'os\').getcwd()",1,ok,src,,\n'
        + f'Strange label,"{ABCD}",1,Looks Fine,src,,\n'
        + f'Keyed by letter,"{ABCD}",1,Wrong Groundtruth ,src,C,\n'
        + f'Free-text fix,"{ABCD}",2,No correct answer,src,maybe 7.69?,\n',
        newline="\r\n",
    )
    # Semicolon file, another column order, casing variants of the labels.
    _write(
        src / "mmlu_beta.csv",
        "question;answer;correct_answer;choices;error_type;source;potential_reason\n"
        f'Q one;2;;"[\' x \', \'y\', \'z\', \'w\']";OK;s;\n'
        f"Q two;3;1;{ABCD};bad_question_clarity;s;\n"
        f"Q three;1;;{ABCD};Bad Options Clarity;s;\n"
        f"Q four;0;0;{ABCD};Ok ;s;\n",
    )
    # Trailing empty header columns, and rows padded to match.
    _write(
        src / "mmlu_gamma.csv",
        "question,choices,answer,error_type,source,correct_answer,potential_reason,,\n"
        f'G one,"{ABCD}",3,expert,s,,,,\n'
        f'G two,"{ABCD}",1,multiple correct answers,s,"1, 3",,,\n',
    )
    # Not UTF-8: cp1252 bytes.
    _write(
        src / "mmlu_delta.csv",
        "question,choices,answer,error_type,source,correct_answer,potential_reason\n"
        "Where is the café?,\"['Café', 'Bar', 'Pub', 'Inn’s']\",0,ok,s,,\n",
        encoding="cp1252",
    )
    return src


def test_read_subject_csv_sniffs_delimiter_and_drops_trailing_columns(messy_dir):
    beta = read_subject_csv(messy_dir / "mmlu_beta.csv")
    assert list(beta.columns)[:4] == ["question", "answer", "correct_answer", "choices"]
    assert beta.loc[1, "answer"] == "3"
    gamma = read_subject_csv(messy_dir / "mmlu_gamma.csv")
    assert list(gamma.columns) == [
        "question", "choices", "answer", "error_type", "source", "correct_answer", "potential_reason",
        "extra_fields",
    ]
    assert gamma["extra_fields"].tolist() == ["", ""]
    assert beta.attrs["encoding"] == "utf-8"


def test_read_subject_csv_falls_back_to_cp1252(messy_dir):
    delta = read_subject_csv(messy_dir / "mmlu_delta.csv")
    assert delta.attrs["encoding"] == "cp1252"
    assert delta.loc[0, "question"] == "Where is the café?"


def test_normalise_clean_rows_exactly(messy_dir):
    clean, _ = normalise_mmlu_redux(messy_dir)
    assert list(clean.columns) == CLEAN_COLUMNS
    expected = pd.DataFrame(
        [
            ("alpha/000", "alpha", "Two\nlines", ["a", "b", "c", "d"], 0, "ok", ""),
            ("alpha/007", "alpha", "Keyed by letter", ["a", "b", "c", "d"], 1, "wrong_groundtruth", "2"),
            ("alpha/008", "alpha", "Free-text fix", ["a", "b", "c", "d"], 2, "no_correct_answer", ""),
            ("beta/000", "beta", "Q one", ["x", "y", "z", "w"], 2, "ok", ""),
            ("beta/001", "beta", "Q two", ["a", "b", "c", "d"], 3, "bad_question_clarity", "1"),
            ("beta/002", "beta", "Q three", ["a", "b", "c", "d"], 1, "bad_options_clarity", ""),
            ("beta/003", "beta", "Q four", ["a", "b", "c", "d"], 0, "ok", ""),
            ("delta/000", "delta", "Where is the café?", ["Café", "Bar", "Pub", "Inn’s"], 0, "ok", ""),
            ("gamma/000", "gamma", "G one", ["a", "b", "c", "d"], 3, "expert", ""),
            ("gamma/001", "gamma", "G two", ["a", "b", "c", "d"], 1, "multiple_correct_answers", ""),
        ],
        columns=CLEAN_COLUMNS,
    )
    expected["choices"] = expected["choices"].map(lambda c: json.dumps(c, ensure_ascii=False))
    pd.testing.assert_frame_equal(clean, expected)
    assert clean.attrs["encodings"] == {"alpha": "utf-8", "beta": "utf-8", "delta": "cp1252", "gamma": "utf-8"}
    assert filter_ok(clean)["item_id"].tolist() == ["alpha/000", "beta/000", "beta/003", "delta/000"]


def test_normalise_dropped_rows_exactly(messy_dir):
    _, dropped = normalise_mmlu_redux(messy_dir)
    assert dropped[["subject", "row", "reason"]].values.tolist() == [
        ["alpha", 1, "choices is not a Python list literal"],
        ["alpha", 2, "choices has 3 items, need 4"],
        ["alpha", 3, "answer is not an integer 0-3"],
        ["alpha", 4, "empty question"],
        ["alpha", 5, "choices is not a Python list literal"],
        ["alpha", 6, "unknown error_type"],
    ]
    assert dropped.loc[2, "detail"] == "4"
    assert dropped.loc[5, "detail"] == "Looks Fine"


def test_item_ids_are_stable_across_runs(messy_dir):
    first, _ = normalise_mmlu_redux(messy_dir)
    second, _ = normalise_mmlu_redux(messy_dir)
    pd.testing.assert_frame_equal(first, second)


def test_row_with_cells_beyond_the_header_is_dropped(tmp_path):
    _write(
        tmp_path / "mmlu_x.csv",
        "question,choices,answer,error_type,correct_answer\n"
        f'Fine,"{ABCD}",1,ok,\n'
        f'Unquoted, comma,"{ABCD}",1,wrong_groundtruth,2\n',
    )
    clean, dropped = normalise_mmlu_redux(tmp_path)
    assert clean["item_id"].tolist() == ["x/000"]
    assert dropped[["row", "reason"]].values.tolist() == [[1, "more fields than the header"]]


def test_missing_column_names_file_and_column(tmp_path):
    _write(tmp_path / "mmlu_nokey.csv", f'question,choices,error_type,correct_answer\nQ,"{ABCD}",ok,\n')
    with pytest.raises(ConfigError) as info:
        normalise_mmlu_redux(tmp_path)
    assert info.value.field == "answer"
    assert "mmlu_nokey.csv" in str(info.value) and "'answer'" in str(info.value)


def test_unreadable_file_is_a_config_error(tmp_path):
    (tmp_path / "mmlu_folder.csv").mkdir()  # a directory cannot be read as a file
    with pytest.raises(ConfigError, match="mmlu_folder.csv"):
        normalise_mmlu_redux(tmp_path)


def test_empty_source_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no mmlu_<subject>.csv"):
        normalise_mmlu_redux(tmp_path)


def _load_build_script():
    spec = importlib.util.spec_from_file_location("build_mmlu_redux", ROOT / "scripts" / "build_mmlu_redux.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _readme_sha256(readme: Path) -> str:
    match = re.search(r"sha256: `([0-9a-f]{64})`", readme.read_text(encoding="utf-8"))
    assert match, f"no sha256 line in {readme}"
    return match.group(1)


def test_build_script_writes_all_outputs(messy_dir, tmp_path):
    (messy_dir / "LICENSE").write_text("CC BY 4.0 text", encoding="utf-8")
    out = tmp_path / "out"
    assert _load_build_script().main(["--src", str(messy_dir), "--out-dir", str(out)]) == 0
    clean_path = out / "mmlu_redux_clean.csv"
    assert _readme_sha256(out / "README.md") == hashlib.sha256(clean_path.read_bytes()).hexdigest()
    assert (out / "LICENSE").read_text(encoding="utf-8") == "CC BY 4.0 text"
    report = (out / "DROPPED.md").read_text(encoding="utf-8")
    assert "| alpha | choices has 3 items, need 4 | 1 |" in report
    assert "`mmlu_delta.csv`: decoded as cp1252" in report
    assert "| wrong_groundtruth | 1 |" in report and "Total removed: 6" in report
    # The CSV round-trips: multi-line text and JSON choices survive the quoting.
    back = pd.read_csv(clean_path, dtype={"correct_answer": str}, keep_default_na=False)
    clean, _ = normalise_mmlu_redux(messy_dir)
    pd.testing.assert_frame_equal(back, clean)


def test_shipped_clean_file():
    clean_path = SHIPPED / "mmlu_redux_clean.csv"
    clean = pd.read_csv(clean_path, dtype={"correct_answer": str}, keep_default_na=False, encoding="utf-8")
    assert list(clean.columns) == CLEAN_COLUMNS
    assert clean["subject"].nunique() == 57
    assert clean["item_id"].is_unique
    assert (clean["item_id"] == clean["subject"] + "/" + clean["item_id"].str.split("/").str[1]).all()
    choices = clean["choices"].map(json.loads)
    assert choices.map(lambda c: len(c) == 4 and all(isinstance(s, str) and s for s in c)).all()
    assert clean["answer"].isin([0, 1, 2, 3]).all()
    assert clean["correct_answer"].isin(["", "0", "1", "2", "3"]).all()
    assert clean["question"].str.strip().astype(bool).all()
    assert set(clean["error_type"]) <= {
        "ok", "wrong_groundtruth", "no_correct_answer", "multiple_correct_answers",
        "bad_question_clarity", "bad_options_clarity", "expert",
    }
    assert _readme_sha256(SHIPPED / "README.md") == hashlib.sha256(clean_path.read_bytes()).hexdigest()
    assert (SHIPPED / "LICENSE").is_file() and (SHIPPED / "DROPPED.md").is_file()
