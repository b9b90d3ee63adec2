"""`biasbench finetune sft`: balanced spoken SFT with LoRA, counterfactual batches, consistency loss.

Every instruction is spoken by every voice of the training pool; the model learns the text
response with LoRA on its language model (encoder and projector frozen), loss on the
response tokens only. Batches are counterfactual: one instruction spoken by several voices
(one per gender x ethnicity cell by default), so the optional consistency loss can pull the
voices' response-token distributions together:

    loss = CE(response tokens) + consistency_weight * D(voices of one instruction)

with D the generalised Jensen-Shannon divergence (mean KL of each voice's next-token
distribution to the voices' mean, averaged over response positions), or the symmetric KL
averaged over voice pairs. Resumable from HF Trainer checkpoints; the adapter is saved into the
run's own folder with `finetune_manifest.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError
from biasbench.finetune.adapter import (
    BaseModelRef,
    add_lora,
    adapted_modules,
    base_fingerprint,
    load_base_model,
    resolve_base_model,
    save_adapter,
    versions,
)
from biasbench.finetune.collate import IGNORE_INDEX, SFTCollator, SpokenChat
from biasbench.finetune.config import FinetuneConfig, resolve_input
from biasbench.finetune.data import (
    CounterfactualSampler,
    SpokenDataset,
    load_instruction_pairs,
    load_pools,
    speak_rows,
    split_pairs,
)
from biasbench.formats import dumps
from biasbench.store import utc_now
from biasbench.tts.cache import AudioCache

RUN_CONFIG = "finetune_config.json"


@dataclass
class FinetuneResult:
    run_dir: Path
    adapter_dir: Path
    manifest: dict
    log_history: list = field(default_factory=list)
    model: object = None  # the trained PeftModel, in memory (programmatic use and tests)


# --------------------------------------------------------------------------- run folder


def run_dir_for(config: FinetuneConfig, output_dir: Path | None = None) -> Path:
    return Path(output_dir if output_dir is not None else config.output_dir) / config.name


def open_run_dir(run_dir: Path, identity: dict, *, resume: bool) -> None:
    """Create the run folder, or reopen it for --resume with the same settings; never mix runs."""
    record = run_dir / RUN_CONFIG
    if record.is_file():
        old = json.loads(record.read_text(encoding="utf-8"))
        if old.get("identity_hash") != stable_hash(identity):
            raise BiasbenchError(f"{run_dir} holds a fine-tune with other settings or data; choose another "
                                 "name or --output-dir (nothing was changed)")
        if not resume:
            raise BiasbenchError(f"{run_dir} already exists. Pass --resume to continue it from its last "
                                 "checkpoint, or choose another name / --output-dir.")
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(".json.tmp")
    tmp.write_text(dumps({"identity_hash": stable_hash(identity), "identity": identity}, indent=2,
                              sort_keys=True, default=str), encoding="utf-8")
    tmp.replace(record)


def last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


# --------------------------------------------------------------------------- trainer settings


def precision_flags(mixed_precision: str, device: str) -> dict:
    import torch

    if mixed_precision == "no" or not device.startswith("cuda"):
        if mixed_precision in ("bf16", "fp16") and not device.startswith("cuda"):
            raise BiasbenchError(f"mixed_precision {mixed_precision} needs a CUDA GPU; the device is {device}")
        return {"bf16": False, "fp16": False}
    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": mixed_precision == "bf16", "fp16": mixed_precision == "fp16"}


def checkpointing_flags(enabled: bool, args_class) -> dict:
    """Activation checkpointing on or off, under the name this transformers version knows (newer
    ones renamed `gradient_checkpointing`; trl's DPOConfig turns it on unless told otherwise)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(args_class)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled, **({f"{key}_kwargs": {"use_reentrant": False}} if enabled else {})}


def trainer_kwargs(config: FinetuneConfig, checkpoints: Path, device: str, *, progress: bool,
                   has_eval: bool, args_class) -> dict:
    """Arguments shared by the SFT `TrainingArguments` and the `DPOConfig` (`args_class`)."""
    tr = config.training
    return dict(
        output_dir=str(checkpoints),
        per_device_train_batch_size=tr.batch_size,
        per_device_eval_batch_size=tr.batch_size,
        gradient_accumulation_steps=tr.gradient_accumulation_steps,
        learning_rate=tr.learning_rate,
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps if tr.max_steps is not None else -1,
        warmup_steps=tr.warmup_ratio,  # a float below 1 is a fraction of the steps
        weight_decay=tr.weight_decay,
        max_grad_norm=tr.max_grad_norm,
        lr_scheduler_type=tr.lr_scheduler,
        logging_steps=tr.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=tr.save_steps,
        save_total_limit=tr.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=(tr.eval_steps or tr.save_steps) if has_eval else None,
        seed=tr.seed,
        data_seed=tr.seed,
        dataloader_num_workers=tr.dataloader_workers,
        **checkpointing_flags(tr.gradient_checkpointing, args_class),
        remove_unused_columns=False,  # the collator needs the audio keys and texts
        label_names=["labels"],
        prediction_loss_only=True,
        report_to=[],
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        **precision_flags(tr.mixed_precision, device),
    )


# --------------------------------------------------------------------------- losses


def response_logits(logits, labels):
    """(shifted logits, shifted labels, mask of response positions): position t predicts t+1."""
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    return shift_logits, shift_labels, shift_labels != IGNORE_INDEX


def response_loss(model, batch):
    """Cross-entropy on the response tokens of an SFT batch (a collator's output), and the outputs."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "group_ids")}
    outputs = model(**inputs, use_cache=False)
    shift_logits, shift_labels, mask = response_logits(outputs.logits, batch["labels"])
    return F.cross_entropy(shift_logits[mask].float(), shift_labels[mask]), outputs


def group_divergence(logits, labels, group_ids, kind: str = "js"):
    """Mean divergence between the response-token distributions of the voices of one instruction.

    Rows with the same `group_ids` share the response text, so their i-th response tokens are
    the same token, predicted from different voices. For each group: `js` = mean over voices of
    KL(p_voice || mean of the voices' p) (generalised Jensen-Shannon, in nats, bounded by
    ln(voices)); `sym_kl` = mean over voice pairs of (KL(p||q) + KL(q||p)) / 2. Averaged over the
    response positions and over the groups with at least two voices; 0 if there are none."""
    import torch

    shift_logits, _, mask = response_logits(logits, labels)
    values = []
    for group in torch.unique(group_ids):
        rows = (group_ids == group).nonzero().flatten()
        if len(rows) < 2:
            continue
        counts = mask[rows].sum(dim=1)
        if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
            continue  # not the same response (should not happen within a group); no comparison
        logp = torch.stack([torch.log_softmax(shift_logits[r][mask[r]].float(), dim=-1) for r in rows])  # (n, R, V)
        if kind == "js":
            log_mean = torch.logsumexp(logp, dim=0) - math.log(len(rows))
            values.append((logp.exp() * (logp - log_mean)).sum(-1).mean())
        elif kind == "sym_kl":
            pairs = [(i, j) for i in range(len(rows)) for j in range(i + 1, len(rows))]
            kl = [0.5 * ((logp[i].exp() * (logp[i] - logp[j])).sum(-1) + (logp[j].exp() * (logp[j] - logp[i])).sum(-1))
                  for i, j in pairs]
            values.append(torch.stack(kl).mean())
        else:
            raise ValueError(f"unknown divergence {kind!r}; use js or sym_kl")
    if not values:
        return shift_logits.new_zeros((), dtype=torch.float32)
    return torch.stack(values).mean()


def _trainer_class():
    """`SpokenSFTTrainer`, built on first use so importing this module does not import torch."""
    from transformers import Trainer

    class SpokenSFTTrainer(Trainer):
        """HF Trainer with counterfactual batches and CE + weighted consistency loss."""

        loss_is_scaled_for_ga = False  # our loss is a per-batch mean: Trainer divides by the GA steps

        def __init__(self, *args, voices_per_group: int = 1, consistency_weight: float = 0.0,
                     divergence: str = "js", **kwargs):
            super().__init__(*args, **kwargs)
            # Our loss is a per-batch mean, not normalised by `num_items_in_batch`: every transformers
            # version then divides it by the accumulation steps (and skips counting the tokens).
            self.model_accepts_loss_kwargs = False
            self.voices_per_group = voices_per_group
            self.consistency_weight = consistency_weight
            self.divergence = divergence
            self._parts: dict[str, list[float]] = {"ce": [], "consistency": []}

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return CounterfactualSampler(dataset.examples, self.voices_per_group, seed=self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ce, outputs = response_loss(model, inputs)
            loss = ce
            if self.consistency_weight > 0:
                div = group_divergence(outputs.logits, inputs["labels"], inputs["group_ids"], self.divergence)
                loss = ce + self.consistency_weight * div
                self._parts["consistency"].append(float(div.detach()))
            self._parts["ce"].append(float(ce.detach()))
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            for name, values in self._parts.items():
                if values and "loss" in logs:
                    logs[name] = sum(values) / len(values)
                    values.clear()
            return super().log(logs, *args, **kwargs)

    return SpokenSFTTrainer


# --------------------------------------------------------------------------- the run


def _identity(config: FinetuneConfig, kind: str, data: dict, base: dict) -> dict:
    return {"kind": kind, "settings": config.model_dump(), "data_hash": data.get("data_hash"),
            "base_model": {k: base.get(k) for k in ("model", "config_sha256", "local_sha256", "revision")}}


def text_hashes(texts) -> list[str]:
    """Short hashes of the texts trained on, so `compare` can tell seen items from held-out ones."""
    return sorted({hashlib.sha256(" ".join(t.split()).lower().encode()).hexdigest()[:16] for t in texts})


def common_manifest(kind: str, config: FinetuneConfig, ref: BaseModelRef, base: dict, pools, speech,
                    peft_model) -> dict:
    return {
        "kind": kind, "name": config.name, "created_at": utc_now(),
        "base_model": base,
        "base_model_spec": {"requested": ref.requested, "name": ref.name, "pipeline_check": ref.pipeline_check,
                            "note": ref.note},
        "pipeline_check": ref.pipeline_check,
        "pools": pools.manifest(),
        "speech": speech.as_dict(),
        "lora": {**config.lora.model_dump(), "n_adapted_modules": len(adapted_modules(peft_model))},
        "settings": config.model_dump(),
        "versions": versions(),
    }


def load_for_training(config: FinetuneConfig, console: Console):
    """(BaseModelRef, processor, frozen base model, device) for the config's model."""
    ref = resolve_base_model(config.model)
    if ref.pipeline_check:
        console.print(f"[bold yellow]PIPELINE CHECK: fine-tuning the tiny random model {ref.name}; the adapter "
                      "exercises the code path and measures nothing.[/]")
    processor, model, device = load_base_model(ref, device=config.device, dtype=config.dtype,
                                               revision=config.revision)
    return ref, processor, model, device


def run_sft(config: FinetuneConfig, *, output_dir: Path | None = None, resume: bool = False, progress: bool = True,
            console: Console | None = None, data_source: str = "auto", callbacks=None,
            loaded: tuple | None = None) -> FinetuneResult:
    """Train a LoRA adapter on the config's instruction data spoken by its training pool.

    `callbacks`: extra `transformers.TrainerCallback`s. `loaded`: (BaseModelRef, processor, model,
    device) of a base model already in memory (benchmarks build one with random weights), in
    place of loading `config.model`."""
    console = console or Console(stderr=True)
    pools = load_pools(config)  # balanced, disjoint from the evaluation pool
    pairs, data_info = load_instruction_pairs(config, data_source=data_source)
    train_pairs, held_pairs = split_pairs(pairs, config.training.eval_fraction, config.training.seed)
    ref, processor, model, device = loaded or load_for_training(config, console)
    base = base_fingerprint(ref.model, model, config.revision)
    run_dir = run_dir_for(config, output_dir)
    open_run_dir(run_dir, _identity(config, "sft", data_info, base), resume=resume)

    chat = SpokenChat(processor)
    for p in pairs:
        chat.check_text(p.response, f"response of {p.pair_id}")
        chat.check_text(p.text_prompt, f"text prompt of {p.pair_id}")
    cache = AudioCache(resolve_input(config, config.audio_cache, "audio_cache", must_exist=False)
                       if config.audio_cache else None)

    def rows(selected):
        return [{"group_id": p.pair_id, "spoken": p.instruction, "text_prompt": p.text_prompt,
                 "response": p.response} for p in selected]

    train_examples, speech = speak_rows(rows(train_pairs), pools.train, cache,
                                        max_audio_seconds=chat.max_audio_seconds, workers=config.tts_workers,
                                        progress=progress)
    eval_examples = []
    if held_pairs:
        eval_examples, _ = speak_rows(rows(held_pairs), pools.train, cache,
                                      max_audio_seconds=chat.max_audio_seconds, workers=config.tts_workers,
                                      progress=progress)
    if speech.failed or speech.too_long:
        console.print(f"[yellow]{len(speech.failed)} clips failed and {len(speech.too_long)} were too long; "
                      "those examples are left out (see the manifest).[/]")

    from transformers import TrainingArguments, set_seed

    set_seed(config.training.seed)  # LoRA's A matrices are drawn here: the same seed, the same adapter
    peft_model = add_lora(model, config.lora)
    if config.training.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    cf = config.counterfactual
    checkpoints = run_dir / "checkpoints"
    args = TrainingArguments(**trainer_kwargs(config, checkpoints, device, progress=progress,
                                              has_eval=bool(eval_examples), args_class=TrainingArguments))
    trainer = _trainer_class()(
        model=peft_model, args=args, data_collator=SFTCollator(chat, cache),
        train_dataset=SpokenDataset(train_examples),
        eval_dataset=SpokenDataset(eval_examples) if eval_examples else None,
        callbacks=callbacks,
        voices_per_group=cf.voices_per_instruction if cf.enabled else 1,
        consistency_weight=cf.consistency_weight, divergence=cf.divergence)
    resume_from = last_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        console.print("[yellow]--resume: no checkpoint yet, starting from the beginning.[/]")
    console.print(f"SFT: {len(train_pairs)} instructions x {len(pools.train.voices)} training voices = "
                  f"{len(train_examples)} spoken examples; LoRA on {len(adapted_modules(peft_model))} modules; "
                  f"{'resuming from ' + resume_from if resume_from else 'from scratch'} -> {run_dir}")
    output = trainer.train(resume_from_checkpoint=resume_from)

    manifest = common_manifest("sft", config, ref, base, pools, speech, peft_model)
    manifest.update(
        data={**data_info, "n_train_pairs": len(train_pairs), "n_held_out_pairs": len(held_pairs),
              "held_out_ids": [p.pair_id for p in held_pairs]},
        training_text_sha16=text_hashes(p.instruction for p in train_pairs),
        n_train_examples=len(train_examples),
        counterfactual=cf.model_dump(),
        training={"global_step": trainer.state.global_step, "train_loss": output.training_loss,
                  "resumed_from": resume_from, "metrics": output.metrics,
                  "log_history": trainer.state.log_history[-50:]},
    )
    adapter_dir = save_adapter(trainer.model, run_dir / "adapter", manifest)
    console.print(f"Adapter saved to {adapter_dir}")
    return FinetuneResult(run_dir, adapter_dir, manifest, list(trainer.state.log_history), trainer.model)
