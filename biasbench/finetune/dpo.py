"""`biasbench finetune dpo`: preference pairs mined from an evaluation run, trained with trl's DPO.

Mining (`mine_pairs`): in an evaluation run's tidy table (responses.parquet), an item whose
valid answers differ between voices has a voice-dependent answer. For it,
  - chosen   = the correct answer (knowledge tasks: multiple choice scored for accuracy), or
               the majority answer across the gender x ethnicity cells (probes: each cell's
               answer shares weigh equally, so one large group cannot outvote the others);
  - rejected = each other answer some voice gave (the voice-dependent one), most frequent
               first, at most `max_pairs_per_item`.
An item every voice answers the same way (even wrongly) carries no voice dependence and gives
no such pair. Knowledge tasks also get ANCHOR pairs (`anchor_ratio` per voice-dependent pair):
items every voice answers correctly, chosen = that answer, rejected = another option. Without
them DPO can remove a gap by moving every voice to one answer (in the planted test of
tests/test_finetune.py it did: all voices said "A", the unbiased voices' accuracy fell from 1.0
to 0.5), buying fairness with knowledge. The pairs (text only) are written to a JSONL; for
training they are spoken again by the TRAINING pool, so evaluation voices never provide
training audio.

Training uses trl's `DPOTrainer` with an audio collator (collate.PreferenceCollator: chosen
rows first, then rejected), `processing_class=processor.tokenizer`, LoRA on the language model.
With a fresh adapter the reference is the adapter-disabled base model; with `init_adapter` (an
SFT adapter) trl keeps a frozen copy of it as the reference. Either way the first-step loss is
ln 2 = 0.6931 (policy == reference).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from rich.console import Console

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError
from biasbench.finetune.adapter import (
    base_fingerprint,
    check_lora_placement,
    load_trainable_adapter,
    lora_config,
    save_adapter,
)
from biasbench.finetune.collate import PreferenceCollator, SpokenChat
from biasbench.finetune.config import FinetuneConfig, resolve_input
from biasbench.finetune.data import (
    CounterfactualSampler,
    load_pools,
    read_run_table,
    run_items,
    speak_rows,
    split_pairs,
)
from biasbench.finetune.sft import (
    FinetuneResult,
    _identity,
    common_manifest,
    last_checkpoint,
    load_for_training,
    open_run_dir,
    run_dir_for,
    text_hashes,
    trainer_kwargs,
)
from biasbench.formats import dumps, jsonl_objects
from biasbench.tts.cache import AudioCache

PAIRS_FILE = "pairs.jsonl"
MINING_COLUMNS = ("item_id", "voice_id", "gender", "ethnicity", "answer", "status")
PAIR_FIELDS = ("pair_id", "item_id", "spoken_text", "text_prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    pair_id: str
    item_id: str
    spoken_text: str  # what the training voices will speak
    text_prompt: str  # the text beside the clip, as in the evaluation run
    chosen: str  # completion text the model should prefer
    rejected: str  # the voice-dependent completion
    chosen_answer: str = ""
    rejected_answer: str = ""
    reason: str = ""  # "correct" or "majority"
    rejected_voices: list[str] = field(default_factory=list)  # voices that gave the rejected answer
    n_voices: int = 0
    task: str = ""
    source_run: str = ""


# --------------------------------------------------------------------------- mining


def choose_mode(task, requested: str) -> str:
    if requested != "auto":
        return requested
    knowledge = task.config.output_type == "multiple_choice" and "accuracy" in task.config.metrics
    return "correct" if knowledge else "majority"


def majority_answer(rows: pd.DataFrame) -> str | None:
    """The answer with the highest mean share across gender x ethnicity cells (ties: most votes,
    then alphabetical). None when no row has a valid answer."""
    if rows.empty:
        return None
    shares = (rows.groupby(["gender", "ethnicity"])["answer"].value_counts(normalize=True)
              .unstack(fill_value=0.0).mean(axis=0))
    votes = rows["answer"].value_counts()
    ranked = sorted(shares.index, key=lambda a: (-round(float(shares[a]), 12), -int(votes.get(a, 0)), str(a)))
    return str(ranked[0])


def _most_common_text(rows: pd.DataFrame, answer: str, fallback: str) -> str:
    texts = rows.loc[rows["answer"] == answer, "response_text"] if "response_text" in rows.columns else pd.Series([])
    texts = texts.dropna().astype(str).str.strip()
    texts = texts[texts != ""]
    return Counter(texts).most_common(1)[0][0] if len(texts) else fallback


def mine_pairs(run_dir, *, mode: str = "auto", max_pairs_per_item: int = 3, anchor_ratio: float = 1.0,
               data_source: str = "auto", seed: int = 0) -> tuple[list[PreferencePair], dict]:
    """Preference pairs from the items of an evaluation run whose answer changes with the voice,
    plus (knowledge tasks) anchor pairs; see the module docstring."""
    run_dir = Path(run_dir)
    table, manifest = read_run_table(run_dir, required=MINING_COLUMNS)
    task, items = run_items(manifest, run_dir, data_source)
    mode = choose_mode(task, mode)
    if mode not in ("correct", "majority"):
        raise BiasbenchError(f"unknown chosen-answer mode {mode!r}; use auto, correct or majority")
    valid = table[(table["status"] == "valid") & table["answer"].notna()].copy()
    valid["answer"] = valid["answer"].astype(str)
    pairs, anchors, skipped = [], [], Counter()
    common = dict(task=task.name, source_run=str(run_dir.resolve()))
    for item_id, rows in valid.groupby("item_id", sort=True):
        item = items.get(str(item_id))
        if item is None:
            skipped["item not in task"] += 1
            continue
        answers = rows["answer"].value_counts()
        chosen = _target(rows, run_dir, item_id) if mode == "correct" else majority_answer(rows)
        chosen_text = _most_common_text(rows, chosen, chosen)
        n_voices = int(rows["voice_id"].nunique())
        if len(answers) < 2:
            skipped["same answer from every voice"] += 1
            wrong = [letter for letter in item.letters if letter != chosen]
            if mode == "correct" and answers.index[0] == chosen and wrong:
                # Every voice right: an anchor pair keeps this knowledge while DPO moves other items.
                rejected = wrong[sum(map(ord, str(item_id))) % len(wrong)]
                anchors.append(PreferencePair(
                    pair_id=f"{item_id}::anchor", item_id=str(item_id), spoken_text=item.spoken_text,
                    text_prompt=item.text_prompt, chosen=chosen_text, rejected=rejected, chosen_answer=chosen,
                    rejected_answer=rejected, reason="anchor", n_voices=n_voices, **common))
            continue
        for rejected in [a for a in answers.index if a != chosen][:max_pairs_per_item]:
            voices = sorted(rows.loc[rows["answer"] == rejected, "voice_id"].astype(str))
            pairs.append(PreferencePair(
                pair_id=f"{item_id}::{rejected}", item_id=str(item_id), spoken_text=item.spoken_text,
                text_prompt=item.text_prompt, chosen=chosen_text,
                rejected=_most_common_text(rows, rejected, rejected), chosen_answer=chosen, rejected_answer=rejected,
                reason=mode, rejected_voices=voices, n_voices=n_voices, **common))
    n_anchors = min(len(anchors), int(round(anchor_ratio * len(pairs))))
    random.Random(seed).shuffle(anchors)
    info = {"source_run": str(run_dir.resolve()), "run_id": manifest.get("run_id"), "task": task.name,
            "mode": mode, "n_items": int(valid["item_id"].nunique()), "n_pairs": len(pairs),
            "n_anchor_pairs": n_anchors, "n_items_with_pairs": len({p.item_id for p in pairs}),
            "skipped": dict(skipped), "run_model": manifest.get("model", {}).get("name"),
            "run_pool": manifest.get("pool", {}).get("pool")}
    return pairs + sorted(anchors[:n_anchors], key=lambda p: p.item_id), info


def _target(rows: pd.DataFrame, run_dir: Path, item_id) -> str:
    target = rows["target"].dropna().astype(str) if "target" in rows.columns else pd.Series([], dtype=str)
    if target.empty:
        raise BiasbenchError(f"run {run_dir} has no 'target' for item {item_id}: use chosen: majority")
    return target.iloc[0]


# --------------------------------------------------------------------------- pairs files


def write_pairs(pairs: list[PreferencePair], path: Path) -> Path:
    """Write the pairs JSONL atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for pair in pairs:
            f.write(dumps(asdict(pair), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_pairs(path: Path) -> list[PreferencePair]:
    path = Path(path)
    pairs = []
    known = set(PreferencePair.__dataclass_fields__)
    for number, row in jsonl_objects(path, path.read_text(encoding="utf-8")):
        missing = [k for k in PAIR_FIELDS if not str(row.get(k, "")).strip() and k != "text_prompt"]
        if missing:
            raise BiasbenchError(f"{path}, line {number}: missing or empty field(s) {missing}; a pair needs "
                                 f"{list(PAIR_FIELDS)}")
        pairs.append(PreferencePair(**{k: v for k, v in row.items() if k in known}))
    return pairs


# --------------------------------------------------------------------------- training


def _trainer_class():
    from trl import DPOTrainer

    class SpokenDPOTrainer(DPOTrainer):
        """DPOTrainer fed by an audio collator: no text-only tokenization of the dataset, and
        counterfactual batches (one pair spoken by several training voices)."""

        def __init__(self, *args, examples=None, voices_per_group: int = 1, **kwargs):
            self._examples = examples
            self._voices_per_group = voices_per_group
            super().__init__(*args, **kwargs)

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset  # the collator formats, tokenizes and reads the audio per batch

        def _get_train_sampler(self, train_dataset=None):
            return CounterfactualSampler(self._examples, self._voices_per_group, seed=self.args.seed)

    return SpokenDPOTrainer


def _to_hf_dataset(examples):
    import datasets

    return datasets.Dataset.from_list([asdict(e) for e in examples])  # metadata only: no audio


def run_dpo(config: FinetuneConfig, *, output_dir: Path | None = None, resume: bool = False, progress: bool = True,
            console: Console | None = None, callbacks=None, loaded: tuple | None = None) -> FinetuneResult:
    """Mine (or read) preference pairs, speak them with the training pool, train a LoRA with DPO.
    `callbacks` and `loaded` as for `run_sft`."""
    from trl import DPOConfig

    console = console or Console(stderr=True)
    spec = config.dpo
    if spec is None:
        raise BiasbenchError("DPO needs a 'dpo' section (run_dir: an evaluation run to mine, or pairs: a JSONL)")
    pools = load_pools(config)
    run_dir = run_dir_for(config, output_dir)
    if spec.run_dir is not None:
        source = resolve_input(config, spec.run_dir, "dpo.run_dir")
        pairs, pairs_info = mine_pairs(source, mode=spec.chosen, max_pairs_per_item=spec.max_pairs_per_item,
                                       anchor_ratio=spec.anchor_ratio, data_source=spec.data_source,
                                       seed=config.training.seed)
    else:
        source = resolve_input(config, spec.pairs, "dpo.pairs")
        pairs, pairs_info = read_pairs(source), {"source_pairs": str(source)}
    if not pairs:
        raise BiasbenchError(f"no preference pairs from {source}: no item's answer changes with the voice "
                             f"({pairs_info.get('skipped', {})}); nothing to train on")
    pairs_info["pairs_hash"] = stable_hash([asdict(p) for p in pairs])
    pairs_info["data_hash"] = pairs_info["pairs_hash"]

    ref, processor, model, device = loaded or load_for_training(config, console)
    base = base_fingerprint(ref.model, model, config.revision)
    open_run_dir(run_dir, _identity(config, "dpo", pairs_info, base), resume=resume)
    write_pairs(pairs, run_dir / PAIRS_FILE)

    chat = SpokenChat(processor)
    for p in pairs:
        for text, what in ((p.chosen, "chosen"), (p.rejected, "rejected"), (p.text_prompt, "text prompt")):
            chat.check_text(text, f"{what} of pair {p.pair_id}")
    cache = AudioCache(resolve_input(config, config.audio_cache, "audio_cache", must_exist=False)
                       if config.audio_cache else None)
    train_pairs, held_pairs = split_pairs(pairs, config.training.eval_fraction, config.training.seed)

    def rows(selected):
        return [{"group_id": p.pair_id, "spoken": p.spoken_text, "text_prompt": p.text_prompt,
                 "chosen": p.chosen, "rejected": p.rejected} for p in selected]

    examples, speech = speak_rows(rows(train_pairs), pools.train, cache,
                                  max_audio_seconds=chat.max_audio_seconds, workers=config.tts_workers,
                                  progress=progress)
    eval_examples = speak_rows(rows(held_pairs), pools.train, cache, max_audio_seconds=chat.max_audio_seconds,
                               workers=config.tts_workers, progress=progress)[0] if held_pairs else []

    init = None
    peft_config = None
    if spec.init_adapter:
        model, init = load_trainable_adapter(model, resolve_input(config, spec.init_adapter, "dpo.init_adapter"),
                                             ref.model)
    else:
        peft_config = lora_config(config.lora)
    checkpoints = run_dir / "checkpoints"
    args = DPOConfig(**trainer_kwargs(config, checkpoints, device, progress=progress, has_eval=bool(eval_examples),
                                      args_class=DPOConfig),
                     beta=spec.beta, loss_type=[spec.loss_type], max_length=None, padding_free=False,
                     precompute_ref_log_probs=False, disable_dropout=True)
    cf = config.counterfactual
    trainer = _trainer_class()(
        model=model, args=args, processing_class=processor.tokenizer, peft_config=peft_config,
        data_collator=PreferenceCollator(chat, cache), train_dataset=_to_hf_dataset(examples),
        eval_dataset=_to_hf_dataset(eval_examples) if eval_examples else None, callbacks=callbacks,
        examples=examples, voices_per_group=cf.voices_per_instruction if cf.enabled else 1)
    check_lora_placement(trainer.model)
    resume_from = last_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        console.print("[yellow]--resume: no checkpoint yet, starting from the beginning.[/]")
    console.print(f"DPO: {len(train_pairs)} preference pairs x {len(pools.train.voices)} training voices = "
                  f"{len(examples)} spoken examples; reference: "
                  f"{'a frozen copy of ' + str(init.path) if init else 'the base model (adapter disabled)'}; "
                  f"{'resuming from ' + resume_from if resume_from else 'from scratch'} -> {run_dir}")
    output = trainer.train(resume_from_checkpoint=resume_from)

    manifest = common_manifest("dpo", config, ref, base, pools, speech, trainer.model)
    manifest.update(
        data={**pairs_info, "n_pairs": len(pairs), "n_train_pairs": len(train_pairs),
              "n_held_out_pairs": len(held_pairs), "pairs_file": str(run_dir / PAIRS_FILE)},
        training_text_sha16=text_hashes(p.spoken_text for p in train_pairs),
        n_train_examples=len(examples),
        init_adapter={"path": str(init.path), "sha256": init.sha256,
                      "training_text_sha16": (init.manifest or {}).get("training_text_sha16", [])} if init else None,
        dpo=spec.model_dump(), counterfactual=cf.model_dump(),
        training={"global_step": trainer.state.global_step, "train_loss": output.training_loss,
                  "resumed_from": resume_from, "metrics": output.metrics,
                  "log_history": trainer.state.log_history[-50:]},
    )
    if init:  # the adapter continues the SFT one: its LoRA settings are that adapter's, not config.lora
        manifest["lora"] = {"from_init_adapter": str(init.path),
                            "n_adapted_modules": manifest["lora"]["n_adapted_modules"],
                            **{k: init.config.get(k) for k in ("r", "lora_alpha", "lora_dropout", "target_modules")}}
    adapter_dir = save_adapter(trainer.model, run_dir / "adapter", manifest, adapter_name="default")
    console.print(f"Adapter saved to {adapter_dir}")
    return FinetuneResult(run_dir, adapter_dir, manifest, list(trainer.state.log_history), trainer.model)
