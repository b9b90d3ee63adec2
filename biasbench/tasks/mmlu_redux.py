"""Turn the raw MMLU-Redux CSV files into one clean table, and say what was dropped.

MMLU-Redux (Gema et al. 2024, arXiv:2406.04127, CC BY 4.0) re-annotates 100 questions
from each of the 57 MMLU subjects. The raw files are inconsistent (delimiter, column
order, encoding, label spelling); everything here is pure and deterministic so the
shipped clean file can be rebuilt byte for byte by `scripts/build_mmlu_redux.py`.

Only `ast.literal_eval` is used on the `choices` cell: it parses literals and never
runs code.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from pathlib import Path

import pandas as pd

from biasbench.errors import ConfigError
from biasbench.formats import dumps

REQUIRED_COLUMNS = ("question", "choices", "answer", "error_type", "correct_answer")
CLEAN_COLUMNS = ["item_id", "subject", "question", "choices", "answer", "error_type", "correct_answer"]
DROPPED_COLUMNS = ["subject", "row", "reason", "detail"]

# The labels MMLU-Redux uses, in the canonical form the clean table carries.
ERROR_TYPES = (
    "ok",
    "wrong_groundtruth",
    "no_correct_answer",
    "multiple_correct_answers",
    "bad_question_clarity",
    "bad_options_clarity",
    "expert",
)
# Spellings that do not reduce to a canonical label by case and separators alone.
_ERROR_TYPE_ALIASES = {"wrong_ground_truth": "wrong_groundtruth"}

_DELIMITERS = (",", ";", "\t")
_LETTER_KEYS = {"A": 0, "B": 1, "C": 2, "D": 3}
# Added by read_subject_csv: cells found beyond the header's width, joined; empty if none.
EXTRA_FIELDS = "extra_fields"


def decode_text(raw: bytes) -> tuple[str, str]:
    """Decode as UTF-8 (BOM tolerated), else cp1252; return (text, encoding used)."""
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        # cp1252 leaves 5 byte values undefined; those would still fail here, and the
        # caller turns that into a ConfigError rather than guessing further.
        return raw.decode("cp1252"), "cp1252"


def sniff_delimiter(header_line: str) -> str | None:
    """The candidate delimiter that occurs most often in the header line, or None.

    The header holds plain column names, so counting there is more reliable than
    csv.Sniffer on data rows full of quoted commas, semicolons and newlines.
    """
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else None


def normalise_column_name(name: str) -> str:
    """'Error Type ' -> 'error_type'."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def read_subject_csv(path) -> pd.DataFrame:
    """Read one raw subject file into a frame of strings, one row per data row.

    Columns get normalised names; empty trailing header columns are dropped. Cells a
    row has beyond the header's width (ignoring empty ones) go, joined, into
    `extra_fields` so the caller can drop that row. `df.attrs["encoding"]` says
    whether the file needed the cp1252 fallback.
    """
    path = Path(path)
    try:
        text, encoding = decode_text(path.read_bytes())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"cannot read file: {exc}") from exc
    if not text.strip():
        raise ConfigError(path, None, "file is empty")
    delimiter = sniff_delimiter(text.splitlines()[0])
    if delimiter is None:
        raise ConfigError(path, None, "cannot detect the delimiter (none of , ; tab in the header)")

    # newline="" keeps line breaks inside quoted cells intact for the csv module.
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    header = [normalise_column_name(h) for h in rows[0]]
    while header and header[-1] == "":
        header.pop()
    if "" in header:
        raise ConfigError(path, None, f"header has an unnamed column at position {header.index('') + 1}")
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ConfigError(path, duplicated[0], "column appears more than once in the header")
    for column in REQUIRED_COLUMNS:
        if column not in header:
            raise ConfigError(path, column, f"required column missing (header: {', '.join(header)})")

    width = len(header)
    records = []
    for cells in rows[1:]:
        if not any(c.strip() for c in cells):
            continue  # blank line, e.g. at the end of the file
        extra = [c for c in cells[width:] if c.strip()]
        cells = (cells + [""] * width)[:width]  # short rows: missing trailing cells are empty
        records.append(cells + ["|".join(extra)])
    frame = pd.DataFrame(records, columns=header + [EXTRA_FIELDS], dtype=str)
    frame.attrs["encoding"] = encoding
    return frame


def subject_from_path(path) -> str:
    """'mmlu_high_school_physics.csv' -> 'high_school_physics'."""
    stem = Path(path).stem
    return stem[len("mmlu_"):] if stem.startswith("mmlu_") else stem


def canonical_error_type(value: str) -> str:
    """'Wrong Groundtruth ' / 'wrong_groundtruth' / 'OK' -> 'wrong_groundtruth' / 'ok'."""
    name = normalise_column_name(value)
    return _ERROR_TYPE_ALIASES.get(name, name)


def _clean_text(value: str) -> str:
    # Files differ in line endings (CRLF vs LF), and that leaks into multi-line cells;
    # one form keeps identical questions identical. Outer whitespace is never spoken.
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def parse_choices(cell: str) -> tuple[list[str] | None, str | None]:
    """(choices, None) for a literal list of 4 non-empty strings, else (None, reason)."""
    try:
        value = ast.literal_eval(cell.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None, "choices is not a Python list literal"
    if not isinstance(value, (list, tuple)):
        return None, "choices is not a Python list literal"
    if len(value) != 4:
        return None, f"choices has {len(value)} items, need 4"
    if not all(isinstance(c, str) for c in value):
        return None, "choices has a non-string item"
    choices = [_clean_text(c) for c in value]
    if not all(choices):
        return None, "choices has an empty item"
    return choices, None


def parse_answer(cell: str) -> int | None:
    """The 0-3 key from '2' (surrounding blanks allowed), else None."""
    cell = cell.strip()
    return int(cell) if cell in ("0", "1", "2", "3") else None


def parse_corrected_key(cell: str) -> str:
    """'2' or 'C' -> '2'; anything else (free text, '1, 3', '30') -> ''.

    Annotators wrote the corrected key as an index or a letter, and sometimes as
    prose or several keys; only a single unambiguous key is kept.
    """
    cell = cell.strip()
    if cell in ("0", "1", "2", "3"):
        return cell
    if cell.upper() in _LETTER_KEYS and len(cell) == 1:
        return str(_LETTER_KEYS[cell.upper()])
    return ""


def normalise_subject(frame: pd.DataFrame, subject: str) -> tuple[list[dict], list[dict]]:
    """Clean rows and dropped rows (as dicts) for one subject's raw frame."""
    clean, dropped = [], []
    for row, record in enumerate(frame.to_dict("records")):

        def drop(reason: str, detail: str = "") -> None:
            dropped.append({"subject": subject, "row": row, "reason": reason, "detail": detail[:80]})

        question = _clean_text(record["question"])
        error_type = canonical_error_type(record["error_type"])
        if record[EXTRA_FIELDS]:
            drop("more fields than the header", record[EXTRA_FIELDS])
            continue
        if not question:
            drop("empty question")
            continue
        choices, problem = parse_choices(record["choices"])
        if problem:
            drop(problem, record["choices"])
            continue
        answer = parse_answer(record["answer"])
        if answer is None:
            drop("answer is not an integer 0-3", record["answer"])
            continue
        if error_type not in ERROR_TYPES:
            drop("unknown error_type", record["error_type"])
            continue
        clean.append(
            {
                "item_id": f"{subject}/{row:03d}",
                "subject": subject,
                "question": question,
                "choices": dumps(choices, ensure_ascii=False),
                "answer": answer,
                "error_type": error_type,
                # For `ok` rows the original key stands; some files repeat it (or, twice,
                # contradict it) in correct_answer, which would only confuse a reader.
                "correct_answer": "" if error_type == "ok" else parse_corrected_key(record["correct_answer"]),
            }
        )
    return clean, dropped


def normalise_mmlu_redux(src_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean, dropped) for every `mmlu_<subject>.csv` in src_dir, in subject order.

    `clean.attrs["encodings"]` maps each subject to the encoding its file needed.
    """
    src_dir = Path(src_dir)
    paths = sorted(src_dir.glob("mmlu_*.csv"))
    if not paths:
        raise ConfigError(src_dir, None, "no mmlu_<subject>.csv files found")
    clean_rows, dropped_rows, encodings = [], [], {}
    for path in paths:
        subject = subject_from_path(path)
        frame = read_subject_csv(path)
        encodings[subject] = frame.attrs["encoding"]
        kept, dropped = normalise_subject(frame, subject)
        clean_rows += kept
        dropped_rows += dropped
    clean = pd.DataFrame(clean_rows, columns=CLEAN_COLUMNS)
    clean["answer"] = clean["answer"].astype(int)
    dropped = pd.DataFrame(dropped_rows, columns=DROPPED_COLUMNS)
    dropped["row"] = dropped["row"].astype(int)
    clean.attrs["encodings"] = encodings
    return clean, dropped


def filter_ok(clean: pd.DataFrame) -> pd.DataFrame:
    """Only rows whose original key MMLU-Redux confirmed (the task layer's default)."""
    return clean[clean["error_type"] == "ok"]
