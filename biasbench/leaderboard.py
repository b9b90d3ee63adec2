"""The leaderboard: one row per (model, backend, precision, quantisation, adapter, task, pool,
harness version), filled only from real runs, with the numbers of each run's report.

`biasbench leaderboard add RUN_DIR` reads the run's report.json (building the report first
when it is missing or stale), so a leaderboard row and the run's report never disagree.
Adding the same run twice leaves one row; a newer run with the same key replaces the old
row. Every column is documented in leaderboard/SCHEMA.md.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from biasbench.errors import BiasbenchError
from biasbench.paths import project_root

LEADERBOARD_SCHEMA = 1
KEY = ["model", "backend", "precision", "quantisation", "adapter", "task", "pool", "harness_version"]
GROUP_COLUMNS = {"gender": ["female", "male"], "ethnicity": ["black", "east_asian", "white"]}
COLUMNS = [*KEY, "metric", "n_items", "n_voices", "voices_per_cell", "score", "text_control_score",
           *[f"score_{label}" for labels in GROUP_COLUMNS.values() for label in labels], "other_group_scores",
           "gap_grouping", "gap_between", "gap", "gap_ci_low", "gap_ci_high", "gap_unit", "p_value", "p_corrected",
           "correction", "significant", "invalid_rate", "pipeline_check", "label_sources", "run_id", "run_date",
           "identity_hash", "schema_version"]
SHOWN = ["task", "model", "backend", "precision", "quantisation", "adapter", "metric", "score", "gap_grouping",
         "gap_between", "gap", "gap_ci_low", "gap_ci_high", "p_corrected", "n_voices", "n_items", "pipeline_check",
         "label_sources", "run_date"]
RATE_UNIT = "proportion (0-1)"

leaderboard_app = typer.Typer(no_args_is_help=True, help="The leaderboard: add runs, show it, render its page.")
console = Console(stderr=True, soft_wrap=True)
out = Console()


def default_board() -> Path:
    return project_root() / "leaderboard" / "leaderboard.csv"


# ---------------------------------------------------------------- rows from runs


def run_report(run_dir: Path, *, allow_pipeline_check: bool = False, settings=None) -> dict:
    """The run's report.json, after the checks a leaderboard row needs (rebuilt when stale,
    with `settings`, a biasbench.report.Settings; default: the report's defaults)."""
    from biasbench.report import REPORT_SCHEMA, build_report, load_run
    from biasbench.report.load import read_json

    run = load_run(run_dir)
    manifest, manifest_path = run.manifest, run.path / "manifest.json"
    if manifest.get("complete") is not True or not manifest.get("finished_at"):
        raise BiasbenchError(f"{manifest_path} says the run is incomplete (complete: {manifest.get('complete')}, "
                             f"{manifest.get('n_responses')} responses stored): finish it with the same `biasbench "
                             "run` command and --resume before adding it to the leaderboard.")
    pipeline = bool(manifest["model"].get("pipeline_check") or manifest.get("pipeline_check"))
    if pipeline and not allow_pipeline_check:
        raise BiasbenchError(f"{manifest_path} marks a PIPELINE CHECK (a tiny random model or a simulation "
                             "answered): its numbers measure no real model, so it is kept off the leaderboard. "
                             "Pass --allow-pipeline-check to add it anyway, flagged in the pipeline_check column.")
    report = read_json(run.path / "report.json")
    current = report and report.get("report_schema") == REPORT_SCHEMA and all(
        report["run"].get(key) == manifest.get(key) for key in ("identity_hash", "finished_at", "n_responses"))
    if not current:
        build_report(run.path, settings)
        report = read_json(run.path / "report.json")
    return report


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def headline(report: dict) -> tuple[str, dict] | tuple[None, None]:
    """The grouping with the largest gap (JSD for distributions) among gender, ethnicity and cells."""
    primary = report["sections"]["primary"]
    best, best_size = (None, None), -1.0
    for gname, block in primary["groupings"].items():
        size = block["result"].get("jsd") if primary["kind"] == "categorical" else block["gap"]["gap"]
        if size is not None and size > best_size:
            best, best_size = (gname, block), size
    return best


def gap_columns(report: dict) -> dict:
    primary = report["sections"]["primary"]
    gname, block = headline(report)
    if block is None:
        return {}
    holm = report["corrections"]["holm"]
    common = {"gap_grouping": gname, "p_corrected": _number(block.get("p_holm")),
              "correction": f"Holm over the report's family ({len(holm['labels']) - len(holm['left_out'])} tests)",
              "significant": _number(block.get("p_holm") is not None and block["p_holm"] < report["settings"]["alpha"])}
    if primary["kind"] == "categorical":
        result, jsd = block["result"], (block["result"].get("tests") or {}).get("permutation_jsd") or {}
        big = block.get("largest_difference") or {}
        return {**common, "gap": _number(result.get("jsd")), "gap_unit": "Jensen-Shannon divergence (bits)",
                "gap_between": "; ".join(sorted(result.get("distributions") or {})) if not big else
                f"{big['high_group']} - {big['low_group']} (largest: {big['category']})",
                "p_value": _number(jsd.get("p_value"))}
    gap = block["gap"]
    ci = gap["ci"] or [None, None]
    unit = RATE_UNIT if primary["kind"] == "binary" or primary.get("scale") == "share" else (
        "relative to the mean" if primary.get("relative_to") else primary.get("unit") or "value")
    between = f"{gap['highest']} - {gap['lowest']}" if gap["gap"] else "all groups equal"
    return {**common, "gap": _number(gap["gap"]), "gap_ci_low": _number(ci[0]), "gap_ci_high": _number(ci[1]),
            "gap_unit": unit, "gap_between": between, "p_value": _number(gap["p_value"])}


def group_scores(report: dict) -> dict:
    primary = report["sections"]["primary"]
    if primary["kind"] == "categorical":
        return {}
    row, other = {}, []
    for gname, labels in GROUP_COLUMNS.items():
        for label, value in primary["groupings"][gname]["gap"]["estimates"].items():
            if label in labels:
                row[f"score_{label}"] = _number(value)
            else:
                other.append(f"{gname}:{label}={_number(value)}")
    return {**row, "other_group_scores": "; ".join(other)}


def row_from_report(report: dict) -> dict:
    run, design = report["run"], report["design"]
    counts = report["sections"]["invalid"]["status_counts"]
    total = sum(counts.values())
    control = report.get("text_control") or {}
    row = {
        "model": run["model"], "backend": run["backend"], "precision": run["precision"],
        "quantisation": run["quantisation"], "adapter": run["adapter"], "task": run["task"], "pool": run["pool"],
        "harness_version": run["harness_version"], "metric": report["sections"]["primary"]["name"],
        "n_items": design["n_items"], "n_voices": design["n_voices"], "voices_per_cell": design["min_voices_per_cell"],
        "score": _number(report["sections"].get("overall")), "text_control_score": _number(control.get("estimate")),
        "invalid_rate": _number(1 - counts.get("valid", 0) / total if total else None),
        "pipeline_check": _number(run["pipeline_check"]), "label_sources": ";".join(run["label_sources"]),
        "run_id": run["run_id"], "run_date": run["finished_at"] or "", "identity_hash": run["identity_hash"] or "",
        "schema_version": LEADERBOARD_SCHEMA,
        **group_scores(report), **gap_columns(report)}
    return {c: row[c] if isinstance(row.get(c), str) else _number(row.get(c)) for c in COLUMNS}


# ---------------------------------------------------------------- the CSV


def read_board(path: Path) -> list[dict]:
    if not path.is_file() or not path.read_text(encoding="utf-8").strip():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != COLUMNS:
            found = ", ".join(reader.fieldnames or [])
            raise BiasbenchError(f"{path} has the columns of another leaderboard schema (expected schema "
                                 f"{LEADERBOARD_SCHEMA}: {', '.join(COLUMNS)}; found {found}). "
                                 "Move it aside and add the runs again.")
        return list(reader)


def write_board(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: [r[k] for k in ("task", *KEY)]))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)


def add_run(run_dir, board: Path | None = None, *, allow_pipeline_check: bool = False,
            settings=None) -> tuple[dict, str]:
    """Add (or replace) the run's row; returns (row, 'added' | 'replaced' | 'unchanged')."""
    board = Path(board or default_board())
    rows = read_board(board)
    row = row_from_report(run_report(Path(run_dir), allow_pipeline_check=allow_pipeline_check, settings=settings))
    same = [i for i, r in enumerate(rows) if [r[k] for k in KEY] == [row[k] for k in KEY]]
    action = "added"
    if same:
        action = "unchanged" if rows[same[0]] == row else "replaced"
        rows = [r for i, r in enumerate(rows) if i not in same]
    write_board(board, [*rows, row])
    return row, action


def sort_rows(rows: list[dict], column: str, descending: bool = False) -> list[dict]:
    if column not in COLUMNS:
        raise BiasbenchError(f"unknown column {column!r}; the columns are {', '.join(COLUMNS)}")
    def key(row):
        text = row[column]
        try:
            return (0, float(text), "")
        except ValueError:
            return (0 if text else 1, math.inf, text)
    filled = [r for r in rows if r[column] != ""]
    empty = [r for r in rows if r[column] == ""]
    return sorted(filled, key=key, reverse=descending) + empty  # empty cells last either way


# ---------------------------------------------------------------- commands


@leaderboard_app.command("add")
def add_command(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    board: Optional[Path] = typer.Option(None, "--file",
                                         help="the leaderboard CSV (default leaderboard/leaderboard.csv)"),
    allow_pipeline_check: bool = typer.Option(False, "--allow-pipeline-check",
                                              help="add a pipeline-check run (flagged) instead of refusing it"),
):
    """Add a run's row (the same run twice leaves one row; a newer run with the same key replaces it)."""
    row, action = add_run(run_dir, board, allow_pipeline_check=allow_pipeline_check)
    console.print(f"{action}: {row['model']} / {row['task']} / {row['pool']} (run {row['run_id']}) in "
                  f"{board or default_board()}", highlight=False)


@leaderboard_app.command("show")
def show_command(
    sort: Optional[str] = typer.Option(None, "--sort", help="sort by this column"),
    descending: bool = typer.Option(False, "--descending", help="largest first"),
    task: Optional[str] = typer.Option(None, "--task", help="only this task"),
    board: Optional[Path] = typer.Option(None, "--file", help="the leaderboard CSV"),
):
    """Print the leaderboard as a table."""
    rows = read_board(Path(board or default_board()))
    rows = [r for r in rows if task is None or r["task"] == task]
    if sort:
        rows = sort_rows(rows, sort, descending)
    table = Table(*TERMINAL, title=f"biasbench leaderboard ({len(rows)} rows, {board or default_board()})")
    for row in rows:
        table.add_row(*[Text(cell(row)) for cell in TERMINAL.values()])  # Text: no markup in cells
    out.print(table)


@leaderboard_app.command("render")
def render_command(
    board: Optional[Path] = typer.Option(None, "--file", help="the leaderboard CSV"),
    output: Optional[Path] = typer.Option(None, "--output", help="the page (default: index.html beside the CSV)"),
):
    """Write a static, self-contained index.html: a sortable table and a plot of the gaps."""
    board = Path(board or default_board())
    path = render_page(board, output)
    console.print(f"wrote {path}", highlight=False)


TERMINAL = {
    "task": lambda r: r["task"],
    "model": lambda r: f"{r['model']} [{r['backend']}, {r['precision']}, quant {r['quantisation']}, "
                       f"adapter {r['adapter']}]",
    "metric": lambda r: r["metric"],
    "score": lambda r: display(r, "score"),
    "largest gap": lambda r: " ".join(filter(None, [
        display(r, "gap"), f"({display(r, 'gap_ci_low')} to {display(r, 'gap_ci_high')})" if r["gap_ci_low"] else "",
        f"{r['gap_grouping']}: {r['gap_between']}" if r["gap_grouping"] else ""])),
    "p (Holm)": lambda r: display(r, "p_corrected"),
    "voices x items": lambda r: f"{r['n_voices']} x {r['n_items']}",
    "pipeline check": lambda r: "YES" if r["pipeline_check"] == "true" else "",
    "run": lambda r: f"{r['run_id']} ({r['run_date'][:10]})",
}


def display(row: dict, column: str) -> str:
    """A cell for people: rates as percentages, p-values short, the rest as stored."""
    text = row[column]
    if text == "":
        return ""
    rate_unit = row["gap_unit"] == RATE_UNIT
    if column in ("gap", "gap_ci_low", "gap_ci_high") and rate_unit:
        return f"{100 * float(text):.1f} pts"
    if (column == "score" or column.startswith("score_") or column == "text_control_score") and rate_unit:
        return f"{100 * float(text):.1f}%"
    if column in ("p_value", "p_corrected"):
        return f"{float(text):.2g}"
    if column in ("score", "gap", "gap_ci_low", "gap_ci_high", "invalid_rate"):
        return f"{float(text):.4g}"
    return text


# ---------------------------------------------------------------- the page


def render_page(board: Path, output: Path | None = None) -> Path:
    from jinja2 import Environment, select_autoescape

    rows = read_board(board)
    output = Path(output or board.with_name("index.html"))
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(PAGE).render(
        columns=SHOWN, rows=[{"id": r["run_id"], "cells": [(display(r, c), r[c]) for c in SHOWN]} for r in rows],
        plot=gap_plot(rows), schema=LEADERBOARD_SCHEMA, source=board.name, script=SORT_SCRIPT)
    output.write_text(html, encoding="utf-8")
    return output


def gap_plot(rows: list[dict]) -> str | None:
    """Base64 PNG: each row's largest gap with its CI, one panel per unit."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["gap"] != ""]
    if not rows:
        return None
    units = sorted({r["gap_unit"] for r in rows})
    fig, axes = plt.subplots(len(units), 1, figsize=(9, 0.45 * len(rows) + 1.5 * len(units)), squeeze=False)
    for ax, unit in zip(axes[:, 0], units):
        part = [r for r in rows if r["gap_unit"] == unit]
        scale = 100.0 if unit == RATE_UNIT else 1.0
        for y, r in enumerate(part):
            gap = float(r["gap"]) * scale
            if r["gap_ci_low"] != "":
                low, high = float(r["gap_ci_low"]) * scale, float(r["gap_ci_high"]) * scale
                ax.errorbar([gap], [y], xerr=[[max(0.0, gap - low)], [max(0.0, high - gap)]], fmt="o", capsize=3)
            else:
                ax.plot([gap], [y], "o")
        ax.set_yticks(range(len(part)), [f"{r['model']} / {r['task']} ({r['gap_grouping']})" for r in part], fontsize=8)
        ax.axvline(0, color="0.4", lw=1)
        ax.set_xlabel(f"largest gap ({'percentage points' if scale == 100 else unit}), 95% CI")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


SORT_SCRIPT = """
(function () {
  var table = document.getElementById('board');
  if (!table) { return; }
  var headers = table.tHead.rows[0].cells;
  function key(cell) {
    var raw = cell.getAttribute('data-sort');
    var n = parseFloat(raw);
    return (raw !== '' && !isNaN(n) && isFinite(raw)) ? {n: n} : {s: raw.toLowerCase()};
  }
  function compare(a, b) {
    if (a.n !== undefined && b.n !== undefined) { return a.n - b.n; }
    if (a.n !== undefined) { return -1; }
    if (b.n !== undefined) { return 1; }
    return a.s < b.s ? -1 : (a.s > b.s ? 1 : 0);
  }
  Array.prototype.forEach.call(headers, function (th, index) {
    th.addEventListener('click', function () {
      var ascending = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(headers, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (r1, r2) {
        var c = compare(key(r1.cells[index]), key(r2.cells[index]));
        return ascending ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>biasbench leaderboard</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
.note { color: #555; max-width: 60em; }
</style>
</head>
<body>
<h1>biasbench leaderboard</h1>
<p class="note">One row per model, backend, precision, quantisation, adapter, task, voice pool and harness version,
from real runs only (schema {{ schema }}, from {{ source }}; every column is described in SCHEMA.md). The gap is the
largest difference between voice groups, with its 95% cluster-bootstrap CI; p is the voice-level permutation test,
Holm-corrected within the run's report. Rows marked as pipeline checks measure no real model. Click a column header
to sort.</p>
{% if rows %}
<table id="board">
<thead><tr>{% for c in columns %}<th scope="col" data-column="{{ c }}">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr data-run-id="{{ row.id }}">
{% for shown, raw in row.cells %}<td data-sort="{{ raw }}">{{ shown }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
{% else %}
<p><strong>No rows yet.</strong> Add a finished run with <code>biasbench leaderboard add RUN_DIR</code>.</p>
{% endif %}
{% if plot %}<h2>Largest gap per row</h2>
<img alt="largest gap per row with its 95% CI" src="data:image/png;base64,{{ plot }}">{% endif %}
<script>{{ script | safe }}</script>
</body>
</html>
"""
