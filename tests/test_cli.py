"""The `biasbench` console script as users run it: exit codes, one-line errors, help, listings.

Every test starts the installed console script in a subprocess (the environment, with
PYTHONPATH, is inherited, so it runs this checkout's code).
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import requires_espeak, write

BIASBENCH = Path(sys.executable).parent / "biasbench"


def biasbench(*args, env=None, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    environment = dict(os.environ, COLUMNS="80", **(env or {}))
    return subprocess.run([str(BIASBENCH), *args], capture_output=True, text=True, env=environment,
                          timeout=timeout, **kwargs)


def assert_one_line_error(result, expected: str, code: int = 2):
    """Refused with `code`, one `error:` line naming the problem, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_console_script_is_installed():
    assert BIASBENCH.is_file(), f"no console script at {BIASBENCH}: pip install -e ."


@pytest.mark.parametrize("args, expected", [
    (["rnu"], "No such command 'rnu'"),
    (["--verison"], "No such option: --verison"),
    (["run"], "Missing option '--model'"),
    (["run", "--model", "x", "--limit", "0"], "'--limit'"),
    (["run", "--model", "x", "--batch-size", "0"], "'--batch-size'"),
    (["run", "--model", "x", "--bogus"], "No such option: --bogus"),
    (["run", "--model", "x", "--seed", "abc"], "'--seed'"),
    (["models", "--format", "xml"], "'--format'"),
    (["voices", "lst"], "No such command 'lst'"),
    (["compare"], "Missing argument"),
])
def test_usage_errors_are_one_line_and_exit_2(args, expected):
    result = biasbench(*args)
    assert_one_line_error(result, expected)
    assert "--help" in result.stderr  # where to look next


@pytest.mark.parametrize("args, expected", [
    (["run", "--model", "tiny-qwen2audio", "--long-audio", "squash"], "--long-audio"),
    (["run", "--model", "tiny-qwen2audio", "--data-source", "ftp"], "--data-source"),
    (["run", "--model", "tiny-qwen2audio", "--quantization", "3bit"], "--quantization"),
    (["run", "--model", "tiny-qwen2audio", "--executor", "dask"], "--executor"),
    (["run", "--model", "tiny-qwen2audio", "--executor", "ray", "--shard", "0/2"], "--replicas"),
    (["run", "--model", "tiny-qwen2audio", "--shard", "5/2"], "--shard"),
    (["run", "--model", "tiny-qwen2audio", "--task", "no-such-task.yaml"], "no-such-task.yaml"),
    (["voices", "list", "no-such-pool"], "no-such-pool"),
    (["run", "--model", "openai:gpt-4o-audio-preview", "--data-source", "local", "--limit", "1"], "OPENAI_API_KEY"),
    (["run", "--model", "first-option:x"], "unknown model 'first-option:x'"),
    (["compare", "no-run-a", "no-run-b"], "no-run-a"),
    (["finetune", "sft", "no-such-config.yaml"], "no-such-config.yaml"),
])
def test_refusals_of_bad_input_are_one_line_and_exit_2(args, expected, tmp_path):
    env = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    result = biasbench(*args, env=env, cwd=tmp_path)
    assert_one_line_error(result, expected)


def test_an_extra_in_an_error_message_keeps_its_brackets(tmp_path):
    """Rich markup once ate `[vllm]`, leaving "pip install 'biasbench'". (From a checkout the hint is
    the editable form, pip install -e '.[vllm]'; from a wheel, pip install 'biasbench[vllm]'.)"""
    from biasbench.paths import install_extra

    result = biasbench("run", "--model", "vllm:some/model", "--task", "mmlu", "--data-source", "local",
                       "--limit", "1", "--output-dir", str(tmp_path))
    assert_one_line_error(result, install_extra("vllm"))


def test_refusals_that_name_a_file(tmp_path):
    assert_one_line_error(biasbench("merge", str(tmp_path / "nope"), "--output", str(tmp_path / "m")), "nope")
    assert_one_line_error(biasbench("report", str(tmp_path)), str(tmp_path))


def test_an_unbalanced_pool_fails_its_check_with_exit_1(tmp_path):
    voices = "\n".join(f"  - {{id: v{i}, gender: female, ethnicity: white, label_source: proxy, accent: en-us, "
                       f"tts: {{backend: espeak-ng, voice: en-us}}}}" for i in range(3))
    pool = write(tmp_path / "pool.yaml", f"pool: lopsided\nvoices:\n{voices}\n")
    result = biasbench("voices", "check", str(pool))
    assert result.returncode == 1 and "unbalanced" in result.stderr and "Traceback" not in result.stderr
    assert biasbench("voices", "check", "espeak-default").returncode == 0


def test_version():
    from biasbench import __version__

    result = biasbench("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"biasbench {__version__}"


def test_version_license_and_citation_agree():
    import tomllib

    import yaml

    from biasbench import __version__

    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    citation = yaml.safe_load((root / "CITATION.cff").read_text())
    assert project["version"] == __version__ == citation["version"]
    assert project["license"] == citation["license"] == "Apache-2.0"
    assert citation["cff-version"] == "1.2.0" and citation["authors"] and citation["title"]
    license_text = (root / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text


def test_no_command_shows_the_help():
    result = biasbench()
    assert result.returncode == 0 and "Commands" in result.stdout + result.stderr


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("command", [[], ["run"], ["voices"], ["voices", "qc"], ["models"], ["compare"],
                                     ["merge"], ["finetune", "sft"], ["leaderboard", "add"]])
def test_help_fits_80_columns_and_keeps_every_flag_whole(command):
    result = biasbench(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "…" not in result.stdout


def test_run_help_names_every_option_and_keeps_extras():
    text = biasbench("run", "--help").stdout
    for flag in ("--tensor-parallel-size", "--gpu-memory-utilization", "--prefix-caching / --no-prefix-caching",
                 "--offline-fallback", "--workers", "--replicas", "--output-dir", "--resume"):
        assert flag in text
    assert "'biasbench[ray]'" in text  # not eaten as Rich markup
    assert "--tts-workers" not in text  # the old name still works, unlisted


def test_help_imports_nothing_heavy():
    """--help must start fast: no pandas/numpy/torch/scipy at start-up (lazy imports)."""
    code = ("import sys; sys.argv = ['biasbench', 'run', '--help']\n"
            "from biasbench.cli import app\n"
            "try:\n    app(standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('pandas', 'numpy', 'torch', 'scipy', 'transformers', 'pyarrow', "
            "'matplotlib', 'yaml', 'jinja2') if m in sys.modules)\n"
            "print('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout[-300:]


# ---------------------------------------------------------------- listings


def test_models_json_csv_and_piped_table_agree():
    as_json = json.loads(biasbench("models", "--format", "json").stdout)
    aliases = {row["alias"]: row for row in as_json}
    assert aliases["qwen2audio"]["model"] == "Qwen/Qwen2-Audio-7B-Instruct"
    as_csv = list(csv.DictReader(io.StringIO(biasbench("models", "--format", "csv").stdout)))
    assert as_csv == as_json
    piped = biasbench("models").stdout.splitlines()  # stdout is a pipe: tab-separated plain text
    assert piped[0].split("\t") == list(as_json[0])
    assert [line.split("\t")[0] for line in piped[1:]] == list(aliases)  # every alias whole
    assert "…" not in "\n".join(piped) and "┃" not in piped[0]


def test_voices_list_formats_give_whole_ids_and_no_python_dicts():
    rows = json.loads(biasbench("voices", "list", "espeak-default", "--format", "json").stdout)
    assert len(rows) >= 18 and all(row["id"] and "…" not in row["id"] for row in rows)
    assert all("{" not in row["tts"] for row in rows) and rows[0]["tts"].startswith("espeak-ng")
    piped = biasbench("voices", "list", "espeak-default").stdout.splitlines()
    assert [line.split("\t")[0] for line in piped[1:]] == [row["id"] for row in rows]


def test_tasks_and_backends_listings_parse():
    tasks = json.loads(biasbench("tasks", "--format", "json").stdout)
    assert "mmlu" in {t["task"] for t in tasks}
    backends = json.loads(biasbench("voices", "backends", "--format", "json").stdout)
    assert "espeak-ng" in {b["backend"] for b in backends}
    # An install hint keeps its extra: `pip install 'biasbench[cloning]'`, not `'biasbench'`.
    hints = [b["version / how to install"] for b in backends if b["installed"] == "no"]
    assert all("'biasbench'" not in hint for hint in hints)


# ---------------------------------------------------------------- runs against a local OpenAI-compatible server


@pytest.fixture
def api_run(tmp_path, biasbench_cache):
    """A fake chat-completions server and the `biasbench run` arguments that use it."""
    from test_openai_backend import DATA, TASK, FakeOpenAI, pool_yaml

    server = FakeOpenAI()
    server.thread.start()
    write(tmp_path / "tiny.csv", DATA)
    args = ["run", "--model", "openai:test-model", "--task", str(write(tmp_path / "tiny.yaml", TASK)),
            "--pool", str(write(tmp_path / "pool.yaml", pool_yaml())), "--data-source", "local",
            "--output-dir", str(tmp_path / "runs"), "--run-id", "api", "--no-progress", "--no-report"]
    env = {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "sk-dummy-cli", "BIASBENCH_CACHE": str(biasbench_cache)}
    yield server, args, env
    server.httpd.shutdown()
    server.httpd.server_close()


@requires_espeak
@pytest.mark.parametrize("signum,code,said", [(signal.SIGINT, 130, "Interrupted."),
                                               (signal.SIGTERM, 143, "Stopped by SIGTERM."),
                                               (signal.SIGHUP, 129, "Stopped by SIGHUP.")])
def test_a_signal_during_hanging_api_requests_ends_the_run_at_once_and_it_resumes(api_run, signum, code, said):
    """Ctrl-C, SIGTERM (a scheduler, `kill`) and SIGHUP (a closed terminal) each end the run
    within seconds with one line and their exit code, however long the requests hang."""
    server, args, env = api_run
    server.rules.append(lambda body: ("hang", 600.0))  # beyond the backend's 60 s timeout
    process = subprocess.Popen([str(BIASBENCH), *args], env=dict(os.environ, **env), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not server.calls and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert server.calls, "the run never reached the server"
    process.send_signal(signum)
    sent = time.monotonic()
    stdout, stderr = process.communicate(timeout=25)
    assert process.returncode == code and time.monotonic() - sent < 10, stderr
    assert said in stderr and "--resume" in stderr and "Traceback" not in stderr + stdout
    if signum != signal.SIGINT:  # (a resumed Ctrl-C is tested in test_faults)
        server.rules.clear()
        resumed = biasbench(*args, "--resume", env=env, timeout=300)
        assert resumed.returncode == 0, resumed.stderr


@requires_espeak
def test_a_run_with_failed_requests_exits_3_and_resume_finishes_it(api_run):
    server, args, env = api_run
    server.script.extend([("status", 400, {}, {"error": {"message": "broken today"}})] * 18)  # not retried
    failed = biasbench(*args, env=env, timeout=300)
    assert failed.returncode == 3, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 18 of 36 requests were not answered: 18 failed when asked") and "--resume" in last
    assert "Traceback" not in failed.stderr

    resumed = biasbench(*args, "--resume", env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "18 already stored, 18 to run" in resumed.stderr


def test_closing_lines_say_why_there_are_no_voice_groups(tmp_path):
    """The text control has no voices by design; any other run without groups had nothing answered."""
    from biasbench.cli import closing_lines
    from biasbench.runner import RunResult

    assert "(a text-only run)" in closing_lines(RunResult(tmp_path, 4, 4, {}, text_only=True), report=True)
    line = closing_lines(RunResult(tmp_path, 18, 0, {}), report=True)
    assert "none of the 18 planned requests" in line and "text-only" not in line
