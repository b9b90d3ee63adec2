"""Listings (`models`, `tasks`, `voices list`) as a table, CSV or JSON.

A table goes to a terminal (or, when it would not fit, one block per row); piped, the same
rows come out as plain tab-separated text, so `grep`/`cut` work. Nothing is ever truncated. Cells are plain strings: Rich
markup is never interpreted in them (a `[vllm]` extra stays as written).
"""

from __future__ import annotations

import csv
import sys
import textwrap
from enum import Enum

from biasbench.formats import dumps, safe_row


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
        print(dumps(rows, indent=2, ensure_ascii=False))
    elif fmt is ListFormat.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(safe_row(row) for row in rows)  # spreadsheet-safe: no formula runs
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

    table_or_blocks(Console(), rows, columns, title, whole_columns)


def table_or_blocks(console, rows: list[dict], columns: list[str], title: str | None = None,
                    whole_columns: int = 1, skip_empty: bool = False) -> None:
    """A table when every cell fits on one line in the console's width; else one block per row
    (its first `whole_columns` cells, then `column: value` lines, a long value wrapping under
    itself; empty cells left out with `skip_empty`), so a narrow terminal cuts nothing. Used by
    the listings and `leaderboard show`."""
    from rich.table import Table
    from rich.text import Text

    widths = [max([len(name)] + [len(_plain(row[name])) for row in rows]) for name in columns]
    if sum(widths) + 3 * len(columns) + 1 <= console.width:
        table = Table(*columns, title=Text(title) if title else None)
        for row in rows:
            table.add_row(*(Text(_plain(row[c])) for c in columns))
        console.print(table)
        return
    if title:
        console.print(Text(title, style="bold"))
    whole = columns[:whole_columns]
    for row in rows:
        head = _wrap("  ".join(_plain(row[c]) for c in whole), console.width, "", "  ")
        console.print(Text(head, style="bold"), soft_wrap=True)
        for name in columns[whole_columns:]:
            if _plain(row[name]) or not skip_empty:
                console.print(Text(_wrap(f"{name}: {_plain(row[name])}", console.width, "    ", "      ")),
                              soft_wrap=True)


def _wrap(text: str, width: int, first: str, rest: str) -> str:
    """Wrapped at spaces only: an id, path or URL longer than the line stays whole."""
    return textwrap.fill(text, width=max(width, 40), initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)
