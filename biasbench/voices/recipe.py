"""Voice recipes: how to build a pool of real speakers from a speech corpus (`biasbench voices build`).

A recipe (voices/recipes/*.yaml) names the corpus (a local folder with a metadata CSV, or a
Hugging Face `datasets` id pinned to a revision), its licence (required), which columns hold the
speaker id, transcript, audio and labels, where each label comes from (`self_reported`,
`corpus_metadata`, `proxy`: the pool schema's `LabelSource`), how the corpus's own values map to
the study's categories (GENDERS x ETHNICITIES of biasbench.voices.pool), and the quality gates.

`load_corpus` turns either kind of corpus into one table of utterances (`Corpus`): one row per
utterance with the columns of `UTTERANCE_COLUMNS`, the study labels already mapped, and a way
to read each utterance's audio. Every problem is a ConfigError naming the recipe file and field,
or a BiasbenchError naming the column, value or speaker.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from biasbench.config import LabelSource, _Strict, _validate, read_yaml
from biasbench.errors import BiasbenchError, ConfigError
from biasbench.paths import install_extra
from biasbench.voices.pool import ETHNICITIES, GENDERS
from biasbench.voices.speaker import (MAX_SAME_CELL_SIMILARITY, MIN_CLONE_FIDELITY, MIN_SELF_SIMILARITY,
                                      MIN_WINDOW_SIMILARITY)

#: The columns of a corpus table after mapping (labels in the study's categories).
UTTERANCE_COLUMNS = ["speaker_id", "utterance_id", "transcript", "audio", "gender", "ethnicity", "accent",
                     "first_language", "gender_raw", "ethnicity_raw"]


class LocalCorpus(_Strict):
    folder: str = Field(description="folder of the recordings, relative to the recipe")
    metadata: str = Field(description="CSV with one row per utterance, relative to the recipe")


class HFCorpus(_Strict):
    id: str = Field(description="dataset id on the Hugging Face hub, or a folder written by Dataset.save_to_disk")
    revision: str | None = Field(None, description="commit sha or tag of the dataset (required for a hub id)")
    config: str | None = None
    split: str = "train"


class CorpusSpec(_Strict):
    name: str
    licence: str = Field(min_length=1, description="the corpus licence, e.g. CC-BY-4.0")
    url: str = ""
    citation: str = ""
    local: LocalCorpus | None = None
    hf: HFCorpus | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.local is None) == (self.hf is None):
            raise ValueError("give exactly one of corpus.local (folder + metadata CSV) or corpus.hf (datasets id)")
        if not self.licence.strip() or self.licence.strip().upper().startswith("REPLACE"):
            raise ValueError("corpus.licence must name the corpus licence (e.g. CC-BY-4.0)")
        return self


class ColumnSpec(_Strict):
    speaker_id: str
    transcript: str
    audio: str = Field(description="local: a path relative to corpus.local.folder; hf: an Audio column")
    utterance_id: str | None = Field(None, description="else '<speaker>/<row>' is made")


class LabelSpec(_Strict):
    column: str
    source: LabelSource
    values: dict[str, str | None] = Field(
        default_factory=dict,
        description="corpus value -> study category; null excludes speakers with that value on purpose")


class LabelsSpec(_Strict):
    gender: LabelSpec
    ethnicity: LabelSpec
    accent: LabelSpec | None = None
    first_language: LabelSpec | None = None

    @model_validator(mode="after")
    def _targets_in_design(self):
        for name, allowed in (("gender", GENDERS), ("ethnicity", ETHNICITIES)):
            bad = {v for v in getattr(self, name).values.values() if v is not None and v not in allowed}
            if bad:
                raise ValueError(f"labels.{name}.values maps to {sorted(bad)}, outside the pool schema's "
                                 f"{name} categories {list(allowed)}")
        return self


class GateSpec(_Strict):
    """Quality gates a speaker's reference clip must pass (voices/README.md explains each)."""

    min_reference_s: float = Field(6.0, ge=3.0)
    max_reference_s: float = Field(12.0, le=15.0)
    max_clipping: float = Field(0.001, ge=0)
    min_snr_db: float = 20.0
    max_wer: float = Field(0.35, ge=0)
    min_self_similarity: float = Field(MIN_SELF_SIMILARITY, description="single speaker: the utterances agree")
    min_window_similarity: float = Field(MIN_WINDOW_SIMILARITY, description="single speaker: no window of the clip is someone else")
    max_same_cell_similarity: float = Field(MAX_SAME_CELL_SIMILARITY, description="distinct people in a cell")
    min_clone_fidelity: float = Field(MIN_CLONE_FIDELITY, description="with --clone")

    @model_validator(mode="after")
    def _range(self):
        if self.min_reference_s >= self.max_reference_s:
            raise ValueError("gates.min_reference_s must be below gates.max_reference_s")
        return self


class CloneSpec(_Strict):
    backend: str = Field("f5-tts", description="the cloning TTS backend the pool's voices use")


class Recipe(_Strict):
    recipe: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    corpus: CorpusSpec
    columns: ColumnSpec
    labels: LabelsSpec
    label_notes: str = Field(min_length=1, description="what the labels do and do not mean")
    channel_confound: str = Field("", description="for recipes mixing corpora: how recording differs by group")
    gates: GateSpec = Field(default_factory=GateSpec)
    clone: CloneSpec = Field(default_factory=CloneSpec)
    verified: str = Field("", description="what of the schema was checked against the corpus's documentation")


def load_recipe(path: Path) -> Recipe:
    path = Path(path)
    return _validate(Recipe, read_yaml(path), path)


# ------------------------------------------------------------------ corpus table


@dataclass
class Corpus:
    recipe: Recipe
    path: Path  # the recipe file
    table: pd.DataFrame  # UTTERANCE_COLUMNS, one row per utterance
    read_audio: Callable[[Any], tuple[np.ndarray, int]]  # table["audio"] -> (mono float32, rate)
    revision: str = ""

    @property
    def source(self) -> str:
        spec = self.recipe.corpus
        return f"{spec.name} ({spec.hf.id if spec.hf else spec.local.folder})"


def load_corpus(recipe: Recipe, path: Path) -> Corpus:
    """The recipe's corpus as one table of labelled utterances."""
    path = Path(path)
    if recipe.corpus.local is not None:
        raw, read_audio, revision = _local_rows(recipe, path)
    else:
        raw, read_audio, revision = _hf_rows(recipe, path)
    return Corpus(recipe, path, _mapped(recipe, path, raw), read_audio, revision)


def _local_rows(recipe: Recipe, path: Path):
    spec = recipe.corpus.local
    base = path.resolve().parent
    folder, metadata = base / spec.folder, base / spec.metadata
    if not folder.is_dir():
        raise ConfigError(path, "corpus.local.folder", f"folder {folder} not found")
    if not metadata.is_file():
        raise ConfigError(path, "corpus.local.metadata", f"file {metadata} not found")
    try:
        raw = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(path, "corpus.local.metadata", f"{metadata} is not a readable CSV: {exc}") from None
    _require_columns(recipe, path, list(raw.columns), f"metadata CSV {metadata}")

    def read_audio(relpath: str):
        return read_audio_file(folder / relpath)

    return raw, read_audio, ""


def _hf_rows(recipe: Recipe, path: Path):
    """A `datasets` corpus: a hub id at a pinned revision, or a saved dataset folder. The audio
    column is read undecoded (bytes or path) and decoded with soundfile, so no audio backend of
    `datasets` (torchcodec) is needed."""
    try:
        import datasets
    except ImportError:
        raise BiasbenchError(f"recipes with corpus.hf need the `datasets` package: {install_extra('hub')}") from None
    spec = recipe.corpus.hf
    local = (path.resolve().parent / spec.id)
    if local.is_dir():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if spec.split not in loaded:
                raise ConfigError(path, "corpus.hf.split", f"{spec.split!r} not in {sorted(loaded)}")
            loaded = loaded[spec.split]
        revision = spec.revision or ""
    else:
        if not spec.revision:
            raise ConfigError(path, "corpus.hf.revision", "a hub corpus must be pinned to a revision (commit sha)")
        try:
            loaded = datasets.load_dataset(spec.id, spec.config, split=spec.split, revision=spec.revision)
        except Exception as exc:  # datasets raises many types (network, missing config, gated repo)
            raise BiasbenchError(f"cannot load corpus {spec.id}@{spec.revision} ({recipe.corpus.name}): "
                                 f"{type(exc).__name__}: {exc}") from None
        revision = spec.revision
    _require_columns(recipe, path, list(loaded.column_names), f"dataset {spec.id}")
    audio_column = recipe.columns.audio
    if isinstance(loaded.features.get(audio_column), datasets.Audio):
        loaded = loaded.cast_column(audio_column, datasets.Audio(decode=False))
    raw = loaded.to_pandas()
    for column in raw.columns:  # labels and ids as text, like the CSV path
        if column != audio_column:
            raw[column] = raw[column].map(lambda v: "" if v is None else str(v))
    return raw, read_audio_value, revision


def read_audio_value(value) -> tuple[np.ndarray, int]:
    """An undecoded `datasets` Audio value ({bytes, path}) or a path -> (mono float32, rate)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return _decode(io.BytesIO(value["bytes"]), value.get("path") or "audio bytes")
        value = value.get("path")
    if not value:
        raise BiasbenchError("an utterance has no audio (neither bytes nor a path)")
    return read_audio_file(Path(value))


def read_audio_file(path: Path) -> tuple[np.ndarray, int]:
    if not Path(path).is_file():
        raise BiasbenchError(f"audio file {path} not found")
    return _decode(path, path)


def _decode(source, name) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:  # soundfile: not audio it knows
        raise BiasbenchError(f"{name} is not readable audio (WAV, FLAC or OGG): {exc}") from None
    return audio.mean(axis=1), int(rate)


def _require_columns(recipe: Recipe, path: Path, present: list[str], where: str) -> None:
    wanted = {f"columns.{k}": v for k, v in recipe.columns.model_dump().items() if v}
    for name in ("gender", "ethnicity", "accent", "first_language"):
        spec = getattr(recipe.labels, name)
        if spec is not None:
            wanted[f"labels.{name}.column"] = spec.column
    missing = {field: column for field, column in wanted.items() if column not in present}
    if missing:
        listed = ", ".join(f"{column!r} ({field})" for field, column in missing.items())
        raise ConfigError(path, next(iter(missing)), f"{where} has no column {listed}; its columns are {present}")


def _mapped(recipe: Recipe, path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    cols = recipe.columns
    table = pd.DataFrame({
        "speaker_id": raw[cols.speaker_id].astype(str).str.strip(),
        "transcript": raw[cols.transcript].astype(str).str.strip(),
        "audio": raw[cols.audio],
    })
    if cols.utterance_id:
        table["utterance_id"] = raw[cols.utterance_id].astype(str).str.strip()
    else:
        table["utterance_id"] = table["speaker_id"] + "/" + raw.index.astype(str)
    if table["utterance_id"].duplicated().any():
        dup = table.loc[table["utterance_id"].duplicated(), "utterance_id"].iloc[0]
        raise ConfigError(path, "columns.utterance_id", f"utterance id {dup!r} repeats; ids must be unique")
    for name in ("gender", "ethnicity"):
        spec = getattr(recipe.labels, name)
        table[f"{name}_raw"] = raw[spec.column].astype(str).str.strip()
        table[name] = _map_values(table[f"{name}_raw"], spec, name, path)
    for name in ("accent", "first_language"):
        spec = getattr(recipe.labels, name)
        table[name] = raw[spec.column].astype(str).str.strip() if spec is not None else ""
    _check_speakers_consistent(table, path)
    return table[UTTERANCE_COLUMNS]


def _map_values(values: pd.Series, spec: LabelSpec, name: str, path: Path) -> pd.Series:
    """Corpus values -> study categories. A value the recipe does not map and that is not already a
    category is an error naming it; a value mapped to null is excluded on purpose (None)."""
    allowed = GENDERS if name == "gender" else ETHNICITIES
    lookup = {str(k).strip().lower(): v for k, v in spec.values.items()}

    def one(value: str):
        key = value.lower()
        if key in lookup:
            return lookup[key]
        if key.replace(" ", "_") in allowed:
            return key.replace(" ", "_")
        return _Unmapped(value)

    mapped = values.map(one)
    unmapped = sorted({m.value for m in mapped if isinstance(m, _Unmapped)})
    if unmapped:
        raise ConfigError(path, f"labels.{name}.values",
                          f"column {spec.column!r} holds values outside the pool schema and not mapped by the "
                          f"recipe: {unmapped[:10]}; map each to one of {list(allowed)} or to null to exclude it")
    return mapped


@dataclass(frozen=True)
class _Unmapped:
    value: str


def _check_speakers_consistent(table: pd.DataFrame, path: Path) -> None:
    for name in ("gender", "ethnicity"):
        per = table.groupby("speaker_id")[f"{name}_raw"].nunique()
        if (per > 1).any():
            speaker = per[per > 1].index[0]
            raise BiasbenchError(f"{path}: speaker {speaker!r} has more than one {name} in the corpus metadata "
                                 f"({sorted(set(table.loc[table.speaker_id == speaker, f'{name}_raw']))})")

