"""judgements.sqlite in a run directory: every judgement made, the cache a rerun resumes from.

One row per judgement, keyed by the judge's identity, the item and sample, the ordered pair
of voices and the hash of the exact prompt (template version included), so a changed
answer, template or judge is judged afresh and nothing is reused across them. A failed
judgement (an exception, a reply with no verdict) is stored with its error, so it is
counted and shown; a rerun retries it and replaces it when it succeeds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from biasbench.errors import BiasbenchError
from biasbench.store import stop_when_disk_full, utc_now

FILE = "judgements.sqlite"
_SCHEMA = """CREATE TABLE IF NOT EXISTS judgements (
    judge TEXT NOT NULL, item_id TEXT NOT NULL, sample_index INTEGER NOT NULL, first TEXT NOT NULL,
    second TEXT NOT NULL, prompt_hash TEXT NOT NULL, verdict TEXT, reply TEXT, error TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (judge, item_id, sample_index, first, second, prompt_hash))"""
COLUMNS = ("judge", "item_id", "sample_index", "first", "second", "prompt_hash", "verdict", "reply", "error",
           "created_at")


class JudgementStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            with self.db:
                self.db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise BiasbenchError(f"{self.path} cannot be opened as a judgement store: {exc}") from None

    def done(self, judge: str) -> set[tuple]:
        """Keys (item, sample, first, second, prompt hash) this judge has a verdict for."""
        rows = self.db.execute("SELECT item_id, sample_index, first, second, prompt_hash FROM judgements "
                               "WHERE judge = ? AND verdict IS NOT NULL", (judge,))
        return {tuple(r) for r in rows}

    def add(self, judge: str, rows: list[tuple]) -> None:
        """rows: (item, sample, first, second, prompt_hash, verdict | None, reply, error | None);
        one transaction per batch, so a killed command loses at most the batch in flight."""
        now = utc_now()
        with stop_when_disk_full(self.path, kept="judgement", rerun="rerun the same command"), self.db:
            self.db.executemany("INSERT OR REPLACE INTO judgements VALUES (?,?,?,?,?,?,?,?,?,?)",
                                [(judge, *row, now) for row in rows])

    def frame(self, judge: str | None = None) -> pd.DataFrame:
        query, args = "SELECT * FROM judgements", ()
        if judge is not None:
            query, args = query + " WHERE judge = ?", (judge,)
        return pd.read_sql_query(query + " ORDER BY item_id, sample_index, first, second", self.db, params=args)

    def close(self) -> None:
        self.db.close()


def read_judgements(path: Path, judge: str) -> pd.DataFrame:
    """The judgements of `judge` in the store at `path` (read-only), or an empty frame."""
    if not Path(path).is_file():
        return pd.DataFrame(columns=list(COLUMNS))
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return pd.read_sql_query("SELECT * FROM judgements WHERE judge = ?", db, params=(judge,))
    except (sqlite3.Error, pd.errors.DatabaseError) as exc:
        raise BiasbenchError(f"{path} cannot be read as a judgement store: {exc}") from None
