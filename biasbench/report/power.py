"""The minimum detectable gap beside every non-significant 0/1 result.

A gap that is not significant is not evidence of no gap: this says how large a gap the
run's design could have detected. `minimum_detectable_gap` simulates the design of the
run (its genders and ethnicities, voices per cell, items, and the observed rate as the
base rate) with a voice SD and item SD on the logit scale that are assumed, not
estimated, and stated; the simulation is kept small (settings in report.json), so the
answer carries Monte Carlo error of a few points of power.
"""

from __future__ import annotations

from functools import lru_cache

from biasbench.analysis.results import plain

NOT_BINARY = ("not computed: the power simulation models 0/1 outcomes (correct / yes / invalid), not "
              "distributions or amounts")


def binary_blocks(report: dict):
    """(section name, grouping name, block) of every 0/1 analysis in the report."""
    sections = report["sections"]
    candidates = [("primary", sections.get("primary")), ("invalid", sections.get("invalid"))]
    candidates += [(f"said_me:{k}", v) for k, v in (sections.get("said_me") or {}).items()]
    for name, section in candidates:
        if section and section.get("kind") == "binary":
            for gname, block in section["groupings"].items():
                yield name, gname, block


def attach_detectable_gaps(report: dict, audio, settings) -> None:
    """Add `corrected` p-values to every block of the family, and `mdg` beside the non-significant."""
    holm = dict(zip(report["corrections"]["holm"]["labels"], report["corrections"]["holm"]["p_adjusted"]))
    bh = dict(zip(report["corrections"]["bh"]["labels"], report["corrections"]["bh"]["p_adjusted"]))
    for block in all_family_blocks(report):
        block["p_holm"], block["p_bh"] = holm.get(block["family_label"]), bh.get(block["family_label"])
    binary = {id(block) for _, _, block in binary_blocks(report)}
    for block in all_family_blocks(report):
        if block["p_holm"] is None or block["p_holm"] < settings.alpha:
            continue
        if id(block) in binary:
            block["mdg"] = detectable_gap(block, report["design"], settings)
        else:
            block["mdg"] = {"undefined": NOT_BINARY}


def all_family_blocks(report: dict):
    """Every grouping block that carries a family label, in every section."""
    def walk(node):
        if isinstance(node, dict):
            if "family_label" in node:
                yield node
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)
    yield from walk(report["sections"])


def detectable_gap(block: dict, design: dict, settings) -> dict:
    gap = block["gap"]
    rates = [v for v in gap["estimates"].values() if v is not None]
    base = min(max(sum(rates) / len(rates), 0.02), 0.98) if rates else None
    if base is None:
        return {"undefined": "no observed rate"}
    return _mdg(tuple(block["by"]), tuple(design["genders"]), tuple(design["ethnicities"]),
                int(design["min_voices_per_cell"]), int(gap["n_items"]), round(base, 2), settings.mdg_power,
                settings.alpha, settings.mdg_voice_sd, settings.mdg_item_sd, settings.mdg_sims,
                settings.mdg_permutations, settings.seed)


@lru_cache(maxsize=64)
def _mdg(by, genders, ethnicities, voices_per_cell, n_items, base_rate, target, alpha, voice_sd, item_sd, n_sims,
         n_permutations, seed) -> dict:
    from biasbench.analysis import minimum_detectable_gap

    result = minimum_detectable_gap(
        target_power=target, alpha=alpha, group=list(by), factors={"gender": genders, "ethnicity": ethnicities},
        voices_per_cell=voices_per_cell, n_items=max(n_items, 1), base_rate=base_rate, voice_sd=voice_sd,
        item_sd=item_sd, n_sims=n_sims, n_permutations=n_permutations, seed=seed).to_dict()
    result["settings"] = (f"simulated: {voices_per_cell} voices per gender x ethnicity cell, {n_items} items, "
                          f"base rate {base_rate:.2f}, voice SD {voice_sd} and item SD {item_sd} (logit scale, "
                          f"assumed), {n_sims} simulated data sets of {n_permutations} permutations each, "
                          f"power {target} at alpha {alpha} (uncorrected, so optimistic under Holm)")
    return plain(result)
