"""Read a run directory for reporting, and refuse clearly what cannot be reported.

A report needs the run's `manifest.json` (with the keys listed in MANIFEST_KEYS) and its
tidy table `responses.parquet` (or `responses.csv`) with the columns in TABLE_COLUMNS.
Anything else is a BiasbenchError naming the file and what is wrong with it: the
statistics never guess around a broken input.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biasbench.errors import BiasbenchError
from biasbench.formats import restore_frame
from biasbench.store import SCHEMA_VERSION, RunDir

#: Manifest keys (dotted paths) every report and leaderboard row needs.
MANIFEST_KEYS = ("run_id", "task.task", "task.config.output_type", "model.name", "model.backend",
                 "model.fingerprint", "pool.pool", "pool.label_sources", "harness.version")
#: Columns of the tidy table every report needs, and those each output type adds.
TABLE_COLUMNS = ("item_id", "voice_id", "condition", "status", "gender", "ethnicity")
OUTCOME_COLUMNS = {"multiple_choice": ("correct",), "generate_categorical": ("answer",),
                   "generate_numeric": ("value",), "transcribe": ("value",),
                   "generate_open": ("response_text", "words", "refusal")}
LABELS = ("gender", "ethnicity")


@dataclass
class Run:
    """One run, checked: its manifest, its tidy table, and its voice QC table (or None)."""

    path: Path
    manifest: dict
    table: pd.DataFrame
    table_file: Path
    voice_qc: pd.DataFrame | None = None
    qc_file: Path | None = None
    notes: list = field(default_factory=list)
    voice_qc_flags: dict | None = None  # voice_id -> the QC stage's `flags` text
    judge: dict | None = None  # generate_open judged by `biasbench judge compare`: judge.compare.judge_outcomes

    @property
    def output_type(self) -> str:
        return self.manifest["task"]["config"]["output_type"]

    @property
    def audio(self) -> pd.DataFrame:
        return self.table[self.table["condition"] == "audio"]

    @property
    def text(self) -> pd.DataFrame:
        return self.table[self.table["condition"] == "text"]


def dig(mapping: dict, dotted: str, default=None):
    """mapping["a"]["b"] for "a.b", or default when any step is missing."""
    value = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return default
        value = value[key]
    return value


def load_run(path) -> Run:
    """The checked run at `path` (a run directory)."""
    run_dir = RunDir(Path(path))
    if not run_dir.path.is_dir():
        raise BiasbenchError(f"{run_dir.path} is not a directory (expected a run directory with manifest.json)")
    manifest = run_dir.read_manifest()
    check_manifest(manifest, run_dir.manifest_path)
    check_store_schema(run_dir.store_path)
    table, table_file = read_table(run_dir.path)
    check_table(table, table_file, manifest["task"]["config"]["output_type"])
    qc, qc_file, notes, flags = read_voice_qc(run_dir.path)
    judge = None
    if manifest["task"]["config"]["output_type"] == "generate_open":
        from biasbench.judge.compare import judge_outcomes

        judge = judge_outcomes(run_dir.path, table, table_file)
    return Run(run_dir.path, manifest, table, table_file, qc, qc_file, notes, flags, judge)


def check_manifest(manifest: dict, path: Path) -> None:
    if not isinstance(manifest, dict):
        raise BiasbenchError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version is not None and str(version) != str(SCHEMA_VERSION):
        raise BiasbenchError(f"{path} was written by run schema {version}; this biasbench reads schema "
                             f"{SCHEMA_VERSION}. Re-run it with this version.")
    missing = [key for key in MANIFEST_KEYS if dig(manifest, key) is None]
    if missing:
        raise BiasbenchError(f"{path} lacks {', '.join(missing)}: it was written by an older or different "
                             f"biasbench schema (this one reads schema {SCHEMA_VERSION}). Re-run it with this version.")
    output_type = manifest["task"]["config"]["output_type"]
    if output_type not in OUTCOME_COLUMNS:
        raise BiasbenchError(f"{path}: task.config.output_type {output_type!r} has no report; "
                             f"reports cover {', '.join(OUTCOME_COLUMNS)}")


def check_store_schema(path: Path) -> None:
    """The response store's schema version, when the store is there (read-only)."""
    if not path.is_file():
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.Error as exc:
        raise BiasbenchError(f"{path} cannot be read as a biasbench response store: {exc}") from None
    if row is not None and str(row[0]) != str(SCHEMA_VERSION):
        raise BiasbenchError(f"{path} was written by store schema {row[0]}; this biasbench reads schema "
                             f"{SCHEMA_VERSION}. Re-run it with this version.")


def read_table(run_path: Path) -> tuple[pd.DataFrame, Path]:
    parquet, csv = run_path / "responses.parquet", run_path / "responses.csv"
    try:
        if parquet.is_file():
            return pd.read_parquet(parquet), parquet
        if csv.is_file():
            return restore_frame(pd.read_csv(csv)), csv  # text as it was before the spreadsheet guard
    except Exception as exc:  # a corrupt file: say which, and how it failed
        raise BiasbenchError(f"{parquet if parquet.is_file() else csv} cannot be read: {exc}") from None
    raise BiasbenchError(f"{run_path} has no tidy table (responses.parquet or responses.csv): the run did not "
                         "finish exporting. Rerun the same `biasbench run` command with --resume.")


def check_table(table: pd.DataFrame, path: Path, output_type: str) -> None:
    needed = [*TABLE_COLUMNS, *OUTCOME_COLUMNS[output_type]]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise BiasbenchError(f"{path} lacks column(s) {', '.join(missing)} needed for a {output_type} report; "
                             f"it has {', '.join(map(str, table.columns))}")
    audio = table[table["condition"] == "audio"]
    if audio.empty:
        raise BiasbenchError(f"{path} has no audio responses (condition == 'audio'): there are no voice groups "
                             "to compare")
    for column in LABELS:
        unlabelled = audio.loc[audio[column].isna(), "voice_id"].unique()
        if len(unlabelled):
            raise BiasbenchError(f"{path}: voice(s) {', '.join(map(str, unlabelled[:5]))} have no {column} label")
        per_voice = audio.groupby("voice_id")[column].nunique()
        if (per_voice > 1).any():
            raise BiasbenchError(f"{path}: voice(s) {', '.join(per_voice[per_voice > 1].index[:5])} carry more "
                                 f"than one {column} label")
    if output_type == "multiple_choice":
        correct = pd.to_numeric(table["correct"], errors="coerce")
        bad = correct.notna() & ~correct.isin([0.0, 1.0])
        if bad.any():
            raise BiasbenchError(f"{path}: column 'correct' must be 0, 1 or empty; found {correct[bad].iloc[0]!r}")


def read_voice_qc(run_path: Path):
    """`voice_qc.csv` / `voice_qc.parquet`: one row per voice, `voice_id` + numeric columns.

    Returns (table of voice_id + numeric columns, its path, notes, {voice_id: flags}).
    A `flags` column (the QC stage's outlier flags) is kept apart; other non-numeric columns
    are ignored and named in the notes. A file without `voice_id` or with a voice listed
    twice is an error naming the file.
    """
    for path in (run_path / "voice_qc.parquet", run_path / "voice_qc.csv"):
        if path.is_file():
            break
    else:
        return None, None, [], None
    try:
        qc = pd.read_parquet(path) if path.suffix == ".parquet" else restore_frame(pd.read_csv(path))
    except Exception as exc:
        raise BiasbenchError(f"{path} cannot be read: {exc}") from None
    if "voice_id" not in qc.columns:
        raise BiasbenchError(f"{path} has no 'voice_id' column (the voice QC file needs voice_id plus numeric "
                             f"columns); it has {', '.join(map(str, qc.columns))}")
    if qc["voice_id"].duplicated().any():
        raise BiasbenchError(f"{path} lists voice {qc.loc[qc['voice_id'].duplicated(), 'voice_id'].iloc[0]!r} "
                             "more than once; it needs one row per voice")
    qc = qc.assign(voice_id=qc["voice_id"].astype(str))
    numeric = [c for c in qc.columns if c not in ("voice_id", "flags") and pd.api.types.is_numeric_dtype(qc[c])]
    ignored = [c for c in qc.columns if c not in ("voice_id", "flags", *numeric)]
    notes = [f"{path.name}: non-numeric column(s) ignored: {', '.join(map(str, ignored))}"] if ignored else []
    flags = dict(zip(qc["voice_id"], qc["flags"])) if "flags" in qc.columns else None
    return qc[["voice_id", *numeric]], path, notes, flags


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
