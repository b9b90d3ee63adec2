"""`biasbench voices build RECIPE`: a balanced pool of real speakers from a speech corpus.

For each gender x ethnicity cell the corpus's speakers are put in a seeded random order
(`candidate_order`: sorted ids shuffled by `seed`, so the same recipe, corpus and seed always
give the same pool) and taken in that order while they pass the quality gates, until the cell has
`per_cell` speakers. A speaker's reference clip is cut from whole utterances (sorted by utterance
id, silence trimmed, 0.3 s apart) until it holds `min_reference_s`..`max_reference_s` seconds.
Gates, cheapest first (thresholds in the recipe's `gates`, defaults in recipe.GateSpec):

1. readable audio, enough clean speech for a reference of at least `min_reference_s`;
2. clipping: share of samples at full scale at most `max_clipping`;
3. SNR estimate (`snr_db`: 95th minus 10th percentile of 20 ms frame levels, dB) at least `min_snr_db`;
4. single speaker: the utterances' speaker embeddings agree (`utterance_similarity` >=
   `min_self_similarity`) and no two ~1.6 s windows of the clip are far apart (`window_similarity`
   >= `min_window_similarity`);
5. distinct: the speaker's voice is not too close to one already chosen in the cell
   (`max_same_cell_similarity`: a duplicated speaker id);
6. round trip: the offline ASR's transcript of the clip is within `max_wer` of the corpus's;
7. with `clone`: clones of two QC sentences score `clone_fidelity` >= `min_clone_fidelity`.

A cell with too few passing speakers fails the build, naming it and every rejected speaker's
reason, unless `allow_unbalanced`. Rejections are counted per cell in the build log: gates that
reject one group far more often than another are themselves a finding (a corpus recorded worse
for some groups; an ASR that mishears some accents; a cloner that fails some voices).

Nothing is half-written: clips and YAML are made in a temporary folder beside `out`, and moved
into place only when the whole pool is valid.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from biasbench.config import VoicePool
from biasbench.errors import BiasbenchError
from biasbench.formats import dumps
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.loudness import CLIP_LEVEL
from biasbench.voices import speaker
from biasbench.voices.candidate import Candidate, voice_id
from biasbench.voices.pool import ETHNICITIES, GENDERS
from biasbench.voices.qc import FRAME_S, SILENCE_DBFS, _frame_dbfs, snr_db
from biasbench.voices.recipe import Corpus, load_corpus, load_recipe

PAUSE_S = 0.3
EDGE_S = 0.1  # silence kept at each end of a trimmed utterance
#: Label sources from strongest to weakest: a voice's label_source is the weakest of its
#: gender's and ethnicity's (per-label sources are in its provenance).
SOURCE_STRENGTH = ("self_reported", "corpus_metadata", "vendor_metadata", "proxy")
#: Sentences a candidate's clone speaks for the clone-fidelity gate (two QC sentences).
CLONE_CHECK_SENTENCES = (
    "The early train to the city was full of tired students and busy workers.",
    "Which way is the museum, and how long does it take to walk there?",
)


@dataclass
class BuildResult:
    pool: dict  # the pool YAML's content
    out: Path
    clips_dir: Path
    log: dict  # per cell: chosen, rejected (speaker, reason), counts


# ------------------------------------------------------------------ reference clips


def trim_silence(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The audio from the first to the last non-silent 20 ms frame, with EDGE_S kept either side."""
    loud = np.flatnonzero(_frame_dbfs(audio, sr) >= SILENCE_DBFS)
    if loud.size == 0:
        return audio[:0]
    size = int(round(FRAME_S * sr))
    edge = int(EDGE_S * sr)
    return audio[max(0, loud[0] * size - edge): min(len(audio), (loud[-1] + 1) * size + edge)]


def cut_reference(candidate: Candidate, corpus: Corpus, gates) -> str | None:
    """Join whole utterances into the candidate's clip; a reason when it cannot be made."""
    from biasbench.tts.audio import to_harness_audio

    pieces, used, problems, total = [], [], [], 0.0
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), np.float32)
    for row in candidate.utterances:
        try:
            audio = trim_silence(to_harness_audio(*corpus.read_audio(row["audio"])))
        except BiasbenchError as exc:
            problems.append(f"utterance {row['utterance_id']}: {exc}")
            continue
        seconds = len(audio) / SAMPLE_RATE
        if seconds < 0.5 or total + seconds + (PAUSE_S if pieces else 0) > gates.max_reference_s:
            continue
        pieces += ([pause] if pieces else []) + [audio]
        used.append(row)
        total += seconds + (PAUSE_S if len(pieces) > 1 else 0)
        if total >= gates.min_reference_s:
            break
    if total < gates.min_reference_s:
        detail = f" ({'; '.join(problems[:3])})" if problems else ""
        return (f"too little usable speech for a {gates.min_reference_s:g}-{gates.max_reference_s:g} s "
                f"reference: {total:.1f} s from {len(candidate.utterances)} utterance(s){detail}")
    candidate.clip, candidate.used = np.concatenate(pieces).astype(np.float32), used
    candidate.measures["reference_s"] = round(total, 3)
    return None


# ------------------------------------------------------------------ gates


def signal_gates(candidate: Candidate, gates) -> str | None:
    clip = candidate.clip
    clipping = float(np.mean(np.abs(clip) >= CLIP_LEVEL))
    candidate.measures.update(clipping_ratio=clipping, snr_db=round(snr_db(clip), 2))
    if clipping > gates.max_clipping:
        return f"clipping: {clipping:.2%} of samples at full scale (limit {gates.max_clipping:.2%})"
    if not candidate.measures["snr_db"] >= gates.min_snr_db:
        return f"SNR estimate {candidate.measures['snr_db']:.1f} dB below {gates.min_snr_db:g} dB"
    return None


def speaker_gates(candidate: Candidate, corpus: Corpus, chosen: list[Candidate], gates) -> str | None:
    from biasbench.tts.audio import to_harness_audio

    per_utterance = [speaker.embed(trim_silence(to_harness_audio(*corpus.read_audio(r["audio"]))))
                     for r in candidate.used]
    windows = speaker.embed_windows(candidate.clip)
    sims = windows @ windows.T
    candidate.measures["window_similarity"] = round(float(sims.min()), 4)
    candidate.measures["utterance_similarity"] = round(speaker.self_similarity(per_utterance), 4)
    if candidate.measures["window_similarity"] < gates.min_window_similarity:
        return (f"more than one speaker? two windows of the reference clip have speaker similarity "
                f"{candidate.measures['window_similarity']:.2f} < {gates.min_window_similarity:g}")
    if candidate.measures["utterance_similarity"] < gates.min_self_similarity:
        return (f"more than one speaker? an utterance's speaker similarity to the others is "
                f"{candidate.measures['utterance_similarity']:.2f} < {gates.min_self_similarity:g}")
    candidate.embedding = speaker.embed(candidate.clip)
    for other in chosen:
        similarity = float(candidate.embedding @ other.embedding)
        if similarity > gates.max_same_cell_similarity:
            return (f"sounds like speaker {other.speaker_id} already chosen for the cell (similarity "
                    f"{similarity:.2f} > {gates.max_same_cell_similarity:g}): the same person twice?")
    return None


def asr_gate(candidate: Candidate, asr, gates) -> str | None:
    from biasbench.models.base import GenerationSettings, Request
    from biasbench.tasks.scoring import transcript_errors

    reference = " ".join(r["transcript"] for r in candidate.used)
    request = Request(request_id=f"build-{candidate.speaker_id}", prompt="", audio=candidate.clip,
                      sampling_rate=SAMPLE_RATE, settings=GenerationSettings(max_new_tokens=256))
    hypothesis = asr.generate([request])[0].text or ""
    wer = transcript_errors(reference, hypothesis).wer
    candidate.measures["round_trip_wer"] = round(float(wer), 4)
    if wer > gates.max_wer:
        return f"ASR round trip WER {wer:.2f} > {gates.max_wer:g} (heard {hypothesis[:60]!r})"
    return None


def clone_gate(candidate: Candidate, backend, gates, workdir: Path) -> str | None:
    """Clone two sentences from the candidate's clip; its fidelity must reach the threshold."""
    from biasbench.tts.reference import reference_params
    from biasbench.tts.audio import to_harness_audio

    path = workdir / f".clone-check-{candidate.speaker_id}.wav"
    sf.write(path, candidate.clip, SAMPLE_RATE, subtype="PCM_16")
    params = reference_params(path, " ".join(r["transcript"] for r in candidate.used))
    try:
        clones = [to_harness_audio(*backend.synthesize(text, params)) for text in CLONE_CHECK_SENTENCES]
    except BiasbenchError as exc:
        return f"cloning failed: {exc}"
    finally:
        path.unlink(missing_ok=True)
    fidelity = float(speaker.mean_embedding([speaker.embed(c) for c in clones]) @ candidate.embedding)
    candidate.measures["clone_fidelity"] = round(fidelity, 4)
    if fidelity < gates.min_clone_fidelity:
        return f"clone fidelity {fidelity:.2f} < {gates.min_clone_fidelity:g}"
    return None


# ------------------------------------------------------------------ selection


def candidate_order(speaker_ids, seed: int) -> list[str]:
    """Sorted ids in a seeded random order: the same ids and seed give the same order."""
    ids = sorted(set(speaker_ids))
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def select_cell(corpus: Corpus, gender: str, ethnicity: str, per_cell: int, seed: int, asr, clone_backend,
                workdir: Path) -> tuple[list[Candidate], list[tuple[str, str]]]:
    gates = corpus.recipe.gates
    table = corpus.table[(corpus.table.gender == gender) & (corpus.table.ethnicity == ethnicity)]
    chosen, rejected = [], []
    for speaker_id in candidate_order(table.speaker_id, seed):
        if len(chosen) == per_cell:
            break
        rows = table[table.speaker_id == speaker_id].sort_values("utterance_id").to_dict("records")
        candidate = Candidate(speaker_id, gender, ethnicity, rows)
        reason = (cut_reference(candidate, corpus, gates) or signal_gates(candidate, gates)
                  or speaker_gates(candidate, corpus, chosen, gates) or asr_gate(candidate, asr, gates)
                  or (clone_gate(candidate, clone_backend, gates, workdir) if clone_backend is not None else None))
        if reason:
            rejected.append((speaker_id, reason))
        else:
            chosen.append(candidate)
    return chosen, rejected


# ------------------------------------------------------------------ the pool


def weakest_source(*sources: str) -> str:
    return max(sources, key=SOURCE_STRENGTH.index)


def voice_entry(corpus: Corpus, candidate: Candidate, clip_rel: str, sha: str) -> dict:
    recipe, labels = corpus.recipe, corpus.recipe.labels
    first = candidate.utterances[0]
    sources = {name: getattr(labels, name).source for name in ("gender", "ethnicity", "accent", "first_language")
               if getattr(labels, name) is not None}
    return {
        "id": voice_id(recipe, candidate),
        "gender": candidate.gender,
        "ethnicity": candidate.ethnicity,
        "accent": first["accent"] or "unknown",
        "label_source": weakest_source(sources["gender"], sources["ethnicity"]),
        "tts": {"backend": recipe.clone.backend},
        "notes": recipe.label_notes.strip(),
        "reference_clip": clip_rel,
        "reference_text": " ".join(r["transcript"] for r in candidate.used),
        "consent": {"record": f"corpus {recipe.corpus.name}: {recipe.corpus.url or 'see the recipe'}",
                    "licence": recipe.corpus.licence,
                    "scope": "as granted by the corpus licence to its users; check that it covers voice cloning"},
        "provenance": {
            "corpus": corpus.source, "revision": corpus.revision, "speaker_id": candidate.speaker_id,
            "utterance_ids": [r["utterance_id"] for r in candidate.used], "licence": recipe.corpus.licence,
            "clip_sha256": sha, "recipe": recipe.recipe, "label_sources": sources,
            "labels_raw": {"gender": first["gender_raw"], "ethnicity": first["ethnicity_raw"]},
            "first_language": first["first_language"],
            "measures": {k: float(v) for k, v in candidate.measures.items()},
        },
    }


def build_pool(recipe_path: Path, out: Path, *, per_cell: int = 5, seed: int = 0, allow_unbalanced: bool = False,
               clone: bool = False, natural: bool = False, asr: str = "whisper-tiny-en", asr_backend=None,
               clone_backend=None, progress=None) -> BuildResult:
    """Build the pool YAML `out` and its reference clips (`<out stem>-references/`) from a recipe.

    `natural`: the voices are the speakers' own recordings (`backend: recorded`, no TTS), and an
    ASR-fairness task over the sentences every chosen speaker read is written beside the pool
    (natural.py)."""
    recipe_path, out = Path(recipe_path), Path(out)
    if per_cell < 1:
        raise BiasbenchError(f"--per-cell must be at least 1, got {per_cell}")
    if out.suffix not in (".yaml", ".yml"):
        raise BiasbenchError(f"--out must be a .yaml file, got {out}")
    recipe = load_recipe(recipe_path)
    corpus = load_corpus(recipe, recipe_path)
    if asr_backend is None:
        from biasbench.models.registry import load_backend, resolve_model

        asr_backend = load_backend(resolve_model(asr), device="auto")
    if clone and natural:
        raise BiasbenchError("--natural uses the speakers' own recordings; it cannot be combined with --clone")
    if clone and clone_backend is None:
        from biasbench.tts.registry import get_tts_backend

        clone_backend = get_tts_backend(recipe.clone.backend)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.build-") as tmp:
        work = Path(tmp)
        cells, log = {}, {}
        for gender in GENDERS:
            for ethnicity in ETHNICITIES:
                if progress:
                    progress(f"cell {gender}/{ethnicity}")
                chosen, rejected = select_cell(corpus, gender, ethnicity, per_cell, seed, asr_backend,
                                               clone_backend if clone else None, work)
                cells[(gender, ethnicity)] = chosen
                log[f"{gender}/{ethnicity}"] = {"chosen": [c.speaker_id for c in chosen],
                                                "rejected": [{"speaker_id": s, "reason": r} for s, r in rejected]}
        _check_cells(cells, log, per_cell, allow_unbalanced)
        pool = _write_clips_and_pool(corpus, cells, work, out, per_cell, seed, clone)
        if natural:
            from biasbench.voices.natural import write_natural

            pool = write_natural(corpus, cells, pool, work, out)
        _write_pool_yaml(pool, work / out.name)
        document = {"recipe": str(recipe_path), "per_cell": per_cell, "seed": seed, "clone": clone, "natural": natural,
                    "gates": recipe.gates.model_dump(), "speaker_encoder": speaker.fingerprint(),
                    "asr": asr_backend.fingerprint() if hasattr(asr_backend, "fingerprint") else asr,
                    "cells": log}
        (work / "build.json").write_text(dumps(document, indent=2), encoding="utf-8")
        clips_dir = _move_into_place(work, out)
    return BuildResult(pool=pool, out=out, clips_dir=clips_dir, log=log)


def _check_cells(cells, log, per_cell: int, allow_unbalanced: bool) -> None:
    short = {cell: chosen for cell, chosen in cells.items() if len(chosen) < per_cell}
    if not short or (allow_unbalanced and all(cells.values())):
        return
    lines = []
    for (gender, ethnicity), chosen in short.items():
        rejected = log[f"{gender}/{ethnicity}"]["rejected"]
        lines.append(f"{gender}/{ethnicity}: {len(chosen)} of {per_cell} speakers"
                     + (" (no speaker of this cell in the corpus)" if not chosen and not rejected else ""))
        lines += [f"    rejected {r['speaker_id']}: {r['reason']}" for r in rejected[:10]]
    hint = ("" if allow_unbalanced else
            "\nLower --per-cell, relax the recipe's gates, or pass --allow-unbalanced to keep the short cells.")
    empty = " (a cell with no speaker at all is refused even with --allow-unbalanced)" if allow_unbalanced else ""
    raise BiasbenchError("too few speakers pass the quality gates for cell(s)" + empty + ":\n  "
                         + "\n  ".join(lines) + hint)


def _write_clips_and_pool(corpus: Corpus, cells, work: Path, out: Path, per_cell: int, seed: int, clone: bool) -> dict:
    from biasbench.tts.reference import file_sha256

    recipe = corpus.recipe
    clips_name = f"{out.stem}-references"
    (work / clips_name).mkdir()
    voices = []
    for chosen in cells.values():
        for candidate in chosen:
            vid = voice_id(recipe, candidate)
            clip_path = work / clips_name / f"{vid}.wav"
            sf.write(clip_path, candidate.clip, SAMPLE_RATE, subtype="PCM_16")
            voices.append(voice_entry(corpus, candidate, f"{clips_name}/{vid}.wav", file_sha256(clip_path)))
    description = (f"Built by `biasbench voices build` from recipe {recipe.recipe} (corpus {corpus.source}, "
                   f"licence {recipe.corpus.licence}), {per_cell} per cell, seed {seed}"
                   + (", clone fidelity checked" if clone else "") + ". Labels: " + recipe.label_notes.strip()
                   + (f" Channel confound: {recipe.channel_confound.strip()}" if recipe.channel_confound else ""))
    return {"pool": out.stem, "description": description, "loudness_target": -23.0, "voices": voices}


def _write_pool_yaml(pool: dict, path: Path) -> None:
    VoicePool.model_validate(pool)  # the loader's schema: a pool that would not load is never written
    path.write_text(yaml.safe_dump(pool, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")


def _move_into_place(work: Path, out: Path) -> Path:
    """Replace `<out>` and everything built beside it (`<out stem>-references/`, `<out stem>.build.json`,
    with --natural the recordings, sentences and task) with the new ones. Old files are renamed aside
    first, the YAML moves last, and the old files are removed only once everything is in place."""
    os.replace(work / "build.json", work / f"{out.stem}.build.json")
    names = sorted(p.name for p in work.iterdir() if p.name != out.name and not p.name.startswith("."))
    aside = work / ".previous"
    aside.mkdir()
    moved_aside, placed = [], []
    try:
        for name in names + [out.name]:
            if (out.parent / name).exists():
                os.replace(out.parent / name, aside / name)
                moved_aside.append(name)
        for name in names + [out.name]:
            os.replace(work / name, out.parent / name)
            placed.append(name)
    except OSError:
        for name in placed:
            shutil.rmtree(out.parent / name, ignore_errors=True) if (out.parent / name).is_dir() \
                else (out.parent / name).unlink(missing_ok=True)
        for name in moved_aside:
            os.replace(aside / name, out.parent / name)
        raise
    return out.parent / f"{out.stem}-references"
