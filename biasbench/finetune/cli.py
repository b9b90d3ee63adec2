"""`biasbench finetune sft|dpo|mine-pairs` and `biasbench compare RUN_A RUN_B`.

Heavy imports (torch, transformers, peft, trl) happen inside the commands, so `biasbench --help`
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from biasbench.formats import dumps

finetune_app = typer.Typer(no_args_is_help=True,
                           help="Debiasing fine-tunes: balanced spoken SFT with LoRA, then DPO.")
console = Console(stderr=True, soft_wrap=True)


def _interrupted(exc: KeyboardInterrupt) -> None:
    """Ctrl-C (exit 130), or SIGTERM/SIGHUP (errors.Stopped: 128 + the signal)."""
    signum = getattr(exc, "signum", None)
    console.print("[yellow]Interrupted. Checkpoints are kept; rerun the same command with --resume to continue "
                  "from the last one.[/]")
    raise typer.Exit(128 + signum if signum else 130)


@finetune_app.command("sft")
def sft_command(
    config: Path = typer.Argument(..., help="fine-tune YAML (see biasbench/finetune/examples/sft_tiny.yaml)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="overrides the YAML's output_dir"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
    data_source: str = typer.Option("auto", help="auto (hub if reachable), hf or local"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """LoRA SFT on instructions spoken by the training pool (responses in text)."""
    from biasbench.finetune.config import load_finetune_config
    from biasbench.finetune.sft import run_sft

    try:
        result = run_sft(load_finetune_config(config), output_dir=output_dir, resume=resume, progress=progress,
                         console=console, data_source=data_source)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    print(result.adapter_dir)


@finetune_app.command("dpo")
def dpo_command(
    config: Path = typer.Argument(..., help="fine-tune YAML with a 'dpo' section (run_dir or pairs)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="overrides the YAML's output_dir"),
    resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
):
    """DPO with LoRA on pairs mined from an evaluation run, spoken by the training pool.

    Chosen: the correct (or majority) answer; rejected: the voice-dependent one."""
    from biasbench.finetune.config import load_finetune_config
    from biasbench.finetune.dpo import run_dpo

    try:
        result = run_dpo(load_finetune_config(config), output_dir=output_dir, resume=resume, progress=progress,
                         console=console)
    except KeyboardInterrupt as exc:
        _interrupted(exc)
    print(result.adapter_dir)


@finetune_app.command("mine-pairs")
def mine_command(
    run_dir: Path = typer.Argument(..., help="an evaluation run folder (with responses.parquet)"),
    output: Path = typer.Option(Path("pairs.jsonl"), "--output", "-o"),
    mode: str = typer.Option("auto", help="chosen answer: auto, correct (knowledge) or majority (probes)"),
    max_pairs_per_item: int = typer.Option(3, min=1),
    anchor_ratio: float = typer.Option(1.0, min=0.0, help="anchor pairs (knowledge tasks) per voice-dependent pair"),
):
    """Write the DPO preference pairs of a run to a JSONL (to inspect or edit before `finetune dpo`)."""
    from biasbench.finetune.dpo import mine_pairs, write_pairs

    pairs, info = mine_pairs(run_dir, mode=mode, max_pairs_per_item=max_pairs_per_item, anchor_ratio=anchor_ratio)
    write_pairs(pairs, output)
    console.print(dumps(info, indent=2), markup=False)
    print(output)


def compare_command(
    run_a: Path = typer.Argument(..., help="run before the fine-tune (e.g. the base model)"),
    run_b: Path = typer.Argument(..., help="run after it (e.g. biasbench run --adapter ...)"),
    outcome: Optional[str] = typer.Option(None, help="outcome column (default: correct, else value)"),
    n_boot: int = typer.Option(1000, min=100, help="bootstrap replicates"),
    n_perm: int = typer.Option(2000, "--n-permutations", "--n-perm", min=100, help="permutations"),
    seed: int = typer.Option(0),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the plain data here"),
    markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="also write the report here"),
):
    """Change in the voice-group gaps and in accuracy between two runs of one task.

    Gender and ethnicity gaps, answer divergence and overall accuracy, with voice-level
    bootstrap CIs and a permutation test of each change (paired by voice when both runs
    heard the same voices)."""
    from biasbench.finetune.compare import compare_runs, to_markdown

    result = compare_runs(run_a, run_b, outcome=outcome, n_boot=n_boot, n_perm=n_perm, seed=seed)
    report = to_markdown(result)
    if json_out:
        json_out.write_text(dumps(result, indent=2), encoding="utf-8")
    if markdown_out:
        markdown_out.write_text(report, encoding="utf-8")
    print(report)


finetune_app.command("compare")(compare_command)
