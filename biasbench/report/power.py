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
    candidates += [(f"outcomes:{k}", v) for k, v in (sections.get("outcomes") or {}).items()]  # open answers
    for name, section in candidates:
        if section and section.get("kind") == "binary":
            for gname, block in section["groupings"].items():
                yield name, gname, block


def attach_detectable_gaps(report: dict, audio, settings) -> None:
    """Add corrected p-values to every block of a family, and `mdg` beside the non-significant.

    The declared primary tests get Bonferroni over the primary family (and no BH); every
    other block Holm and BH over the secondary family (`p_corrected` is the family's own
    rule). The minimum detectable gap is computed at alpha / m for m tests in the family: the
    primary rule exactly, and the first step of Holm for the secondary family.
    """
    corrections = report["corrections"]
    primary = dict(zip(corrections["primary"]["labels"], corrections["primary"]["p_adjusted"]))
    holm = dict(zip(corrections["holm"]["labels"], corrections["holm"]["p_adjusted"]))
    bh = dict(zip(corrections["bh"]["labels"], corrections["bh"]["p_adjusted"]))
    size = {"primary": _family_size(corrections["primary"]), "secondary": _family_size(corrections["holm"])}
    for block in all_family_blocks(report):
        label = block["family_label"]
        block["family"] = "primary" if label in primary else "secondary"
        block["p_corrected"] = primary[label] if label in primary else holm.get(label)
        block["p_holm"] = None if label in primary else holm.get(label)
        block["p_bh"] = None if label in primary else bh.get(label)
    binary = {id(block) for _, _, block in binary_blocks(report)}
    for block in all_family_blocks(report):
        if block["p_corrected"] is None or block["p_corrected"] < settings.alpha:
            continue
        if id(block) in binary:
            level = settings.alpha / max(size[block["family"]], 1)
            block["mdg"] = detectable_gap(block, report["design"], settings, level)
            block["mdg"]["observed_voice_sd"] = observed_voice_sd(audio, block)
        else:
            block["mdg"] = {"undefined": NOT_BINARY}


def _family_size(correction: dict) -> int:
    return len(correction["labels"]) - len(correction["left_out"])


def observed_voice_sd(audio, block: dict) -> float | None:
    """SD of the voices' logit rates within groups (pooled), to set beside the assumed voice SD.

    Includes the binomial noise of each voice's rate over its items, so it overstates the
    voice-to-voice SD a little when items are few."""
    import numpy as np

    outcome = block["gap"]["outcome"]
    if outcome not in audio.columns:
        return None
    valid = audio[audio[outcome].notna()]
    rates = valid.groupby([*block["by"], "voice_id"])[outcome].agg(["sum", "count"])
    logit = np.log((rates["sum"] + 0.5) / (rates["count"] - rates["sum"] + 0.5))  # empirical logit
    centred = logit - logit.groupby(level=list(range(len(block["by"])))).transform("mean")
    dof = len(centred) - centred.index.droplevel("voice_id").nunique()
    return float(np.sqrt((centred**2).sum() / dof)) if dof > 0 else None


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


def detectable_gap(block: dict, design: dict, settings, level: float) -> dict:
    gap = block["gap"]
    rates = [v for v in gap["estimates"].values() if v is not None]
    base = min(max(sum(rates) / len(rates), 0.02), 0.98) if rates else None
    if base is None:
        return {"undefined": "no observed rate"}
    # enough permutations that a p-value can fall well below the level (min p = 1 / (B + 1))
    n_permutations = max(settings.mdg_permutations, int(3 / level))
    return dict(_mdg(tuple(block["by"]), tuple(design["genders"]), tuple(design["ethnicities"]),
                     int(design["min_voices_per_cell"]), int(gap["n_items"]), round(base, 2), settings.mdg_power,
                     round(level, 6), settings.alpha, settings.mdg_voice_sd, settings.mdg_item_sd, settings.mdg_sims,
                     n_permutations, settings.seed))


@lru_cache(maxsize=64)
def _mdg(by, genders, ethnicities, voices_per_cell, n_items, base_rate, target, level, alpha, voice_sd, item_sd,
         n_sims, n_permutations, seed) -> dict:
    from biasbench.analysis import minimum_detectable_gap

    result = minimum_detectable_gap(
        target_power=target, alpha=level, group=list(by), factors={"gender": genders, "ethnicity": ethnicities},
        voices_per_cell=voices_per_cell, n_items=max(n_items, 1), base_rate=base_rate, voice_sd=voice_sd,
        item_sd=item_sd, n_sims=n_sims, n_permutations=n_permutations, seed=seed).to_dict()
    result["assumed_voice_sd"] = voice_sd
    result["settings"] = (f"simulated: {voices_per_cell} voices per gender x ethnicity cell, {n_items} items, "
                          f"base rate {base_rate:.2f}, an assumed voice SD {voice_sd} and item SD {item_sd} (logit "
                          f"scale), {n_sims} simulated data sets of {n_permutations} permutations each, power {target} "
                          f"at level {level:.4g} (alpha {alpha} divided by the family's size)")
    return plain(result)
