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

from biasbench.errors import BiasbenchError
from biasbench.formats import restore_cell, safe_row
from biasbench.listing import table_or_blocks

LEADERBOARD_SCHEMA = 3
KEY = ["model", "revision", "backend", "precision", "quantisation", "adapter", "task", "pool", "data_source",
       "harness_version", "outcome"]  # outcome: an open-answer task declaring several has a row for each
GROUP_COLUMNS = {"gender": ["female", "male"], "ethnicity": ["black", "east_asian", "white"]}
#: The declared groupings of the primary analysis, and the prefix of their column sets.
GROUPINGS = {"gender": "gender", "ethnicity": "ethnicity", "gender x ethnicity": "gender_x_ethnicity"}
GAP_FIELDS = ["gap", "between", "ci_low", "ci_high", "p", "p_corrected", "significant"]
GAP_COLUMNS = [f"{prefix}_{field}" for prefix in GROUPINGS.values() for field in GAP_FIELDS]
COLUMNS = [*(k for k in KEY if k != "outcome"), "outcome", "unit", "n_items", "n_items_tested", "n_voices",
           "voices_per_cell", "score",
           "text_control_score",
           *[f"score_{label}" for labels in GROUP_COLUMNS.values() for label in labels], "other_group_scores",
           *GAP_COLUMNS, "ci_level", "correction", "items", "invalid_rate", "pipeline_check", "label_sources", "run_id",
           "run_date", "identity_hash", "schema_version"]
#: Columns that must hold a number (or be empty): a hand edit that breaks one is named, not crashed on.
#: Schema 2 lacked n_items_tested; its rows are read with that cell empty (written back as schema 3).
COLUMNS_V2 = [c for c in COLUMNS if c != "n_items_tested"]
NUMERIC = {"n_items", "n_items_tested", "n_voices", "voices_per_cell", "score", "text_control_score", "invalid_rate", "ci_level",
           "schema_version", *[f"score_{label}" for labels in GROUP_COLUMNS.values() for label in labels],
           *[c for c in GAP_COLUMNS if not c.endswith(("_between", "_significant"))]}
BOOLEAN = {"pipeline_check", *[c for c in GAP_COLUMNS if c.endswith("_significant")]}
SHOWN = ["task", "model", "revision", "backend", "precision", "quantisation", "adapter", "outcome", "unit", "score",
         *[f"{prefix}_{field}" for prefix in GROUPINGS.values() for field in ("gap", "ci_low", "ci_high", "p_corrected")],
         "n_voices", "n_items", "pipeline_check", "label_sources", "run_date"]
RATE_UNIT = "proportion (0-1)"

leaderboard_app = typer.Typer(no_args_is_help=True, help="The leaderboard: add runs, show it, render its page.")
console = Console(stderr=True, soft_wrap=True)
out = Console()


def default_board() -> Path:
    """`./leaderboard/leaderboard.csv` under the current directory (the repository's own file when
    run from a checkout): never a file inside the installed package."""
    return Path.cwd() / "leaderboard" / "leaderboard.csv"


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


def primary_columns(report: dict, record: dict | None = None) -> dict:
    """One column set per declared grouping, copied from the report's primary record
    (report/primary.py): the same numbers the run's summary and report state. `record`: one
    outcome's record of it (default the first declared outcome)."""
    record = record or report["primary"]
    levels = {r.get("ci_level") for r in record["groupings"].values()} - {None}
    row = {"outcome": record["outcome"], "unit": record["unit"], "correction": record["correction"],
           "items": record["items"], "ci_level": levels.pop() if len(levels) == 1 else None}
    for gname, prefix in GROUPINGS.items():
        r = record["groupings"].get(gname)
        if r is None:  # not declared by the task: not a primary result, so not on the board
            continue
        ci = r["ci"] or [None, None]
        row.update({f"{prefix}_gap": r["gap"], f"{prefix}_between": r["between"], f"{prefix}_ci_low": ci[0],
                    f"{prefix}_ci_high": ci[1], f"{prefix}_p": r["p_value"], f"{prefix}_p_corrected": r["p_corrected"],
                    f"{prefix}_significant": r["significant"] if r["p_value"] is not None else None})
    return row


def group_scores(report: dict, primary: dict | None = None) -> dict:
    primary = primary or report["sections"]["primary"]
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


def rows_from_report(report: dict) -> list[dict]:
    """One row per declared primary outcome (one, unless an open-answer task declares several)."""
    from biasbench.report.primary import primary_sections

    records = report["primary"].get("outcomes") or [report["primary"]]
    return [row_from_report(report, record, section) for record, section in zip(records, primary_sections(report))]


def row_from_report(report: dict, record: dict | None = None, section: dict | None = None) -> dict:
    """The row of one primary outcome (default the first): `record` its primary record, `section` its section."""
    from biasbench.report.primary import items_tested

    run, design = report["run"], report["design"]
    first = section is None or section is report["sections"]["primary"]
    # the text control is compared on the first outcome only; another outcome's score is its own section's
    score = report["sections"].get("overall") if first else section.get("overall")
    counts = report["sections"]["invalid"]["status_counts"]
    total = sum(counts.values())
    control = report.get("text_control") or {}
    row = {
        "model": run["model"], "revision": run["revision"], "backend": run["backend"], "precision": run["precision"],
        "quantisation": run["quantisation"], "adapter": run["adapter"], "task": run["task"], "pool": run["pool"],
        "data_source": run["data_source"], "harness_version": run["harness_version"],
        "n_items": design["n_items"], "n_items_tested": items_tested([record or report["primary"]]),
        "n_voices": design["n_voices"], "voices_per_cell": design["min_voices_per_cell"],
        "score": _number(score), "text_control_score": _number(control.get("estimate") if first else None),
        "invalid_rate": _number(1 - counts.get("valid", 0) / total if total else None),
        "pipeline_check": _number(run["pipeline_check"]), "label_sources": ";".join(run["label_sources"]),
        "run_id": run["run_id"], "run_date": run["finished_at"] or "", "identity_hash": run["identity_hash"] or "",
        "schema_version": LEADERBOARD_SCHEMA,
        **group_scores(report, section), **primary_columns(report, record)}
    return {c: row[c] if isinstance(row.get(c), str) else _number(row.get(c)) for c in COLUMNS}


# ---------------------------------------------------------------- the CSV


def read_board(path: Path, *, must_exist: bool = False) -> list[dict]:
    """The board's rows, checked: a hand edit that breaks a row names the line, column and value.
    A board not yet made has no rows (`add` creates it) unless `must_exist` (show, render)."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise BiasbenchError(f"leaderboard file {path} is not a file (a folder?); pass the CSV with --file")
    if must_exist and not path.exists():
        raise BiasbenchError(f"leaderboard file {path} not found" + (
            " (the default is leaderboard/leaderboard.csv under the current folder; pass --file)"
            if path == default_board() else "") + "; `biasbench leaderboard add RUN_DIR` creates one")
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise BiasbenchError(f"{path} cannot be read as a UTF-8 CSV: {exc}") from None
    if not text.strip():
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        lines = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise BiasbenchError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from None
    if header == COLUMNS_V2:  # schema 2: the same columns less n_items_tested (unknown for those runs)
        lines = [(n, [*row[:COLUMNS_V2.index("n_voices")], "", *row[COLUMNS_V2.index("n_voices"):]] if row else row)
                 for n, row in lines]
    elif header != COLUMNS:
        raise BiasbenchError(f"{path} has the columns of another leaderboard schema (expected schema "
                             f"{LEADERBOARD_SCHEMA}: {', '.join(COLUMNS)}; found {', '.join(header)}). "
                             "Move it aside and add the runs again.")
    return [check_row(path, number, row) for number, row in lines if row]


def check_row(path: Path, line: int, cells: list[str]) -> dict:
    if len(cells) != len(COLUMNS):
        raise BiasbenchError(f"{path}, line {line}: {len(cells)} cells where the header has {len(COLUMNS)}; "
                             "fix or delete that row (every other row is kept)")
    row = dict(zip(COLUMNS, map(restore_cell, cells)))  # a formula's guard apostrophe is not part of the value
    for column in NUMERIC:
        if row[column] != "":
            try:
                float(row[column])
            except ValueError:
                raise BiasbenchError(f"{path}, line {line}, column {column}: {row[column]!r} is not a number "
                                     "(expected a number or an empty cell)") from None
    for column in BOOLEAN:
        if row[column] not in ("", "true", "false"):
            raise BiasbenchError(f"{path}, line {line}, column {column}: {row[column]!r} (expected true, false or "
                                 "an empty cell)")
    return row


def write_board(path: Path, rows: list[dict]) -> None:
    """Write all rows to a temporary file and rename it into place: a reader never sees half a
    board, and a failed write leaves the old board whole. Text cells are spreadsheet-safe (a
    hand-edited `=cmd|...` is written as text); numbers stay numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(safe_row(row) for row in sorted(rows, key=lambda r: [r[k] for k in ("task", *KEY)]))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(path)


def add_run(run_dir, board: Path | None = None, *, allow_pipeline_check: bool = False,
            settings=None) -> tuple[dict, str]:
    """Add (or replace) the run's row; returns (row, 'added' | 'replaced' | 'unchanged')."""
    board = Path(board or default_board())
    rows = read_board(board)  # first: a broken board is refused before any work
    new = rows_from_report(run_report(Path(run_dir), allow_pipeline_check=allow_pipeline_check, settings=settings))
    actions = []
    for row in new:
        same = [i for i, r in enumerate(rows) if [r[k] for k in KEY] == [row[k] for k in KEY]]
        actions.append("unchanged" if same and rows[same[0]] == row else "replaced" if same else "added")
        rows = [r for i, r in enumerate(rows) if i not in same]
    write_board(board, [*rows, *new])
    action = actions[0] if len(set(actions)) == 1 else "updated"
    return new[0], action if len(new) == 1 else f"{action} ({len(new)} rows: one per primary outcome)"


def sort_rows(rows: list[dict], column: str, descending: bool = False) -> list[dict]:
    """Sort by a column; numbers in different units are never ranked against each other: rows
    are grouped by `unit` first (in a fixed order), then sorted within each unit."""
    if column not in COLUMNS:
        raise BiasbenchError(f"unknown column {column!r}; the columns are {', '.join(COLUMNS)}")

    def key(row):
        text = row[column]
        try:
            return (0, float(text), "")
        except ValueError:
            return (0 if text else 1, math.inf, text)

    out = []
    by_unit = column in NUMERIC and column not in ("n_items", "n_items_tested", "n_voices", "voices_per_cell",
                                                    "schema_version")
    for unit in sorted({r["unit"] for r in rows}) if by_unit else [None]:
        part = [r for r in rows if unit is None or r["unit"] == unit]
        filled = [r for r in part if r[column] != ""]
        empty = [r for r in part if r[column] == ""]
        out += sorted(filled, key=key, reverse=descending) + empty  # empty cells last either way
    return out


def by_model(rows: list[dict]) -> tuple[list[str], list[dict]]:
    """One row per model configuration, a column per task: the task's primary verdict by gender,
    ethnicity and gender x ethnicity (the same cells as the long table)."""
    model_key = ["model", "revision", "backend", "precision", "quantisation", "adapter"]
    tasks = sorted({r["task"] for r in rows})
    table: dict[tuple, dict] = {}
    for r in rows:
        entry = table.setdefault(tuple(r[k] for k in model_key), {k: r[k] for k in model_key})
        entry.setdefault("pipeline_check", r["pipeline_check"])
        verdict = "; ".join(f"{name}: {verdict_text(r, prefix)}" for name, prefix in GROUPINGS.items()
                            if r[f"{prefix}_p_corrected"] != "" or r[f"{prefix}_gap"] != "")
        entry[r["task"]] = f"{verdict} [{r['pool']}]" if verdict else f"no primary result [{r['pool']}]"
    return tasks, list(table.values())


def verdict_text(row: dict, prefix: str) -> str:
    gap = display(row, f"{prefix}_gap") + ("" if row["unit"] == RATE_UNIT else f" {row['unit']}")
    p = display(row, f"{prefix}_p_corrected")
    star = " (significant)" if row[f"{prefix}_significant"] == "true" else ""
    return f"{gap}, p {p}{star}" if p else gap


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
    sort: Optional[str] = typer.Option(None, "--sort", help="sort by this column (within each unit)"),
    descending: bool = typer.Option(False, "--descending", help="largest first"),
    task: Optional[str] = typer.Option(None, "--task", help="only this task"),
    models: bool = typer.Option(False, "--by-model", help="one row per model, a column per task"),
    board: Optional[Path] = typer.Option(None, "--file", help="the leaderboard CSV"),
):
    """Print the leaderboard: a table where it fits the terminal, else one block per row."""
    path = Path(board or default_board())
    rows = read_board(path, must_exist=True)
    rows = [r for r in rows if task is None or r["task"] == task]
    if sort:
        rows = sort_rows(rows, sort, descending)
    if models:
        tasks, entries = by_model(rows)
        shown = [{"model": model_text(e), **{t: e.get(t, "") for t in tasks},
                  "pipeline check": "YES" if e["pipeline_check"] == "true" else ""} for e in entries]
        table_or_blocks(out, shown, ["model", *tasks, "pipeline check"],
                        title=f"biasbench leaderboard by model ({path})", skip_empty=True)
    else:
        shown = [{name: cell(row) for name, cell in TERMINAL.items()} for row in rows]
        table_or_blocks(out, shown, list(TERMINAL), title=f"biasbench leaderboard ({len(rows)} rows, {path})",
                        whole_columns=2, skip_empty=True)


@leaderboard_app.command("render")
def render_command(
    board: Optional[Path] = typer.Option(None, "--file", help="the leaderboard CSV"),
    output: Optional[Path] = typer.Option(None, "--output", help="the page (default: index.html beside the CSV)"),
):
    """Write a static, self-contained index.html: sortable tables and plots of the gaps."""
    board = Path(board or default_board())
    read_board(board, must_exist=True)  # a mistyped --file is an error, not an empty page
    path = render_page(board, output)
    console.print(f"wrote {path}", highlight=False)


def model_text(r: dict) -> str:
    return (f"{r['model']} [{r['backend']}, rev {r['revision']}, {r['precision']}, quant {r['quantisation']}, "
            f"adapter {r['adapter']}]")


def gap_cell(r: dict, prefix: str) -> str:
    if r[f"{prefix}_gap"] == "":
        return ""
    ci = (f" ({display(r, f'{prefix}_ci_low')} to {display(r, f'{prefix}_ci_high')})"
          if r[f"{prefix}_ci_low"] != "" else "")
    star = "*" if r[f"{prefix}_significant"] == "true" else ""
    return f"{display(r, f'{prefix}_gap')}{ci} p={display(r, f'{prefix}_p_corrected')}{star}"


TERMINAL = {
    "task": lambda r: r["task"],
    "model": model_text,
    "outcome": lambda r: f"{r['outcome']} [{r['unit']}]",
    "score": lambda r: display(r, "score"),
    **{f"{name} gap (CI) p": (lambda r, prefix=prefix: gap_cell(r, prefix)) for name, prefix in GROUPINGS.items()},
    "voices x items": lambda r: f"{r['n_voices']} x {r['n_items']}" + (
        f" ({r['n_items_tested']} tested)" if r.get("n_items_tested") not in ("", None, r["n_items"]) else ""),
    "pipeline check": lambda r: "YES" if r["pipeline_check"] == "true" else "",
    "run": lambda r: f"{r['run_id']} ({r['run_date'][:10]})",
}


def display(row: dict, column: str) -> str:
    """A cell for people: proportions as percentages and points, p-values short, the rest as stored."""
    text = row[column]
    if text == "" or column not in NUMERIC:
        return text
    value, rate = float(text), row["unit"] == RATE_UNIT
    if column.endswith(("_p", "_p_corrected")):
        return f"{value:.2g}"
    if column.endswith(("_gap", "_ci_low", "_ci_high")):
        from biasbench.report.fmt import fixed, num

        return f"{fixed(100 * value, 1)} pts" if rate else num(value, 4)
    if (column == "score" or column.startswith("score_") or column == "text_control_score") and rate:
        return f"{100 * value:.1f}%"
    if column == "invalid_rate":
        return f"{100 * value:.1f}%"
    return f"{value:.4g}"


# ---------------------------------------------------------------- the page


def render_page(board: Path, output: Path | None = None) -> Path:
    from jinja2 import Environment, select_autoescape

    rows = read_board(board)
    output = Path(output or board.with_name("index.html"))
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    tasks, entries = by_model(rows)
    html = env.from_string(PAGE).render(
        columns=SHOWN, rows=[{"id": r["run_id"], "check": r["pipeline_check"] == "true",
                              "cells": [(display(r, c), r[c]) for c in SHOWN]} for r in rows],
        tasks=tasks, models=[{"name": model_text(e), "check": e["pipeline_check"] == "true",
                              "cells": [e.get(t, "") for t in tasks]} for e in entries],
        plots=gap_plots(rows), schema=LEADERBOARD_SCHEMA, source=board.name, script=SORT_SCRIPT)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(output)
    return output


def gap_plots(rows: list[dict]) -> list[dict]:
    """One base64 PNG per unit: each row's gap by each declared grouping, with its interval.
    A figure per unit, so no axis mixes proportions with JSD or currency."""
    import base64

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    for unit in sorted({r["unit"] for r in rows}):
        part = [r for r in rows if r["unit"] == unit]
        scale = 100.0 if unit == RATE_UNIT else 1.0
        fig, axes = plt.subplots(1, len(GROUPINGS), figsize=(12, 0.4 * len(part) + 1.6), sharey=True, squeeze=False)
        labels = [f"{r['model']} / {r['task']}" + (" [PIPELINE CHECK]" if r["pipeline_check"] == "true" else "")
                  for r in part]
        for ax, (name, prefix) in zip(axes[0], GROUPINGS.items()):
            for y, r in enumerate(part):
                if r[f"{prefix}_gap"] == "":
                    continue
                gap = float(r[f"{prefix}_gap"]) * scale
                color = "tab:red" if r[f"{prefix}_significant"] == "true" else "tab:blue"
                if r[f"{prefix}_ci_low"] != "":
                    low, high = float(r[f"{prefix}_ci_low"]) * scale, float(r[f"{prefix}_ci_high"]) * scale
                    ax.errorbar([gap], [y], xerr=[[gap - low], [high - gap]], fmt="o", capsize=3, color=color)
                else:
                    ax.plot([gap], [y], "o", color=color)
            ax.axvline(0, color="0.4", lw=1)
            ax.set_title(f"by {name}", fontsize=9)
            ax.set_xlabel("points" if scale == 100 else unit, fontsize=8)
        axes[0, 0].set_yticks(range(len(part)), labels, fontsize=8)
        axes[0, 0].invert_yaxis()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        plots.append({"unit": unit, "png": base64.b64encode(buffer.getvalue()).decode("ascii")})
    return plots


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
body { font-family: system-ui, sans-serif; margin: 2em; color: #1b1b1b; max-width: 100%; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tr.check td { background: #fff4d6; }
.badge { background: #b35900; color: #fff; border-radius: 3px; padding: 0 .3em; font-size: .8em; }
.note { color: #555; max-width: 60em; }
figure { margin: 1em 0; }
figure img { display: block; max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>biasbench leaderboard</h1>
<p class="note">One row per model, revision, backend, precision, quantisation, adapter, task, voice pool, data source
and harness version, from finished runs only (schema {{ schema }}, from {{ source }}; every column is described in
SCHEMA.md). Each row states the task's declared primary analysis: the gap between voice groups by gender, by
ethnicity and by gender x ethnicity, its interval (simultaneous over those tests, so it includes 0 whenever the gap is
not significant) and the voice-level permutation test, Bonferroni-corrected over those tests. Gaps are in the row's unit, never compared
across units. <span class="badge">PIPELINE CHECK</span> rows (shaded) measure no real model. Click a column header
to sort.</p>
{% if rows %}
<h2>By model</h2>
<div class="scroll"><table id="by-model">
<thead><tr><th scope="col">model</th>{% for t in tasks %}<th scope="col">{{ t }}</th>{% endfor %}</tr></thead>
<tbody>
{% for m in models %}<tr{% if m.check %} class="check"{% endif %}><td>{{ m.name }}{% if m.check %} <span class="badge">PIPELINE CHECK</span>{% endif %}</td>
{% for c in m.cells %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
<h2>Every row</h2>
<div class="scroll"><table id="board">
<thead><tr>{% for c in columns %}<th scope="col" data-column="{{ c }}">{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr data-run-id="{{ row.id }}"{% if row.check %} class="check"{% endif %}>
{% for shown, raw in row.cells %}<td data-sort="{{ raw }}">{{ shown }}{% if loop.index0 == 1 and row.check %} <span class="badge">PIPELINE CHECK</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
{% else %}
<p><strong>No rows yet.</strong> Add a finished run with <code>biasbench leaderboard add RUN_DIR</code>.</p>
{% endif %}
{% for plot in plots %}<figure><img alt="gap by grouping per row, {{ plot.unit }}, with intervals"
src="data:image/png;base64,{{ plot.png }}"><figcaption class="note">Gap between voice groups in {{ plot.unit }}, by
each declared grouping, with its interval (level in the ci_level column); red: significant after
correction.</figcaption></figure>
{% endfor %}
<script>{{ script | safe }}</script>
</body>
</html>
"""
