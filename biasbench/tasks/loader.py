"""From a task YAML to a list of `Item`s: find the file, read rows, sample, render templates."""

from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from biasbench.config import METRICS, OpenAnswerSpec, TaskConfig, find_yaml, load_task_config, stable_hash, task_file
from biasbench.errors import ConfigError
from biasbench.paths import shipped_dir, yaml_files
from biasbench.tasks.sampling import stratified_sample
from biasbench.tasks.sources import choose_source, load_rows
from biasbench.tasks.templates import render

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Item:
    """One question, rendered: identical text for every voice that speaks it."""

    item_id: str
    spoken_text: str  # what the voice says
    text_prompt: str  # what the model reads beside the audio
    choices: tuple[str, ...] = ()  # multiple choice only
    target: int | None = None  # index into choices (multiple choice only)
    reference: str = ""  # the rendered doc_to_target of other output types (e.g. a transcript)
    meta: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.choices)])


def make_scorer(config: TaskConfig, task_path: Path):
    """A function (item, response_text, option_logprobs) -> Scored for this task's output type.
    Here, beside the task, so that scoring (text rules) and lexicon (phrase tables) need not
    import each other."""
    from biasbench.tasks import scoring

    if config.output_type == "multiple_choice":
        return lambda item, text, logprobs: scoring.score_multiple_choice(text, logprobs, item.letters,
                                                                          item.choices, item.target)
    if config.output_type == "generate_numeric":
        low, high = config.numeric.min, config.numeric.max
        return lambda item, text, logprobs: scoring.score_numeric(text, low, high)
    if config.output_type == "transcribe":
        return lambda item, text, logprobs: scoring.score_transcript(text, item.reference)
    if config.output_type == "generate_open":  # raw text kept; its metrics come with the tidy table
        from biasbench.tasks.open_answers import answer_status

        return lambda item, text, logprobs: scoring.Scored(None, answer_status(text))
    from biasbench.tasks.lexicon import category_phrases

    phrases = category_phrases(config, task_path)
    return lambda item, text, logprobs: scoring.score_categorical(text, phrases)


@dataclass
class Task:
    config: TaskConfig
    path: Path
    source: str  # 'hf' or 'local': which data source the items came from
    items: list[Item]

    @functools.cached_property
    def scorer(self):
        """(item, response text, option log-probs) -> Scored, for this task's output type."""
        return make_scorer(self.config, self.path)

    @functools.cached_property
    def similarity(self):
        """generate_open: how its metrics compare texts (open_answers.Similarity), resolved once, so a
        missing embedding package stops the run before any work, not at its end."""
        from biasbench.tasks.open_answers import resolve_similarity

        return resolve_similarity((self.config.open_answer or OpenAnswerSpec()).similarity)

    def open_answer_record(self) -> dict | None:
        """What a generate_open run's metrics rest on, for the manifest (None for other types)."""
        if self.config.output_type != "generate_open":
            return None
        from biasbench.tasks import open_answers

        spec = self.config.open_answer or OpenAnswerSpec()
        return {"similarity": self.similarity.method, "similarity_requested": spec.similarity,
                "off_topic_below": open_answers.off_topic_threshold(self.similarity, spec.off_topic_below),
                "lexicons": [open_answers.HEDGE_LEXICON_VERSION, open_answers.REFUSAL_LEXICON_VERSION],
                "metrics": list(self.config.metrics), "primary_outcomes": self.config.primary_outcomes}

    @property
    def name(self) -> str:
        return self.config.task

    def fingerprint(self) -> dict:
        """What identifies the items: config, data source and every rendered item."""
        rendered = [(i.item_id, i.spoken_text, i.text_prompt, i.choices, i.target, i.reference)
                    for i in self.items]
        return {
            "task": self.name,
            "path": str(self.path),
            "source": self.source,
            # answers depend on neither the analysis nor how open answers are compared (their metrics are
            # recomputed from the stored text): changing either keeps the run and its answers
            "config_hash": stable_hash(self.config.model_dump(exclude={"analysis", "open_answer"})),
            "items_hash": stable_hash(rendered),
            "n_items": len(self.items),
        }


def tasks_dir() -> Path:
    """The shipped tasks (inside the package in a wheel, the checkout's `tasks/` otherwise)."""
    return shipped_dir("tasks")


def available_tasks() -> dict[str, Path]:
    """Tasks by name: the user's `--include-path` folders first, then the shipped ones."""
    return yaml_files("tasks")


def find_task(name_or_path: str) -> Path:
    """A task name (user folders, then shipped tasks), or a path to any task YAML."""
    return find_yaml(name_or_path, available_tasks(), "task")


def load_task(name_or_path: str, *, data_source: str = "auto", limit: int | None = None,
              allow_data_outside: bool = False) -> Task:
    path = find_task(name_or_path)
    config = load_task_config(path)
    _check_lexicon_metrics(config, path)
    if config.lexicon:
        task_file(path, config.lexicon, "lexicon")  # found, and inside the task's folder tree
    source = choose_source(config.dataset, data_source, path)
    rows = _with_item_ids(load_rows(config.dataset, source, path, allow_outside=allow_data_outside), config, path)
    rows = stratified_sample(rows, config.sample)
    records = [_plain_row(record) for record in rows.to_dict("records")]
    items = [build_item(config, row, path) for row in records]
    if limit is not None:  # counts source items: with option permutations each keeps all its variants
        items, records = items[:limit], records[:limit]
    if config.option_permutations == "cyclic":
        items = [variant for row, item in zip(records, items) for variant in cyclic_variants(config, row, path, item)]
    if not items:
        raise ConfigError(path, "dataset", "no items left after filtering and sampling")
    return Task(config=config, path=path, source=source, items=items)


def _plain_row(record: dict) -> dict:
    """A data row with list columns as lists: Parquet gives numpy arrays, which a template would
    print as "['a' 'b']" (no commas)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in record.items()}


def _check_lexicon_metrics(config: TaskConfig, path: Path) -> None:
    """A generate_categorical task's metrics beyond category_shares must be lexicon attributes."""
    extra = [m for m in config.metrics if m not in METRICS[config.output_type]]
    if not extra or not config.lexicon or "metrics" not in config.model_fields_set:  # a default is not checked
        return
    from biasbench.tasks.lexicon import load_lexicon

    attributes = [c for c in load_lexicon(task_file(path, config.lexicon, "lexicon")).attributes.columns
                  if c != "category"]
    unknown = [m for m in extra if m not in attributes]
    if unknown:
        raise ConfigError(path, "metrics", f"unknown metric {', '.join(map(repr, unknown))}: expected "
                          f"{', '.join(METRICS[config.output_type])} or an attribute of the lexicon "
                          f"({', '.join(attributes) or 'it has none'})")


def _with_item_ids(rows: pd.DataFrame, config: TaskConfig, path: Path) -> pd.DataFrame:
    spec = config.dataset
    for column in filter(None, [spec.id_field, config.sample.stratify_by, *config.item_columns]):
        if column not in rows.columns:
            raise ConfigError(path, "dataset", f"the data has no column {column!r}; it has {list(rows.columns)}")
    rows = rows.copy()
    if spec.id_field:
        rows["item_id"] = rows[spec.id_field].astype(str)
    elif "item_id" not in rows.columns:
        # '<stratum>/<row within stratum>' ('item/<row>' without strata) is stable as long as the
        # source's order is.
        by = config.sample.stratify_by
        stratum = rows[by].astype(str) if by else pd.Series("item", index=rows.index)
        rows["item_id"] = stratum + "/" + rows.groupby(stratum).cumcount().map("{:05d}".format)
    if rows["item_id"].duplicated().any():
        dup = rows.loc[rows["item_id"].duplicated(), "item_id"].iloc[0]
        raise ConfigError(path, "dataset.id_field", f"item ids must be unique; {dup!r} repeats")
    return rows


def build_item(config: TaskConfig, row: dict, path: Path) -> Item:
    item_id = str(row["item_id"])
    choices = _choices(config, row, path, item_id) if config.doc_to_choice is not None else []
    fields = dict(row, choices=list(choices), letters=LETTERS[: len(choices)])
    spoken, instruction = _render_prompts(config, fields, path, item_id)
    target_text = ("" if config.doc_to_target is None else
                   _field_or_render(config.doc_to_target, fields, path=path, field="doc_to_target", item_id=item_id))
    target = _target_index(target_text, choices, path, item_id) if choices else None
    meta = {k: v for k, v in row.items() if isinstance(v, (str, int, float)) and k != "choices"}
    return Item(item_id, spoken, instruction, tuple(choices), target, "" if choices else target_text, meta)


def _render_prompts(config: TaskConfig, fields: dict, path: Path, item_id: str) -> tuple[str, str]:
    """(what the voice says, what the model reads) for one item's fields."""
    spoken = _field_or_render(config.doc_to_text, fields, path=path, field="doc_to_text", item_id=item_id)
    instruction = render(config.instruction, fields, path=path, field="instruction", item_id=item_id)
    if config.instruction_mode == "spoken":
        spoken, instruction = f"{spoken} {instruction}".strip(), ""
    return spoken, instruction


def _field_or_render(source: str, fields: dict, *, path: Path, field: str, item_id: str) -> str:
    """lm-evaluation-harness's rule: a doc_to_text / doc_to_target that is just the name of a
    field (`doc_to_target: answer`) is that field's value; anything else is a template."""
    if source in fields and not _is_template(source):
        return str(fields[source]).strip()
    return render(source, fields, path=path, field=field, item_id=item_id)


def _is_template(source: str) -> bool:
    return "{{" in source or "{%" in source


def cyclic_variants(config: TaskConfig, row: dict, path: Path, item: Item) -> list[Item]:
    """The k cyclic shifts of a k-option item: `<id>#p0 .. #p{k-1}`.

    Variant p lists the options `choices[p:] + choices[:p]`, so the option at index t moves
    to (t - p) mod k and the target follows it. Across the k variants every option sits in
    every position once, which balances answer-position bias within each item. The templates
    are rendered again with the shifted `choices`; they must list the options from
    `choices` (a template naming raw option columns would not move them, and is refused).
    """
    k = len(item.choices)
    if k < 2:
        return [item]
    variants = []
    for shift in range(k):
        choices = list(item.choices[shift:] + item.choices[:shift])
        variant_id = f"{item.item_id}#p{shift}"
        fields = dict(row, choices=choices, letters=LETTERS[:k])
        spoken, instruction = _render_prompts(config, fields, path, variant_id)
        meta = dict(item.meta, base_item_id=item.item_id, permutation=shift)
        variants.append(Item(variant_id, spoken, instruction, tuple(choices), (item.target - shift) % k, "", meta))
    if len(set(item.choices)) == k and len({(v.spoken_text, v.text_prompt) for v in variants}) == 1:
        raise ConfigError(path, "option_permutations", f"item {item.item_id!r}: every cyclic variant renders the "
                          "same text, so the options are not listed from 'choices'; list them in doc_to_text or "
                          "instruction with `{% for option in choices %}`, or set option_permutations: none")
    return variants


def item_columns(item: Item, config: TaskConfig) -> dict:
    """The item's columns for the tidy table: its task's `item_columns`, and for option
    permutations the source item's id and the permutation index."""
    columns = {name: item.meta.get(name) for name in config.item_columns}
    if config.option_permutations != "none":
        columns["base_item_id"] = item.meta.get("base_item_id", item.item_id)
        columns["permutation"] = item.meta.get("permutation", 0)
    return columns


def answer_columns(table: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Columns describing each response's answer, added to the tidy table.

    Multiple choice: `answer_option`, the text of the chosen option (the letter alone means
    a different option in each permutation variant). generate_categorical with a lexicon:
    the lexicon's attributes of the answer's category (e.g. prestige), for valid answers;
    an attribute whose name is already a column gets the prefix `answer_`. generate_open: one
    column per quality-of-service metric and `similarity` (biasbench.tasks.open_answers).
    """
    if task.config.output_type == "multiple_choice" and "answer" in table:
        options = {(i.item_id, letter): choice for i in task.items for letter, choice in zip(i.letters, i.choices)}
        table = table.assign(answer_option=[options.get((item_id, answer)) for item_id, answer
                                            in zip(table["item_id"], table["answer"])])
    if task.config.output_type == "generate_categorical" and task.config.lexicon and "answer" in table:
        from biasbench.tasks.lexicon import join_attributes, load_lexicon

        lexicon = load_lexicon(task_file(task.path, task.config.lexicon, "lexicon"))
        table = join_attributes(table, lexicon)
    if task.config.output_type == "generate_open" and "response_text" in table:
        from biasbench.tasks.open_answers import open_answer_columns

        spec = task.config.open_answer or OpenAnswerSpec()
        table = open_answer_columns(table, task.config.metrics, task.similarity, spec.off_topic_below)
    return table


def _choices(config: TaskConfig, row: dict, path: Path, item_id: str) -> list[str]:
    spec = config.doc_to_choice
    if isinstance(spec, list):
        return [str(c) for c in spec]
    if _is_template(spec):  # lm-eval's `doc_to_choice: "{{ [a, b, c] }}"`: a template that renders a list
        value = _as_list(render(spec, row, path=path, field="doc_to_choice", item_id=item_id))
        if value is None:
            raise ConfigError(path, "doc_to_choice", f"item {item_id!r}: the template did not render a list "
                              "(e.g. \"{{ [option_a, option_b] }}\" or \"{{ choices }}\")")
    elif spec not in row:
        raise ConfigError(path, "doc_to_choice", f"item {item_id!r} has no field {spec!r}; it has "
                          f"{', '.join(map(str, row))}")
    else:
        value = row[spec]
    if isinstance(value, str):
        value = _as_list(value)
        if value is None:
            raise ConfigError(path, "doc_to_choice", f"item {item_id!r}: {spec!r} is not a JSON list "
                              "(write the options as [\"Paris\", \"Rome\"])")
    value = list(value) if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__") else None
    if not value or len(value) > len(LETTERS):
        raise ConfigError(path, "doc_to_choice", f"item {item_id!r}: expected a list of 1-26 options")
    return [str(c) for c in value]


def _as_list(text: str) -> list | None:
    """A list written as JSON (["a", "b"]) or as Python prints it (['a', 'b']), else None."""
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, (list, tuple)):
            return list(value)
    return None


def _target_index(rendered: str, choices: list[str], path: Path, item_id: str) -> int:
    """The answer may be given as an index ('2'), a letter ('C') or the option's text."""
    text = rendered.strip()
    if text.isdigit() and int(text) < len(choices):
        return int(text)
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)]:
        return LETTERS.index(text.upper())
    if text in choices:
        return choices.index(text)
    raise ConfigError(path, "doc_to_target", f"item {item_id!r}: {text!r} is not an index, letter or "
                      f"option among {len(choices)} choices")
