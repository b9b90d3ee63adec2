"""Where biasbench finds its shipped tasks and voice pools, the user's own folders, and
where it keeps things that outlive one run (audio cache, tiny models)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Literal

from biasbench.errors import BiasbenchError

#: Folders of the user's own tasks and pools, separated by os.pathsep (like lm-eval's --include_path).
INCLUDE_PATH_ENV = "BIASBENCH_INCLUDE_PATH"

Kind = Literal["tasks", "voices"]
_cli_include_dirs: list[Path] = []


def cache_dir() -> Path:
    """`$BIASBENCH_CACHE`, else `~/.cache/biasbench`. Created on first use."""
    from_env = os.environ.get("BIASBENCH_CACHE")
    root = Path(from_env or Path.home() / ".cache" / "biasbench")
    where = f"BIASBENCH_CACHE={from_env}" if from_env else f"the cache folder {root}"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BiasbenchError(f"{where} names a file, not a folder: point it at a folder") from None
    except OSError as exc:
        raise BiasbenchError(f"{where} cannot be created: {exc.strerror or exc}") from None
    if not root.is_dir():  # e.g. a symlink to a file, or a file somewhere on its path
        raise BiasbenchError(f"{where} is not a folder: point it at a folder")
    return root


def project_root() -> Path:
    """The folder above the package: the git checkout in a source or editable install."""
    return Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The biasbench source checkout this code runs from (source or editable install), else None
    (an installed wheel: the folder above the package is site-packages)."""
    root = project_root()
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "biasbench"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def install_extra(extra: str) -> str:
    """The command that adds an optional extra to this install: `pip install -e '.[asr]'` in a
    source checkout (an editable install), `pip install 'biasbench[asr]'` for an installed wheel
    (where `.` means nothing, and `-e` would fail)."""
    return f"pip install -e '.[{extra}]'" if checkout_root() else f"pip install 'biasbench[{extra}]'"


def checkout_commit() -> str | None:
    """The git commit of the biasbench checkout (None for an installed wheel, or without git)."""
    root = checkout_root()
    if root is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def shipped_dir(kind: Kind) -> Path:
    """The shipped `tasks/` or `voices/` folder.

    A wheel carries them inside the package, as `biasbench/_shipped/<kind>` (copied there by
    the build step in setup.py); a source checkout or an editable install reads the
    top-level folders of the checkout.
    """
    packaged = Path(str(resources.files("biasbench") / "_shipped" / kind))
    if packaged.is_dir():
        return packaged
    root = checkout_root()
    if root is None:
        raise BiasbenchError(f"this biasbench install has no shipped {kind}/ folder ({packaged} is missing); "
                             "reinstall it from a wheel built by `pip wheel .` or `python -m build`")
    return root / kind


def set_include_paths(folders: Iterable[Path | str] | None) -> None:
    """The folders given with `--include-path` on the command line (replacing earlier ones)."""
    _cli_include_dirs[:] = [Path(f).expanduser() for f in folders or ()]


def include_dirs() -> list[Path]:
    """The user's folders: `--include-path` first, then `$BIASBENCH_INCLUDE_PATH`."""
    from_env = [Path(p).expanduser() for p in os.environ.get(INCLUDE_PATH_ENV, "").split(os.pathsep) if p]
    return [*_cli_include_dirs, *from_env]


def search_dirs(kind: Kind) -> list[Path]:
    """Where task (or pool) files are looked up by name, first match wins: each user folder
    (its `<kind>/` subfolder, and for tasks the folder itself), then the shipped folder."""
    dirs: list[Path] = []
    for folder in include_dirs():
        if not folder.is_dir():
            raise BiasbenchError(f"include path {folder} is not a folder (from --include-path or ${INCLUDE_PATH_ENV})")
        dirs += [folder / kind, folder] if kind == "tasks" else [folder / kind]
    return [d for d in dirs if d.is_dir()] + [shipped_dir(kind)]


def yaml_files(kind: Kind) -> dict[str, Path]:
    """name -> file for every `*.yaml` in `search_dirs(kind)`; the first folder wins a name.
    Names starting with `_` are base files for `include:`, not listed."""
    found: dict[str, Path] = {}
    for folder in search_dirs(kind):
        for path in sorted(folder.glob("*.yaml")):
            if not path.stem.startswith("_"):
                found.setdefault(path.stem, path)
    return found


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
