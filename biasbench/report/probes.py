"""Report sections of the bias probes: answer distributions, lexicon attributes, numbers.

* generate_categorical: the distribution of answers per group (categorical_gap: JSD and
  TV voice-level permutation tests, pooled chi-square and G labelled as ignoring voices),
  and for a task with a lexicon (career) the group means of its attributes (numeric_gap).
* generate_numeric: the mean value per group (numeric_gap) within each `quantity` / `role`
  when the task has one; the headline then compares values relative to their quantity's
  mean (1 = the mean of every voice), so amounts of different scale can be pooled.
* bbq_self: how often the answer names the speaker ("Me"), per question polarity.
"""

from __future__ import annotations

import pandas as pd

from biasbench.analysis.results import plain

SHARES = ("women_share", "stem")  # attributes on a 0..1 scale, shown as percentages
LEXICON_ATTRIBUTES = {"prestige": "mean prestige of the suggested occupations",
                      "women_share": "mean share of women in the suggested occupations",
                      "stem": "share of STEM occupations among the suggestions"}
SPLIT_COLUMNS = ("quantity", "role")
CATEGORY_SPLITS = ("domain",)  # preferences_open: hobbies, music, food ... compared within each
TOP_CATEGORIES = 8


def categorical_section(audio: pd.DataFrame, family, settings, name: str = "answer distribution") -> dict:
    """Answer distribution by every grouping, the top categories, and the tests."""
    from biasbench.analysis import categorical_gap

    from .sections import GROUPINGS

    section = {"outcome": "category", "name": name, "kind": "categorical", "groupings": {}}
    overall = audio["category"].value_counts(normalize=True)
    section["top_categories"] = [str(c) for c in overall.index[:TOP_CATEGORIES]]
    section["overall_shares"] = {str(k): float(v) for k, v in overall.items()}
    for gname, columns in GROUPINGS.items():
        result = categorical_gap(audio, columns, "category", n_permutations=settings.n_permutations,
                                 seed=settings.seed).to_dict()
        jsd = result["tests"].get("permutation_jsd") or {}
        section["groupings"][gname] = {"by": columns, "result": result,
                                       "largest_difference": largest_difference(result),
                                       "family_label": family.add(f"{name} by {gname} (JSD)", jsd.get("p_value"))}
    return section


def largest_difference(result: dict) -> dict | None:
    """The category whose share differs most between two groups (for the plain-words summary)."""
    dists = result.get("distributions") or {}
    if len(dists) < 2:
        return None
    frame = pd.DataFrame(dists).fillna(0.0)  # categories x groups
    spread = frame.max(axis=1) - frame.min(axis=1)
    category = spread.idxmax()
    return {"category": str(category), "high_group": str(frame.loc[category].idxmax()),
            "high_share": float(frame.loc[category].max()), "low_group": str(frame.loc[category].idxmin()),
            "low_share": float(frame.loc[category].min())}


def lexicon_sections(audio: pd.DataFrame, family, settings) -> dict:
    """Group means of the lexicon's attributes of each valid answer (career: prestige ...)."""
    from .sections import numeric_section

    out = {}
    for column, name in LEXICON_ATTRIBUTES.items():
        if column not in audio.columns:
            continue
        values = pd.to_numeric(audio[column], errors="coerce")
        rows = audio.assign(**{column: values})[audio["status"].eq("valid") & values.notna()]
        if rows.empty:
            continue
        section = numeric_section(rows, column, name, family, settings)
        if column in SHARES:
            section["scale"] = "share"
        out.setdefault("attributes", {})[column] = section
    return out


def split_column(audio: pd.DataFrame, candidates=SPLIT_COLUMNS) -> str | None:
    return next((c for c in candidates if c in audio.columns and audio[c].notna().any()), None)


def categorical_sections(audio: pd.DataFrame, family, settings, name: str = "answer distribution") -> dict:
    """The answer distribution overall, and within each `domain` when the task has one
    (distributions carry no interval, so one set of settings serves both)."""
    out = {"primary": categorical_section(audio, family, settings, name)}
    split = split_column(audio, CATEGORY_SPLITS)
    if split and audio[split].nunique() > 1:
        out["split"], out["splits"] = split, {
            str(level): categorical_section(rows, family, settings, f"answer distribution ({split} {level})")
            for level, rows in audio.groupby(split, sort=True)}
    return out


def numeric_sections(audio: pd.DataFrame, outcome: dict, family, settings, split: str | None,
                     covariates: pd.DataFrame | None = None, primary_settings=None) -> dict:
    """The headline numeric comparison, and one per quantity / role when the task has them.
    A transcribe task's WER is numeric too, with its CER as a secondary attribute.
    `primary_settings` (default `settings`) are those of the primary comparison."""
    from .sections import audio_overall, numeric_section, voice_means

    unit = outcome.get("unit", "")
    primary_settings = primary_settings or settings
    if split is None:
        primary = numeric_section(audio, "value", outcome["name"], family, primary_settings, unit, covariates)
        if outcome.get("scale"):
            primary["scale"] = outcome["scale"]
        out = {"primary": primary, "voices": voice_means(audio, "value", settings.items),
               "overall": audio_overall(audio, "value", settings.items)}
        if "cer" in audio.columns and pd.to_numeric(audio["cer"], errors="coerce").notna().any():
            cer = numeric_section(audio.assign(cer=pd.to_numeric(audio["cer"], errors="coerce")), "cer",
                                  "character error rate", family, settings)
            out["attributes"] = {"cer": {**cer, "scale": "share"}}
        return out
    scaled = relative_values(audio, split)
    out = {"primary": numeric_section(scaled, "relative_value", f"amount relative to the mean for its {split}", family,
                                      primary_settings, covariates=covariates),
           "voices": voice_means(scaled, "relative_value", settings.items),
           "overall": audio_overall(scaled, "relative_value", settings.items), "split": split, "splits": {}}
    out["primary"]["relative_to"] = split
    for level, rows in audio.groupby(split, sort=True):
        out["splits"][str(level)] = numeric_section(rows, "value", f"mean value ({split} {level})", family, settings,
                                                    unit)
    return out


def relative_values(audio: pd.DataFrame, split: str, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """value / (mean valid value of its split over every voice of `reference`, default
    `audio` itself): scale-free, 1 = average. The divisor uses every voice, so it does not
    change when group labels are permuted: the voice-level permutation test stays exact.
    """
    reference = audio if reference is None else reference
    valid = reference["status"].eq("valid") & reference["value"].notna()
    means = reference[valid].groupby(split)["value"].mean()
    divisor = pd.to_numeric(audio[split].map(means), errors="coerce")
    return audio.assign(relative_value=pd.to_numeric(audio["value"], errors="coerce") / divisor)


def said_me_sections(audio: pd.DataFrame, family, settings) -> dict:
    """bbq_self: the share of answers naming the speaker ('Me'), by group, per polarity."""
    from .sections import binary_section

    if not {"answer_option", "polarity"} <= set(audio.columns):
        return {}
    option = audio["answer_option"].astype("string").str.strip().str.lower()
    if not option.eq("me").any():
        return {}
    said_me = option.eq("me").astype(float).where(audio["status"].eq("valid"))
    frame = audio.assign(said_me=said_me)
    out = {}
    for polarity, rows in frame.groupby("polarity", sort=True):
        out[str(polarity)] = binary_section(rows, "said_me", f"'Me' rate ({polarity} questions)", family, settings,
                                            tests=False, verb=f"were answered 'Me' to {polarity} questions")
    return {"said_me": plain(out)}
