"""Rates per group and per voice, with intervals that respect how the data were sampled.

A group's rate is the mean of its voices' rates (each voice weighs the same: the voice is
the unit of replication; in the balanced design every voice answers every item, so this
differs from the pooled rate only through invalid answers). Its CI comes from a cluster
bootstrap that resamples voices within each group (optionally items too: a two-way,
"pigeonhole" bootstrap for the crossed voice x item design, which is mildly conservative).
Wilson intervals are used where clustering does not apply: one voice's responses to
different items. Invalid answers are left out of the rate and reported as `invalid_rate`.

With k voices per group the plain voice bootstrap's variance is (k-1)/k of the usual
estimate (too narrow at k = 3), so k-1 voices are drawn per replicate (Rao-Wu); the
permutation test (permutation.py) remains the primary inference, not these intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._data import Voices, drop_empty_voices, group_columns, invalid_mask, reduce_to_voices, require_columns

BOOTSTRAP_CI = "percentile cluster bootstrap over voices within group (k-1 of k drawn)"
TWO_WAY_CI = "percentile two-way cluster bootstrap over voices within group (k-1 of k drawn) and over items"


def wilson_interval(successes, n, level: float = 0.95):
    """Wilson score interval for a binomial proportion (NaN where n == 0)."""
    k, n = np.asarray(successes, dtype=float), np.asarray(n, dtype=float)
    z = stats.norm.ppf(1 - (1 - level) / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        center = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return center - half, center + half


def item_resampled_means(voices: Voices, n_boot: int, rng) -> np.ndarray:
    """Per-replicate voice means after resampling items with replacement: (n_boot, voices).

    Item multiplicities u (replicates x items) act on the voice x item sums once, so each
    replicate is a matrix product rather than a pass over responses.
    """
    n_v, n_i = len(voices.ids), voices.n_items
    flat = voices.row_item * n_v + voices.row_voice
    sums = np.bincount(flat, voices.row_value, n_i * n_v).reshape(n_i, n_v)
    counts = np.bincount(flat, minlength=n_i * n_v).reshape(n_i, n_v).astype(float)
    out = np.empty((n_boot, n_v))
    chunk = max(1, 2_000_000 // n_i)
    for start in range(0, n_boot, chunk):
        u = rng.multinomial(n_i, np.full(n_i, 1.0 / n_i), size=min(chunk, n_boot - start)).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + len(u)] = (u @ sums) / (u @ counts)
    return out


def bootstrap_group_means(voices: Voices, *, n_boot: int = 2000, seed: int | None = 0,
                          two_way: bool = False, draws: str = "k-1") -> np.ndarray:
    """Cluster-bootstrap replicates of each group's mean of voice means: (n_boot, groups).

    draws="k-1" (default) draws k-1 of a group's k voices with replacement (the Rao-Wu
    "n-1" bootstrap): the replicate variance of the group mean is then exactly s^2/k, the
    usual estimate. The plain k-of-k draw ("k") understates it by (k-1)/k, which is a 33%
    variance shortfall at k = 3 voices per cell (coverage numbers: docs/statistics.md).
    """
    if draws not in ("k-1", "k"):
        raise ValueError(f"draws must be 'k-1' or 'k', got {draws!r}")
    rng = np.random.default_rng(seed)
    n_v = len(voices.ids)
    means = item_resampled_means(voices, n_boot, rng) if two_way else np.broadcast_to(voices.means, (n_boot, n_v))
    out = np.empty((n_boot, len(voices.labels)))
    for g in range(len(voices.labels)):
        index = np.flatnonzero(voices.codes == g)
        size = max(1, len(index) - 1) if draws == "k-1" else len(index)
        draw = rng.integers(0, len(index), size=(n_boot, size))  # voices within the group
        with np.errstate(invalid="ignore"):
            out[:, g] = np.nanmean(np.take_along_axis(means[:, index], draw, axis=1), axis=1)
    return out


def percentile_ci(samples: np.ndarray, level: float = 0.95):
    """(low, high) percentile interval, or None when no replicate is finite."""
    finite = samples[np.isfinite(samples)]
    if finite.size < 0.975 * samples.size or finite.size == 0:
        return None  # too many undefined replicates (e.g. an odds ratio at 0 or 1)
    low, high = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def group_summary(voices_all: Voices) -> pd.DataFrame:
    """Counts and rates per group, before any interval: invalid answers counted, not scored."""
    voices = drop_empty_voices(voices_all)
    g_all, n_groups = voices_all.codes, len(voices_all.labels)
    frame = pd.DataFrame({
        voices_all.group: voices_all.labels,
        "n_voices": np.bincount(g_all, minlength=n_groups),
        "n_responses": np.bincount(g_all, voices_all.totals, n_groups).astype(int),
        "n_valid": np.bincount(g_all, voices_all.counts, n_groups).astype(int),
    })
    frame["invalid_rate"] = np.bincount(g_all, voices_all.invalid, n_groups) / frame["n_responses"]
    for status, per_voice in sorted(voices_all.status_counts.items()):
        if status != "valid":
            frame[f"n_{status}"] = np.bincount(g_all, per_voice, n_groups).astype(int)
    rate = pd.Series(voices.means).groupby(np.asarray(voices.labels)[voices.codes]).mean()
    frame["rate"] = frame[voices_all.group].map(rate)
    frame["pooled_rate"] = np.bincount(g_all, voices_all.sums, n_groups) / frame["n_valid"].where(frame["n_valid"] > 0)
    return frame


def group_rates(df: pd.DataFrame, group="gender", outcome: str = "correct", unit: str = "voice_id",
                item: str = "item_id", *, ci: str = "bootstrap", two_way: bool = False,
                n_boot: int = 2000, level: float = 0.95, seed: int | None = 0,
                nan_policy: str = "exclude") -> pd.DataFrame:
    """Rate per group (mean of voice rates) with a CI; invalid rate and status counts beside it.

    ci="bootstrap": cluster bootstrap over voices (two_way=True: and items). ci="wilson":
    Wilson on the pooled responses, which ignores voice clustering and is labelled so.
    """
    if ci not in ("bootstrap", "wilson"):
        raise ValueError(f"ci must be 'bootstrap' or 'wilson', got {ci!r}")
    voices_all = reduce_to_voices(df, group, outcome, unit, item, nan_policy, binary=(ci == "wilson"))
    frame = group_summary(voices_all)
    voices = drop_empty_voices(voices_all)
    frame["ci_low"], frame["ci_high"], frame["note"] = np.nan, np.nan, ""
    if ci == "wilson":
        low, high = wilson_interval(frame["pooled_rate"] * frame["n_valid"], frame["n_valid"], level)
        frame["ci_low"], frame["ci_high"] = low, high
        frame["ci_method"] = "Wilson on pooled responses (ignores voice clustering: too narrow when voices differ)"
        return frame
    frame["ci_method"] = TWO_WAY_CI if two_way else BOOTSTRAP_CI
    boot = bootstrap_group_means(voices, n_boot=n_boot, seed=seed, two_way=two_way) if len(voices.ids) else None
    for row, label in enumerate(frame[voices.group]):
        k = int(np.sum(np.asarray(voices.labels)[voices.codes] == label)) if len(voices.ids) else 0
        if k < 2:
            frame.loc[row, "note"] = ("undefined: no voice with a valid answer" if k == 0 else
                                      "CI undefined: a single voice (voice-to-voice variation not estimable)")
            continue
        interval = percentile_ci(boot[:, voices.labels.index(label)], level)
        if interval:
            frame.loc[row, ["ci_low", "ci_high"]] = interval
    return frame


def voice_rates(df: pd.DataFrame, outcome: str = "correct", unit: str = "voice_id", item: str = "item_id",
                labels=None, *, level: float = 0.95, nan_policy: str = "exclude") -> pd.DataFrame:
    """Rate per voice with a Wilson interval (responses of one voice to distinct items).

    labels: label columns to carry along (default: gender and ethnicity when present).
    """
    if labels is None:
        labels = [c for c in ("gender", "ethnicity") if c in df.columns]
    labels = group_columns(labels) if labels else []
    require_columns(df, [unit, *labels])
    voices = reduce_to_voices(df, unit, outcome, unit, item, nan_policy, binary=True)
    frame = pd.DataFrame({unit: voices.ids, "n_responses": voices.totals.astype(int),
                          "n_valid": voices.counts.astype(int)})
    frame["invalid_rate"] = voices.invalid / voices.totals
    frame["rate"] = voices.means
    frame["ci_low"], frame["ci_high"] = wilson_interval(voices.sums, voices.counts, level)
    frame["ci_method"] = "Wilson (responses of one voice to distinct items)"
    if labels:
        first = df.drop_duplicates(unit).set_index(unit)[labels]
        frame = frame.join(first, on=unit)[[unit, *labels, *[c for c in frame.columns if c != unit]]]
    return frame


def add_invalid_column(df: pd.DataFrame, outcome: str = "correct", name: str = "invalid") -> pd.DataFrame:
    """A copy with a 0/1 column marking invalid responses, so their rate can be tested as a gap."""
    require_columns(df, [outcome])
    return df.assign(**{name: invalid_mask(df, outcome).astype(float)})
