"""`biasbench salvage RUN_DIR`: copy the readable answers of a damaged response store into a
new one, keeping the damaged file beside it, so `--resume` asks only what was lost.

SQLite cannot repair a file in place; what it can still read is read row by row (a damaged
page loses the rows on it, not the rest), then written to a fresh store that is renamed into
place only when complete.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import typer

from biasbench.errors import BiasbenchError

# biasbench.store (and its pandas) is imported inside the functions: this module is read at
# CLI start-up, which must stay fast (`biasbench --help`).

#: Row ids probed past the last readable one when the table's size itself cannot be read.
_PROBE_PAST = 10_000


def salvage_command(run_dir: Path = typer.Argument(..., help="the run directory holding responses.sqlite")):
    """Copy the readable answers of a damaged responses.sqlite into a new store (the damaged
    file is kept beside it); then `biasbench run ... --resume` asks only the rest again."""
    from biasbench.store import RunDir

    saved, lost, aside = salvage(run_dir)
    typer.echo(f"{saved} answers saved into {RunDir(run_dir).store_path}; {lost} unreadable rows skipped; the "
               f"damaged file is kept as {aside}. Rerun the same command with --resume to ask the rest again.")


def salvage(run_dir: Path) -> tuple[int, int, Path]:
    """(rows saved, rows unreadable, where the damaged file now is)."""
    from biasbench.store import RunDir, utc_now

    store = RunDir(Path(run_dir)).store_path
    if not store.is_file():
        raise BiasbenchError(f"{store} does not exist: there is nothing to salvage")
    columns, rows, lost = _readable_rows(store)
    fresh = store.with_name(f".salvaging-{store.name}")
    fresh.unlink(missing_ok=True)
    _write(fresh, columns, rows)
    aside = store.with_name(f"responses.damaged-{utc_now().replace(':', '')}.sqlite")
    for suffix in ("", "-wal", "-shm"):  # the journal files belong to the damaged database
        part = Path(f"{store}{suffix}")
        if part.exists():
            part.rename(Path(f"{aside}{suffix}"))
    fresh.rename(store)
    return len(rows), lost, aside


def _readable_rows(path: Path) -> tuple[list[str], list[tuple], int]:
    from biasbench.store import _COLUMNS

    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            present = [row[1] for row in db.execute("PRAGMA table_info(responses)")]
        except sqlite3.DatabaseError as exc:
            raise BiasbenchError(f"{path} cannot be read at all ({exc}); nothing can be salvaged. Remove the run "
                                 "directory to start the run afresh.") from None
        columns = [name for name in _COLUMNS if name in present]
        if "request_key" not in columns:
            raise BiasbenchError(f"{path} holds no response table; nothing can be salvaged")
        try:
            last = db.execute("SELECT max(rowid) FROM responses").fetchone()[0] or 0
        except sqlite3.DatabaseError:
            last = None
        return columns, *_rows_by_id(db, columns, last)


def _rows_by_id(db, columns: list[str], last: int | None) -> tuple[list[tuple], int]:
    query = f"SELECT {', '.join(columns)} FROM responses WHERE rowid = ?"
    rows, lost, rowid, last_found = [], 0, 0, 0
    while (rowid < last) if last is not None else (rowid - last_found <= _PROBE_PAST):
        rowid += 1
        try:
            row = db.execute(query, (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            lost += 1
            continue
        if row is not None:
            rows.append(row)
            last_found = rowid
    return rows, lost


def _write(path: Path, columns: list[str], rows: list[tuple]) -> None:
    from biasbench.store import ResponseStore

    ResponseStore(path).close()  # the current schema
    insert = f"INSERT OR IGNORE INTO responses ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
    with closing(sqlite3.connect(path)) as db:
        with db:
            db.executemany(insert, rows)
        db.execute("PRAGMA journal_mode=DELETE")  # folds the WAL in: the file alone is the store when renamed
