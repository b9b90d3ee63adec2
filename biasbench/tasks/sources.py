"""Reading a task's raw rows, from the hub or from a file shipped with the task."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from biasbench.config import DatasetSpec, HFSource, LocalSource, task_files
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.formats import restore_frame
from biasbench.hub import hub_reachable
from biasbench.paths import install_extra


def choose_source(spec: DatasetSpec, prefer: str, task_path: Path) -> str:
    """'hf' or 'local'. `prefer` is the user's --data-source: auto, hf or local."""
    if prefer == "hf" and spec.hf is None:
        raise ConfigError(task_path, "dataset.hf", "--data-source hf asked for, but the task has no hub source")
    if prefer == "local" and spec.local is None:
        raise ConfigError(task_path, "dataset.local", "--data-source local asked for, but the task has no local file")
    if prefer in ("hf", "local"):
        return prefer
    if spec.hf is not None and (spec.local is None or hub_reachable()):
        return "hf"
    if spec.local is None:
        raise ConfigError(task_path, "dataset", "needs at least one of 'hf' or 'local'")
    return "local"


def load_rows(spec: DatasetSpec, source: str, task_path: Path, *, allow_outside: bool = False) -> pd.DataFrame:
    """The source's rows. A local file must lie in the task file's folder tree or the shipped
    tasks/ folder unless `allow_outside` (the user's explicit flag): a task file is user input,
    and one pointing at ../private/secrets.json would have that file spoken to the model."""
    if source == "hf":
        return _load_hf(spec.hf)
    return _load_local(spec.local, task_path, allow_outside)


def _load_hf(spec: HFSource) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise BiasbenchError(f"reading a hub dataset needs the 'datasets' package: {install_extra('hub')}") from None
    try:
        ds = datasets.load_dataset(spec.path, spec.name, split=spec.split, revision=spec.revision)
    except Exception as exc:  # network, auth, missing split: all end the same way for the user
        raise BiasbenchError(f"could not load {spec.path} ({spec.name}, {spec.split}) from the hub: {exc}") from None
    return ds.to_pandas()


def _load_local(spec: LocalSource, task_path: Path, allow_outside: bool) -> pd.DataFrame:
    """Every file the source names (patterns expanded, each inside the task's folders), read from
    disk and joined in order: a local source never touches the network."""
    paths = [p for name in spec.paths for p in task_files(task_path, name, "dataset.local.path", allow_outside)]
    tables = []
    for path in paths:
        try:
            tables.append(_read_table(path, spec.format))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(path, None, f"unreadable data file: {exc}") from None
    rows = tables[0] if len(tables) == 1 else pd.concat(tables, ignore_index=True)
    names = ", ".join(p.name for p in paths)
    for column, allowed in spec.filter.items():
        if column not in rows.columns:
            raise ConfigError(task_path, f"dataset.local.filter.{column}",
                              f"{names} has no column {column!r}; it has {list(rows.columns)}")
        rows = rows[rows[column].astype(str).isin(allowed)]
    return rows.reset_index(drop=True)


def _read_table(path: Path, format: str | None = None) -> pd.DataFrame:
    """One data file, read as `format` (lm-eval's builder name) or by its suffix."""
    kind = format or path.suffix.lower().lstrip(".")
    if kind == "csv":
        # A cell a spreadsheet-safe writer guarded ('=x, biasbench's own voices/natural.py) reads as written.
        return restore_frame(pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8"))
    if kind == "jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    if kind == "json":  # one JSON list of records, or JSON Lines (as the `datasets` json builder reads both)
        try:
            return pd.read_json(path, dtype=False)
        except ValueError:
            return pd.read_json(path, lines=True, dtype=False)
    if kind == "parquet":
        return pd.read_parquet(path)
    raise ValueError(f"unsupported file type {path.suffix!r} (expected .csv, .json, .jsonl or .parquet, or "
                     "dataset.local.format: csv | json | jsonl | parquet)")
