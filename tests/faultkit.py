"""Fault injection for `biasbench run` through its console script: kill -9 at chosen moments,
an espeak-ng that fails or stalls on demand, and a comparison of stored answers.

Shared by tests/test_faults.py (a CI-sized set) and benchmarks/fault_campaign.py (many
seeded kills, whose counts the README reports).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

#: The console script of the interpreter running the tests (the installed entry point).
BIASBENCH = str(Path(sys.executable).parent / "biasbench")

#: The voice whose clips fail while the `fail` flag is set: its `-v` argument.
FAILING_VOICE = "en-029+f1"

#: What must be identical between a resumed run and an uninterrupted one.
COMPARED = ["request_key", "item_id", "voice_id", "condition", "sample_index", "prompt_hash", "audio_key",
            "response_text", "option_logprobs", "answer", "target", "status", "correct", "value"]
SLOT = ["item_id", "voice_id", "condition", "sample_index"]

_WRAPPER = """#!/bin/sh
# espeak-ng with faults on demand: fail one voice's clips while $FAULTS/fail exists; sleep
# $(cat $FAULTS/slow) seconds per call while $FAULTS/slow exists.
if [ -e "$FAULTS/fail" ]; then case " $* " in *" {voice} "*) echo "injected failure" >&2; exit 1;; esac; fi
if [ -e "$FAULTS/slow" ]; then sleep "$(cat "$FAULTS/slow")"; fi
exec {real} "$@"
"""


#: Imported at start-up by every Python process of a run (a `sitecustomize` on its PYTHONPATH):
#: disk faults on demand, for what a wrapper program cannot reach. RLIMIT_FSIZE would be closer to
#: a real full disk, but espeak-ng itself dies under any limit small enough to matter.
_SITECUSTOMIZE = """
import errno, os

_full = os.environ.get("BIASBENCH_FAULT_FULL_DIR")
if _full:  # every file opened for writing under this folder: ENOSPC, as on a full disk
    _open = os.open

    def _full_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and os.path.abspath(path).startswith(_full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return _open(path, flags, *args, **kwargs)

    os.open = _full_open

_pages = os.environ.get("BIASBENCH_FAULT_MAX_PAGES")
if _pages:  # SQLite's own "database or disk is full" once a database holds this many pages
    import sqlite3

    _connect = sqlite3.connect

    def _small_connect(*args, **kwargs):
        db = _connect(*args, **kwargs)
        db.execute(f"PRAGMA max_page_count = {int(_pages)}")
        return db

    sqlite3.connect = _small_connect
"""


class Faults:
    """A sandbox for runs: its own audio cache, output folder and fault-injecting espeak-ng."""

    def __init__(self, root: Path, items: int = 2, model: str = "simulated-pitch-bias"):
        self.root, self.items, self.model = Path(root), items, model
        self.flags = self.root / "faults"
        self.flags.mkdir(parents=True, exist_ok=True)
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "espeak-ng"
        wrapper.write_text(_WRAPPER.format(voice=FAILING_VOICE, real=shutil.which("espeak-ng")))
        wrapper.chmod(0o755)
        self.out = self.root / "runs"
        site = self.root / "site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        python_path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        self.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAULTS=str(self.flags),
                        BIASBENCH_CACHE=str(self.root / "cache"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                        PYTHONPATH=python_path)

    # ------------------------------------------------------------ faults

    def failing(self, on: bool = True) -> None:
        _flag(self.flags / "fail", "1" if on else None)

    def slow(self, seconds: float | None) -> None:
        _flag(self.flags / "slow", None if seconds is None else str(seconds))

    def disk_full(self, folder: Path | None) -> None:
        """Every file later runs open for writing under `folder` fails with ENOSPC (None: none)."""
        _env(self.env, "BIASBENCH_FAULT_FULL_DIR", None if folder is None else str(Path(folder).resolve()))

    def store_pages(self, pages: int | None) -> None:
        """SQLite databases of later runs are full at `pages` pages (None: no limit)."""
        _env(self.env, "BIASBENCH_FAULT_MAX_PAGES", None if pages is None else str(pages))

    def fresh_audio_cache(self, name: str) -> None:
        """Point later runs at an empty audio cache, so they synthesise every clip again."""
        self.env["BIASBENCH_CACHE"] = str(self.root / name)

    # ------------------------------------------------------------ runs

    def args(self, run_id: str, *extra: str) -> list[str]:
        return [BIASBENCH, "run", "--model", self.model, "--task", "mmlu", "--data-source", "local",
                "--limit", str(self.items), "--batch-size", "1", "--tts-workers", "2", "--no-progress",
                "--no-report", "--output-dir", str(self.out), "--run-id", run_id, *extra]

    def run(self, run_id: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.args(run_id, *extra), env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def start(self, run_id: str, *extra: str) -> subprocess.Popen:
        return subprocess.Popen(self.args(run_id, *extra), env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def kill_when(self, process: subprocess.Popen, ready, timeout: float = 300) -> bool:
        """kill -9 `process` as soon as `ready()` holds; False when it ended first."""
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.005)
        process.wait()
        return False

    # ------------------------------------------------------------ what a run left

    def run_dir(self, run_id: str) -> Path:
        return self.out / run_id

    def clips(self) -> int:
        return sum(1 for _ in Path(self.env["BIASBENCH_CACHE"], "tts").glob("*/*.wav"))

    def stored(self, run_id: str) -> pd.DataFrame:
        """Every stored row (empty when the store or its table does not exist yet)."""
        path = self.run_dir(run_id) / "responses.sqlite"
        if not path.exists():
            return pd.DataFrame(columns=COMPARED)
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
                return pd.read_sql_query("SELECT * FROM responses", db)
        except (sqlite3.Error, pd.errors.DatabaseError):
            return pd.DataFrame(columns=COMPARED)

    def manifest(self, run_id: str) -> dict:
        return json.loads((self.run_dir(run_id) / "manifest.json").read_text())


def differences(resumed: pd.DataFrame, reference: pd.DataFrame) -> list[str]:
    """What differs between two stores, slot by slot; empty when none is lost, doubled or changed."""
    problems = []
    doubled = resumed[resumed.duplicated(SLOT, keep=False)]
    if len(doubled):
        problems.append(f"{len(doubled)} rows share a slot: {doubled[SLOT].head(3).to_dict('records')}")
    merged = reference[COMPARED].merge(resumed[COMPARED], on=SLOT, how="outer", suffixes=("", "_resumed"),
                                       indicator=True)
    for side, what in (("left_only", "lost"), ("right_only", "extra")):
        n = int((merged["_merge"] == side).sum())
        if n:
            problems.append(f"{n} rows {what}")
    both = merged[merged["_merge"] == "both"]
    for column in (c for c in COMPARED if c not in SLOT):
        a, b = both[column], both[f"{column}_resumed"]
        changed = ~((a == b) | (a.isna() & b.isna()))
        if changed.any():
            problems.append(f"{int(changed.sum())} rows changed in {column}")
    return problems


def _flag(path: Path, content: str | None) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(content)


def _env(env: dict, name: str, value: str | None) -> None:
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value
