"""`biasbench compare RUN_A RUN_B`: did a fine-tune shrink the voice-group gaps, and at what cost?

Two runs of the same task (A: before, e.g. the base model; B: after, e.g. `--adapter`) are
compared on the items they share. For each grouping (gender, ethnicity):

- **outcome gap**: the largest minus the smallest group mean of voice means of the outcome
  (`correct` for knowledge tasks, `value` for numeric ones), as in `analysis.group_gap`;
- **answer divergence**: per item, the Jensen-Shannon divergence (bits) between the groups'
  answer distributions (pooled over each group's voices, groups weighted equally), averaged
  over items. Defined for every task type, including open probes.

and, for tasks with `correct`, the **overall accuracy** (mean of voice means): a fine-tune
must not buy fairness by losing knowledge.

Each change (B minus A) gets a cluster-bootstrap CI over VOICES (resampled within gender x
ethnicity cells, k-1 of k drawn as in analysis.rates) and a voice-level permutation test:
when both runs heard the same voices, the test is PAIRED by voice (each voice's answers are
swapped between the runs at random: under "the fine-tune changes nothing", A and B are
exchangeable within a voice); otherwise run labels are permuted among voices within cells.

Held-out check: when run B used an adapter made by biasbench, its `finetune_manifest.json`
says which voices and item texts it trained on; the comparison reports any overlap with the
runs' voices and items (a proof on seen voices or items is not a proof).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biasbench.errors import BiasbenchError
from biasbench.finetune.data import read_run_table

GROUPINGS = ("gender", "ethnicity")
CI_METHOD = "percentile cluster bootstrap over voices within gender x ethnicity cells (k-1 of k drawn)"


# --------------------------------------------------------------------------- answer divergence


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=-1)


def generalized_js(distributions: np.ndarray) -> np.ndarray:
    """JS divergence (bits) among equally weighted distributions: (..., groups, categories) -> (...)."""
    mean = distributions.mean(axis=-2)
    return _entropy_bits(mean) - _entropy_bits(distributions).mean(axis=-1)


def answer_divergence(table: pd.DataFrame, group: str = "gender", *, answer: str = "answer",
                      prob_columns: dict[str, str] | None = None, item: str = "item_id",
                      unit: str = "voice_id") -> float:
    """Mean over items of the JS divergence (bits, 0..log2(groups)) between the groups' answer
    distributions. A group's distribution for an item is the mean over its voices of each
    voice's answer distribution: one-hot of `answer` (valid answers only), or the option
    probabilities in `prob_columns` ({option: column}). 0 = the answer never depends on the group."""
    data = _AnswerData.build(table, group, answer=answer, prob_columns=prob_columns, item=item, unit=unit)
    return float(data.divergence(np.ones(len(data.voices))))


@dataclass
class _AnswerData:
    """Per voice x item answer distributions, for fast weighted (bootstrap) recomputation."""

    voices: np.ndarray  # voice ids
    codes: np.ndarray  # per voice: group index
    n_groups: int
    dist: np.ndarray  # (voices, items, categories), rows sum to 1, or 0 where no valid answer
    present: np.ndarray  # (voices, items): has a valid answer

    @classmethod
    def build(cls, table, group, *, answer="answer", prob_columns=None, item="item_id", unit="voice_id",
              voices=None, items=None, categories=None, groups=None):
        """From a tidy table; `voices`, `items`, `categories`, `groups` fix the axes (so two runs'
        arrays line up), else they are the sorted values present."""
        voices = sorted(table[unit].unique()) if voices is None else list(voices)
        labels = table.groupby(unit)[group].first().astype(str).reindex(voices)
        groups = sorted(labels.dropna().unique()) if groups is None else list(groups)
        if prob_columns:
            rows = table.dropna(subset=list(prob_columns.values()))
            values = rows[list(prob_columns.values())].to_numpy(float)
            values = values / values.sum(axis=1, keepdims=True)
            categories = list(prob_columns)
        else:
            rows = table[table[answer].notna()]
            if "status" in rows.columns:
                rows = rows[rows["status"] == "valid"]
            if categories is None:
                categories = sorted(rows[answer].astype(str).unique())
            codes = pd.Categorical(rows[answer].astype(str), categories=categories).codes
            rows, codes = rows[codes >= 0], codes[codes >= 0]
            values = np.eye(len(categories))[codes]
        if rows.empty:
            raise BiasbenchError("no valid answers to compare")
        items = sorted(table[item].unique()) if items is None else list(items)
        voice_idx = pd.Categorical(rows[unit], categories=voices).codes
        item_idx = pd.Categorical(rows[item], categories=items).codes
        keep = (voice_idx >= 0) & (item_idx >= 0)
        dist = np.zeros((len(voices), len(items), len(categories)))
        np.add.at(dist, (voice_idx[keep], item_idx[keep]), values[keep])  # samples of one (voice, item) add up
        totals = dist.sum(axis=2, keepdims=True)
        dist = np.where(totals > 0, dist / np.where(totals > 0, totals, 1), 0.0)
        group_codes = np.array([groups.index(g) if g in groups else -1 for g in labels.fillna("")])
        return cls(np.asarray(voices), group_codes, len(groups), dist, totals[..., 0] > 0)

    def divergence(self, weights: np.ndarray) -> float:
        """Mean over items (answered by every group) of the JS among group distributions."""
        per_group = []
        for g in range(self.n_groups):
            w = weights * (self.codes == g)
            mass = np.einsum("v,vi->i", w, self.present)
            summed = np.einsum("v,vik->ik", w, self.dist)
            with np.errstate(invalid="ignore", divide="ignore"):
                per_group.append(summed / mass[:, None])
            per_group[-1][mass == 0] = np.nan
        stacked = np.stack(per_group, axis=1)  # (items, groups, categories)
        ok = ~np.isnan(stacked).any(axis=(1, 2))
        if not ok.any() or self.n_groups < 2:
            return float("nan")
        return float(generalized_js(stacked[ok]).mean())


# --------------------------------------------------------------------------- voice-level outcomes


def _outcome_column(a: pd.DataFrame, b: pd.DataFrame, requested: str | None) -> str | None:
    if requested:
        for t in (a, b):
            if requested not in t.columns:
                raise BiasbenchError(f"outcome column {requested!r} is not in both runs")
        return requested
    for name in ("correct", "value"):
        if name in a.columns and name in b.columns and a[name].notna().any() and b[name].notna().any():
            return name
    return None


def _voice_means(table: pd.DataFrame, outcome: str) -> pd.DataFrame:
    valid = table[table[outcome].notna()]
    if "status" in valid.columns:
        valid = valid[valid["status"] == "valid"]
    out = valid.groupby("voice_id").agg(mean=(outcome, "mean"), n=(outcome, "size"))
    labels = table.groupby("voice_id")[["gender", "ethnicity"]].first()
    return labels.join(out, how="left")


def _gap(means: np.ndarray, codes: np.ndarray, weights: np.ndarray, n_groups: int) -> tuple[float, list[float]]:
    group_means = []
    for g in range(n_groups):
        w = weights * (codes == g) * np.isfinite(means)
        group_means.append(float(np.sum(w * np.nan_to_num(means)) / w.sum()) if w.sum() > 0 else float("nan"))
    finite = [m for m in group_means if np.isfinite(m)]
    return (max(finite) - min(finite) if len(finite) >= 2 else float("nan")), group_means


def _mean(means: np.ndarray, weights: np.ndarray) -> float:
    w = weights * np.isfinite(means)
    return float(np.sum(w * np.nan_to_num(means)) / w.sum()) if w.sum() > 0 else float("nan")


# --------------------------------------------------------------------------- resampling


def _cell_index(labels: pd.DataFrame) -> list[np.ndarray]:
    keys = labels["gender"].astype(str) + "|" + labels["ethnicity"].astype(str)
    return [np.flatnonzero(keys.to_numpy() == k) for k in sorted(keys.unique())]


def _bootstrap_weights(cells: list[np.ndarray], n: int, rng) -> np.ndarray:
    """Voice multiplicities: k-1 of the k voices of each cell drawn with replacement (Rao-Wu)."""
    w = np.zeros(n)
    for members in cells:
        draws = max(1, len(members) - 1)
        np.add.at(w, rng.choice(members, size=draws, replace=True), 1.0)
    return w


def _ci(samples: np.ndarray, level: float) -> list[float] | None:
    finite = samples[np.isfinite(samples)]
    if finite.size < 0.975 * samples.size or finite.size == 0:
        return None
    low, high = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(low), float(high)]


def _pvalue(observed: float, null: np.ndarray) -> float | None:
    null = null[np.isfinite(null)]
    if not np.isfinite(observed) or null.size == 0:
        return None
    return float((1 + np.sum(np.abs(null) >= abs(observed) - 1e-12)) / (1 + null.size))


class _Design:
    """How voices of A and B relate: paired (the same voices) or two independent sets."""

    def __init__(self, labels_a: pd.DataFrame, labels_b: pd.DataFrame):
        self.paired = set(labels_a.index) == set(labels_b.index)
        if self.paired:
            labels_b = labels_b.reindex(labels_a.index)
            if not (labels_a[["gender", "ethnicity"]].astype(str).values
                    == labels_b[["gender", "ethnicity"]].astype(str).values).all():
                raise BiasbenchError("the same voice ids carry different labels in the two runs")
        self.labels_a, self.labels_b = labels_a, labels_b
        self.cells_a, self.cells_b = _cell_index(labels_a), _cell_index(labels_b)

    def boot(self, rng):
        wa = _bootstrap_weights(self.cells_a, len(self.labels_a), rng)
        wb = wa if self.paired else _bootstrap_weights(self.cells_b, len(self.labels_b), rng)
        return wa, wb


def _change(stat_a, stat_b, design: _Design, *, n_boot, n_perm, level, seed, swap) -> dict:
    """Observed A, B, B - A; bootstrap CIs; permutation p-value of B - A.

    `stat_a(weights)` / `stat_b(weights)` compute the statistic on weighted voices (bootstrap);
    `swap(rng)` draws (stat A, stat B) under the null of no change (see `_swapper`)."""
    rng = np.random.default_rng(seed)
    ones_a, ones_b = np.ones(len(design.labels_a)), np.ones(len(design.labels_b))
    a, b = stat_a(ones_a), stat_b(ones_b)
    boot = np.empty((n_boot, 3))
    for r in range(n_boot):
        wa, wb = design.boot(rng)
        boot[r, 0], boot[r, 1] = stat_a(wa), stat_b(wb)
    boot[:, 2] = boot[:, 1] - boot[:, 0]
    null = np.empty(n_perm)
    for r in range(n_perm):
        pa, pb = swap(rng)
        null[r] = pb - pa
    return {"a": a, "b": b, "change": b - a, "ci_a": _ci(boot[:, 0], level), "ci_b": _ci(boot[:, 1], level),
            "ci_change": _ci(boot[:, 2], level), "p_value": _pvalue(b - a, null)}


def _swapper(design: _Design, fn_a, fn_b):
    """A function rng -> (stat A, stat B) under the null of no change, by voice-level swapping.

    Paired design: each voice's answers are swapped between the runs with probability 1/2, and
    fn_a/fn_b(mask) give the statistics with the voices in `mask` swapped. Unpaired: the pooled
    voices keep their answers and are re-dealt to the runs within gender x ethnicity cells, and
    fn_a/fn_b(in_a) give the statistics of the voices dealt to A / to B."""
    if design.paired:
        n = len(design.labels_a)

        def swap(rng):
            mask = rng.random(n) < 0.5
            return fn_a(mask), fn_b(mask)
        return swap

    pooled_keys = pd.concat([design.labels_a, design.labels_b])
    keys = (pooled_keys["gender"].astype(str) + "|" + pooled_keys["ethnicity"].astype(str)).to_numpy()
    n_a = len(design.labels_a)

    def swap(rng):
        in_a = np.zeros(len(keys), bool)
        for key in np.unique(keys):
            members = np.flatnonzero(keys == key)
            k_a = int(np.sum(members < n_a))
            in_a[rng.permutation(members)[:k_a]] = True
        return fn_a(in_a), fn_b(in_a)
    return swap


# --------------------------------------------------------------------------- the comparison


def _seen_check(manifest_b: dict, table_a: pd.DataFrame, table_b: pd.DataFrame, texts: dict | None) -> dict:
    """Which of the runs' voices / items the fine-tune behind run B trained on (if known)."""
    adapter = (manifest_b.get("model", {}).get("fingerprint", {}) or {}).get("adapter")
    if not adapter or not adapter.get("path"):
        return {"adapter": None}
    path = Path(adapter["path"]) / "finetune_manifest.json"
    if not path.is_file():
        return {"adapter": adapter.get("path"), "note": "no finetune_manifest.json: training voices/items unknown"}
    ft = json.loads(path.read_text(encoding="utf-8"))
    train_voices = set(ft.get("pools", {}).get("train", {}).get("voices", []))
    run_voices = set(table_a["voice_id"]) | set(table_b["voice_id"])
    seen_voices = sorted(run_voices & train_voices)
    out = {"adapter": adapter.get("path"), "kind": ft.get("kind"), "seen_voices": seen_voices}
    trained = set(ft.get("training_text_sha16", []))
    trained |= set((ft.get("init_adapter") or {}).get("training_text_sha16", []))  # DPO on top of an SFT adapter
    if texts is None:
        out["seen_items"] = None
        out["note"] = "the task's item texts could not be reloaded: item overlap not checked"
    else:
        from biasbench.finetune.sft import text_hashes

        out["seen_items"] = sorted(i for i, t in texts.items() if text_hashes([t])[0] in trained)
    return out


def _item_texts(manifest: dict, run_dir: Path) -> dict | None:
    try:
        from biasbench.finetune.data import run_items

        _, items = run_items(manifest, run_dir, "auto")
    except BiasbenchError:
        return None
    return {item_id: item.spoken_text for item_id, item in items.items()}


def compare_runs(run_a, run_b, *, groupings=GROUPINGS, outcome: str | None = None, n_boot: int = 1000,
                 n_perm: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Plain-data comparison of two runs (see the module docstring)."""
    run_a, run_b = Path(run_a), Path(run_b)
    table_a, man_a = read_run_table(run_a)
    table_b, man_b = read_run_table(run_b)
    task_a, task_b = man_a.get("task", {}).get("task"), man_b.get("task", {}).get("task")
    notes = []
    if task_a != task_b:
        raise BiasbenchError(f"the runs answer different tasks ({task_a} vs {task_b}); compare runs of one task")
    common = sorted(set(table_a["item_id"]) & set(table_b["item_id"]))
    if not common:
        raise BiasbenchError("the runs share no item: nothing to compare")
    if len(common) < max(table_a["item_id"].nunique(), table_b["item_id"].nunique()):
        notes.append(f"compared on the {len(common)} items both runs answered")
    table_a = table_a[table_a["item_id"].isin(common)]
    table_b = table_b[table_b["item_id"].isin(common)]
    column = _outcome_column(table_a, table_b, outcome)
    labels_a = table_a.groupby("voice_id")[["gender", "ethnicity"]].first().sort_index()
    labels_b = table_b.groupby("voice_id")[["gender", "ethnicity"]].first().sort_index()
    design = _Design(labels_a, labels_b)
    notes.append("paired by voice: both runs heard the same voices" if design.paired else
                 "unpaired: the runs heard different voices (bootstrap and permutation over voices of each run)")
    notes.append("p-values are per row, not corrected for the several rows of this table")
    perm = dict(n_boot=n_boot, n_perm=n_perm, level=level, seed=seed)
    result = {"run_a": str(run_a), "run_b": str(run_b), "task": task_a,
              "model_a": man_a.get("model", {}).get("name"), "model_b": man_b.get("model", {}).get("name"),
              "adapter_a": (man_a.get("model", {}).get("fingerprint") or {}).get("adapter"),
              "adapter_b": (man_b.get("model", {}).get("fingerprint") or {}).get("adapter"),
              "pipeline_check": bool(man_a.get("model", {}).get("pipeline_check")
                                     or man_b.get("model", {}).get("pipeline_check")),
              "paired": design.paired, "n_items": len(common), "n_voices_a": len(labels_a),
              "n_voices_b": len(labels_b), "outcome": column, "ci_method": CI_METHOD, "level": level,
              "test": "voice-level permutation test of the change (paired swap by voice when the voices match)",
              "gaps": [], "divergence": [], "accuracy": None, "notes": notes}

    if column is not None:
        ma = _voice_means(table_a, column).reindex(labels_a.index)
        mb = _voice_means(table_b, column).reindex(labels_b.index)
        if design.paired:
            mb = mb.reindex(labels_a.index)
        for grouping in groupings:
            result["gaps"].append(_gap_change(grouping, ma, mb, design, perm))
        if column == "correct":
            result["accuracy"] = _accuracy_change(ma, mb, design, perm)
    for grouping in groupings:
        result["divergence"].append(_divergence_change(grouping, table_a, table_b, design, perm))
    result["held_out"] = _seen_check(man_b, table_a, table_b, _item_texts(man_b, run_b))
    held = result["held_out"]
    if held.get("seen_voices"):
        notes.append(f"NOT HELD OUT: {len(held['seen_voices'])} voices of these runs were heard in training")
    if held.get("seen_items"):
        notes.append(f"NOT HELD OUT: {len(held['seen_items'])} items of these runs were trained on")
    return result


def _gap_change(grouping: str, ma: pd.DataFrame, mb: pd.DataFrame, design: _Design, perm: dict) -> dict:
    groups = sorted(set(ma[grouping].astype(str)) | set(mb[grouping].astype(str)))
    codes_a = np.array([groups.index(g) for g in ma[grouping].astype(str)])
    codes_b = np.array([groups.index(g) for g in mb[grouping].astype(str)])
    va, vb = ma["mean"].to_numpy(float), mb["mean"].to_numpy(float)
    n_g = len(groups)

    def stat_a(w):
        return _gap(va, codes_a, w, n_g)[0]

    def stat_b(w):
        return _gap(vb, codes_b, w, n_g)[0]

    if design.paired:
        def fa(mask):
            return _gap(np.where(mask, vb, va), codes_a, np.ones(len(va)), n_g)[0]

        def fb(mask):
            return _gap(np.where(mask, va, vb), codes_a, np.ones(len(va)), n_g)[0]
    else:
        pooled_v, pooled_c = np.concatenate([va, vb]), np.concatenate([codes_a, codes_b])

        def fa(in_a):
            return _gap(pooled_v[in_a], pooled_c[in_a], np.ones(in_a.sum()), n_g)[0]

        def fb(in_a):
            return _gap(pooled_v[~in_a], pooled_c[~in_a], np.ones((~in_a).sum()), n_g)[0]

    out = _change(stat_a, stat_b, design, swap=_swapper(design, fa, fb), **perm)
    out.update(grouping=grouping, groups=groups,
               group_means_a=dict(zip(groups, _gap(va, codes_a, np.ones(len(va)), n_g)[1])),
               group_means_b=dict(zip(groups, _gap(vb, codes_b, np.ones(len(vb)), n_g)[1])))
    return out


def _accuracy_change(ma: pd.DataFrame, mb: pd.DataFrame, design: _Design, perm: dict) -> dict:
    va, vb = ma["mean"].to_numpy(float), mb["mean"].to_numpy(float)
    if design.paired:
        def fa(mask):
            return _mean(np.where(mask, vb, va), np.ones(len(va)))

        def fb(mask):
            return _mean(np.where(mask, va, vb), np.ones(len(va)))
    else:
        pooled = np.concatenate([va, vb])

        def fa(in_a):
            return _mean(pooled[in_a], np.ones(in_a.sum()))

        def fb(in_a):
            return _mean(pooled[~in_a], np.ones((~in_a).sum()))
    return _change(lambda w: _mean(va, w), lambda w: _mean(vb, w), design, swap=_swapper(design, fa, fb), **perm)


def _divergence_change(grouping: str, table_a, table_b, design: _Design, perm: dict) -> dict:
    both = pd.concat([table_a, table_b])
    valid = both[both["answer"].notna() & (both["status"] == "valid" if "status" in both.columns else True)]
    axes = dict(items=sorted(both["item_id"].unique()), categories=sorted(valid["answer"].astype(str).unique()),
                groups=sorted(both[grouping].astype(str).unique()))
    da = _AnswerData.build(table_a, grouping, voices=design.labels_a.index, **axes)
    db = _AnswerData.build(table_b, grouping, voices=design.labels_b.index, **axes)
    if design.paired:
        def fa(mask):
            return _swapped(da, db, mask).divergence(np.ones(len(da.voices)))

        def fb(mask):
            return _swapped(db, da, mask).divergence(np.ones(len(da.voices)))
    else:
        def fa(in_a):
            return _pooled(da, db, in_a)

        def fb(in_a):
            return _pooled(da, db, ~in_a)
    out = _change(da.divergence, db.divergence, design, swap=_swapper(design, fa, fb), **perm)
    out.update(grouping=grouping, metric="mean JS divergence (bits) between group answer distributions")
    return out


def _swapped(x: _AnswerData, y: _AnswerData, mask: np.ndarray) -> _AnswerData:
    """x with the voices in `mask` given y's answers (same voices, same axes)."""
    return _AnswerData(x.voices, x.codes, x.n_groups, np.where(mask[:, None, None], y.dist, x.dist),
                       np.where(mask[:, None], y.present, x.present))


def _pooled(da: _AnswerData, db: _AnswerData, keep: np.ndarray) -> float:
    """The divergence of the voices in `keep` out of A's voices followed by B's."""
    dist = np.concatenate([da.dist, db.dist])[keep]
    present = np.concatenate([da.present, db.present])[keep]
    codes = np.concatenate([da.codes, db.codes])[keep]
    return _AnswerData(np.arange(int(keep.sum())), codes, da.n_groups, dist, present).divergence(
        np.ones(int(keep.sum())))


# --------------------------------------------------------------------------- report


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _fmt_ci(ci) -> str:
    return "–" if not ci else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _fmt_p(p) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def to_markdown(result: dict) -> str:
    """The comparison as a short markdown report."""
    level = int(round(result["level"] * 100))

    def label(model, adapter):
        return f"{model} + adapter {adapter.get('name') or adapter.get('path')}" if adapter else str(model)

    lines = [f"# Compare: {result['task']} — A: {label(result['model_a'], result['adapter_a'])} vs "
             f"B: {label(result['model_b'], result['adapter_b'])}", ""]
    if result["pipeline_check"]:
        lines += ["**PIPELINE CHECK**: a tiny random model or a simulation answered in at least one run; these "
                  "numbers test the harness, they measure no real model.", ""]
    for side in ("a", "b"):
        adapter = result[f"adapter_{side}"]
        used = f" (adapter `{adapter['path']}`)" if adapter else ""
        lines.append(f"- {side.upper()}: `{result[f'run_{side}']}`{used}")
    lines += [f"- {result['n_items']} items; {result['n_voices_a']} voices in A, {result['n_voices_b']} in B; "
              f"{'paired by voice' if result['paired'] else 'unpaired'}",
              f"- CIs ({level}%): {result['ci_method']}. p: {result['test']}.", ""]
    header = f"| metric | grouping | A | B | change (B − A) | {level}% CI of change | p |"
    rows = [header, "|---|---|---|---|---|---|---|"]
    for gap in result["gaps"]:
        rows.append(f"| gap in {result['outcome']} (largest − smallest group) | {gap['grouping']} | {_fmt(gap['a'])} "
                    f"{_fmt_ci(gap['ci_a'])} | {_fmt(gap['b'])} {_fmt_ci(gap['ci_b'])} | {_fmt(gap['change'])} | "
                    f"{_fmt_ci(gap['ci_change'])} | {_fmt_p(gap['p_value'])} |")
    for div in result["divergence"]:
        rows.append(f"| answer divergence (JS, bits) | {div['grouping']} | {_fmt(div['a'])} | {_fmt(div['b'])} | "
                    f"{_fmt(div['change'])} | {_fmt_ci(div['ci_change'])} | {_fmt_p(div['p_value'])} |")
    acc = result.get("accuracy")
    if acc:
        rows.append(f"| overall accuracy (mean of voices) | all | {_fmt(acc['a'])} {_fmt_ci(acc['ci_a'])} | "
                    f"{_fmt(acc['b'])} {_fmt_ci(acc['ci_b'])} | {_fmt(acc['change'])} | {_fmt_ci(acc['ci_change'])} | "
                    f"{_fmt_p(acc['p_value'])} |")
    lines += rows + [""]
    for gap in result["gaps"]:
        lines.append(f"- {gap['grouping']} means of {result['outcome']}: A " +
                     ", ".join(f"{g} {_fmt(v)}" for g, v in gap["group_means_a"].items()) + "; B " +
                     ", ".join(f"{g} {_fmt(v)}" for g, v in gap["group_means_b"].items()))
    held = result.get("held_out") or {}
    if held.get("adapter"):
        seen_v, seen_i = held.get("seen_voices") or [], held.get("seen_items")
        lines.append(f"- held-out check (adapter of B, {held.get('kind')}): "
                     f"{len(seen_v)} voices and " + ("an unknown number of" if seen_i is None else str(len(seen_i)))
                     + " items of these runs were seen in training")
    lines += [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"
