"""build_report(run_dir): report.json, report.md (+ its figures) and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

from biasbench.formats import dumps
from .analyze import Settings, analyze_run
from .document import build_blocks
from .figures import draw_all
from .load import load_run
from .render import to_html, to_markdown

FIGURE_DIR = "report_figures"


def build_report(run_dir, settings: Settings | None = None) -> dict[str, Path]:
    """Analyse the run at `run_dir` and write its report files there; returns their paths."""
    run = load_run(run_dir)
    report = analyze_run(run, settings)
    figures = draw_all(report)
    report["figures"] = {name: {"file": f"{FIGURE_DIR}/{name}.png", "caption": caption}
                         for name, (_, caption) in figures.items()}
    blocks = build_blocks(report, figures)
    paths = write_files(Path(run.path), report, blocks, figures)
    refresh_summary(Path(run.path), report)
    return paths


def refresh_summary(path: Path, report: dict) -> None:
    """Put the primary result at the top of the run's summary.md (and into summary.json), so
    the summary states the very record the report and the leaderboard state."""
    from biasbench.analysis.summary import to_markdown

    from .load import read_json
    from .judge import judge_markdown
    from .primary import primary_markdown

    summary = read_json(path / "summary.json")
    if not summary or "groupings" not in summary:
        return
    from biasbench.analysis.results import plain

    summary = plain({**summary, "primary": report["primary"]})  # NaN -> None: strict JSON
    run = report["run"]
    title = f"{run['task']} — {run['model']} — pool {run['pool']}"
    _write(path / "summary.json", dumps(summary, indent=2))
    _write(path / "summary.md", to_markdown(summary, title=title, banner=summary.get("banner", ""),
                                            primary=primary_markdown(report["primary"]) + judge_markdown(report)))


def write_files(path: Path, report: dict, blocks: list[dict], figures: dict) -> dict[str, Path]:
    paths = {"json": path / "report.json", "markdown": path / "report.md", "html": path / "report.html"}
    figure_dir = path / FIGURE_DIR
    if figures:
        figure_dir.mkdir(exist_ok=True)
    for name, (png, _) in figures.items():
        paths[f"figure:{name}"] = figure_dir / f"{name}.png"
        paths[f"figure:{name}"].write_bytes(png)
    _write(paths["json"], dumps(report, indent=2))
    _write(paths["markdown"], to_markdown(blocks, FIGURE_DIR))
    _write(paths["html"], to_html(blocks, figures))
    return paths


def _write(path: Path, text: str) -> None:
    """Write then rename, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
