"""Input checks and the reduction of the tidy table to one row per voice.

Every group test here treats the voice as the unit of replication (DESIGN.md), so each
starts the same way: check the columns, find each voice's group label, and reduce the
responses to per-voice sums and counts once. Everything after that is voice-sized.

Missing outcomes: the tidy table has the outcome NaN wherever `status` is not "valid".
A response with a NaN outcome is left out of the rate (``nan_policy="exclude"``, the
default); the share of responses whose status is not "valid" (without a `status`
column: whose outcome is NaN) is reported separately, per voice and per group, as the
invalid rate, with counts per status. ``nan_policy="as_zero"`` scores NaN outcomes 0 (a
sensitivity analysis; never the default, since DESIGN.md says invalid answers are not
silently wrong). An outcome defined on every row, such as the invalid indicator from
`add_invalid_column`, is used on every row whatever its status.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

NAN_POLICIES = ("exclude", "as_zero")
LABEL_SEP = " / "  # joins labels of a combined grouping, as summary.py does


def require_columns(df: pd.DataFrame, columns) -> None:
    """Raise a ValueError naming the first missing column and listing the present ones."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(df).__name__}")
    for column in columns:
        if column not in df.columns:
            raise ValueError(f"column {column!r} not found in the table; "
                             f"present columns: {list(map(str, df.columns))}")


def group_columns(group) -> list[str]:
    """`"gender"` -> ["gender"]; `["gender", "ethnicity"]` -> both (a combined grouping)."""
    columns = [group] if isinstance(group, str) else list(group)
    if not columns:
        raise ValueError("group must name at least one label column")
    return columns


def group_name(columns: list[str]) -> str:
    return " x ".join(columns)


@dataclass
class Voices:
    """One row per voice: its group, and sums/counts of its included outcomes."""

    group: str                # name of the grouping, e.g. "gender x ethnicity"
    outcome: str
    ids: np.ndarray           # voice ids
    labels: list[str]         # sorted distinct group labels
    codes: np.ndarray         # per voice: index into labels
    sums: np.ndarray          # per voice: sum of included outcomes
    sumsq: np.ndarray         # per voice: sum of squared outcomes (numeric effect sizes)
    counts: np.ndarray        # per voice: number of included outcomes
    totals: np.ndarray        # per voice: number of responses
    invalid: np.ndarray       # per voice: responses that were not valid
    row_voice: np.ndarray     # per included response: voice index (two-way bootstrap)
    row_item: np.ndarray      # per included response: item index
    row_value: np.ndarray     # per included response: outcome
    n_items: int
    notes: list[str]
    status_counts: dict       # status -> per-voice count of responses with it
    adjusted: np.ndarray | None = None  # per voice: item-adjusted mean (item_adjusted), used as `means` when set

    @property
    def means(self) -> np.ndarray:
        if self.adjusted is not None:
            return self.adjusted
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    def voices_per_group(self) -> np.ndarray:
        return np.bincount(self.codes, minlength=len(self.labels))


def invalid_mask(df: pd.DataFrame, outcome: str) -> np.ndarray:
    """True where a response is not a valid, scored answer."""
    missing = df[outcome].isna().to_numpy()
    if "status" in df.columns:  # compare in the column's own (e.g. Arrow) dtype: no object copy
        return ~df["status"].eq("valid").to_numpy(dtype=bool, na_value=False) | missing
    return missing


def voice_labels(df: pd.DataFrame, columns: list[str], unit: str):
    """Per-row voice index, voice ids, and each voice's (single) label string.

    Labels are checked per voice: a voice whose gender differs between rows is a data
    error, since permuting labels among voices assumes one label per voice.
    """
    row_voice, ids = pd.factorize(df[unit], sort=True)
    if (row_voice < 0).any():
        raise ValueError(f"column {unit!r} has missing voice ids")
    first = np.full(len(ids), -1)
    first[row_voice[::-1]] = np.arange(len(row_voice))[::-1]  # first row of each voice
    parts = []
    for column in columns:
        if df[column].isna().any():
            raise ValueError(f"column {column!r} has {int(df[column].isna().sum())} rows with no label")
        codes, uniques = pd.factorize(df[column])
        if (codes != codes[first][row_voice]).any():
            bad = ids[np.unique(row_voice[codes != codes[first][row_voice]])][:5]
            raise ValueError(f"column {column!r} is not constant within voices {list(bad)}: "
                             "each voice must carry one label")
        parts.append(np.asarray(uniques.astype(str))[codes[first]])
    labels = [LABEL_SEP.join(p) for p in zip(*parts)]
    return row_voice, np.asarray(ids), labels


def _consistency_notes(df, outcome, values, missing, invalid) -> list[str]:
    """Say where `status` and the outcome disagree, instead of guessing silently."""
    if "status" not in df.columns:
        return []
    notes = []
    odd = int((missing & df["status"].eq("valid").to_numpy(dtype=bool, na_value=False)).sum())
    if odd:
        notes.append(f"{odd} responses have status 'valid' but no {outcome}; left out as missing")
    scored = invalid & ~missing
    if scored.any() and not np.array_equal(values, invalid.astype(float)):  # not the invalid indicator itself
        notes.append(f"{int(scored.sum())} responses whose status is not 'valid' carry a {outcome}; used as given")
    return notes


def check_binary(values: np.ndarray, outcome: str) -> None:
    present = values[~np.isnan(values)]
    if present.size and not np.isin(present, (0.0, 1.0)).all():
        raise ValueError(f"outcome {outcome!r} must be 0/1 (or NaN) for a rate; "
                         "use numeric_gap for numeric outcomes")


def reduce_to_voices(df: pd.DataFrame, group, outcome: str, unit: str = "voice_id",
                     item: str = "item_id", nan_policy: str = "exclude",
                     binary: bool = True) -> Voices:
    """Check the table and reduce it to one row per voice (see module docstring for NaNs)."""
    columns = group_columns(group)
    require_columns(df, [*columns, outcome, unit, item])
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if len(df) == 0:
        raise ValueError("the table has no rows")
    try:
        values = df[outcome].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"outcome {outcome!r} must be numeric (got dtype {df[outcome].dtype})") from None
    if binary:
        check_binary(values, outcome)
    missing = np.isnan(values)
    invalid = invalid_mask(df, outcome)
    notes = _consistency_notes(df, outcome, values, missing, invalid)
    if nan_policy == "as_zero":
        if not binary:
            raise ValueError("nan_policy='as_zero' only makes sense for a 0/1 outcome")
        values = np.where(missing, 0.0, values)
        if missing.any():
            notes.append(f"{int(missing.sum())} responses without a {outcome} scored 0 (nan_policy='as_zero')")
        missing = np.zeros(len(values), bool)
    include = ~missing
    row_voice, ids, voice_label = voice_labels(df, columns, unit)
    labels = sorted(set(voice_label))
    codes = np.searchsorted(labels, voice_label)
    row_item, items = pd.factorize(df[item])
    if (row_item < 0).any():
        raise ValueError(f"column {item!r} has {int((row_item < 0).sum())} rows with no item id")
    n = len(ids)
    status = df["status"].fillna("missing").astype(str) if "status" in df.columns else \
        pd.Series(np.where(invalid, "invalid", "valid"))
    status_codes, status_names = pd.factorize(status)
    status_counts = {str(name): np.bincount(row_voice[status_codes == k], minlength=n).astype(float)
                     for k, name in enumerate(status_names)}
    kept = values[include]
    return Voices(
        group=group_name(columns), outcome=outcome, ids=ids, labels=labels, codes=codes,
        sums=np.bincount(row_voice[include], kept, n), sumsq=np.bincount(row_voice[include], kept**2, n),
        counts=np.bincount(row_voice[include], minlength=n).astype(float),
        totals=np.bincount(row_voice, minlength=n).astype(float),
        invalid=np.bincount(row_voice[invalid], minlength=n).astype(float),
        row_voice=row_voice[include], row_item=row_item[include], row_value=kept,
        n_items=len(items), notes=notes, status_counts=status_counts)


def design_problem(voices: Voices) -> str | None:
    """Why a voice-level test of this grouping is undefined, or None when it is defined.

    Expects voices with no included outcome to have been dropped (drop_empty_voices).
    """
    if len(voices.ids) == 0:
        return f"no valid {voices.outcome} in any response"
    if len(voices.labels) < 2:
        return f"only one group ({voices.labels[0]!r}) in {voices.group!r}; nothing to compare"
    per_group = voices.voices_per_group()
    single = [lab for lab, k in zip(voices.labels, per_group) if k < 2]
    if single:
        return (f"group(s) {single} have a single voice: voice-to-voice variation within the group "
                "cannot be estimated, so the group cannot be separated from its one voice")
    if voices.row_value.size and np.all(voices.row_value == voices.row_value[0]):
        return f"all included outcomes are identical ({voices.row_value[0]:g}); there is no variation to test"
    return None


def drop_empty_voices(voices: Voices) -> Voices:
    """Leave out voices with no included outcome (all invalid); the caller notes it."""
    keep = voices.counts > 0
    if keep.all():
        return voices
    index = np.full(len(keep), -1)
    index[keep] = np.arange(keep.sum())
    on_rows = keep[voices.row_voice]
    labels = sorted({voices.labels[c] for c in voices.codes[keep]})
    codes = np.searchsorted(labels, [voices.labels[c] for c in voices.codes[keep]])
    note = (f"{int((~keep).sum())} voice(s) with no valid {voices.outcome} left out: "
            f"{list(voices.ids[~keep][:5])}")
    return Voices(voices.group, voices.outcome, voices.ids[keep], labels, codes, voices.sums[keep],
                  voices.sumsq[keep], voices.counts[keep], voices.totals[keep], voices.invalid[keep],
                  index[voices.row_voice[on_rows]], voices.row_item[on_rows], voices.row_value[on_rows],
                  voices.n_items, [*voices.notes, note],
                  {k: v[keep] for k, v in voices.status_counts.items()},
                  None if voices.adjusted is None else voices.adjusted[keep])


def additive_voice_effects(row_voice: np.ndarray, row_item: np.ndarray, row_value: np.ndarray,
                           n_voices: int, n_items: int) -> np.ndarray:
    """Each voice's least-squares mean under the additive model y = a_voice + b_item + error.

    Fitted by least squares over the responses, with missing (voice, item) cells simply absent:
    the item effects are eliminated (b_i = mean over the voices that answered item i of
    y - a_v), leaving a voices x voices system (a Laplacian-like matrix, singular along the
    constant vector) solved by least squares. A voice's value is a_v + the mean of b over the
    items anyone answered: its predicted mean over every item. With no missing answer this is
    exactly the voice's raw mean; with missing answers a voice that missed the hard items is
    not credited for it (its answers are compared with the other voices' on the same items).
    """
    w = np.zeros((n_voices, n_items))
    s = np.zeros((n_voices, n_items))
    np.add.at(w, (row_voice, row_item), 1.0)
    np.add.at(s, (row_voice, row_item), row_value)
    answered = w.sum(axis=0) > 0
    w, s = w[:, answered], s[:, answered]
    per_item, per_voice = w.sum(axis=0), w.sum(axis=1)
    item_mean = s.sum(axis=0) / per_item
    system = np.diag(per_voice) - (w / per_item) @ w.T
    rhs = s.sum(axis=1) - w @ item_mean
    a = np.linalg.lstsq(system, rhs, rcond=None)[0]
    b = item_mean - (w.T @ a) / per_item
    return a + b.mean()


def item_adjusted(voices: Voices) -> Voices:
    """The same voices, with `means` replaced by their item-adjusted means (additive_voice_effects)."""
    from dataclasses import replace

    values = additive_voice_effects(voices.row_voice, voices.row_item, voices.row_value, len(voices.ids),
                                    voices.n_items)
    return replace(voices, adjusted=values)
