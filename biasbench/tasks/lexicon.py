"""Lexicons for generate_categorical tasks: a CSV mapping phrases to categories.

Required columns: `phrase` (what an answer may say) and `category` (what it means).
Any other column is an attribute of the category (e.g. a prestige score), carried into
the tidy table so reports can average it per group. Lines starting with '#' are comments
(a lexicon says there where its attribute figures come from).

An attribute may be given on every row of its category or only on some; rows of one
category must not disagree. An attribute column whose non-empty values are all numbers
is read as numbers (empty = missing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biasbench.errors import ConfigError
from biasbench.tasks.scoring import normalise_answer  # one way only: scoring knows no lexicon


@dataclass
class Lexicon:
    phrases: dict[str, str]  # normalised phrase -> category
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per category

    @property
    def categories(self) -> list[str]:
        return sorted(set(self.phrases.values()))


def category_phrases(config, task_path) -> dict[str, str]:
    """Normalised phrase -> category, from the YAML's `categories` and its `lexicon` CSV."""
    from biasbench.config import task_file

    phrases = {}
    if config.lexicon:
        phrases.update(load_lexicon(task_file(task_path, config.lexicon, "lexicon")).phrases)
    for category, names in (config.categories or {}).items():
        for name in [category, *names]:
            phrases[normalise_answer(name)] = category
    return phrases


def load_lexicon(path: Path) -> Lexicon:
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, comment="#")
    except FileNotFoundError:
        raise ConfigError(path, None, "lexicon file not found") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, f"unreadable lexicon: {exc}") from None
    for column in ("phrase", "category"):
        if column not in table.columns:
            raise ConfigError(path, column, f"lexicon needs columns 'phrase' and 'category'; it has {list(table.columns)}")
    table = table.apply(lambda column: column.str.strip())
    empty = table[(table["phrase"] == "") | (table["category"] == "")]
    if len(empty):
        raise ConfigError(path, "phrase", f"row {empty.index[0] + 2} has an empty phrase or category")
    phrases: dict[str, str] = {}
    for phrase, category in zip(table["phrase"], table["category"]):
        normal = normalise_answer(phrase)
        if not normal:
            raise ConfigError(path, "phrase", f"phrase {phrase!r} has no letters or digits")
        if phrases.get(normal, category) != category:
            raise ConfigError(path, "phrase", f"phrase {phrase!r} maps to both {phrases[normal]!r} and {category!r}")
        phrases[normal] = category
    extra = [c for c in table.columns if c not in ("phrase", "category")]
    return Lexicon(phrases, _attributes(table, extra, path) if extra else pd.DataFrame())


def _attributes(table: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    """One row per category: each attribute's (single) non-empty value, typed."""
    rows = []
    for category, block in table.groupby("category", sort=True):
        row = {"category": category}
        for column in columns:
            values = sorted(set(block[column]) - {""})
            if len(values) > 1:
                raise ConfigError(path, column, f"category {category!r} has conflicting values {values}")
            row[column] = values[0] if values else None
        rows.append(row)
    attributes = pd.DataFrame(rows, columns=["category", *columns])
    for column in columns:
        present = attributes[column].dropna()
        numbers = pd.to_numeric(present, errors="coerce")
        if len(present) and numbers.notna().all():
            attributes[column] = pd.to_numeric(attributes[column], errors="coerce")
    return attributes


def join_attributes(table: pd.DataFrame, lexicon: Lexicon, *, answer: str = "answer",
                    status: str = "status") -> pd.DataFrame:
    """`table` with the lexicon's attributes of each valid answer's category beside it.

    Rows whose answer is not a valid category (unmapped, refusal, invalid) get missing
    values. An attribute named like an existing column is added as `answer_<name>`.
    """
    if lexicon.attributes.empty:
        return table
    attributes = lexicon.attributes.rename(
        columns={c: (f"answer_{c}" if c in table.columns else c) for c in lexicon.attributes.columns if c != "category"})
    valid = table[status].eq("valid") if status in table else pd.Series(True, index=table.index)
    key = table[answer].where(valid)
    joined = pd.DataFrame({"category": key}).merge(attributes, on="category", how="left")
    joined.index = table.index
    return pd.concat([table, joined.drop(columns="category")], axis=1)
