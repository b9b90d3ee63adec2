"""`biasbench report RUN_DIR`: write report.md, report.html and report.json into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)


def report_command(
    run_dir: Path = typer.Argument(..., help="a run directory (runs/<run_id>/, with manifest.json)"),
    n_permutations: int = typer.Option(10_000, min=99, help="random permutations of the primary test"),
    mdg_sims: int = typer.Option(200, min=20, help="simulated data sets per power estimate (minimum detectable gap)"),
    seed: int = typer.Option(0, help="seed of every resampling"),
    voice_qc: Optional[Path] = typer.Option(
        None, "--voice-qc", help="a `voices qc` table of the run's pool: copied into the run; every gap is "
        "then also tested adjusted for the voices' QC measures"),
):
    """Statistics of one run: group estimates with voice-level CIs and tests, figures, conclusions."""
    from biasbench.report import Settings, build_report
    from biasbench.report.load import read_json

    if voice_qc is not None:
        from biasbench.voices.qc import copy_qc_into_run

        copy_qc_into_run(voice_qc, run_dir)
    settings = Settings(n_permutations=n_permutations, mdg_sims=mdg_sims, seed=seed)
    paths = build_report(run_dir, settings)
    report = read_json(paths["json"]) or {}
    for banner in report.get("run", {}).get("banners", []):
        console.print(f"[bold yellow]{banner}[/]", highlight=False)
    print("\n".join(f"- {line}" for line in report.get("conclusions", [])))
    console.print(f"\nReport: {paths['html']}  (also {paths['markdown'].name}, {paths['json'].name})", highlight=False)
