"""Natural speech: a pool whose voices are the corpus speakers' own recordings, and an ASR-fairness
task over the sentences they all read (`biasbench voices build RECIPE --natural`).

For each chosen speaker, every utterance of theirs in the corpus is written (16 kHz mono WAV) to
`<pool stem>-recordings/<voice id>/`, listed in `<voice id>.csv` (text, clip, sha256,
utterance_id), and the voice becomes `tts: {backend: recorded, recordings: ...}`
(biasbench.tts.recorded). The items are the transcripts every chosen speaker recorded
(`<pool stem>-recordings/sentences.csv`: item_id, text, kind), so the design stays paired: each
item is spoken by every voice, and voices (speakers) are the unit of replication, as in the
synthetic runs. `<pool stem>-recordings/asr.yaml` is the shipped `asr_fairness` task pointed at
those sentences (inside the folder, so it is never mistaken for a pool in voices/):

    biasbench run --model whisper-base --task voices/NAME-recordings/asr.yaml --pool voices/NAME.yaml

Corpora without shared prompts (conversational speech, free commands) leave no common sentence:
the build then fails, naming how many each speaker shares, because unpaired items would let
sentence difficulty pass for a group effect.
"""

from __future__ import annotations

import csv
from pathlib import Path

import soundfile as sf
import yaml

from biasbench.errors import BiasbenchError
from biasbench.formats import safe_row
from biasbench.paths import project_root
from biasbench.tts.base import SAMPLE_RATE

#: The fewest shared sentences a natural pool is built with: a floor against an empty task, not
#: a recommendation (an ASR-fairness study wants dozens).
MIN_SHARED_SENTENCES = 3


def write_natural(corpus, cells, pool: dict, work: Path, out: Path) -> dict:
    """Write recordings, sentences and task into `work`; return the pool with recorded voices."""
    from biasbench.tasks.scoring import normalise_transcript
    from biasbench.tts.reference import file_sha256
    from biasbench.tts.audio import to_harness_audio
    from biasbench.voices.candidate import voice_id

    folder = f"{out.stem}-recordings"
    texts_by_voice, voices = {}, {v["id"]: v for v in pool["voices"]}
    for chosen in cells.values():
        for candidate in chosen:
            vid = voice_id(corpus.recipe, candidate)
            (work / folder / vid).mkdir(parents=True)
            rows = []
            for row in candidate.utterances:
                name = f"{len(rows):05d}.wav"
                try:
                    audio = to_harness_audio(*corpus.read_audio(row["audio"]))
                except BiasbenchError:
                    continue  # an unreadable utterance is left out; the others stay usable
                sf.write(work / folder / vid / name, audio, SAMPLE_RATE, subtype="PCM_16")
                rows.append({"text": row["transcript"], "clip": f"{vid}/{name}",
                             "sha256": file_sha256(work / folder / vid / name), "utterance_id": row["utterance_id"]})
            _write_csv(work / folder / f"{vid}.csv", rows, ["text", "clip", "sha256", "utterance_id"])
            texts_by_voice[vid] = {normalise_transcript(r["text"]): r["text"] for r in rows}
            voices[vid]["tts"] = {"backend": "recorded", "recordings": f"{folder}/{vid}.csv"}
    shared = set.intersection(*(set(t) for t in texts_by_voice.values())) if texts_by_voice else set()
    if len(shared) < MIN_SHARED_SENTENCES:
        counts = ", ".join(f"{v}: {len(t)}" for v, t in texts_by_voice.items())
        raise BiasbenchError(f"--natural needs sentences every chosen speaker read (at least {MIN_SHARED_SENTENCES}); "
                             f"they share {len(shared)} (sentences per speaker: {counts}). Natural speech needs a "
                             "corpus with shared prompts (e.g. L2-ARCTIC, VCTK).")
    first = next(iter(texts_by_voice.values()))
    sentences = [{"item_id": f"s{i:04d}", "text": first[key], "kind": "natural"}
                 for i, key in enumerate(sorted(shared))]
    _write_csv(work / folder / "sentences.csv", sentences, ["item_id", "text", "kind"])
    _write_task(work / folder / "asr.yaml", out.stem, len(sentences))
    pool["description"] += (f" NATURAL SPEECH: the voices are the speakers' own recordings (backend: recorded); "
                            f"task {folder}/asr.yaml covers the {len(sentences)} sentences all of them read.")
    return pool


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(map(safe_row, rows))  # read back through restore_cell (tts/recorded.py, tasks/sources.py)


def _write_task(path: Path, stem: str, n: int) -> None:
    from biasbench.config import TaskConfig, read_yaml

    task = read_yaml(project_root() / "tasks" / "asr_fairness.yaml")
    task.update(task=f"{stem}-asr".lower(), dataset={"local": {"path": "sentences.csv"}, "id_field": "item_id"},
                description=f"ASR fairness on natural speech: {n} sentences every speaker of pool {stem} recorded.",
                licence="Sentences and recordings: the corpus licence (see the pool's provenance).")
    TaskConfig.model_validate(task)
    path.write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True), encoding="utf-8")
