"""`biasbench judge compare | agreement` (docs/judge.md). Exit 3 when some judgements failed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

EXIT_FAILED = 3
SPEC_HELP = ("openai:<model>, vllm:<model>, hf-text:<hub id or folder>, a model alias, or a simulated judge "
             "for tests (simulated-judge-length, -random, -first, -flaky)")

judge_app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                        help="Judge open answers in pairs, and measure the judge.")


def _say(text: str) -> None:
    print(text, flush=True)


@judge_app.command("compare")
def compare_command(
    run_dir: Path = typer.Argument(..., help="a finished generate_open run directory"),
    judge: str = typer.Option(..., "--judge", "-j", help=SPEC_HELP),
    opponents: int = typer.Option(3, "--opponents", "-k", min=1, help="opponents drawn per voice and item "
                                  "(each pair judged in both orders)"),
    seed: int = typer.Option(0, help="seed of the opponents' draw"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="judgements per judge call"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server for openai: judges "
                                           "(default: $OPENAI_BASE_URL)"),
    device: str = typer.Option("auto", help="hf-text judges: auto, cpu, cuda ..."),
    max_new_tokens: int = typer.Option(256, min=8, help="longest judge reply"),
    report: bool = typer.Option(True, "--report/--no-report", help="rebuild the run's report with the judge"),
    n_permutations: int = typer.Option(10_000, min=99, help="report: random permutations of each test"),
    mdg_sims: int = typer.Option(200, min=20, help="report: simulated data sets per minimum detectable gap"),
):
    """Judge each voice's answers against other voices' answers to the same items, blind to voice and group."""
    from .backend import load_judge
    from .compare import agreement_sentence, failure_line, judge_outcomes, judge_run

    loaded = load_judge(judge, base_url=base_url, device=device, max_new_tokens=max_new_tokens)
    record = judge_run(run_dir, loaded, k=opponents, seed=seed, batch_size=batch_size)
    _say(f"Judge {loaded.name}: {record['n_planned']} judgements planned ({record['n_cached']} cached, "
         f"{record['n_new']} made now).")
    if loaded.note:
        _say(loaded.note)
    if report:
        from biasbench.report import Settings, build_report
        from biasbench.report.load import read_json

        paths = build_report(run_dir, Settings(n_permutations=n_permutations, mdg_sims=mdg_sims))
        full = read_json(paths["json"]) or {}
        block = full.get("judge") or {}
        for line in block.get("lines") or []:
            _say(line)
        _say(f"Report: {paths['markdown']}")
        failed = block.get("n_failed", 0)
    else:
        from biasbench.report.load import load_run

        run = load_run(run_dir)
        outcomes = judge_outcomes(run.path, run.table, run.table_file)
        _say(failure_line(outcomes))
        _say(agreement_sentence(outcomes["agreement"]))
        failed = outcomes["n_failed"]
    if failed:
        raise typer.Exit(EXIT_FAILED)


@judge_app.command("agreement")
def agreement_command(
    labels: Path = typer.Argument(..., help="labelled pairs: .jsonl or .csv with prompt, answer_a, answer_b, "
                                  "human (a, b or tie)"),
    judge: str = typer.Option(..., "--judge", "-j", help=SPEC_HELP),
    run_dir: Optional[Path] = typer.Option(None, "--run", help="a run directory: record the agreement there "
                                           "(its report states it) and cache the judgements in it"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="also write the result as JSON here"),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="judgements per judge call"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server for openai: judges"),
    device: str = typer.Option("auto", help="hf-text judges: auto, cpu, cuda ..."),
    max_new_tokens: int = typer.Option(256, min=8, help="longest judge reply"),
):
    """Measure a judge's agreement with human preferences, and its position bias, on a labelled set."""
    import json

    from biasbench.errors import BiasbenchError
    from biasbench.formats import dumps

    from .agreement import agreement_lines, asker, load_labels, measure
    from .backend import load_judge
    from .compare import AGREEMENT
    from .store import FILE, JudgementStore

    pairs = load_labels(labels)
    if run_dir is not None and not (run_dir / "manifest.json").is_file():
        raise BiasbenchError(f"--run {run_dir}: not a run directory (no manifest.json)")
    loaded = load_judge(judge, base_url=base_url, device=device, max_new_tokens=max_new_tokens)
    store = JudgementStore(run_dir / FILE) if run_dir is not None else None
    try:
        result = measure(pairs, asker(loaded, store, batch_size, label=f"labels:{labels.name}"))
    finally:
        if store is not None:
            store.close()
    result.update(labels=labels.name, judge=loaded.name, identity=loaded.identity)
    for line in agreement_lines(result, loaded.name):
        _say(line)
    if loaded.note:
        _say(loaded.note)
    if output is not None:
        output.write_text(dumps(result, indent=2), encoding="utf-8")
    if run_dir is not None:
        path = run_dir / AGREEMENT
        known = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        known[loaded.identity] = result
        path.write_text(dumps(known, indent=2), encoding="utf-8")
        _say(f"Recorded in {path}; `biasbench report {run_dir}` states it beside the judge's results.")
    if result["n_failed"]:
        raise typer.Exit(EXIT_FAILED)
