"""Listings (`models`, `tasks`, `voices list`) as a table, CSV or JSON.

A table goes to a terminal; piped, the same rows come out as plain tab-separated text, so
`grep`/`cut` work and nothing is ever truncated or wrapped. Cells are plain strings: Rich
markup is never interpreted in them (a `[vllm]` extra stays as written).
"""

from __future__ import annotations

import csv
import json
import sys
from enum import Enum


class ListFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


FORMAT_HELP = "table (plain tab-separated text when piped), csv or json"


def print_listing(rows: list[dict], fmt: ListFormat, title: str | None = None, whole_columns: int = 1) -> None:
    """Print `rows` (dicts with the same keys, in column order) to stdout in `fmt`. In a
    table the first `whole_columns` columns (ids, aliases) are never cut."""
    columns = list(rows[0]) if rows else []
    if fmt is ListFormat.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif fmt is ListFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif sys.stdout.isatty():
        _rich_table(rows, columns, title, whole_columns)
    else:
        print("\t".join(columns))
        for row in rows:
            print("\t".join(_plain(row[c]) for c in columns))


def _plain(value) -> str:
    return "" if value is None else str(value).replace("\t", " ").replace("\n", " ")


def _rich_table(rows: list[dict], columns: list[str], title: str | None, whole_columns: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, title=Text(title) if title else None)
    for column, name in zip(table.columns, columns[:whole_columns]):  # the others wrap around these
        column.no_wrap = True
        column.min_width = max([len(name)] + [len(_plain(r[name])) for r in rows])
    for row in rows:
        table.add_row(*(Text(_plain(row[c])) for c in columns))
    Console(soft_wrap=False).print(table)
