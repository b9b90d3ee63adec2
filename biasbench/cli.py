"""The one entry point: `biasbench run | tasks | voices | models ...`.

Problems the user can fix (BiasbenchError) are printed as one clear message with exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from biasbench.errors import BiasbenchError
from biasbench.export import export_command
from biasbench.finetune.cli import compare_command, finetune_app
from biasbench.leaderboard import leaderboard_app
from biasbench.merge import merge_command
from biasbench.plan import plan_command
from biasbench.report.cli import report_command
from biasbench.salvage import salvage_command
from biasbench.voices.cli import voices_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Measure demographic bias in speech language models.")
console = Console(stderr=True, soft_wrap=True)  # long paths and messages stay on one line
out = Console()


# Each stage keeps its own sub-commands beside its code.
app.add_typer(voices_app, name="voices")
app.add_typer(leaderboard_app, name="leaderboard")
app.command("report")(report_command)
app.command("export")(export_command)
app.command("merge")(merge_command)  # sharded runs: biasbench/merge.py
app.command("plan")(plan_command)  # requests, clips and cost before running: biasbench/plan.py
app.command("salvage")(salvage_command)  # a damaged responses.sqlite: biasbench/salvage.py
app.add_typer(finetune_app, name="finetune")
app.command("compare")(compare_command)


@app.command()
def run(
    model: str = typer.Option(..., "--model", "-m", help="alias (qwen2audio), hf:<id or path>, or a local dir"),
    task: str = typer.Option("mmlu", "--task", "-t", help="task name from tasks/ or a path to a task YAML"),
    pool: str = typer.Option("espeak-default", "--pool", "-p", help="voice pool name from voices/ or a YAML path"),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir", "-o", help="runs go to OUTPUT_DIR/<run_id>/"),
    run_id: Optional[str] = typer.Option(None, help="name of the run directory (default: derived from its inputs)"),
    resume: bool = typer.Option(False, "--resume", help="continue a stopped run; stored answers are kept"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="use only the first N sampled items"),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
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
    tts_workers: Optional[int] = typer.Option(None, help="parallel synthesis workers (default: all cores)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    report: bool = typer.Option(True, "--report/--no-report", help="write report.md/.html with the full statistics"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: run only shard i of n, into "
                                        "<run_id>-shard-<i>-of-<n>/; join them with `biasbench merge`"),
    executor: str = typer.Option("local", "--executor", help="local, or ray: run the shards as Ray tasks "
                                 "and merge them (pip install 'biasbench[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: cluster address (auto: join a running "
                                          "cluster; default: start a local one)"),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="ray: number of shards/model replicas "
                                          "(default: GPUs, else CPUs, of the cluster)"),
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
        raise BiasbenchError("--executor ray makes its own shards (--workers); leave out --shard")
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
                         tts_workers=tts_workers, progress=progress, shard=shard_spec)
    try:
        if executor == "ray":
            from biasbench.ray_executor import run_with_ray

            result = run_with_ray(options, console, address=address, workers=workers)
        else:
            result = run_benchmark(options, console)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted. Every finished batch is stored; rerun the same command with "
                      "--resume to continue.[/]")
        raise typer.Exit(130)
    print((result.run_dir / "summary.md").read_text(encoding="utf-8"))  # plain: tables must not wrap
    if report and result.has_voice_groups:
        from biasbench.report import build_report

        paths = build_report(result.run_dir)
        console.print(f"Report: {paths['html']}")
    console.print(f"\nRun directory: {result.run_dir}  ({result.n_new} new responses, {result.n_total} in all)")


@app.command()
def tasks():
    """List the shipped tasks."""
    from biasbench.config import load_task_config
    from biasbench.tasks.loader import available_tasks

    table = Table("task", "output type", "description")
    for name, path in available_tasks().items():
        config = load_task_config(path)
        table.add_row(name, config.output_type, config.description)
    out.print(table)


@app.command()
def models():
    """List model aliases."""
    from biasbench.models.registry import ALIASES

    table = Table("alias", "model", "backend", "needs", "description")
    for alias in ALIASES.values():
        needs = ", ".join(filter(None, ["CUDA GPU" if alias.needs_gpu else "", alias.needs])) or "-"
        table.add_row(alias.name, alias.model, alias.backend, needs, alias.description)
    out.print(table)


def _check_choice(flag: str, value: str, allowed: list[str]) -> None:
    if value not in allowed:
        raise BiasbenchError(f"{flag} must be one of {', '.join(allowed)}; got {value!r}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except BiasbenchError as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # click's usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
