"""The one entry point: `biasbench run | tasks | voices | models ...`.

Exit codes: 0 success; 2 a problem the user can fix (BiasbenchError, or a usage error such
as an unknown option), printed as one line without a traceback; 3 a run that finished but
left requests unanswered (rerun with --resume); 130 interrupted (Ctrl-C). Anything else is a
bug and keeps its traceback.

Start-up stays fast (`--help` well under half a second): this module and the sub-apps import
nothing heavy (pandas, numpy, torch) at module level; each command imports what it needs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from biasbench.cli_options import include_path_option
from biasbench.errors import BiasbenchError
from biasbench.export import export_command
from biasbench.finetune.cli import compare_command, finetune_app
from biasbench.judge.cli import judge_app
from biasbench.leaderboard import leaderboard_app
from biasbench.listing import FORMAT_HELP, ListFormat, print_listing
from biasbench.plan import plan_command
from biasbench.report.cli import report_command
from biasbench.salvage import salvage_command
from biasbench.voices.cli import voices_app

EXIT_USAGE = 2
EXIT_FAILED_REQUESTS = 3
EXIT_INTERRUPTED = 130

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Measure demographic bias in speech language models.")
console = Console(stderr=True, soft_wrap=True)  # long paths and messages stay on one line


def _version(value: bool) -> None:
    if value:
        from biasbench import __version__

        print(f"biasbench {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")):
    """Measure demographic bias in speech language models."""


# Each stage keeps its own sub-commands beside its code.
app.add_typer(voices_app, name="voices")
app.add_typer(leaderboard_app, name="leaderboard")
app.command("report")(report_command)
app.command("export")(export_command)
app.command("plan")(plan_command)  # requests, clips and cost before running: biasbench/plan.py
app.command("salvage")(salvage_command)  # a damaged responses.sqlite: biasbench/salvage.py
app.add_typer(finetune_app, name="finetune")
app.command("compare")(compare_command)
app.add_typer(judge_app, name="judge")  # pairwise judge of open answers: biasbench/judge/

# Help is click's plain layout, not Rich panels: it never cuts a flag name at 80 columns or
# when piped, and a `[ray]` in a help text is printed as written (Rich read it as markup).
for _group in app.registered_groups:
    _group.typer_instance.rich_markup_mode = None

@app.command()
def run(
    model: str = typer.Option(..., "--model", "-m", help="alias (qwen2audio), hf:<id or path>, or a local dir"),
    task: str = typer.Option("mmlu", "--task", "-t", help="task name from tasks/ or a path to a task YAML"),
    pool: str = typer.Option("espeak-default", "--pool", "-p", help="voice pool name from voices/ or a YAML path"),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", "-o", help="runs go to OUTPUT_DIR/<run_id>/"),
    run_id: Optional[str] = typer.Option(None, help="name of the run directory (default: derived from its inputs)"),
    resume: bool = typer.Option(False, "--resume", help="continue a stopped run; stored answers are kept"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="use only the first N sampled items"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="requests per model call"),
    dtype: str = typer.Option("auto", help="auto, bfloat16, float16 or float32"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
    revision: Optional[str] = typer.Option(None, help="model revision (branch, tag or commit)"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server for openai: models "
                                           "(default: $OPENAI_BASE_URL, else the OpenAI API)"),
    quantization: Optional[str] = typer.Option(None, help="hf backend on a GPU: 8bit or 4bit (bitsandbytes)"),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="LoRA adapter folder (biasbench finetune) "
                                          "to put on the model"),
    tensor_parallel_size: int = typer.Option(1, help="vllm: GPUs per model replica"),
    data_parallel_size: int = typer.Option(1, help="vllm: model replicas"),
    max_model_len: Optional[int] = typer.Option(None, help="vllm: context length to reserve"),
    gpu_memory_utilization: float = typer.Option(0.9, help="vllm: share of GPU memory to use"),
    prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching",
                                        help="vllm: reuse the shared text prompt's KV cache"),
    data_source: str = typer.Option("auto", help="auto (hub if reachable), hf or local"),
    allow_unbalanced: bool = typer.Option(False, "--allow-unbalanced", help="run a pool whose cells differ"),
    allow_data_outside_task: bool = typer.Option(False, "--allow-data-outside-task",
                                                 help="read a task's local data file from outside its folder"),
    offline_fallback: bool = typer.Option(
        False, "--offline-fallback",
        help="with no GPU or no hub, run the tiny local model instead, labelled as a pipeline check"),
    long_audio: str = typer.Option("skip", help="clips over the model's limit: skip (recorded) or truncate"),
    seed: int = typer.Option(0, help="generation seed"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                          help="parallel synthesis workers (default: all cores)"),
    tts_workers: Optional[int] = typer.Option(None, "--tts-workers", min=1, hidden=True),  # old name of --workers
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.md/.html with the full statistics"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run only shard i of n, into "
                                        "<run_id>-shard-<i>-of-<n>/; join them with `biasbench merge`"),
    executor: str = typer.Option("local", "--executor", help="local, or ray: run the shards as Ray tasks "
                                 "and merge them (pip install 'biasbench[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: cluster address (auto: join a running "
                                          "cluster; default: start a local one)"),
    replicas: Optional[int] = typer.Option(None, "--replicas", min=1, help="ray: number of shards/model "
                                           "replicas (default: GPUs, else CPUs, of the cluster)"),
    include_path: Optional[list[Path]] = include_path_option(),
):
    """Speak every item of TASK with every voice of POOL, ask MODEL, store and summarise."""
    from biasbench.runner import RunOptions, run as run_benchmark

    _check_choice("--long-audio", long_audio, ["skip", "truncate"])
    _check_choice("--data-source", data_source, ["auto", "hf", "local"])
    if quantization is not None:
        _check_choice("--quantization", quantization, ["8bit", "4bit"])
    _check_choice("--executor", executor, ["local", "ray"])
    from biasbench.shard import parse_shard

    shard_spec = parse_shard(shard)
    if executor == "ray" and shard_spec is not None:
        raise BiasbenchError("--executor ray makes its own shards (--replicas); leave out --shard")
    options = RunOptions(task=task, model=model, pool=pool, output_dir=output_dir, run_id=run_id, resume=resume,
                         limit=limit, batch_size=batch_size, dtype=dtype, device=device, revision=revision,
                         base_url=base_url, quantization=quantization, adapter=adapter,
                         data_source=data_source,
                         vllm_options=dict(tensor_parallel_size=tensor_parallel_size,
                                           data_parallel_size=data_parallel_size, max_model_len=max_model_len,
                                           gpu_memory_utilization=gpu_memory_utilization,
                                           enable_prefix_caching=prefix_caching),
                         allow_unbalanced=allow_unbalanced, allow_data_outside_task=allow_data_outside_task,
                         offline_fallback=offline_fallback, long_audio=long_audio, seed=seed,
                         tts_workers=workers or tts_workers, progress=progress, shard=shard_spec)
    try:
        if executor == "ray":
            from biasbench.ray_executor import run_with_ray

            result = run_with_ray(options, console, address=address, workers=replicas)
        else:
            result = run_benchmark(options, console)
    except KeyboardInterrupt:
        _interrupted("Every finished batch is stored; rerun the same command with --resume to continue.")
        raise typer.Exit(EXIT_INTERRUPTED)
    print(closing_lines(result, report))  # plain print: a pipe or a log gets the same words
    console.print(f"\nRun directory: {result.run_dir}  ({result.n_new} new responses, {result.n_total} in all)",
                  markup=False)
    _exit_if_requests_failed(result.run_dir)


def _exit_if_requests_failed(run_dir: Path) -> None:
    """A run that left requests unanswered is not a success: exit 3 and say how to finish it."""
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    failed = manifest.get("n_failed_requests") or 0
    if failed:
        _error(f"{failed} requests failed and were not stored; rerun the same command with --resume "
               "to retry them.")
        raise typer.Exit(EXIT_FAILED_REQUESTS)


def closing_lines(result, report: bool) -> str:
    """The end of a run: the declared primary result (the record summary.md, the report and the
    leaderboard state), not a per-voice table; the descriptive tables stay in summary.md."""
    summary = result.run_dir / "summary.md"
    if not result.has_voice_groups and result.text_only:
        return f"No voice groups to compare (a text-only run). Descriptive tables: {summary}"
    if not result.has_voice_groups:  # nothing spoken was answered: say so, not "text-only"
        return (f"No answers to compare: none of the {result.n_total} planned requests with a voice has a stored "
                f"answer (see the failures reported below). Descriptive tables: {summary}")
    if not report:
        return (f"Primary result not computed (--no-report): `biasbench report {result.run_dir}` computes it. "
                f"Descriptive tables: {summary}")
    from biasbench.report import build_report
    from biasbench.report.load import read_json
    from biasbench.report.primary import primary_markdown

    paths = build_report(result.run_dir)
    record = (read_json(paths["json"]) or {})["primary"]
    return (f"{primary_markdown(record)}\nDescriptive tables: {summary}\nReport: {paths['html']} "
            f"(also {paths['markdown'].name}, {paths['json'].name})")


@app.command()
def tasks(fmt: ListFormat = typer.Option(ListFormat.table, "--format", help=FORMAT_HELP),
          include_path: Optional[list[Path]] = include_path_option()):
    """List the tasks: your --include-path folders', then the shipped ones."""
    from biasbench.config import load_task_config
    from biasbench.tasks.loader import available_tasks

    rows = []
    for name, path in available_tasks().items():
        try:
            config = load_task_config(path)
        except BiasbenchError as exc:  # a draft in the user's folder: listed with its problem, not fatal
            rows.append({"task": name, "output_type": "(invalid)", "description": str(exc)})
            continue
        rows.append({"task": name, "output_type": config.output_type, "description": config.description})
    print_listing(rows, fmt)


@app.command()
def models(fmt: ListFormat = typer.Option(ListFormat.table, "--format", help=FORMAT_HELP)):
    """List model aliases, and the backends other installed packages add."""
    from biasbench.models.registry import ALIASES, PLUGIN_GROUP, plugin_backends

    rows = []
    for alias in ALIASES.values():
        needs = ", ".join(filter(None, ["CUDA GPU" if alias.needs_gpu else "", alias.needs])) or "-"
        rows.append({"alias": alias.name, "model": alias.model, "backend": alias.backend, "needs": needs,
                     "description": alias.description})
    for name, entry_point in plugin_backends().items():
        source = f"{entry_point.dist.name} {entry_point.dist.version}" if entry_point.dist else "a package"
        rows.append({"alias": f"{name}:<model>", "model": "<model>", "backend": f"plugin:{name}", "needs": "-",
                     "description": f"{entry_point.value}, from {source} ({PLUGIN_GROUP} entry point)"})
    print_listing(rows, fmt, whole_columns=2)


@app.command()
def merge(
    shard_dirs: list[Path] = typer.Argument(..., help="the n shard directories (<run_id>-shard-<i>-of-<n>)"),
    output: Path = typer.Option(..., "--output", "-o", help="the merged run directory to write"),
):
    """Merge the shard directories of one sharded run into one run directory (biasbench/merge.py)."""
    from biasbench.merge import merge_shards

    result = merge_shards(shard_dirs, output)
    console.print(f"Merged {result['n_shards']} shards, {result['n_responses']} responses -> {output}",
                  markup=False)


def _check_choice(flag: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise BiasbenchError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")


def _error(message: str) -> None:
    """One line on stderr; the message is plain text (a `[vllm]` in it is kept, not read as markup),
    and a URL in it shows no credentials, whichever part of biasbench or a library wrote it."""
    from biasbench.redact import redact_credentials

    console.print(Text("error: ", style="bold red") + Text(redact_credentials(message)), highlight=False)


def _interrupted(what_is_kept: str = "") -> None:
    """Ctrl-C: say what was kept, then exit with 130 without delay."""
    console.print(Text(f"Interrupted. {what_is_kept}".strip(), style="yellow"), highlight=False)
    _exit_now_if_threads_would_hold_it(EXIT_INTERRUPTED)


def _exit_now_if_threads_would_hold_it(code: int) -> None:
    """A normal exit joins every worker thread first, and a thread blocked on a network reply
    (the OpenAI backend waiting out a hung request) holds it for up to its timeout. Then leave
    at once: everything finished is already committed to the run's SQLite store. Without such
    threads the exit stays normal, so atexit clean-up (e.g. Ray's shutdown) still runs."""
    import threading

    waiting = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    if waiting:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _usage_error_line(exc) -> str:
    """click's message plus the command's help hint, on one line."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


def _usage_error_types() -> tuple[type, ...]:
    """typer >= 0.29 raises the click exceptions it bundles, which are not click's own."""
    types: list[type] = []
    try:
        from typer._click.exceptions import ClickException as BundledClickException

        types.append(BundledClickException)
    except ImportError:
        pass
    import click

    types.append(click.ClickException)
    return tuple(types)


def main(argv: list[str] | None = None) -> None:
    """The console script: run the app and exit with its code (see the module docstring)."""
    sys.exit(_run(argv))


def _run(argv: list[str] | None) -> int:
    usage_errors = _usage_error_types()
    try:
        code = app(args=argv, prog_name="biasbench", standalone_mode=False)
    except BiasbenchError as exc:
        _error(str(exc))
        return EXIT_USAGE
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _interrupted()
        return EXIT_INTERRUPTED
    except usage_errors as exc:
        if exc.__class__.__name__ == "NoArgsIsHelpError":  # `biasbench` alone: the help, as asked
            exc.show()
            return 0
        _error(_usage_error_line(exc))
        return EXIT_USAGE
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
