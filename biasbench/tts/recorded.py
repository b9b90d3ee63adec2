"""`backend: recorded`: a voice that is a person's own recordings, not synthesis (natural speech).

A pool built with `biasbench voices build RECIPE --natural` gives each speaker a recordings table
(`recordings:` in the voice's tts params, a CSV relative to the pool file, columns `text`, `clip`,
`sha256`, `utterance_id`): what the speaker read and the clip of it. "Synthesising" a text returns
the speaker's recording of that text (matched after the pinned transcript normalisation of
biasbench.tasks.scoring), so a transcribe task whose items are the sentences every speaker read
(corpora with shared prompts: L2-ARCTIC's ARCTIC prompts, VCTK's Rainbow Passage) runs on real
voices, paired by item, with speakers as the unit of replication. A text the speaker did not
record fails that (item, voice) only, like any failed clip. Each clip's sha256 is checked.

The pool loader attaches `recordings_path` (absolute) and `recordings_sha256` (of the table,
which lists every clip's sha256): the cache key holds the hash, not the location.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.formats import restore_cell
from biasbench.tts._common import check_text, excerpt

NAME = "recorded"
VERSION = "recorded-1"
PARAMS = ("recordings", "recordings_path", "recordings_sha256", "recordings_error")


def attach_recordings(pool, path: str | Path) -> None:
    """Give every `recorded` voice of `pool` (loaded from `path`) its table's path and sha256."""
    from biasbench.tts.reference import file_sha256

    base = Path(path).resolve().parent
    for voice in pool.voices:
        if voice.tts.backend != NAME:
            continue
        table = voice.tts.params.get("recordings")
        where = f"voice pool {path}: voice {voice.id!r}"
        target = base / str(table) if table else None
        if target is None or not target.is_file():
            voice.tts.attach({"recordings_error": f"{where}: tts.recordings {table!r} is not a file next to the pool"})
            continue
        voice.tts.attach({"recordings_path": str(target), "recordings_sha256": file_sha256(target)})


def read_table(path: Path) -> dict[str, dict]:
    """Normalised text -> its row (first recording of a text wins)."""
    from biasbench.tasks.scoring import normalise_transcript

    rows = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            row = {key: restore_cell(value) for key, value in row.items()}  # as written by voices/natural.py
            rows.setdefault(normalise_transcript(row["text"]), row)
    return rows


#: A recording of one item longer than this is refused from its header (a read sentence or
#: paragraph lasts seconds; a mislabelled hour-long file would be decoded whole).
MAX_RECORDING_SECONDS = 300.0


def _check_length(clip: Path) -> None:
    if not clip.is_file():
        return  # said by the caller
    from biasbench.tts.reference import audio_header

    info = audio_header(clip)
    if info.frames / info.samplerate > MAX_RECORDING_SECONDS:
        raise BiasbenchError(f"recording {clip} lasts {info.frames / info.samplerate:.0f} s; one item's "
                             f"recording may last at most {MAX_RECORDING_SECONDS:g} s")


class RecordedBackend:
    name = NAME

    def __init__(self):
        self._tables: dict[str, dict[str, dict]] = {}

    def version(self) -> str:
        return VERSION

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        from biasbench.tasks.scoring import normalise_transcript
        from biasbench.tts.reference import file_sha256

        check_text(NAME, text)
        if "recordings_error" in params:
            raise BiasbenchError(params["recordings_error"])
        if "recordings_path" not in params:
            raise BiasbenchError("a recorded voice needs `recordings:` (a CSV next to the pool) in its tts params")
        path = Path(params["recordings_path"])
        key = params["recordings_sha256"]
        if key not in self._tables:
            self._tables[key] = read_table(path)
        row = self._tables[key].get(normalise_transcript(text))
        if row is None:
            raise BiasbenchError(f"the speaker of {path.name} did not record {excerpt(text)}")
        clip = path.parent / row["clip"]
        _check_length(clip)  # from the header, before the file is hashed or decoded
        if not clip.is_file() or file_sha256(clip) != row["sha256"]:
            raise BiasbenchError(f"recording {clip} is missing or not the one listed (sha256 mismatch)")
        audio, rate = sf.read(clip, dtype="float32", always_2d=True)
        return audio.mean(axis=1), int(rate)
