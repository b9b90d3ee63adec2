"""A deterministic, seeded, stratified sample of items.

Each stratum is shuffled with a generator seeded by the task seed and the stratum's name,
so the sample of one subject never depends on which other subjects are present or on the
order rows arrived in.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd

from biasbench.config import SampleSpec


def _stratum_seed(seed: int, stratum: str) -> int:
    digest = hashlib.sha256(f"{seed}:{stratum}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def stratified_sample(rows: pd.DataFrame, spec: SampleSpec, id_column: str = "item_id") -> pd.DataFrame:
    if spec.fraction >= 1.0:
        return rows.sort_values(id_column, kind="stable").reset_index(drop=True)
    strata = rows.groupby(spec.stratify_by, sort=True) if spec.stratify_by else [("all", rows)]
    picked = [_sample_stratum(group, str(name), spec, id_column) for name, group in strata]
    return pd.concat(picked).sort_values(id_column, kind="stable").reset_index(drop=True)


def _sample_stratum(group: pd.DataFrame, name: str, spec: SampleSpec, id_column: str) -> pd.DataFrame:
    ordered = group.sort_values(id_column, kind="stable")
    n = min(len(ordered), max(spec.min_per_stratum, math.floor(spec.fraction * len(ordered) + 0.5)))
    order = np.random.default_rng(_stratum_seed(spec.seed, name)).permutation(len(ordered))
    return ordered.iloc[np.sort(order[:n])]
