"""The report's figures, drawn with matplotlib (Agg) from report.json's data, as PNG bytes.

* voices: every voice as a dot within its group, beside the group mean and its CI, so the
  voice-to-voice spread and the group difference are seen together;
* gaps: a forest plot of the gaps with their CIs;
* answers: stacked bars of each group's answer distribution (probe tasks).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 100
OTHER = "(other)"


def readable(ax, axis: str = "y", span: float = 1.0) -> None:
    """Plain tick labels (no offset text such as '1e-11+4e1', no scientific notation), and a
    visible range around flat data (every value equal: a gap of 0, one rate for all voices)."""
    ax.ticklabel_format(axis=axis, useOffset=False, style="plain")
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    middle = (low + high) / 2
    if high - low < 1e-6 * max(1.0, abs(middle)):
        middle = 0.0 if abs(middle) < 1e-9 else middle
        (ax.set_ylim if axis == "y" else ax.set_xlim)(middle - span, middle + span)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _scale(section: dict) -> float:
    return 100.0 if section["kind"] == "binary" else 1.0


def voice_dots(report: dict) -> bytes | None:
    """One panel per grouping: voices as dots, group mean with its CI as a bar."""
    section, dots = report["sections"]["primary"], report["sections"].get("voices")
    if section["kind"] == "categorical" or not dots:
        return None
    scale = _scale(section)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [2, 3, 6]}, sharey=True)
    for ax, (gname, block) in zip(axes, section["groupings"].items()):
        gap, labels = block["gap"], sorted(block["gap"]["estimates"])
        for x, label in enumerate(labels):
            values = [d["value"] * scale for d in dots if " / ".join(d[c] for c in block["by"]) == label]
            jitter = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(len(values))
            ax.scatter(x - 0.1 + jitter, values, s=22, color="0.45", alpha=0.8, zorder=2,
                       label="one voice" if x == 0 else None)
            _mean_with_ci(ax, x + 0.25, gap["estimates"].get(label), gap["ci_by_group"].get(label), scale, x == 0)
        control = report.get("text_control") or {}
        if control.get("estimate") is not None:
            ax.axhline(control["estimate"] * scale, ls="--", color="tab:orange", lw=1, label="text only (no voice)")
        ax.set_xticks(range(len(labels)), [lab.replace(" / ", "\n") for lab in labels], fontsize=8)
        ax.set_title(f"by {gname}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    readable(axes[0], "y", span=5.0 if scale == 100 else 1.0)  # the axes share y
    axes[0].set_ylabel(f"{section['name']}" + (" (%)" if scale == 100 else ""))
    axes[0].legend(fontsize=7, loc="best")
    return _png(fig)


def _mean_with_ci(ax, x, estimate, ci, scale, first) -> None:
    if estimate is None:
        return
    if ci:
        ax.errorbar([x], [estimate * scale], yerr=_err(estimate, ci, scale),
                    fmt="D", color="tab:blue", capsize=4, zorder=3, label="group mean, t interval" if first else None)
    else:
        ax.scatter([x], [estimate * scale], marker="D", color="tab:blue", zorder=3,
                   label="group mean (no CI)" if first else None)


def _err(value, ci, scale) -> list:
    """Error-bar lengths (clipped at 0, should an interval ever not contain its estimate)."""
    return [[max(0.0, (value - ci[0]) * scale)], [max(0.0, (ci[1] - value) * scale)]]


def gap_rows(section: dict) -> list[tuple[str, float, list | None]]:
    """(label, gap, ci): every pair of gender and ethnicity, and the largest gap between cells."""
    rows = []
    for gname, block in section["groupings"].items():
        gap = block["gap"]
        if gname == "gender x ethnicity" or len(gap["estimates"]) > 4:
            if gap["gap"] is not None:
                rows.append((f"{gap['highest']} - {gap['lowest']} (largest of {gname})", gap["gap"], gap["ci"]))
            continue
        for pair in gap["pairwise"]:
            rows.append((f"{pair['a']} - {pair['b']}", pair["a_minus_b"], pair["ci"]))
    return rows


def forest(report: dict) -> bytes | None:
    section = report["sections"]["primary"]
    if section["kind"] == "categorical":
        return None
    rows = [r for r in gap_rows(section) if r[1] is not None]
    if not rows:
        return None
    scale = _scale(section)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    for y, (_, gap, ci) in enumerate(reversed(rows)):
        if ci:
            ax.errorbar([gap * scale], [y], xerr=_err(gap, ci, scale), fmt="o",
                        color="tab:blue", capsize=3)
        else:
            ax.plot([gap * scale], [y], "o", color="0.5")
    ax.axvline(0, color="0.3", lw=1)
    readable(ax, "x", span=5.0 if scale == 100 else 1.0)
    ax.set_yticks(range(len(rows)), [r[0] for r in reversed(rows)], fontsize=8)
    unit = "percentage points" if scale == 100 else (section.get("unit") or "difference")
    level = next(iter(section["groupings"].values()))["gap"]["level"]
    ax.set_xlabel(f"gap in {section['name']} ({unit}), {100 * level:.3g}% simultaneous interval")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def answers(report: dict) -> bytes | None:
    """Stacked bars of each group's answer shares (top categories, the rest as '(other)')."""
    section = report["sections"]["primary"]
    if section["kind"] != "categorical":
        return None
    top = section["top_categories"]
    bars = []
    for block in section["groupings"].values():
        for label, dist in (block["result"].get("distributions") or {}).items():
            bars.append((label, [dist.get(c, 0.0) for c in top] + [max(0.0, 1 - sum(dist.get(c, 0.0) for c in top))]))
    control = report.get("text_control") or {}
    if control.get("shares"):
        shares = control["shares"]
        bars.append(("text only (no voice)", [shares.get(c, 0.0) for c in top]
                     + [max(0.0, 1 - sum(shares.get(c, 0.0) for c in top))]))
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(bars) + 1.5))
    colors = plt.get_cmap("tab20").colors
    left = np.zeros(len(bars))
    for k, name in enumerate([*top, OTHER]):
        widths = np.array([b[1][k] for b in bars]) * 100
        ax.barh(range(len(bars)), widths, left=left, color=colors[k % len(colors)] if name != OTHER else "0.8",
                label=name)
        left += widths
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("share of answers (%), mean over the group's voices")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


FIGURES = {"voices": (voice_dots, "Every voice (grey dot) within its group, beside the group mean and its t interval "
                                  "over the group's voices (blue): the spread of voices and the gap between groups "
                                  "seen together."),
           "gaps": (forest, "Gaps between groups (a - b) with their intervals, which invert the voice-level "
                            "permutation test (level in the Methods)."),
           "answers": (answers, "Answer distribution per group: the most frequent categories, the rest as (other).")}


def draw_all(report: dict) -> dict[str, tuple[bytes, str]]:
    """name -> (PNG bytes, caption), for the figures this run has."""
    out = {}
    for name, (draw, caption) in FIGURES.items():
        png = draw(report)
        if png:
            out[name] = (png, caption)
    return out
