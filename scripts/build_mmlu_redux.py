"""Build the shipped MMLU-Redux table from the raw per-subject CSV files.

    python scripts/build_mmlu_redux.py --src /path/to/mmlu_redux [--out-dir tasks/data/mmlu_redux]

Writes mmlu_redux_clean.csv, DROPPED.md, README.md (provenance, citations, sha256) and
a copy of the LICENSE into the output folder. The output is deterministic: the same
raw files always give the same bytes, so the sha256 in README.md pins the table.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from biasbench.errors import BiasbenchError  # noqa: E402
from biasbench.tasks.mmlu_redux import filter_ok, normalise_mmlu_redux  # noqa: E402

CLEAN_NAME = "mmlu_redux_clean.csv"
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "tasks" / "data" / "mmlu_redux"

CITATIONS = """\
@misc{gema2024mmlu,
  title         = {Are We Done with MMLU?},
  author        = {Aryo Pradipta Gema and Joshua Ong Jun Leang and Giwon Hong and Alessio Devoto
                   and Alberto Carlo Maria Mancino and Rohit Saxena and Xuanli He and Yu Zhao
                   and Xiaotang Du and Mohammad Reza Ghasemi Madani and Claire Barale
                   and Robert McHardy and Joshua Harris and Jean Kaddour and Emile van Krieken
                   and Pasquale Minervini},
  year          = {2024},
  eprint        = {2406.04127},
  archivePrefix = {arXiv},
  primaryClass  = {cs.CL}
}

@inproceedings{hendrycks2021mmlu,
  title     = {Measuring Massive Multitask Language Understanding},
  author    = {Dan Hendrycks and Collin Burns and Steven Basart and Andy Zou
               and Mantas Mazeika and Dawn Song and Jacob Steinhardt},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2021}
}"""


def write_clean_csv(clean: pd.DataFrame, path: Path) -> str:
    """Write UTF-8, comma-separated, RFC 4180 quoting, LF line ends; return its sha256."""
    clean.to_csv(path, index=False, encoding="utf-8", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table(frame: pd.DataFrame) -> str:
    """A small Markdown table (no tabulate dependency)."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def dropped_report(clean: pd.DataFrame, dropped: pd.DataFrame) -> str:
    """DROPPED.md: unparseable rows, cp1252 files, and what the default `ok` filter removes."""
    encodings = clean.attrs.get("encodings", {})
    cp1252 = sorted(s for s, e in encodings.items() if e != "utf-8")
    ok = filter_ok(clean)
    removed = clean[clean["error_type"] != "ok"]
    parts = [
        "# MMLU-Redux: what was dropped or filtered",
        "",
        "Written by `scripts/build_mmlu_redux.py`; do not edit by hand.",
        "",
        f"- raw rows read: {len(clean) + len(dropped)} from {len(encodings)} subject files",
        f"- kept in `{CLEAN_NAME}`: {len(clean)}",
        f"- dropped as unparseable: {len(dropped)}",
        f"- left by the default `error_type == \"ok\"` filter: {len(ok)}",
        "",
        "## Rows dropped as unparseable",
        "",
    ]
    if dropped.empty:
        parts.append("None: every raw row parsed.")
    else:
        counts = dropped.groupby(["subject", "reason"]).size().reset_index(name="rows")
        parts += [_table(counts), "", "Each row:", "", _table(dropped)]
    parts += ["", "## Files that were not valid UTF-8", ""]
    if cp1252:
        parts += [f"- `mmlu_{s}.csv`: decoded as cp1252" for s in cp1252]
        parts += ["", "Non-ASCII characters in those subjects after decoding (check they read right):", ""]
        for subject in cp1252:
            text = " ".join(clean.loc[clean["subject"] == subject, ["question", "choices"]].to_numpy().ravel())
            odd = sorted({ch for ch in text if ord(ch) > 127})
            parts.append(f"- {subject}: " + (", ".join(f"`{c}` (U+{ord(c):04X})" for c in odd) or "none"))
    else:
        parts.append("None.")
    parts += [
        "",
        "## Rows the default `error_type == \"ok\"` filter removes",
        "",
        "These rows stay in the clean file with their `error_type`; a task keeps only `ok`",
        "rows unless it asks otherwise.",
        "",
    ]
    by_type = removed["error_type"].value_counts().rename_axis("error_type").reset_index(name="rows")
    parts += [_table(by_type), "", f"Total removed: {len(removed)}", ""]
    by_subject = pd.crosstab(removed["subject"], removed["error_type"]).reset_index()
    parts += ["Per subject:", "", _table(by_subject), ""]
    return "\n".join(parts)


def readme(clean: pd.DataFrame, dropped: pd.DataFrame, sha256: str) -> str:
    """README.md: provenance, licence, citations, changes and the clean file's hash."""
    n_ok = len(filter_ok(clean))
    return f"""# MMLU-Redux, cleaned for biasbench

`{CLEAN_NAME}`: {len(clean)} questions from {clean['subject'].nunique()} MMLU subjects
({n_ok} with `error_type == "ok"`). Built by `scripts/build_mmlu_redux.py`.

`{CLEAN_NAME}` sha256: `{sha256}`

## Source

- **MMLU-Redux**: Gema et al. 2024, "Are We Done with MMLU?", arXiv:2406.04127.
  100 questions from each of the 57 MMLU subjects, re-annotated by hand with an error
  taxonomy. Licence: CC BY 4.0 (copied here as `LICENSE`).
- **MMLU**: Hendrycks et al. 2021, "Measuring Massive Multitask Language Understanding",
  ICLR 2021. Licence: MIT. The question, choices and original key come from MMLU.

Cite both where this data is used:

```bibtex
{CITATIONS}
```

## Columns

| column | meaning |
|---|---|
| `item_id` | `<subject>/<row>`, the 0-based data row in the raw subject file, zero-padded to 3 digits; stable across rebuilds |
| `subject` | MMLU subject, from the raw file name `mmlu_<subject>.csv` |
| `question` | question text |
| `choices` | JSON list of exactly 4 non-empty strings |
| `answer` | original MMLU key, 0-3 |
| `error_type` | MMLU-Redux label: `ok`, `wrong_groundtruth`, `no_correct_answer`, `multiple_correct_answers`, `bad_question_clarity`, `bad_options_clarity`, `expert` |
| `correct_answer` | corrected key 0-3 where the annotators gave a single one, else empty |

## What was changed from the raw files

- Read each file with its own delimiter (`,` or `;`), column order and encoding (UTF-8,
  falling back to cp1252); dropped empty trailing header columns.
- `error_type`: trimmed, lower-cased, spaces to underscores (`Wrong Groundtruth ` ->
  `wrong_groundtruth`, `OK` -> `ok`).
- `choices`: parsed with `ast.literal_eval` and written as JSON.
- Question and choice text: line endings made `\\n`, outer whitespace trimmed; nothing else.
- `correct_answer`: kept only as a single key (`0`-`3`, or a letter `A`-`D` mapped to
  `0`-`3`) on rows whose `error_type` is not `ok`; free-text notes, several keys and
  out-of-range numbers became empty. On `ok` rows it is always empty: the original key
  stands.
- Dropped columns: `source`, `potential_reason`.
- Dropped {len(dropped)} rows that could not be parsed; see `DROPPED.md`, which also
  counts the rows the default `ok` filter removes.
"""


def build(src: Path, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    clean, dropped = normalise_mmlu_redux(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha256 = write_clean_csv(clean, out_dir / CLEAN_NAME)
    (out_dir / "DROPPED.md").write_text(dropped_report(clean, dropped), encoding="utf-8")
    (out_dir / "README.md").write_text(readme(clean, dropped, sha256), encoding="utf-8")
    licence = src / "LICENSE"
    if licence.is_file():
        shutil.copyfile(licence, out_dir / "LICENSE")
    else:
        print(f"warning: no LICENSE in {src}; the output folder has none", file=sys.stderr)
    return clean, dropped, sha256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="folder of raw mmlu_<subject>.csv files")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="default: tasks/data/mmlu_redux/")
    args = parser.parse_args(argv)
    try:
        clean, dropped, sha256 = build(args.src, args.out_dir)
    except BiasbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    n_ok = len(filter_ok(clean))
    print(f"kept {len(clean)}, dropped {len(dropped)}, ok-only {n_ok}; sha256 {sha256}")
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
