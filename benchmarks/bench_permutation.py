"""Benchmark: the primary voice-level permutation test on a million responses.

Vectorised (biasbench.analysis.permutation_test): reduce the table to one mean per voice
once, then 10,000 label permutations as a (permutations x voices) one-hot matrix product.
Baselines:
  * plain loop: per permutation, relabel the responses and recompute the group means
    from all 1,000,000 rows with pandas (what a direct implementation does);
  * loop on voice means: the same reduction once, then a Python loop over permutations.
Loops are timed on fewer permutations and extrapolated linearly to the full count (said
in the output). All three compute the same statistic (checked on the observed labels).

    .venv/bin/python benchmarks/bench_permutation.py [--permutations 10000] [--loop 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import pandas as pd

from biasbench.analysis import permutation_pvalue, permutation_test, reduce_to_voices, simulate_responses

GROUP = ["gender", "ethnicity"]


def best_of(repeats: int, fn) -> float:
    """Shortest wall time of a few runs: the least disturbed by other load on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def table(voices_per_cell: int, n_items: int):
    return simulate_responses(voices_per_cell=voices_per_cell, n_items=n_items, voice_sd=0.5, item_sd=1.0,
                              effects={"gender": {"male": 0.1}}, seed=1)


def plain_loop_stat(values: pd.Series, row_voice: np.ndarray, labels: np.ndarray) -> float:
    """Range of group means of voice means, recomputed from every response for these voice labels.

    Kept fair: voice ids are integer codes computed once, relabelling is a numpy take; what
    remains per permutation is one pandas groupby over all responses.
    """
    voice_means = values.groupby([labels[row_voice], row_voice]).mean()
    group_means = voice_means.groupby(level=0).mean()
    return float(group_means.max() - group_means.min())


def voice_loop_stat(means: np.ndarray, labels: np.ndarray, groups) -> float:
    group_means = [means[labels == g].mean() for g in groups]
    return max(group_means) - min(group_means)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--loop", type=int, default=20, help="permutations actually run by the plain loop")
    parser.add_argument("--voices-per-cell", type=int, default=5)
    parser.add_argument("--items", type=int, default=33_334)
    args = parser.parse_args()

    df = table(args.voices_per_cell, args.items)
    n_voices = df["voice_id"].nunique()
    print(f"table: {len(df):,} responses = {n_voices} voices x {args.items:,} items; "
          f"grouping {' x '.join(GROUP)}; {os.cpu_count()} CPUs; {platform.processor() or platform.machine()}")

    result = permutation_test(df, GROUP, n_permutations=args.permutations, seed=0)
    vectorised = best_of(3, lambda: permutation_test(df, GROUP, n_permutations=args.permutations, seed=0))
    voices = reduce_to_voices(df, GROUP, "correct")
    reduction = best_of(3, lambda: reduce_to_voices(df, GROUP, "correct"))
    permuting = best_of(3, lambda: permutation_pvalue(voices.means, voices.codes,
                                                      n_permutations=args.permutations, seed=0))
    print(f"vectorised: {args.permutations:,} permutations in {vectorised:.2f} s end to end (best of 3; "
          f"checks + reduction to voice means {reduction:.2f} s, permutations {permuting:.2f} s); "
          f"p = {result.p_value:.4f}, statistic {result.statistic:.5f}; {result.method}")

    # voice labels in voice-id order, as the loops use them
    first = df.drop_duplicates("voice_id").sort_values("voice_id")
    labels = (first["gender"] + " / " + first["ethnicity"]).to_numpy()
    groups = sorted(set(labels))
    means = df.groupby("voice_id")["correct"].mean().sort_index().to_numpy()
    row_voice = pd.factorize(df["voice_id"], sort=True)[0]
    values = df["correct"]
    assert np.isclose(plain_loop_stat(values, row_voice, labels), result.statistic)
    assert np.isclose(voice_loop_stat(means, labels, groups), result.statistic)

    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(args.loop):
        plain_loop_stat(values, row_voice, rng.permutation(labels))
    plain = (time.perf_counter() - start) / args.loop * args.permutations
    print(f"plain loop (relabel + recompute from all responses): ran {args.loop} permutations, "
          f"extrapolated to {args.permutations:,}: {plain:.1f} s")

    n_voice_loop = min(args.permutations, 2_000)
    start = time.perf_counter()
    means = df.groupby("voice_id")["correct"].mean().sort_index().to_numpy()
    voice_reduce = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(n_voice_loop):
        voice_loop_stat(means, rng.permutation(labels), groups)
    voice_perms = (time.perf_counter() - start) / n_voice_loop * args.permutations
    print(f"loop on voice means (reduce once, Python loop): ran {n_voice_loop:,} permutations, "
          f"extrapolated to {args.permutations:,}: {voice_reduce + voice_perms:.2f} s")

    print()
    print(f"{args.permutations:,} permutations, {len(df):,} responses")
    print(f"{'method':<46}{'reduce s':>10}{'permute s':>11}{'total s':>10}{'vs vectorised':>15}")
    rows = (("vectorised (reduce once, one-hot matmul)", reduction, permuting),
            ("loop on voice means (extrapolated)", voice_reduce, voice_perms),
            ("plain loop over responses (extrapolated)", 0.0, plain))
    for name, reduce_s, perm_s in rows:
        total = vectorised if name.startswith("vectorised") else reduce_s + perm_s
        print(f"{name:<46}{reduce_s:>10.2f}{perm_s:>11.2f}{total:>10.2f}{total / vectorised:>14.1f}x")


if __name__ == "__main__":
    main()
