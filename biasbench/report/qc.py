"""Voice-quality confounds per group: is one group's audio harder to hear, faster, louder?

Sources, per voice (the voice is the unit, so each measure is one number per voice):

* the tidy table's `audio_seconds` (mean clip length of the voice: a speaking-rate proxy),
  and any of QC_TABLE_COLUMNS the tidy table carries (averaged over the voice's rows);
* `voice_qc.csv` (or `voice_qc.parquet`) in the run directory, written by the QC stage:
  one row per voice, a `voice_id` column matching the tidy table, and any numeric columns
  (e.g. wer, speaking_rate, duration_s, loudness_lufs). Non-numeric columns are ignored.

Each measure gets its group means and range, and a voice-level permutation test of the
group difference (numeric_gap on one row per voice). These are checks of the design,
not results about the model, so they are not in the report's multiple-comparison family.
With a voice_qc file, every gap of the task's outcome is also tested adjusted for its
measures (ADJUST_FOR; the Freedman-Lane voice-level permutation test, analysis/adjusted.py).
The QC comparisons are Holm-corrected among themselves before any warning is worded. The QC stage (biasbench/voices/qc.py) also writes a `flags` column
(`;`-separated outlier flags per voice); flagged voices are listed.
"""

from __future__ import annotations

import pandas as pd

from biasbench.analysis.results import plain

# Not wer/cer: in the tidy table of a transcribe run those are the outcome, not a confound;
# a voice's intelligibility comes from voice_qc.csv instead.
QC_TABLE_COLUMNS = ("speaking_rate", "duration", "duration_s", "loudness", "loudness_lufs", "snr",
                    "clipping_ratio", "silence_ratio", "f0", "f0_hz", "pitch_hz")
#: The adjusted test uses these voice_qc measures when present (DESIGN.md's confounds: intelligibility,
#: speaking rate, loudness; duration is left out, being nearly collinear with speaking rate),
#: else for every non-constant numeric column of the file.
ADJUST_FOR = ("wer", "speaking_rate", "loudness_lufs")
QC_GROUPINGS = {"gender": ["gender"], "ethnicity": ["ethnicity"]}


def per_voice_measures(run, audio: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """voice_id, gender, ethnicity and one column per measure; and where each measure came from."""
    columns = ["audio_seconds", *[c for c in QC_TABLE_COLUMNS if c in audio.columns]]
    numeric = audio[["voice_id", *columns]].copy()
    for column in columns:
        numeric[column] = pd.to_numeric(numeric[column], errors="coerce")
    voices = numeric.groupby("voice_id")[columns].mean()
    voices = voices.loc[:, voices.notna().any()]
    sources = {c: "tidy table (mean over the voice's responses)" for c in voices.columns}
    labels = audio.drop_duplicates("voice_id").set_index("voice_id")[["gender", "ethnicity"]].astype(str)
    voices = labels.join(voices)
    if run.voice_qc is not None:
        qc = run.voice_qc.set_index("voice_id")
        qc = qc[[c for c in qc.columns if c not in voices.columns]]
        voices = voices.join(qc)
        sources.update({c: run.qc_file.name for c in qc.columns})
    return voices.reset_index(), sources


def voice_qc_section(run, audio: pd.DataFrame, settings) -> dict | None:
    from biasbench.analysis import numeric_gap

    voices, sources = per_voice_measures(run, audio)
    if not sources:
        return None
    section = {"file": run.qc_file.name if run.qc_file else None, "sources": sources, "measures": {}, "notes": []}
    if run.voice_qc is not None:
        absent = sorted(set(voices["voice_id"]) - set(run.voice_qc["voice_id"]))
        if absent:
            section["notes"].append(f"{run.qc_file.name} has no row for {len(absent)} voice(s): "
                                    f"{', '.join(absent[:5])}")
    frame = voices.assign(item_id="voice")
    for measure in sources:
        rows = frame[frame[measure].notna()]
        section["measures"][measure] = {
            gname: numeric_gap(rows, columns, measure, n_permutations=settings.n_permutations,
                               seed=settings.seed).to_dict()
            for gname, columns in QC_GROUPINGS.items()}
    correct_qc_family(section["measures"])
    section["voices"] = voices.to_dict("records")
    section["flagged"] = flagged_voices(run)
    adjust = adjustment_columns(voices, sources, run)
    if adjust:
        section["adjusted_for"] = adjust
        section["covariates"] = voices[["voice_id", *adjust]].dropna().to_dict("records")
    return plain(section)


def correct_qc_family(measures: dict) -> None:
    """Holm over every QC comparison (each measure by each grouping): a warning that voice
    quality differs between groups must not come from testing many measures."""
    from biasbench.analysis import correct_pvalues

    raw = {f"{m} by {g}": gap.get("p_value") for m, by in measures.items() for g, gap in by.items()}
    holm = correct_pvalues(raw, method="holm", family="voice-quality checks").as_mapping()
    for m, by in measures.items():
        for g, gap in by.items():
            gap["p_holm"] = holm.get(f"{m} by {g}")


def adjustment_columns(voices: pd.DataFrame, sources: dict, run) -> list[str]:
    """The voice_qc measures the adjusted GEE uses: ADJUST_FOR when present, non-constant only."""
    if run.qc_file is None:
        return []
    from_file = [c for c, source in sources.items() if source == run.qc_file.name]
    preferred = [c for c in ADJUST_FOR if c in from_file] or from_file
    return [c for c in preferred if voices[c].notna().all() and voices[c].nunique() > 1]


def flagged_voices(run) -> dict:
    """voice_id -> its QC flags, from the QC file's `flags` column (empty when none)."""
    raw = getattr(run, "voice_qc_flags", None)
    return {} if raw is None else {str(v): str(f) for v, f in raw.items() if isinstance(f, str) and f.strip()}
