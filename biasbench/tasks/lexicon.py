"""Lexicons for generate_categorical tasks: a CSV mapping phrases to categories.

Required columns: `phrase` (what an answer may say) and `category` (what it means).
Any other column is an attribute of the category (e.g. a prestige score), carried into
the tidy table so reports can average it per group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from biasbench.errors import ConfigError


@dataclass
class Lexicon:
    phrases: dict[str, str]  # normalised phrase -> category
    attributes: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per category


def load_lexicon(path: Path) -> Lexicon:
    from biasbench.tasks.scoring import normalise_answer

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
    empty = table[(table["phrase"].str.strip() == "") | (table["category"].str.strip() == "")]
    if len(empty):
        raise ConfigError(path, "phrase", f"row {empty.index[0] + 2} has an empty phrase or category")
    phrases = {normalise_answer(p): c.strip() for p, c in zip(table["phrase"], table["category"])}
    extra = [c for c in table.columns if c not in ("phrase", "category")]
    attributes = table[["category", *extra]].drop_duplicates("category").reset_index(drop=True) if extra else pd.DataFrame()
    return Lexicon(phrases, attributes)
