"""Where biasbench keeps things that outlive one run (audio cache, tiny models)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    """`$BIASBENCH_CACHE`, else `~/.cache/biasbench`. Created on first use."""
    root = Path(os.environ.get("BIASBENCH_CACHE") or Path.home() / ".cache" / "biasbench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def project_root() -> Path:
    """The checkout holding the shipped `tasks/` and `voices/` folders."""
    return Path(__file__).resolve().parent.parent


def cached_model(name: str, build: Callable[[Path], object]) -> Path:
    """`cache_dir()/models/<name>`, built on first use by `build(folder)`.

    Built into a temporary sibling folder and renamed into place: a rename is atomic on one
    filesystem, so a killed build never leaves a half model under the real name.
    """
    target = cache_dir() / "models" / name
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not "another process finished first"
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
