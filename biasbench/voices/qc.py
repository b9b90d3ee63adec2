"""Voice quality control: measure every voice of a pool on fixed sentences, flag the odd ones.

DESIGN.md: confounds are measured, not assumed away. A voice that a reference ASR mishears,
that speaks twice as fast as the others, or that is much quieter, can fake a group effect.
So every voice speaks the same QC sentences (`QC_SENTENCES`, through the audio cache, exactly as
a run would), and each voice gets one row of `voice_qc.csv`:

| column | what | how |
| --- | --- | --- |
| `wer`, `cer` | ASR round trip | the reference ASR (default `whisper-tiny-en`) transcribes each clip; WER and CER against the sentence after biasbench's pinned normalisation (`biasbench.tasks.scoring.normalise_transcript`), averaged over the sentences |
| `speaking_rate` | words per second | words of the sentences / seconds of speech, leading and trailing silence trimmed, pooled over the sentences |
| `duration_s` | seconds | mean clip length, silence included |
| `loudness_lufs` | integrated loudness | ITU-R BS.1770-4 (K-weighting, 400 ms blocks, -70 LUFS absolute and -10 LU relative gates) over all the voice's clips in a row, with pyloudnorm |
| `clipping_ratio` | share of samples at full scale | abs(sample) >= 0.999, pooled |
| `silence_ratio` | share of silent frames | 20 ms frames with RMS below -50 dBFS, pooled |
| `classifier_label`, `classifier_share`, `classifier_agrees` | optional, with `--classifier MODEL` | an audio classifier's majority label over the voice's QC clips, the share of clips with it, and for a gender classifier `yes`/`no` (agrees with the pool's `gender`), else empty: see `biasbench.voices.classify`. Accent is not ethnicity: accent (any non-gender) labels are only reported, never compared with the pool or mapped to ethnicity |
| `pitch_hz` | median pitch | median fundamental frequency over voiced 40 ms frames of all the voice's clips (biasbench.tts.pitch: autocorrelation, 60-400 Hz) |
| `snr_db` | SNR estimate | 95th minus 10th percentile of 20 ms frame levels over the voice's clips in a row (frames floored at -100 dBFS) |
| `clone_fidelity`, `nearest_voice`, `nearest_similarity` | with `--speaker` (on when resemblyzer is installed) | speaker-embedding cosine of the voice's QC clips (mean embedding) with its reference clip, cloning voices only, else empty; the most similar other voice of the pool and that similarity (biasbench.voices.speaker). Flagged: `clone_fidelity_below_0.75`, `same_cell_voice_<id>(sim=..)` above 0.92. The .json adds mean similarity within and between cells, ethnicities and genders: clones collapsing into one timbre show as between-group similarity close to within-group |
| `flags` | outliers | `;`-separated, empty when none (below) |

A voice is flagged when a measure is an outlier within its pool: robust z-score
`0.6745 * (x - median) / MAD` beyond `z_threshold` (3) for wer, cer, speaking_rate and
loudness_lufs (the MAD has a floor per measure, `MAD_FLOOR`, so that a pool of near-identical
voices does not flag tiny differences; for wer and cer also the binomial noise of a rate
measured on the QC sentences' words or characters, `sampling_floor`), or when it passes an
absolute limit: WER above `wer_threshold` (0.5: the ASR got fewer than half the words right), clipping above 0.1% of
samples, silence above 60% of frames; and, with a gender classifier, when the classifier's
majority label is the other gender (`classifier_gender_mismatch(...)`: listen to the voice).

Why pyloudnorm: loudness as people hear it is defined by ITU-R BS.1770 (K-weighted, gated),
not by RMS or peak; pyloudnorm is a small, pure-Python (numpy + scipy) implementation of that
standard, MIT-licensed, validated against the EBU Tech 3341 test signals, with no binary or
torch dependency. It is in the `asr` extra with the other QC dependencies.

The report stage reads `voice_qc.csv` from a run directory as voice covariates: put it there
with `copy_qc_into_run(qc_csv, run_dir)` (or copy the file by hand).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.formats import dumps, restore_frame, safe_frame
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.loudness import CLIP_LEVEL, loudness_lufs
from biasbench.tts.pitch import median_pitch_hz
from biasbench.voices.classify import (
    CLASSIFIER_COLUMNS,
    classify_clips,
    load_classifier,
    mismatch_flag,
    voice_verdicts,
)

#: Fixed sentences every voice speaks for QC: everyday English with a question, numbers
#: written as words, names, and a spread of consonant clusters and vowels. Never change them
#: in place (QC tables would stop being comparable); add a new tuple and a version instead.
QC_SENTENCES_VERSION = "qc-v1"
QC_SENTENCES = (
    "The early train to the city was full of tired students and busy workers.",
    "Could you please bring two bottles of water and a loaf of brown bread?",
    "My sister Grace moved to a small village near the mountains last spring.",
    "Seven orange fish swam slowly around the edge of the quiet pond.",
    "The judge thanked everyone for their patience and closed the meeting.",
    "Which way is the museum, and how long does it take to walk there?",
)

QC_COLUMNS = ["voice_id", "wer", "cer", "speaking_rate", "duration_s", "loudness_lufs", "clipping_ratio",
              "silence_ratio", "pitch_hz", "snr_db", "flags"]
#: Columns read_qc requires (tables written before pitch_hz and snr_db existed still read; the
#: newer columns are then NaN).
REQUIRED_COLUMNS = ["voice_id", "wer", "cer", "speaking_rate", "duration_s", "loudness_lufs", "clipping_ratio",
                    "silence_ratio", "flags"]
#: With speaker embeddings (run_qc's `speaker_embeddings`), before `flags`: the voice's clone
#: fidelity (cloning voices only, else empty), and the most similar other voice of the pool.
SPEAKER_COLUMNS = ["clone_fidelity", "nearest_voice", "nearest_similarity"]
#: With a classifier (run_qc's `classifier`), CLASSIFIER_COLUMNS go in before `flags` (qc_columns).
#: Measures tested for outliers within the pool, and the smallest MAD used for each.
MAD_FLOOR = {"wer": 0.02, "cer": 0.01, "speaking_rate": 0.1, "loudness_lufs": 0.5}
SILENCE_DBFS = -50.0  # a 20 ms frame below this RMS counts as silent
FRAME_S = 0.02
MAX_CLIPPING = 0.001
MAX_SILENCE = 0.6
DEFAULT_ASR = "whisper-tiny-en"


def qc_columns(with_classifier: bool = False, with_speaker: bool = False) -> list[str]:
    """The QC table's columns: QC_COLUMNS, with SPEAKER_COLUMNS and CLASSIFIER_COLUMNS before `flags`
    when speaker embeddings and a classifier ran."""
    return (QC_COLUMNS[:-1] + (SPEAKER_COLUMNS if with_speaker else []) + (CLASSIFIER_COLUMNS if with_classifier else [])
            + ["flags"])


@dataclass
class QCResult:
    table: pd.DataFrame  # one row per voice, qc_columns()
    clips: pd.DataFrame  # one row per (voice, sentence): transcript and per-clip measures
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- signal measures


def _frame_dbfs(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    size = max(1, int(round(FRAME_S * sr)))
    n = len(audio) // size
    if n == 0:
        return np.array([20 * np.log10(np.sqrt(np.mean(np.square(audio))) + 1e-12)]) if len(audio) else np.array([])
    frames = np.asarray(audio[: n * size], dtype=np.float64).reshape(n, size)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


def speech_seconds(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Seconds from the first to the last non-silent 20 ms frame (0 for an all-silent clip)."""
    loud = np.flatnonzero(_frame_dbfs(audio, sr) >= SILENCE_DBFS)
    return 0.0 if loud.size == 0 else (loud[-1] - loud[0] + 1) * FRAME_S


def snr_db(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """A blind SNR estimate: the 95th minus the 10th percentile of 20 ms frame levels (dB), frames
    floored at -100 dBFS (digital silence), so a clean recording scores high and a noisy one low."""
    levels = np.maximum(_frame_dbfs(audio, sr), -100.0)
    if levels.size < 10:
        return float("nan")
    return float(np.percentile(levels, 95) - np.percentile(levels, 10))


def clip_measures(audio: np.ndarray, sr: int = SAMPLE_RATE) -> dict:
    """Per-clip measures: duration, speech seconds, loudness, clipped and silent shares."""
    audio = np.asarray(audio, dtype=np.float32)
    frames = _frame_dbfs(audio, sr)
    return {
        "duration_s": len(audio) / sr,
        "speech_s": speech_seconds(audio, sr),
        "loudness_lufs": loudness_lufs(audio, sr),
        "n_samples": len(audio),
        "n_clipped": int(np.sum(np.abs(audio) >= CLIP_LEVEL)),
        "n_frames": int(frames.size),
        "n_silent_frames": int(np.sum(frames < SILENCE_DBFS)),
    }


# ---------------------------------------------------------------- outliers


def robust_z(values: pd.Series, floor: float = 0.0) -> pd.Series:
    """0.6745 * (x - median) / max(MAD, floor): about N(0, 1) for normal data, unmoved by outliers."""
    x = pd.to_numeric(values, errors="coerce").astype(float)
    median = x.median()
    mad = max(float((x - median).abs().median()), floor)
    if not np.isfinite(mad) or mad == 0:
        return pd.Series(0.0, index=x.index)
    return 0.6745 * (x - median) / mad


def sampling_floor(rates: pd.Series, n_units: int) -> float:
    """The MAD an error rate measured on `n_units` words (or characters) shows from chance alone.

    A voice's WER on a few QC sentences is a proportion of a few dozen words: its binomial
    standard error sqrt(p(1-p)/n) at the pool's median rate is far above a fixed MAD floor, so
    without this floor a pool of equally clear voices flags whichever one the ASR happened to hear
    best or worst (0.6745 * SE is the MAD of normal noise with that SE)."""
    p = float(pd.to_numeric(rates, errors="coerce").median())
    if not np.isfinite(p) or n_units <= 0:
        return 0.0
    p = min(max(p, 1.0 / n_units), 0.5)  # a median of 0 still has the noise of one error in n
    return 0.6745 * float(np.sqrt(p * (1 - p) / n_units))


def flag_outliers(table: pd.DataFrame, *, z_threshold: float = 3.0, wer_threshold: float = 0.5,
                  units: dict[str, int] | None = None) -> pd.Series:
    """The `flags` text of each voice (see the module docstring); '' when nothing is odd.

    `units`: words and characters each voice's `wer` and `cer` were measured on (e.g.
    {"wer": 28, "cer": 150}); their sampling noise then also floors the MAD (`sampling_floor`)."""
    flags = [[] for _ in range(len(table))]
    for column, floor in MAD_FLOOR.items():
        if units and column in units:
            floor = max(floor, sampling_floor(table[column], units[column]))
        z = robust_z(table[column], floor)
        for i, value in enumerate(z):
            if np.isfinite(value) and abs(value) > z_threshold:
                flags[i].append(f"{column}_{'high' if value > 0 else 'low'}(z={value:+.1f})")
    for i, row in enumerate(table.itertuples(index=False)):
        if np.isfinite(row.wer) and row.wer > wer_threshold:
            flags[i].append(f"wer_above_{wer_threshold:g}")
        if row.clipping_ratio > MAX_CLIPPING:
            flags[i].append(f"clipping_above_{MAX_CLIPPING:g}")
        if row.silence_ratio > MAX_SILENCE:
            flags[i].append(f"silence_above_{MAX_SILENCE:g}")
        if not np.isfinite(row.loudness_lufs):
            flags[i].append("loudness_unmeasurable")
    if "classifier_agrees" in table.columns:
        for i, row in enumerate(table[CLASSIFIER_COLUMNS].itertuples(index=False)):
            flag = mismatch_flag(*row)
            if flag:
                flags[i].append(flag)
    return pd.Series([";".join(f) for f in flags], index=table.index, dtype=object)


# ---------------------------------------------------------------- the QC run


def voice_table(clips: pd.DataFrame, audio_by_voice: dict[str, list[np.ndarray]], sr: int = SAMPLE_RATE) -> pd.DataFrame:
    """One row per voice from the per-clip table (and the clips, for pooled loudness)."""
    rows = []
    for voice_id, group in clips.groupby("voice_id", sort=False):
        speech = group["speech_s"].sum()
        joined = np.concatenate(audio_by_voice[voice_id]) if audio_by_voice.get(voice_id) else np.zeros(0, np.float32)
        rows.append({
            "voice_id": voice_id,
            "wer": group["wer"].mean(),
            "cer": group["cer"].mean(),
            "speaking_rate": group["n_words"].sum() / speech if speech > 0 else float("nan"),
            "duration_s": group["duration_s"].mean(),
            "loudness_lufs": loudness_lufs(joined, sr),
            "clipping_ratio": group["n_clipped"].sum() / max(1, group["n_samples"].sum()),
            "silence_ratio": group["n_silent_frames"].sum() / max(1, group["n_frames"].sum()),
            "pitch_hz": median_pitch_hz(joined, sr) if joined.size else float("nan"),
            "snr_db": snr_db(joined, sr) if joined.size else float("nan"),
        })
    return pd.DataFrame(rows)


def run_qc(pool: str, *, asr: str = DEFAULT_ASR, sentences=QC_SENTENCES, cache=None, workers: int | None = None,
           progress: bool = False, z_threshold: float = 3.0, wer_threshold: float = 0.5, backend=None,
           classifier=None, speaker_embeddings: bool = False) -> QCResult:
    """Speak `sentences` with every voice of `pool`, transcribe them with `asr`, measure, flag.

    `pool`: a pool name or YAML path (balance is not required: QC is how you fix a pool).
    `asr`: a model spec for an ASR backend (alias, hf:<whisper>, ...); or pass a loaded `backend`.
    `classifier`: optional audio-classification model (local folder or hub id, or a loaded
    `classify.AudioClassifier`), run on the same clips: adds CLASSIFIER_COLUMNS. It is loaded
    before any synthesis, so a bad model fails at once.
    """
    from biasbench.models.base import GenerationSettings, Request
    from biasbench.models.registry import load_backend, resolve_model
    from biasbench.tasks.scoring import TRANSCRIPT_NORMALISER, normalise_transcript, transcript_errors
    from biasbench.tts.cache import AudioCache
    from biasbench.tts.synthesis import SynthesisJob, synthesize_all
    from biasbench.voices.pool import load_pool

    sentences = list(sentences)
    if not sentences:
        raise BiasbenchError("voice QC needs at least one sentence")
    if isinstance(classifier, (str, Path)):
        classifier = load_classifier(str(classifier))
    loaded, path = load_pool(pool, allow_unbalanced=True)
    cache = cache if cache is not None else AudioCache()
    plan = [(voice, text, SynthesisJob.speak(voice, text, loaded.loudness_target))
            for voice in loaded.voices for text in sentences]
    synthesis = synthesize_all([job for *_, job in plan], cache, workers=workers, progress=progress)
    failed = {job: message for job, message in synthesis.failures}
    if backend is None:
        choice = resolve_model(asr)
        backend = load_backend(choice, device="auto")
    settings = GenerationSettings(max_new_tokens=96)

    records, audio_by_voice, failures = [], {}, []
    for voice, text, job in plan:
        if job in failed or not synthesis.ok(job):
            failures.append({"voice_id": voice.id, "text": text, "error": failed.get(job, "not synthesised")})
            continue
        audio = cache.get(synthesis.keys[job])
        if audio is None:
            failures.append({"voice_id": voice.id, "text": text, "error": "clip vanished from the cache"})
            continue
        audio_by_voice.setdefault(voice.id, []).append(audio)
        records.append({"voice_id": voice.id, "text": text, "audio_key": synthesis.keys[job], "audio": audio})
    responses = []
    for start in range(0, len(records), 8):
        batch = records[start:start + 8]
        responses += backend.generate([Request(request_id=f"qc-{start + i}", prompt="", audio=r["audio"],
                                               sampling_rate=SAMPLE_RATE, settings=settings)
                                       for i, r in enumerate(batch)])
    rows = []
    for record, response in zip(records, responses):
        errors = transcript_errors(record["text"], response.text or "")
        rows.append({"voice_id": record["voice_id"], "text": record["text"], "transcript": response.text,
                     "wer": errors.wer, "cer": errors.cer, "n_words": len(normalise_transcript(record["text"]).split()),
                     "audio_key": record["audio_key"], **clip_measures(record["audio"])})
    clips = pd.DataFrame(rows)
    if clips.empty:
        raise BiasbenchError(f"no QC clip could be made for pool {loaded.pool}: " +
                             "; ".join(f"{f['voice_id']}: {f['error']}" for f in failures[:5]))
    if classifier is not None:  # same clips, same order as `rows`
        clips = pd.concat([clips, classify_clips(classifier, [r["audio"] for r in records])], axis=1)
    table = voice_table(clips, audio_by_voice)
    missing = [v.id for v in loaded.voices if v.id not in set(table["voice_id"])]
    if missing:  # voices with no clip at all still get a row, flagged
        table = pd.concat([table, pd.DataFrame({"voice_id": missing})], ignore_index=True)
    if classifier is not None:
        verdicts = voice_verdicts(clips, {v.id: v.gender for v in loaded.voices}, classifier.gender_mapping)
        table = table.merge(verdicts, on="voice_id", how="left").fillna({"classifier_label": "",
                                                                          "classifier_agrees": ""})
    speaker_meta = None
    if speaker_embeddings:
        table, speaker_meta = _with_speaker_columns(table, loaded, audio_by_voice)
    normalised = [normalise_transcript(text) for text in sentences]
    units = {"wer": sum(len(text.split()) for text in normalised), "cer": sum(len(text) for text in normalised)}
    table["flags"] = flag_outliers(table.fillna({"clipping_ratio": 0.0, "silence_ratio": 0.0}),
                                   z_threshold=z_threshold, wer_threshold=wer_threshold, units=units)
    if speaker_embeddings:
        table["flags"] = _speaker_flags(table, loaded)
    table.loc[table["voice_id"].isin(missing), "flags"] = "no_clips"
    fingerprint = backend.fingerprint() if hasattr(backend, "fingerprint") else {}
    meta = {"pool": loaded.pool, "pool_path": str(path), "asr": asr, "asr_fingerprint": fingerprint,
            "sentences_version": QC_SENTENCES_VERSION if sentences == list(QC_SENTENCES) else "custom",
            "sentences": sentences, "normaliser": TRANSCRIPT_NORMALISER,
            "thresholds": {"z": z_threshold, "wer": wer_threshold, "mad_floor": MAD_FLOOR, "error_units": units,
                           "clipping": MAX_CLIPPING, "silence": MAX_SILENCE, "clip_level": CLIP_LEVEL,
                           "silence_dbfs": SILENCE_DBFS},
            "synthesis_failures": failures, "classifier": _classifier_meta(classifier),
            "speaker_embeddings": speaker_meta}
    return QCResult(table=table[qc_columns(classifier is not None, speaker_embeddings)], clips=clips, meta=meta)


def _with_speaker_columns(table: pd.DataFrame, pool, audio_by_voice) -> tuple[pd.DataFrame, dict]:
    """SPEAKER_COLUMNS from speaker embeddings (biasbench.voices.speaker): each voice's mean embedding
    over its QC clips; a cloning voice's clone fidelity against its reference clip; the nearest
    other voice. The meta adds mean similarities within and between cells (collapse check)."""
    from biasbench.tts.audio import to_harness_audio
    from biasbench.voices import speaker

    voices = {v.id: v for v in pool.voices}
    means, fidelity = {}, {}
    for voice_id, clips in audio_by_voice.items():
        means[voice_id] = speaker.mean_embedding([speaker.embed(c) for c in clips])
        reference = voices[voice_id].tts.params.get("reference_audio")
        if reference and "reference_error" not in voices[voice_id].tts.params:
            audio, rate = sf.read(reference, dtype="float32", always_2d=True)
            fidelity[voice_id] = float(means[voice_id] @ speaker.embed(to_harness_audio(audio, rate)))
    nearest = speaker.nearest_voices(means)
    table = table.copy()
    table["clone_fidelity"] = table["voice_id"].map(fidelity).astype(float)
    table["nearest_voice"] = table["voice_id"].map(lambda v: nearest.get(v, ("", 0))[0]).fillna("")
    table["nearest_similarity"] = table["voice_id"].map(lambda v: nearest.get(v, ("", np.nan))[1]).astype(float)
    cells = {v: f"{voices[v].gender}/{voices[v].ethnicity}" for v in means}
    meta = {**speaker.fingerprint(), "min_clone_fidelity": speaker.MIN_CLONE_FIDELITY,
            "max_same_cell_similarity": speaker.MAX_SAME_CELL_SIMILARITY,
            "by_cell": speaker.group_similarity(means, cells),
            "by_ethnicity": speaker.group_similarity(means, {v: voices[v].ethnicity for v in means}),
            "by_gender": speaker.group_similarity(means, {v: voices[v].gender for v in means})}
    return table, meta


def _speaker_flags(table: pd.DataFrame, pool) -> pd.Series:
    """Adds `clone_fidelity_below_X` and `same_cell_voice_<id>(sim=..)` to each voice's flags."""
    from biasbench.voices.speaker import MAX_SAME_CELL_SIMILARITY, MIN_CLONE_FIDELITY

    cell = {v.id: (v.gender, v.ethnicity) for v in pool.voices}
    flags = []
    for row in table.itertuples(index=False):
        extra = []
        if np.isfinite(row.clone_fidelity) and row.clone_fidelity < MIN_CLONE_FIDELITY:
            extra.append(f"clone_fidelity_below_{MIN_CLONE_FIDELITY:g}")
        if (row.nearest_voice and np.isfinite(row.nearest_similarity)
                and row.nearest_similarity > MAX_SAME_CELL_SIMILARITY
                and cell.get(row.nearest_voice) == cell.get(row.voice_id)):
            extra.append(f"same_cell_voice_{row.nearest_voice}(sim={row.nearest_similarity:.2f})")
        flags.append(";".join([f for f in [row.flags, *extra] if f]))
    return pd.Series(flags, index=table.index, dtype=object)


def _classifier_meta(classifier) -> dict | None:
    if classifier is None:
        return None
    mapping = classifier.gender_mapping
    return {"model": classifier.model_id, "fingerprint": classifier.fingerprint, "labels": classifier.labels,
            "kind": "gender" if mapping else "other (reported only, not compared with the pool)",
            "gender_mapping": mapping}


def write_qc(result: QCResult, path: Path) -> dict[str, Path]:
    """`path` (voice_qc.csv: the contract) plus `<stem>.json` beside it (how it was made, and
    every clip's transcript and measures)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    safe_frame(result.table).to_csv(path, index=False, float_format="%.6g")  # text cells spreadsheet-safe
    sidecar = path.with_suffix(".json")
    document = {**result.meta, "clips": result.clips.to_dict("records")}
    sidecar.write_text(dumps(document, indent=2), encoding="utf-8")
    return {"csv": path, "json": sidecar}


def read_qc(path: Path) -> pd.DataFrame:
    """A voice_qc.csv, checked against the contract (voice_id, the numeric columns, flags)."""
    path = Path(path)
    if not path.is_file():
        raise BiasbenchError(f"voice QC file {path} not found (make one with `biasbench voices qc POOL`)")
    # Only empty cells are missing: a classifier label such as "NA" (North America) stays text.
    table = restore_frame(pd.read_csv(path, dtype={"flags": str}, keep_default_na=False, na_values=[""]))
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise BiasbenchError(f"{path} is not a voice QC table: it lacks the columns {missing}")
    for column in QC_COLUMNS:  # columns added later (pitch_hz, snr_db): NaN in older tables
        if column not in table.columns:
            table.insert(len(table.columns) - 1, column, np.nan)
    if table["voice_id"].duplicated().any():
        raise BiasbenchError(f"{path}: voice ids repeat; expected one row per voice")
    for column in QC_COLUMNS[1:-1]:  # numeric, whatever the CSV made of them (a column of zeros reads as int)
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    table["flags"] = table["flags"].fillna("").astype(str)
    for column in ("clone_fidelity", "nearest_similarity"):  # the optional speaker columns
        if column in table.columns:
            table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    if "nearest_voice" in table.columns:
        table["nearest_voice"] = table["nearest_voice"].fillna("").astype(str)
    if "classifier_share" in table.columns:  # the optional classifier columns (classify.py)
        table["classifier_share"] = pd.to_numeric(table["classifier_share"], errors="coerce").astype(float)
    for column in ("classifier_label", "classifier_agrees"):
        if column in table.columns:
            table[column] = table[column].fillna("").astype(str)
    return table


def copy_qc_into_run(qc_csv: Path, run_dir: Path) -> Path:
    """Copy a voice QC table (and its .json) into a run directory as `voice_qc.csv`, where the
    report stage reads voice covariates. Every voice of the run must have a row."""
    table = read_qc(qc_csv)
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        raise BiasbenchError(f"{run_dir} is not a biasbench run (no manifest.json)")
    responses = run_dir / "responses.parquet"
    if responses.is_file():
        from biasbench.runner import TEXT_CONTROL_VOICE

        run_voices = set(pd.read_parquet(responses, columns=["voice_id"])["voice_id"]) - {TEXT_CONTROL_VOICE}
        lacking = sorted(run_voices - set(table["voice_id"]))
        if lacking:
            raise BiasbenchError(f"{qc_csv} has no QC row for {len(lacking)} voice(s) of this run: "
                                 f"{', '.join(lacking[:10])}; run `biasbench voices qc` on the run's pool")
    target = run_dir / "voice_qc.csv"
    shutil.copyfile(qc_csv, target)
    sidecar = Path(qc_csv).with_suffix(".json")
    if sidecar.is_file():
        shutil.copyfile(sidecar, run_dir / "voice_qc.json")
    return target
