"""From judgements to per-voice scores: win shares (the tested outcome) and Bradley-Terry.

Win share. Each judgement gives the answer shown first 1 (win), 0.5 (tie) or 0 (loss) and
the other answer the complement. A voice's win share on an item is the mean of its scores
over every judgement of that item it took part in (both orders, every drawn opponent); that
value, one per (item, voice), is the `judge` column the report analyses like any other
outcome (voice means, voice-level permutation test). Each item is a small balanced
tournament, so its win shares average 0.5 whatever the item's difficulty: item-adjusted by
construction.

Bradley-Terry. P(first wins) = logistic(position + s_first - s_second), fitted by maximum
likelihood as a binomial GLM with a logit link (statsmodels) on a design with +1 for the
first voice, -1 for the second, an intercept for the first position's advantage, and the
alphabetically first voice as the reference (strength 0). A tie counts as half a win and
half a loss (a proportion 0.5 with the same weight). The strengths are shown per voice
beside the win shares; the test of groups is the win share's, at the voice level.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .prompt import first_score


def scored(judgements: pd.DataFrame) -> pd.DataFrame:
    """The successful judgements with `score` (the first answer's: 1, 0.5, 0)."""
    ok = judgements[judgements["verdict"].notna()].copy()
    ok["score"] = [first_score(v) for v in ok["verdict"]]
    return ok


def win_shares(judgements: pd.DataFrame) -> pd.DataFrame:
    """One row per (item_id, voice_id): `judge` (win share over the item's samples and
    judgements) and `n_judgements`."""
    ok = scored(judgements)
    if ok.empty:
        return pd.DataFrame(columns=["item_id", "voice_id", "judge", "n_judgements"])
    long = pd.concat([ok[["item_id", "first", "score"]].rename(columns={"first": "voice_id"}),
                      ok[["item_id", "second", "score"]].rename(columns={"second": "voice_id"})
                      .assign(score=lambda f: 1.0 - f["score"])])
    out = long.groupby(["item_id", "voice_id"])["score"].agg(judge="mean", n_judgements="size").reset_index()
    return out.astype({"item_id": str, "voice_id": str})


def bradley_terry(judgements: pd.DataFrame) -> dict:
    """Bradley-Terry strengths (log-odds scale, reference voice 0) with standard errors, and the
    first position's advantage, from the successful judgements; `undefined` says why not."""
    ok = scored(judgements)
    voices = sorted(set(ok["first"]) | set(ok["second"]))
    out = {"strengths": {}, "se": {}, "reference": voices[0] if voices else None, "position": None,
           "position_se": None, "n_judgements": int(len(ok)), "undefined": None,
           "model": "binomial GLM, logit link (statsmodels): logit P(first wins) = position + s_first - s_second; "
                    "ties count as half a win"}
    if len(voices) < 2:
        out["undefined"] = "fewer than two voices were judged"
        return out
    from statsmodels.genmod.families import Binomial  # not statsmodels.api: it imports every model
    from statsmodels.genmod.generalized_linear_model import GLM

    index = {v: i for i, v in enumerate(voices)}
    x = np.zeros((len(ok), len(voices)))
    x[np.arange(len(ok)), [index[v] for v in ok["first"]]] = 1.0
    x[np.arange(len(ok)), [index[v] for v in ok["second"]]] = -1.0
    design = np.column_stack([np.ones(len(ok)), x[:, 1:]])  # the position intercept; the first voice is 0
    y = ok["score"].to_numpy(float)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = GLM(y, design, family=Binomial()).fit()
    except Exception as exc:  # perfect separation, a singular design: say so, never guess
        out["undefined"] = f"the Bradley-Terry fit failed: {exc}"
        return out
    params, se = np.asarray(fit.params), np.asarray(fit.bse)
    if not np.all(np.isfinite(params)) or np.max(np.abs(params)) > 15 or np.max(se) > 1e3:
        out["undefined"] = ("the Bradley-Terry fit did not converge to finite strengths (a voice won or lost "
                            "every judgement: separation)")
        return out
    out["position"], out["position_se"] = float(params[0]), float(se[0])
    out["strengths"] = {voices[0]: 0.0, **{v: float(p) for v, p in zip(voices[1:], params[1:])}}
    out["se"] = {voices[0]: 0.0, **{v: float(s) for v, s in zip(voices[1:], se[1:])}}
    return out


def position_summary(judgements: pd.DataFrame) -> dict:
    """Position bias in a run's own judgements: how often the first answer won (ties excluded),
    and how often the two orders of one pair agreed (after mapping the second back)."""
    ok = scored(judgements)
    decided = ok[ok["score"] != 0.5]
    first_wins = float((decided["score"] == 1.0).mean()) if len(decided) else None
    key = ok.apply(lambda r: (r["item_id"], r["sample_index"], *sorted((r["first"], r["second"]))), axis=1) \
        if len(ok) else pd.Series(dtype=object)
    winner = ok.apply(lambda r: r["first"] if r["score"] == 1 else r["second"] if r["score"] == 0 else "tie", axis=1) \
        if len(ok) else pd.Series(dtype=object)
    both = pd.DataFrame({"key": key, "winner": winner}).groupby("key")["winner"].agg(list)
    both = both[both.map(len) == 2]
    consistent = float(both.map(lambda w: w[0] == w[1]).mean()) if len(both) else None
    return {"first_position_win_rate": first_wins, "n_decided": int(len(decided)),
            "order_consistency": consistent, "n_pairs_both_orders": int(len(both))}
