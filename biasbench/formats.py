"""How every JSON and CSV file biasbench writes is encoded: strict JSON, spreadsheet-safe CSV.

**Strict JSON.** Python's `json` writes `NaN` and `Infinity`, which are not JSON: JavaScript's
`JSON.parse`, jq and most other readers refuse the whole file. `dumps` turns every non-finite
number into `null` (and numpy scalars and arrays into plain values) and then writes with
`allow_nan=False`, so nothing non-standard can slip through.

**Spreadsheet-safe CSV** (OWASP, "CSV injection"). A text cell that starts with `=`, `+`, `-`,
`@`, a tab or a carriage return (or their full-width forms) is a formula to a spreadsheet; a
model's answer such as `=HYPERLINK(...)` would run when someone opens `responses.csv`. Such a
cell is written with a leading apostrophe, which spreadsheets read as "this is text".

* Numbers stay numbers: numeric columns are left alone, and so is a text cell that is a plain
  number (`-0.05`, `+3`) or a lone sign (`-`, a common "none" placeholder): neither can be a formula.
* A cell that already starts with the apostrophe is not touched, so rewriting a file (the
  leaderboard reads its own CSV back) never stacks apostrophes.
* `restore_cell` / `restore_frame` undo it for biasbench's own readers, so a value read back is
  the value that was written.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable

# --------------------------------------------------------------------------- JSON


def json_ready(value):
    """numpy scalars and arrays, tuples and non-finite floats -> plain JSON values (NaN, inf -> None).
    Other objects are left for `dumps`' `default`. numpy is recognised without importing it."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalar or array
        return json_ready(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def dumps(value, *, indent: int | None = None, sort_keys: bool = False, ensure_ascii: bool = True,
          default=str) -> str:
    """`json.dumps` as biasbench writes it: strict (NaN/inf -> null), numpy made plain, anything
    else through `default` (str: a Path, a datetime)."""
    return json.dumps(json_ready(value), indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii,
                      default=default, allow_nan=False)


def strict_loads(text: str):
    """`json.loads` that refuses NaN and Infinity, as a strict reader does (for checks and tests)."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# --------------------------------------------------------------------------- CSV

#: What a spreadsheet takes as the start of a formula (OWASP), and the full-width forms some read too.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
ESCAPE = "'"


def spreadsheet_safe(cell: Any) -> Any:
    """The cell as written to a CSV: a text formula gets a leading apostrophe; anything else
    (numbers, None, a text number such as "-0.05", text already escaped) is returned as it is."""
    if (isinstance(cell, str) and cell.startswith(FORMULA_START) and len(cell) > 1
            and not _PLAIN_NUMBER.fullmatch(cell)):
        return ESCAPE + cell
    return cell


def restore_cell(cell: Any) -> Any:
    """The inverse of `spreadsheet_safe`, for a cell biasbench wrote."""
    if isinstance(cell, str) and cell.startswith(ESCAPE) and spreadsheet_safe(cell[1:]) == cell:
        return cell[1:]
    return cell


def safe_row(row: dict | Iterable) -> dict | list:
    """One row for csv.writer / csv.DictWriter, each cell made spreadsheet-safe."""
    if isinstance(row, dict):
        return {key: spreadsheet_safe(value) for key, value in row.items()}
    return [spreadsheet_safe(value) for value in row]


def safe_frame(table):
    """A copy of a DataFrame for `to_csv`: every text column's cells made spreadsheet-safe;
    numeric, boolean and date columns untouched."""
    return _map_text_columns(table, spreadsheet_safe)


def restore_frame(table):
    """A DataFrame read from a CSV biasbench wrote, its text cells as they were before writing."""
    return _map_text_columns(table, restore_cell)


def _map_text_columns(table, function):
    import pandas as pd

    out = table.copy()
    for column in out.columns:
        series = out[column]
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out[column] = series.map(function, na_action="ignore")
    return out


def jsonl_objects(path, text: str) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL text read from `path`; a line
    that is not a JSON object is a BiasbenchError naming the file and the line."""
    from biasbench.errors import BiasbenchError

    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise BiasbenchError(f"{path}, line {number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise BiasbenchError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
        out.append((number, row))
    return out
