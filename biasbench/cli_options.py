"""Command-line options shared by the commands of several stages (kept apart from cli.py so
stage modules can use them without importing the whole CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from biasbench.paths import INCLUDE_PATH_ENV, set_include_paths


def _use_include_paths(folders: Optional[List[Path]]) -> Optional[List[Path]]:
    set_include_paths(folders)
    return folders


def include_path_option():
    """`--include-path DIR` (repeatable): the user's own task YAMLs (in DIR or DIR/tasks) and voice
    pools (in DIR/voices), found by name before the shipped ones. Set as the command line is read,
    so every task and pool lookup of the command sees it."""
    return typer.Option(None, "--include-path", callback=_use_include_paths, metavar="DIR",
                        help="folder of your own tasks (DIR, DIR/tasks) and pools (DIR/voices), searched before "
                        f"the shipped ones; repeatable; also ${INCLUDE_PATH_ENV} (folders separated by ':')")
