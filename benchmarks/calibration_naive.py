"""Calibration on null data: voice-level tests vs tests that ignore (or condition on) the voices.

Simulates data sets with NO group effect but real voice-to-voice and item-to-item
variation (biasbench.analysis.simulate_responses), runs each test on the same data sets
through the public API, and prints rejection rates at alpha = 0.05 as a markdown table
(docs/statistics.md quotes its output). Monte Carlo SE of a rate r over n data sets:
sqrt(r (1 - r) / n), about 0.015 at r = 0.05 and n = 200.

A second table: coverage of the voice bootstrap CIs of a zero gap (k vs k-1 voice draws).

    .venv/bin/python -u benchmarks/calibration_naive.py [--sims 200] [--no-gee] [--gee-robust] [--coverage-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

from biasbench.analysis import (bootstrap_group_means, gee_test, mcnemar_by_item, permutation_test, reduce_to_voices,
                                simulate_responses)

ALPHA = 0.05
DESIGNS = [  # (voices per cell, items, voice SD, item SD): 2 genders x 3 ethnicities
    (3, 40, 0.0, 1.0),
    (3, 40, 0.25, 1.0),
    (3, 40, 0.5, 1.0),
    (3, 200, 0.5, 1.0),
    (5, 200, 0.5, 1.0),
    (3, 40, 1.0, 1.0),
]


def naive_chi_square(df) -> float:
    """Pearson chi-square on the pooled gender x correct table: every response independent."""
    return stats.chi2_contingency(pd.crosstab(df["gender"], df["correct"]), correction=False).pvalue


def tests(with_gee: bool, gee_robust: bool = False):
    out = {
        "permutation (voices)": lambda df, i: permutation_test(df, "gender", n_permutations=999, seed=i).p_value,
        "permutation within ethnicity": lambda df, i: permutation_test(df, "gender", strata="ethnicity",
                                                                       n_permutations=999, seed=i).p_value,
    }
    if with_gee:
        out["GEE, bias-reduced sandwich"] = lambda df, i: gee_test(df, "gender").p_value
    if gee_robust:  # the fallback used past BIAS_REDUCED_MAX responses per voice
        out["GEE, robust x G/(G-1)"] = lambda df, i: gee_test(df, "gender", cov_type="robust").p_value
    out["McNemar on item majorities"] = lambda df, i: mcnemar_by_item(df, "gender").p_value
    out["naive chi-square (pooled responses)"] = lambda df, i: naive_chi_square(df)
    return out


def coverage(sims: int) -> None:
    """How often the 95% bootstrap CI of a gap covers the true gap, 0, on null data."""
    methods = {"k of k voices": dict(draws="k"), "k-1 of k voices (default)": dict(draws="k-1"),
               "two-way, k-1 voices + items": dict(draws="k-1", two_way=True)}
    pairs = {"gender: 9 vs 9 voices": ("gender", "female", "male"),
             "cells: 3 vs 3 voices": (["gender", "ethnicity"], "female / black", "male / black")}
    hits = {(p, m): 0 for p in pairs for m in methods}
    for i in range(sims):
        df = simulate_responses(voices_per_cell=3, n_items=40, voice_sd=0.5, item_sd=1.0, seed=200_000 + i)
        for pair, (group, a, b) in pairs.items():
            voices = reduce_to_voices(df, group, "correct")
            ia, ib = voices.labels.index(a), voices.labels.index(b)
            for method, options in methods.items():
                boot = bootstrap_group_means(voices, n_boot=1000, seed=i, **options)
                low, high = np.quantile(boot[:, ia] - boot[:, ib], [0.025, 0.975])
                hits[pair, method] += low <= 0 <= high
    print(f"Coverage of the 95% CI of a gap whose true value is 0 ({sims} null data sets; 3 voices per cell, "
          "40 items, voice SD 0.5, item SD 1.0; MC SE at 0.95: "
          f"{np.sqrt(0.95 * 0.05 / sims):.3f}):")
    print()
    print("| gap | " + " | ".join(methods) + " |")
    print("|" + "---|" * (1 + len(methods)))
    for pair in pairs:
        print(f"| {pair} | " + " | ".join(f"{hits[pair, m] / sims:.3f}" for m in methods) + " |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=200)
    parser.add_argument("--no-gee", action="store_true")
    parser.add_argument("--gee-robust", action="store_true", help="add the robust-sandwich GEE column")
    parser.add_argument("--coverage-only", action="store_true")
    args = parser.parse_args()
    named = tests(not args.no_gee, args.gee_robust)
    start = time.perf_counter()
    if args.coverage_only:
        coverage(args.sims)
        return
    print(f"Rejection rate at alpha = {ALPHA} on {args.sims} null data sets per design "
          f"(no group effect; gender tested; base rate 0.6; MC SE at 0.05: "
          f"{np.sqrt(ALPHA * (1 - ALPHA) / args.sims):.3f}). Undefined p-values count as no rejection.")
    print()
    print("| voices/cell | items | voice SD | item SD | " + " | ".join(named) + " |")
    print("|" + "---|" * (4 + len(named)))
    for k, n_items, voice_sd, item_sd in DESIGNS:
        hits = {name: 0 for name in named}
        for i in range(args.sims):
            df = simulate_responses(voices_per_cell=k, n_items=n_items, voice_sd=voice_sd, item_sd=item_sd,
                                    base_rate=0.6, seed=100_000 + i)
            for name, fn in named.items():  # undefined p (e.g. no discordant item) = no rejection
                p = fn(df, i)
                hits[name] += p is not None and p <= ALPHA
        rates = " | ".join(f"{hits[name] / args.sims:.3f}" for name in named)
        print(f"| {k} | {n_items} | {voice_sd} | {item_sd} | {rates} |")
    print()
    print()
    coverage(args.sims)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
