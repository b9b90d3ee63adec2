"""The wheel as users get it: built, installed (not editable) into a fresh venv, and run from
outside the checkout. Offline: the fresh venv borrows this venv's installed dependencies
through a .pth file, and pip installs only the wheel (--no-deps --no-index)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
from packaging.version import Version

from biasbench.errors import BiasbenchError
from conftest import PROJECT, requires_espeak


def _source_tree(dest: Path) -> Path:
    """The checkout's files as a clean clone has them (tracked and new, not ignored): the build
    writes build/ and *.egg-info into its source folder, so it gets a copy."""
    try:
        listed = subprocess.run(["git", "-C", str(PROJECT), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, check=True).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know which files a clean clone has")
    for name in filter(None, listed.split("\0")):
        if (PROJECT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, dest / name)
    return dest


def _fresh_venv(root: Path) -> Path:
    """A new venv that sees this venv's site-packages (a .pth line, appended after its own), so
    no dependency is downloaded; its own site-packages gets only biasbench."""
    venv.create(root, with_pip=False)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    base = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_biasbench_test_base.pth").write_text("\n".join(sorted(base)) + "\n", encoding="utf-8")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    src = _source_tree(root / "src")
    # This venv's setuptools builds it offline when new enough for pyproject.toml (>= 77); else pip
    # fetches one into an isolated build environment, as any `pip wheel .` does.
    offline = Version(metadata.version("setuptools")) >= Version("77")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src)]
                   + (["--no-build-isolation", "--no-index"] if offline else []), check=True)
    wheel = next((root / "dist").glob("biasbench-*.whl"))
    python = _fresh_venv(root / "venv")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                    str(wheel)], check=True, env=_env(root))
    return wheel, root / "venv" / "bin" / "biasbench", root


def _env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BIASBENCH_INCLUDE_PATH")}
    # COLUMNS: wide enough that table listings never cut an id.
    return dict(env, COLUMNS="250", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", BIASBENCH_CACHE=os.environ.get(
        "BIASBENCH_CACHE", str(root / "cache")))


def _cli(installed, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    _, script, root = installed
    work = root / "work"  # outside the checkout: nothing can come from it
    work.mkdir(exist_ok=True)
    result = subprocess.run([str(script), *args], cwd=work, env=_env(root), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"biasbench {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def test_wheel_carries_tasks_pools_data_and_core_dependencies(installed):
    wheel, _, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
                                     .decode())
    for shipped in [f"{p.parent.name}/{p.name}" for p in PROJECT.glob("tasks/*.yaml")] + \
                   [f"voices/{p.name}" for p in PROJECT.glob("voices/*.yaml")] + \
                   ["tasks/data/mmlu_redux/mmlu_redux_clean.csv", "tasks/data/occupations.csv"]:
        assert f"biasbench/_shipped/{shipped}" in names
    core = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert any(r.startswith("pyloudnorm") for r in core)  # every shipped pool normalises loudness
    assert "jinja2>=3.1.6" in [r.replace(" ", "") for r in core]


def test_installed_wheel_lists_and_imports_from_site_packages(installed):
    _, script, root = installed
    where = subprocess.run([str(script.parent / "python"), "-c", "import biasbench; print(biasbench.__file__)"],
                           cwd=root, env=_env(root), capture_output=True, text=True, check=True).stdout
    assert str(root / "venv") in where
    assert "mmlu_counterbalanced" in _cli(installed, "tasks").stdout
    assert "espeak-f-black-1" in _cli(installed, "voices", "list", "espeak-default").stdout


@requires_espeak
@pytest.mark.slow
def test_installed_wheel_runs_a_short_offline_job(installed, biasbench_cache):
    _, _, root = installed
    _cli(installed, "run", "--model", "tiny-qwen2audio", "--task", "mmlu", "--limit", "2", "--output-dir",
         str(root / "runs"), "--no-progress", "--no-report", "--data-source", "local")
    run_dir = next((root / "runs").iterdir())
    assert (run_dir / "summary.md").is_file() and (run_dir / "responses.parquet").is_file()
    manifest = (run_dir / "manifest.json").read_text(encoding="utf-8")
    assert "_shipped/tasks/mmlu.yaml" in manifest  # the task came from the installed package
    # What each voice said and what the model read are stored and exported beside each answer.
    table = pd.read_parquet(run_dir / "responses.parquet")
    assert len(table) == 36 and table["spoken_text"].str.len().gt(30).all()
    assert table.groupby("item_id")["spoken_text"].nunique().eq(1).all()  # the same words from every voice
    assert table["text_prompt"].str.len().gt(0).all()


@requires_espeak
def test_a_missing_extra_on_a_wheel_install_names_the_wheel_install_command(installed):
    """From a wheel there is no checkout: the hint is `pip install 'biasbench[asr]'`, never the
    editable `pip install -e '.[asr]'` (which only a checkout can use). faster-whisper is hidden
    from the installed package (sys.modules), as on a machine without the asr extra."""
    _, script, root = installed
    code = ("import sys; sys.modules['faster_whisper'] = None; from biasbench.cli import main; "
            "main(['run', '--model', 'whisper-tiny-en', '--task', 'asr_fairness', '--data-source', 'local', "
            "'--limit', '1', '--no-progress'])")
    (root / "work").mkdir(exist_ok=True)
    done = subprocess.run([str(script.parent / "python"), "-c", code], cwd=root / "work", env=_env(root),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "pip install 'biasbench[asr]'" in done.stderr and "pip install -e" not in done.stderr, done.stderr


@requires_espeak
def test_missing_loudness_package_stops_before_any_clip_is_made(tmp_path, monkeypatch):
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.synthesis import SynthesisJob, synthesize_all

    monkeypatch.setitem(sys.modules, "pyloudnorm", None)  # import pyloudnorm -> ImportError
    job = SynthesisJob("v1", "espeak-ng", {"voice": "en-us"}, "Hello there.", -23.0)
    with pytest.raises(BiasbenchError, match="needs the package pyloudnorm"):
        synthesize_all([job], AudioCache(tmp_path), workers=1, progress=False)
    assert not list(tmp_path.rglob("*.wav"))


def test_an_install_outside_a_checkout_records_no_git_commit(tmp_path, monkeypatch):
    """A wheel's folder above the package is site-packages, perhaps inside the user's own git repo:
    its commit is not biasbench's."""
    from biasbench import paths

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.setattr(paths, "project_root", lambda: tmp_path)
    assert paths.checkout_root() is None and paths.checkout_commit() is None
    with pytest.raises(BiasbenchError, match="no shipped tasks/ folder"):
        monkeypatch.setattr(paths.resources, "files", lambda _: tmp_path)
        paths.shipped_dir("tasks")
    monkeypatch.undo()
    assert paths.checkout_root() == PROJECT
