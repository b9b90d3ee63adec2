"""A run's directory: its manifest, its SQLite response store and its exports.

Responses are written to SQLite as each batch finishes, in one transaction per batch, keyed
by a hash of everything that determines the answer. A killed run therefore loses at most
the batch in flight, and `INSERT OR IGNORE` on the key means a resumed run can never store
a response twice.

A multi-turn task stores one row per turn (`turn`: 0 for the first answer), and all the turns of
a conversation in the same transaction (biasbench/conversation.py), so a conversation is never half
stored.

What was asked is kept beside the answers, once per prompt (table `prompts`, keyed by the
responses' `prompt_hash`): the text every voice spoke and the text prompt the model read
(the text control reads the two joined by a newline). `to_frame` joins them in, so exports
show them; a store written before this table existed reads with them empty, and a resumed
run fills them in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from biasbench.errors import BiasbenchError, RunStopped
from biasbench.formats import dumps, safe_frame
from biasbench.redact import redact_strings

SCHEMA_VERSION = 1

_COLUMNS = {
    "request_key": "TEXT PRIMARY KEY",
    "item_id": "TEXT NOT NULL",
    "voice_id": "TEXT NOT NULL",
    "condition": "TEXT NOT NULL",
    "sample_index": "INTEGER NOT NULL DEFAULT 0",
    "prompt_hash": "TEXT NOT NULL",
    "audio_key": "TEXT",
    "audio_seconds": "REAL",
    "audio_truncated": "INTEGER NOT NULL DEFAULT 0",
    "response_text": "TEXT",
    "option_logprobs": "TEXT",
    "answer": "TEXT",
    "target": "TEXT",
    "status": "TEXT NOT NULL",
    "correct": "REAL",
    "value": "REAL",
    "latency_s": "REAL",
    "n_input_tokens": "INTEGER",
    "transcript": "TEXT",  # what an ASR-then-LLM cascade heard
    "cer": "REAL",  # transcribe tasks: character error rate (the WER is `value`)
    "turn": "INTEGER DEFAULT 0",  # multi-turn tasks: 0 for the first question, k for the k-th follow-up
    "created_at": "TEXT NOT NULL",
}


@dataclass
class StoredResponse:
    request_key: str
    item_id: str
    voice_id: str
    condition: str
    sample_index: int
    prompt_hash: str
    audio_key: str | None
    audio_seconds: float | None
    audio_truncated: int
    response_text: str | None
    option_logprobs: str | None  # strict JSON: a letter with log-probability -inf is null
    answer: str | None
    target: str | None
    status: str
    correct: float | None
    value: float | None
    latency_s: float | None
    n_input_tokens: int | None
    transcript: str | None = None
    cer: float | None = None
    turn: int = 0
    created_at: str = ""


_INSERT = (f"INSERT OR IGNORE INTO responses ({', '.join(_COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in _COLUMNS)})")

#: What each prompt asked, once per prompt_hash (the same for every voice that spoke it).
PROMPT_COLUMNS = ("spoken_text", "text_prompt")
_PROMPTS_TABLE = "CREATE TABLE IF NOT EXISTS prompts (prompt_hash TEXT PRIMARY KEY, spoken_text TEXT, text_prompt TEXT)"


#: A response's slot: what one planned request answers, whatever its audio turned out to be.
_SLOT = ("item_id", "voice_id", "condition", "sample_index", "turn")
_DELETE_PLACEHOLDER = ("DELETE FROM responses WHERE status = ? AND "
                       + " AND ".join(f"{c} = ?" for c in _SLOT) + " AND request_key != ?")
_DROP_SUPERSEDED = ("DELETE FROM responses AS p WHERE p.status = ? AND EXISTS (SELECT 1 FROM responses AS r "
                    "WHERE r.status != ? AND " + " AND ".join(f"r.{c} = p.{c}" for c in _SLOT) + ")")


def _slot(response: StoredResponse) -> tuple:
    return tuple(getattr(response, column) for column in _SLOT)


def _row(response: StoredResponse, now: str) -> tuple:
    """The response's values in _COLUMNS order. Plain attribute reads: dataclasses.asdict
    deep-copies every field and once cost more than the SQLite write itself."""
    return tuple(now if column == "created_at" and not response.created_at else getattr(response, column)
                 for column in _COLUMNS)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: A run id names a folder under --output-dir: one plain name, never a path.
_RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


def check_run_id(run_id: str | None) -> None:
    if run_id is not None and (not _RUN_ID_RE.match(run_id) or ".." in run_id):
        raise BiasbenchError(f"--run-id {run_id!r} must be one folder name: letters, digits, '.', '_' or '-', "
                             "starting with a letter or digit, at most 128 characters, no '..'")


def check_output_dir(path: Path) -> None:
    """Fail at once when runs cannot be written under `path` (not after hours of synthesis)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BiasbenchError(f"--output-dir {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".biasbench-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BiasbenchError(f"--output-dir {path} cannot be written: {exc.strerror or exc}") from None


#: The manifest fields the harness reads back, and the JSON type each must have when present.
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "identity_hash": (str,), "started_at": (str,), "finished_at": (str,),
    "resumed_at": (list,), "schema_version": (int,), "complete": (bool,), "n_responses": (int,),
    "n_failed_requests": (int,), "failed_requests": (list,), "unanswered": (dict,), "plan": (dict,),
    "task": (dict,), "pool": (dict,), "model": (dict,), "generation": (dict,), "synthesis": (dict,),
    "options": (dict,), "harness": (dict,), "usage": (dict,),
}
_JSON_NAMES = {str: "a string", list: "a list", int: "a whole number", bool: "true or false", dict: "an object"}


def check_manifest_fields(manifest, path: Path) -> None:
    """BiasbenchError naming `path` and the field when the manifest is not an object, or one of
    the fields the harness reads back has the wrong JSON type (a damaged or hand-edited file)."""
    fix = "restore it from a backup, or remove the run's folder to start the run afresh"
    if not isinstance(manifest, dict):
        raise BiasbenchError(f"{path}: expected a JSON object, got {_json_type(manifest)}; {fix}")
    for name, types in MANIFEST_FIELDS.items():
        value = manifest.get(name)
        wrong = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
        if value is not None and wrong:
            raise BiasbenchError(f"{path}, field '{name}': expected {_JSON_NAMES[types[0]]}, got "
                                 f"{_json_type(value)}; {fix}")


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or a file size limit or quota) stopped a write: SQLite's
    "database or disk is full" or "disk I/O error", or an OSError ENOSPC, EFBIG or EDQUOT."""
    import errno

    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or \
            "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def stopped_by_full_disk(what, exc: BaseException, *, kept: str = "answer",
                         rerun: str = "rerun the same command with --resume") -> RunStopped:
    """The one line (errors.RunStopped, exit 3) for a write that the disk stopped: every batch
    committed before is kept (one transaction per batch), so rerunning continues once there is space."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return RunStopped(f"{what} could not be written ({reason}): the run stopped part way; every {kept} stored "
                      f"before is kept. Free space on its disk, then {rerun}.")


@contextlib.contextmanager
def stop_when_disk_full(path: Path, **line):
    """Writes to the SQLite file at `path`: a full disk ("database or disk is full") becomes
    `stopped_by_full_disk`'s one line; the transaction in flight is rolled back by SQLite."""
    try:
        yield
    except sqlite3.Error as exc:
        if not disk_full(exc):
            raise
        raise stopped_by_full_disk(path, exc, **line) from None


class ResponseStore:
    """The SQLite file of one run. WAL mode, so an export can read while a run writes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise BiasbenchError(f"{self.path} is a folder (or another non-file), not the run's response store: "
                                 "move it away, then run again (nothing was changed)")
        try:
            self.db = sqlite3.connect(self.path)
        except sqlite3.Error as exc:
            raise BiasbenchError(f"{self.path} cannot be opened as the run's response store: {exc}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if disk_full(exc):
                raise BiasbenchError(f"{self.path} cannot be written: {exc} (free space on its disk, then run "
                                     "again; nothing was changed)") from None
            raise BiasbenchError(f"{self.path} is damaged ({' '.join(str(exc).split())}); nothing was changed. `biasbench salvage "
                                 f"{self.path.parent}` copies its readable answers into a new store and keeps "
                                 "the damaged file beside it; then --resume asks only the rest again.") from None

    def _open(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS.items())
        self.db.execute(f"CREATE TABLE IF NOT EXISTS responses ({columns})")
        self._add_missing_columns()
        self.db.execute(_PROMPTS_TABLE)
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._check_schema()
        # A damaged page would otherwise surface mid-run, as a traceback, after synthesis.
        problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            raise sqlite3.DatabaseError(problem)

    def _check_schema(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise BiasbenchError(f"{self.path} was written by store schema {row[0]}; this biasbench "
                                 f"reads schema {SCHEMA_VERSION}. Re-run into a new output directory.")

    def _add_missing_columns(self) -> None:
        """A store written before a nullable column existed gets it (NULL in old rows), so a
        resumed run keeps its answers. Rows are written by column name, not position."""
        have = {row[1] for row in self.db.execute("PRAGMA table_info(responses)")}
        with self.db:
            for name, kind in _COLUMNS.items():
                if name not in have and "NOT NULL" not in kind and "PRIMARY KEY" not in kind:
                    self.db.execute(f"ALTER TABLE responses ADD COLUMN {name} {kind}")

    def done_keys(self) -> set[str]:
        return {key for (key,) in self.db.execute("SELECT request_key FROM responses")}

    def add(self, responses: list[StoredResponse], supersedes: str | None = None) -> int:
        """Store a batch atomically; returns how many were new.

        `supersedes`: a placeholder status (e.g. synthesis_failed) whose rows for the same
        (item, voice, condition, sample) these responses replace, in the same transaction. A
        placeholder's key differs from its retry's (no audio then, audio now), so without this
        a retried slot would hold two rows."""
        if not responses:
            return 0
        now = utc_now()
        rows = [_row(r, now) for r in responses]
        with stop_when_disk_full(self.path), self.db:  # one transaction: the whole batch or nothing
            before = self.db.total_changes
            self.db.executemany(_INSERT, rows)
            added = self.db.total_changes - before
            if supersedes is not None:
                self.db.executemany(_DELETE_PLACEHOLDER, [(supersedes, *_slot(r), r.request_key)
                                                          for r in responses if r.status != supersedes])
            return added

    def drop_superseded(self, placeholder: str) -> int:
        """Delete placeholder rows whose slot also holds a real answer (stores written before
        `add(supersedes=...)` existed); returns how many went."""
        with stop_when_disk_full(self.path), self.db:
            before = self.db.total_changes
            self.db.execute(_DROP_SUPERSEDED, (placeholder, placeholder))
            return self.db.total_changes - before

    def delete_keys(self, keys: list[str]) -> int:
        """Delete the rows of these request keys in one transaction (a conversation found half stored,
        which a resumed run asks again whole); returns how many went."""
        with self.db:
            before = self.db.total_changes
            self.db.executemany("DELETE FROM responses WHERE request_key = ?", [(k,) for k in keys])
            return self.db.total_changes - before

    def add_prompts(self, prompts: dict[str, tuple[str, str]]) -> None:
        """prompt_hash -> (spoken text, text prompt), kept once each."""
        with stop_when_disk_full(self.path), self.db:
            self.db.executemany("INSERT OR IGNORE INTO prompts VALUES (?, ?, ?)",
                                [(key, spoken, text) for key, (spoken, text) in prompts.items()])

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def to_frame(self) -> pd.DataFrame:
        """Every response, with what it was asked (PROMPT_COLUMNS) joined in."""
        return pd.read_sql_query(
            f"SELECT r.*, {', '.join('p.' + c for c in PROMPT_COLUMNS)} FROM responses r LEFT JOIN prompts p "
            "USING (prompt_hash) ORDER BY r.item_id, r.condition, r.voice_id, r.sample_index, r.turn", self.db)

    def close(self) -> None:
        self.db.close()


class RunDir:
    """`runs/<run_id>/`: manifest.json, responses.sqlite, and the exports made from them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = None

    LOCK_NAME = ".lock"

    def lock(self) -> None:
        """Hold this run for this process until unlock(). The kernel drops the lock when the
        process ends, however it ends (kill -9 included), so no stale lock is ever left."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / self.LOCK_NAME, "a+", encoding="utf-8")
        except OSError as exc:
            raise BiasbenchError(f"cannot create the run directory {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise BiasbenchError(f"{self.path} is in use by another biasbench process"
                                 + (f" (pid {holder})" if holder else "") + "; two processes on one run would "
                                 "ask every request twice. Wait for it to finish or stop it, then run again with "
                                 "--resume. Nothing was changed.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def store_path(self) -> Path:
        return self.path / "responses.sqlite"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def create(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_manifest(manifest)

    def read_manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BiasbenchError(f"{self.path} is not a biasbench run (no manifest.json)") from None
        except json.JSONDecodeError as exc:
            raise BiasbenchError(f"{self.manifest_path} is not valid JSON: {exc}") from None
        except UnicodeDecodeError:
            raise BiasbenchError(f"{self.manifest_path} is not valid UTF-8 text") from None
        except OSError as exc:  # a folder, a device, unreadable
            raise BiasbenchError(f"{self.manifest_path} cannot be read: {exc.strerror or exc}") from None
        check_manifest_fields(manifest, self.manifest_path)
        return manifest

    def write_manifest(self, manifest: dict) -> None:
        # Write then rename, so a kill mid-write never leaves a half manifest.
        tmp = self.manifest_path.with_suffix(".json.tmp")
        # Redacted whole: a URL's credentials stay out, whichever part of the run recorded it.
        tmp.write_text(dumps(redact_strings(manifest), indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(self.manifest_path)

    def open_store(self) -> ResponseStore:
        return ResponseStore(self.store_path)

    def export(self, table: pd.DataFrame) -> dict[str, Path]:
        """The tidy table as Parquet (for analysis) and CSV (for people: spreadsheet-safe, so an
        answer such as `=HYPERLINK(...)` is text, not a formula)."""
        paths = {"parquet": self.path / "responses.parquet", "csv": self.path / "responses.csv"}
        table.to_parquet(paths["parquet"], index=False)
        safe_frame(table).to_csv(paths["csv"], index=False)
        return paths
