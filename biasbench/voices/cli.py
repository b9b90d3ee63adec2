"""`biasbench voices ...`: inspect and check voice pools."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

voices_app = typer.Typer(no_args_is_help=True, help="Voice pools: list, check balance.")
console = Console(stderr=True)
out = Console()


@voices_app.command("list")
def voices_list(pool: str = typer.Argument("espeak-default")):
    """Show the voices of a pool with their labels and where the labels come from."""
    from biasbench.voices.pool import load_pool

    loaded, path = load_pool(pool, allow_unbalanced=True)
    table = Table("id", "gender", "ethnicity", "accent", "label source", "tts", title=f"{loaded.pool} ({path})")
    for v in loaded.voices:
        table.add_row(v.id, v.gender, v.ethnicity, v.accent, v.label_source,
                      f"{v.tts.backend} {v.tts.params}")
    out.print(table)


@voices_app.command("check")
def voices_check(pool: str = typer.Argument("espeak-default")):
    """Check a pool's balance: 2 genders x 3 ethnicities, equal cells of at least 3 voices."""
    from biasbench.voices.pool import check_balance, load_pool

    loaded, path = load_pool(pool, allow_unbalanced=True)
    report = check_balance(loaded)
    table = Table("gender", "ethnicity", "voices", title=f"{loaded.pool} ({path})")
    for (gender, ethnicity), n in sorted(report.counts.items()):
        table.add_row(gender, ethnicity, str(n))
    out.print(table)
    if not report.balanced:
        console.print("[red]unbalanced:[/]\n  " + "\n  ".join(report.problems))
        raise typer.Exit(1)
    out.print("balanced")
