"""Issue 15: a catalogue of bad inputs (task files, templates, pools, CLI values, damaged stores
and run directories), each through the installed console script in a subprocess. Every case
must: exit 2, print one line naming what to fix, print no traceback, leave stored answers as
they were, and use at most CPU_LIMIT_S of CPU (a hang fails at WALL_LIMIT_S).

Leaderboard files are catalogued with the leaderboard. Click usage errors (--limit 0, unknown
options) belong to the CLI's main() and are not catalogued here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import PROJECT, requires_espeak, sparse_wav
from faultkit import BIASBENCH, Faults

pytestmark = [requires_espeak, pytest.mark.slow]

CPU_LIMIT_S = 8.0  # the console script's own start-up is about 3 s of CPU on the 2-core dev machine
WALL_LIMIT_S = 60.0
RUN = ["run", "--model", "simulated-pitch-bias", "--data-source", "local", "--limit", "1", "--no-progress",
       "--no-report"]

MC = """task: toy
dataset: {{local: {{path: {data}}}}}
doc_to_text: "{text}"
doc_to_choice: choices
doc_to_target: "{{{{ answer }}}}"
"""
TOY_CSV = 'item_id,question,choices,answer\nq1,"What is 1?","[""1"", ""2""]",0\n'
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8))
SHIPPED_POOL = (PROJECT / "voices" / "espeak-default.yaml").read_text()


@dataclass
class Case:
    name: str
    expected: str  # text the one error line must hold
    args: list[str]  # {d} is the case's folder
    files: dict[str, str | bytes] | None = None  # written into the case's folder first
    setup: str | None = None  # a prepared run directory to copy in: "finished" or "damaged", etc.
    prepare: Callable[[Path], None] | None = None  # makes what `files` cannot (links, sparse files)
    env: dict[str, str] | None = None  # added to the environment; {d} is the case's folder


def task_case(name, expected, text="{{ question }}", data="toy.csv", extra="", files=None):
    body = MC.format(data=data, text=text.replace('"', '\\"')) + extra
    return Case(name, expected, [*RUN, "--task", "{d}/task.yaml", "-o", "{d}/runs"],
                {"task.yaml": body, "toy.csv": TOY_CSV, **(files or {})})


def task_file_case(name, expected, body):
    return Case(name, expected, [*RUN, "--task", "{d}/task.yaml", "-o", "{d}/runs"], {"task.yaml": body})


def pool_case(name, expected, body):
    return Case(name, expected, [*RUN, "--task", "mmlu", "--pool", "{d}/pool.yaml", "-o", "{d}/runs"],
                {"pool.yaml": body})


def pool_edit(old, new):
    assert old in SHIPPED_POOL, old
    return SHIPPED_POOL.replace(old, new, 1)


def cli_case(name, expected, *extra):
    return Case(name, expected, [*RUN, "--task", "mmlu", "-o", "{d}/runs", *extra])


def run_dir_case(name, expected, setup, *extra, model="simulated-pitch-bias"):
    args = [*RUN, "--task", "mmlu", "-o", "{d}/runs", "--run-id", "existing", *extra]
    return Case(name, expected, [a if a != "simulated-pitch-bias" else model for a in args], setup=setup)


VOICE = "  - {id: v1, gender: female, ethnicity: black, accent: x, label_source: proxy, tts: {backend: espeak-ng, voice: en-us}}\n"

CLONE_VOICE = ("  - {{id: {id}, gender: {gender}, ethnicity: black, accent: x, label_source: proxy, "
               "reference_clip: {clip}, reference_text: Hello there, tts: {{backend: standin-clone}}}}\n")


def clone_pool_case(name, expected, clips: dict[str, bytes | None], prepare=None):
    """A two-voice cloning pool whose reference clips are `clips` (None: made by `prepare`)."""
    voices = "".join(CLONE_VOICE.format(id=f"v{i}", gender=gender, clip=clip)
                     for i, (clip, gender) in enumerate(zip(clips, ["female", "male"])))
    files = {"pool.yaml": "pool: p\nvoices:\n" + voices,
             **{clip: data for clip, data in clips.items() if data is not None}}
    return Case(name, expected, [*RUN, "--task", "mmlu", "--pool", "{d}/pool.yaml", "--allow-unbalanced",
                                 "-o", "{d}/runs"], files, prepare=prepare)


def _device_and_text(folder: Path) -> None:
    (folder / "dev.wav").symlink_to("/dev/zero")


def _ten_hours(folder: Path) -> None:
    sparse_wav(folder / "long.wav", 10 * 3600)


def _symlink_loop(folder: Path) -> None:
    (folder / "inc").mkdir()
    (folder / "inc" / "loop.yaml").symlink_to("loop.yaml")


CASES = [
    # ---- task files
    Case("task: file missing", "nope.yaml", [*RUN, "--task", "{d}/nope.yaml"]),
    Case("task: unknown shipped name", "unknown task 'mmlx'", [*RUN, "--task", "mmlx"]),
    task_file_case("task: malformed YAML", "malformed YAML", "task: [unclosed\n"),
    task_file_case("task: a list, not a mapping", "expected a mapping", "- a\n- b\n"),
    Case("task: not UTF-8", "not valid UTF-8", [*RUN, "--task", "{d}/task.yaml"], {"task.yaml": b"task: \xff\xfe\n"}),
    task_case("task: misspelt field", "field 'doc_to_txt': unknown field", extra="doc_to_txt: x\n"),
    task_file_case("task: doc_to_text missing", "field 'doc_to_text': required",
                   "task: toy\ndataset: {local: {path: toy.csv}}\noutput_type: transcribe\ndoc_to_target: x\n"),
    task_case("task: bad task name", "field 'task'", extra="task: 'Bad Name'\n"),
    task_case("task: sample fraction above 1", "sample.fraction", extra="sample: {fraction: 2}\n"),
    task_case("task: unknown output type", "output_type", extra="output_type: essay\n"),
    task_file_case("task: multiple choice without choices", "needs the field 'doc_to_choice'",
                   "task: toy\ndataset: {local: {path: toy.csv}}\ndoc_to_text: x\ndoc_to_target: '0'\n"),
    Case("task: include cycle", "include cycle", [*RUN, "--task", "{d}/a.yaml"],
         {"a.yaml": "include: b.yaml\n", "b.yaml": "include: a.yaml\n"}),
    Case("task: include missing", "'gone.yaml' not found", [*RUN, "--task", "{d}/a.yaml"], {"a.yaml": "include: gone.yaml\n"}),
    task_case("task: samples without temperature", "samples > 1 with temperature 0", extra="samples: 3\n"),
    task_case("task: item column takes a reserved name", "would overwrite columns", extra="item_columns: [voice_id]\n"),
    task_case("task: option permutations on open answers", "option_permutations",
              extra="output_type: generate_categorical\ncategories: {a: [b]}\noption_permutations: cyclic\n"),
    task_case("task: YAML alias bomb", "expand to", extra=BOMB),
    task_file_case("task: nested too deeply", "malformed YAML", "a: " + "[" * 3000 + "]" * 3000 + "\n"),
    Case("task: --data-source hf without a hub source", "--data-source hf asked for",
         [*RUN, "--data-source", "hf", "--task", "{d}/task.yaml"], {"task.yaml": MC.format(data="t.csv", text="x")}),
    # ---- task data
    task_case("data: file missing", "not found", data="gone.csv"),
    task_case("data: ../ outside the task folder", "--allow-data-outside-task", data="../secret.csv"),
    task_case("data: absolute path outside", "--allow-data-outside-task", data="/etc/hostname"),
    task_case("data: unsupported file type", "unsupported file type", data="toy.txt", files={"toy.txt": "x"}),
    task_case("data: filter on a missing column", "has no column 'kind'", extra="dataset: {local: {path: toy.csv, filter: {kind: a}}}\n"),
    task_case("data: id_field missing", "has no column 'qid'", extra="dataset: {local: {path: toy.csv}, id_field: qid}\n"),
    task_case("data: duplicate item ids", "must be unique", files={"toy.csv": TOY_CSV + TOY_CSV.splitlines()[1] + "\n"}),
    task_case("data: malformed JSONL", "unreadable data file", data="toy.jsonl", files={"toy.jsonl": "{not json\n"}),
    task_case("data: lexicon outside the task folder", "lexicon",
              extra="output_type: generate_categorical\ncategories: {a: [b]}\nlexicon: ../lex.csv\n"),
    # ---- templates
    task_case("template: missing field", "questoin", text="{{ questoin }}"),
    task_case("template: syntax error", "template error", text="{{ question "),
    task_case("template: sandbox escape", "template error", text="{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    task_case("template: huge power", "bits", text="{{ (9 ** 99999999) % 7 }}"),
    task_case("template: huge range", "range of 10,000,000", text="{{ range(10**7)|list|length }}"),
    task_case("template: huge string", "3,000,000,000 long", text="{{ 'x' * 3000000000 }}"),
    task_case("template: doubling loop", "joined string",
              text="{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"),
    task_case("template: endless loop", "longer than 1 s",
              text="{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}"),
    task_case("template: format width", "formatted field", text="{{ '%999999999d' % 1 }}"),
    task_case("template: str.center", "str.center", text="{{ question.center(10**9) }}"),
    task_case("template: recursion", "RecursionError", text="{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"),
    task_case("template: float overflow", "OverflowError", text="{{ 10.0 ** 100000 }}"),
    # ---- voice pools
    Case("pool: file missing", "gone.yaml", [*RUN, "--pool", "{d}/gone.yaml"]),
    Case("pool: unknown shipped name", "unknown voice pool", [*RUN, "--pool", "espeak-defualt"]),
    pool_case("pool: malformed YAML", "malformed YAML", "pool: [x\n"),
    pool_case("pool: no voices", "field 'voices'", "pool: p\nvoices: []\n"),
    pool_case("pool: misspelt voice field", "unknown field", "pool: p\nvoices:\n" + VOICE.replace("accent", "acent")),
    pool_case("pool: bad label source", "label_source", "pool: p\nvoices:\n" + VOICE.replace("proxy", "guess")),
    pool_case("pool: voice id with a slash", "voices.0.id", "pool: p\nvoices:\n" + VOICE.replace("v1", "../v1")),
    pool_case("pool: duplicate voice id", "duplicate voice id", "pool: p\nvoices:\n" + VOICE + VOICE),
    pool_case("pool: unbalanced", "unbalanced", "pool: p\nvoices:\n" + VOICE),
    pool_case("pool: loudness target above 0", "loudness_target", pool_edit("loudness_target: -23", "loudness_target: 10")),
    pool_case("pool: nested TTS param", "plain string", pool_edit("pitch: 55", "pitch: {deep: 1}")),
    pool_case("pool: YAML alias bomb", "expand to", BOMB + SHIPPED_POOL),
    pool_case("pool: unknown TTS engine", "espeak-f-black-1", pool_edit("backend: espeak-ng", "backend: speakomatic")),
    pool_case("pool: espeak voice not installed", "has no voice 'en-xx'", pool_edit("voice: en-029", "voice: en-xx")),
    pool_case("pool: espeak variant not installed", "'f9' is not installed", pool_edit("variant: f1", "variant: f9")),
    pool_case("pool: espeak param misspelt", "'pitchh' is not known", pool_edit("pitch: 55", "pitchh: 55")),
    pool_case("pool: espeak pitch out of range", "must be 0..99", pool_edit("pitch: 55", "pitch: 500")),
    # ---- command-line values
    Case("cli: unknown model", "Did you mean: qwen2audio", [*RUN, "--model", "qwen2adio"]),
    cli_case("cli: empty openai model", "give the model after 'openai:'", "--model", "openai:"),
    cli_case("cli: --base-url not http, password hidden", "<redacted>", "--model", "openai:gpt-x",
             "--base-url", "ftp://user:S3CRET@host/v1"),
    cli_case("cli: --long-audio", "--long-audio", "--long-audio", "squash"),
    cli_case("cli: --data-source", "--data-source", "--data-source", "nope"),
    cli_case("cli: --quantization", "--quantization", "--quantization", "3bit"),
    cli_case("cli: --executor", "--executor", "--executor", "cloud"),
    cli_case("cli: --shard out of range", "shard", "--shard", "3/2"),
    cli_case("cli: --run-id climbing out", "--run-id", "--run-id", "../../x"),
    cli_case("cli: --run-id with a slash", "--run-id", "--run-id", "a/b"),
    Case("cli: --output-dir is a file", "is a file", [*RUN, "-o", "{d}/file"], {"file": "x"}),
    Case("cli: --output-dir under a file", "cannot be written", [*RUN, "-o", "{d}/file/runs"], {"file": "x"}),
    # ---- damaged stores and run directories (a finished run is copied in first)
    run_dir_case("store: damaged, --resume", "biasbench salvage", "damaged", "--resume"),
    run_dir_case("store: deleted, --resume", "is missing", "deleted", "--resume"),
    run_dir_case("store: manifest not JSON", "not valid JSON", "bad-manifest", "--resume"),
    run_dir_case("run: again without --resume", "Pass --resume", "finished"),
    run_dir_case("run: same id, other model", "different task, pool, model", "finished", "--resume",
                 model="simulated-no-bias"),
    run_dir_case("run: in use by another process", "in use by another biasbench process", "locked", "--resume"),
    Case("salvage: no store", "nothing to salvage", ["salvage", "{d}"]),
    Case("salvage: unreadable store", "cannot be read at all", ["salvage", "{d}/runs/existing"], setup="garbage"),
    # ---- issue 21: secrets in URLs, leaderboard files, a new task author's lm-eval habits
    cli_case("cli: --base-url token as user name, in the path and the query", "ftp://<redacted>@host/v1/<redacted>",
             "--model", "openai:gpt-x", "--base-url", "ftp://S3CRET@host/v1/sk-S3CRET?key=S3CRET"),
    Case("leaderboard: show a board that is not there", "typo.csv not found",
         ["leaderboard", "show", "--file", "{d}/typo.csv"]),
    task_file_case("data: lm-eval dataset_path file missing (never the hub)", "file 'gone.csv' not found",
                   'task: toy\ndataset_path: gone.csv\ndoc_to_text: "{{ question }}"\ndoc_to_choice: choices\n'
                   'doc_to_target: "{{ answer }}"\n'),
    task_file_case("data: lm-eval data_files outside the task folder", "--allow-data-outside-task",
                   'task: toy\ndataset_path: csv\ndataset_kwargs: {data_files: ../secret.csv}\n'
                   'doc_to_text: "{{ question }}"\ndoc_to_choice: choices\ndoc_to_target: "{{ answer }}"\n'),
    task_file_case("task: lm-eval file builder without data_files", "dataset_kwargs: {data_files:",
                   'task: toy\ndataset_path: json\ndoc_to_text: x\ndoc_to_choice: ["a", "b"]\ndoc_to_target: "0"\n'),
    task_case("task: lm-eval output type generate_until", "generate_categorical", extra="output_type: generate_until\n"),
    task_case("task: unquoted yes/no options", "quote the option text", extra="doc_to_choice: [yes, no]\n"),
    # ---- issue 21, second pass: clips that cannot be read, damaged state, unusual paths
    clone_pool_case("pool: every reference clip unreadable (empty, random bytes)", "none of its 2 voices can be spoken",
                    {"empty.wav": b"", "noise.wav": bytes(range(256)) * 64}),
    clone_pool_case("pool: every reference clip unreadable (text, device)", "none of its 2 voices can be spoken",
                    {"text.wav": "just some words\n", "dev.wav": None}, prepare=_device_and_text),
    clone_pool_case("pool: a 10-hour reference clip, refused from its header", "too long (36000.0 s",
                    {"long.wav": None, "empty.wav": b""}, prepare=_ten_hours),
    run_dir_case("store: manifest holds [1]", "manifest.json: expected a JSON object, got a list", "manifest-list",
                 "--resume"),
    run_dir_case("store: manifest holds null", "manifest.json: expected a JSON object, got null", "manifest-null",
                 "--resume"),
    run_dir_case("store: manifest field of the wrong type", "manifest.json, field 'resumed_at': expected a list",
                 "manifest-field", "--resume"),
    run_dir_case("store: responses.sqlite is a folder", "responses.sqlite is a folder", "store-dir", "--resume"),
    Case("cli: BIASBENCH_CACHE names a file", "cachefile names a file, not a folder",
         [*RUN, "--task", "mmlu", "-o", "{d}/runs"], {"cachefile": "x"}, env={"BIASBENCH_CACHE": "{d}/cachefile"}),
    Case("task: a symlink loop in an --include-path folder", "symlink loop",
         [*RUN, "--include-path", "{d}/inc", "--task", "loop", "-o", "{d}/runs"], prepare=_symlink_loop),
    cli_case("cli: --base-url with a control character", "holds control characters", "--model", "openai:gpt-x",
             "--base-url", "http://host/v1\x01"),
    cli_case("cli: --base-url with a newline, password hidden", "holds control characters", "--model",
             "openai:gpt-x", "--base-url", "http://user:S3CRET@ho\nst/v1?key=S3CRET"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run (simulated listener, 1 item x 18 voices) to copy into store cases."""
    kit = Faults(tmp_path_factory.mktemp("finished"), items=1)
    assert kit.run("existing").returncode == 0
    return kit.run_dir("existing")


def _prepare(case: Case, folder: Path, finished: Path | None) -> Path:
    folder.mkdir(parents=True)
    for name, content in (case.files or {}).items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    if case.setup:
        run_dir = folder / "runs" / "existing"
        shutil.copytree(finished, run_dir)
        store = run_dir / "responses.sqlite"
        if case.setup == "damaged":
            data = bytearray(store.read_bytes())
            data[4096 * 2: 4096 * 2 + 512] = b"\xff" * 512
            store.write_bytes(bytes(data))
        elif case.setup == "deleted":
            store.unlink()
        elif case.setup == "bad-manifest":
            (run_dir / "manifest.json").write_text("{ not json")
        elif case.setup == "garbage":
            store.write_bytes(b"not a database " * 200)
        elif case.setup in ("manifest-list", "manifest-null"):
            (run_dir / "manifest.json").write_text("[1]" if case.setup == "manifest-list" else "null")
        elif case.setup == "manifest-field":
            manifest = json.loads((run_dir / "manifest.json").read_text())
            (run_dir / "manifest.json").write_text(json.dumps({**manifest, "resumed_at": 5}))
        elif case.setup == "store-dir":
            store.unlink()
            (store / "x").mkdir(parents=True)
    if case.prepare:
        case.prepare(folder)
    return folder


def _run(case: Case, folder: Path, env: dict) -> dict:
    # Every file already there must be left as it was; .lock only ever holds the last holder's pid.
    stores = {path: _digest(path) for path in folder.rglob("*") if path.is_file() and path.name != ".lock"}
    holder = _hold_lock(folder) if case.setup == "locked" else None
    args = [arg.replace("{d}", str(folder)) for arg in case.args]
    started = time.monotonic()
    env = {**env, **{name: value.replace("{d}", str(folder)) for name, value in (case.env or {}).items()}}
    process = subprocess.Popen([BIASBENCH, *args], env=env, cwd=folder, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    status, usage, hung = _wait(process, WALL_LIMIT_S)
    wall = time.monotonic() - started
    if holder is not None:
        holder.close()
    return {"rc": None if hung else os.waitstatus_to_exitcode(status), "stderr": process.stderr.read(),
            "stdout": process.stdout.read(), "cpu": usage.ru_utime + usage.ru_stime, "wall": wall,
            "changed": [str(path) for path, digest in stores.items() if _digest(path) != digest]}


def _wait(process: subprocess.Popen, limit: float):
    """Wait for the child, keeping its own CPU time (os.wait4); kill it past `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            return status, usage, False
        if time.monotonic() > deadline:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = -9
            return status, usage, True
        time.sleep(0.02)


def _hold_lock(folder: Path):
    import fcntl

    handle = open(folder / "runs" / "existing" / ".lock", "a+")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _digest(path: Path) -> str | tuple | None:
    if not path.exists():
        return None
    if path.stat().st_size > 64 * 2**20:  # a sparse 10-hour clip: never read whole by the test either
        return (path.stat().st_size, path.stat().st_mtime_ns)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_one_clear_line_and_loses_nothing(case, tmp_path, request):
    # One console-script process per case, so pytest-xdist spreads the cases over every core;
    # only the cases that damage a run directory wait for the finished run (once per worker).
    finished = request.getfixturevalue("finished_run") if case.setup else None
    cache = finished.parent.parent / "cache" if finished else Path(os.environ["BIASBENCH_CACHE"])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OPENAI_API_KEY="sk-test",
               BIASBENCH_CACHE=str(cache))
    result = _run(case, _prepare(case, tmp_path / "case", finished), env)
    stderr = result["stderr"]
    assert result["rc"] == 2, f"exit {result['rc']} after {result['wall']:.1f}s\n{stderr}\n{result['stdout']}"
    assert "Traceback" not in stderr and "S3CRET" not in stderr + result["stdout"]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and case.expected in lines[0], stderr
    assert result["changed"] == []  # nothing that was there before was altered
    assert result["cpu"] < CPU_LIMIT_S, f"{result['cpu']:.1f} s of CPU"


def test_the_catalogue_is_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({case.name for case in CASES}) == len(CASES)
