"""Where biasbench keeps things that outlive one run (audio cache, tiny models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$BIASBENCH_CACHE`, else `~/.cache/biasbench`. Created on first use."""
    root = Path(os.environ.get("BIASBENCH_CACHE") or Path.home() / ".cache" / "biasbench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def project_root() -> Path:
    """The checkout holding the shipped `tasks/` and `voices/` folders."""
    return Path(__file__).resolve().parent.parent
