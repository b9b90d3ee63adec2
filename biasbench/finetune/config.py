"""`FinetuneConfig`: one validated YAML for a debiasing fine-tune (LoRA SFT, then DPO).

The YAML is user input: read with `yaml.safe_load`, validated by pydantic, unknown keys refused,
every problem reported as a `ConfigError` naming the file and the field. Paths of INPUTS (the
instruction data, pool YAMLs given as paths, a pairs file, an SFT adapter, an evaluation run)
are relative to the YAML's folder; the OUTPUT folder is relative to where the command runs,
as `biasbench run --output-dir` is.

A minimal SFT config (see finetune/examples/sft_tiny.yaml):

```yaml
name: sft-tiny
model: tiny-qwen2audio
train_pool: espeak-train        # voices the model hears in training
eval_pool: espeak-default       # voices kept for evaluation: must share no voice with train_pool
data:
  local: {path: data/instructions_tiny.jsonl}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from biasbench.config import DatasetSpec, _Strict, _validate, read_yaml
from biasbench.errors import ConfigError

#: LoRA goes on the language model only: Qwen2-Audio's audio encoder also has q/k/v projections,
#: so a bare module-name list would adapt (and so un-freeze) the encoder too.
LM_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"

#: Module-name fragments that must never receive an adapter (encoder, projector).
FROZEN_MODULES = ("audio_tower", "multi_modal_projector")


class LoraSpec(_Strict):
    rank: int = Field(8, ge=1, le=1024)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str = Field(LM_TARGET_MODULES, description="a regex over module names (full match)")


class TrainingSpec(_Strict):
    learning_rate: float = Field(1e-4, gt=0)
    epochs: float = Field(1.0, gt=0, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    batch_size: int = Field(6, ge=1, description="spoken examples per device per forward pass")
    gradient_accumulation_steps: int = Field(4, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a CUDA GPU that has it (else fp16), none on CPU")
    gradient_checkpointing: bool = False
    save_steps: int = Field(50, ge=1, description="checkpoint every N optimizer steps (for --resume)")
    save_total_limit: int | None = Field(2, ge=1)
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="instructions held out for an eval loss")
    eval_steps: int | None = Field(None, ge=1, description="eval loss every N steps (needs eval_fraction > 0)")
    logging_steps: int = Field(10, ge=1)
    seed: int = 0
    dataloader_workers: int = Field(0, ge=0)


class CounterfactualSpec(_Strict):
    """Counterfactual batches: one instruction spoken by several voices in the same batch."""

    enabled: bool = True
    voices_per_instruction: int = Field(6, ge=2, description="voices of one instruction per batch; "
                                        "6 = one per gender x ethnicity cell")
    consistency_weight: float = Field(0.0, ge=0, description="weight of the divergence between the response-"
                                      "token distributions of the voices of one instruction (0: off)")
    divergence: Literal["js", "sym_kl"] = "js"


class DPOSpec(_Strict):
    """Preference pairs mined from an evaluation run, or given as a pairs JSONL."""

    run_dir: str | None = Field(None, description="evaluation run to mine pairs from (its responses.parquet)")
    pairs: str | None = Field(None, description="pairs JSONL to train on (when run_dir is unset)")
    init_adapter: str | None = Field(None, description="an SFT adapter to continue from; the reference is a "
                                     "frozen copy of it (else the base model)")
    chosen: Literal["auto", "correct", "majority"] = Field(
        "auto", description="chosen answer: correct (knowledge tasks), majority across groups (probes), or auto")
    beta: float = Field(0.1, gt=0)
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    max_pairs_per_item: int = Field(3, ge=1, description="rejected answers kept per item (most frequent first)")
    anchor_ratio: float = Field(1.0, ge=0, description="knowledge tasks: anchor pairs (items every voice answers "
                                "right; rejected = another option) per voice-dependent pair, so DPO cannot close a "
                                "gap by moving every voice to one answer (0: none)")
    data_source: Literal["auto", "hf", "local"] = Field(
        "auto", description="where to re-read the mined run's task items (must match the run's items)")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.run_dir is None) == (self.pairs is None):
            raise ValueError("give exactly one of 'run_dir' (mine pairs from an evaluation run) or 'pairs' "
                             "(a pairs JSONL)")
        return self


class FinetuneConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="the run folder's name")
    description: str = ""
    model: str = Field("qwen2audio", description="alias, hf:<id or path>, or a local model folder (hf backend)")
    revision: str | None = None
    output_dir: str = Field("runs/finetune", description="the run goes to OUTPUT_DIR/<name>/ (relative to the "
                            "working directory)")
    train_pool: str = Field(description="voice pool heard in training (name or YAML path)")
    eval_pool: str = Field(description="voice pool kept for evaluation; no voice may be in both")
    text_prompt: str = Field("", description="text shown beside every spoken instruction (SFT)")
    data: DatasetSpec | None = Field(None, description="SFT data: instruction/response rows")
    instruction_field: str = "instruction"
    response_field: str = "response"
    text_field: str | None = Field(None, description="optional column with a per-row text prompt")
    limit: int | None = Field(None, ge=1, description="use only the first N instruction rows")
    dpo: DPOSpec | None = None
    lora: LoraSpec = Field(default_factory=LoraSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    counterfactual: CounterfactualSpec = Field(default_factory=CounterfactualSpec)
    dtype: str = Field("auto", description="weights: auto (bf16 on GPU, float32 on CPU), float32, bfloat16")
    device: str = "auto"
    audio_cache: str | None = Field(None, description="audio cache folder (default: the shared biasbench cache)")
    tts_workers: int | None = Field(None, ge=1)
    _path: Path | None = PrivateAttr(None)  # the YAML it came from; inputs resolve against its folder

    @model_validator(mode="after")
    def _consistent(self):
        cf, tr = self.counterfactual, self.training
        if cf.enabled and tr.batch_size % cf.voices_per_instruction:
            raise ValueError(f"training.batch_size ({tr.batch_size}) must be a multiple of "
                             f"counterfactual.voices_per_instruction ({cf.voices_per_instruction}): each batch "
                             "holds whole groups of voices speaking one instruction")
        if cf.consistency_weight > 0 and not cf.enabled:
            raise ValueError("counterfactual.consistency_weight needs counterfactual.enabled: the loss compares "
                             "voices of one instruction within a batch")
        if tr.eval_steps is not None and tr.eval_fraction == 0:
            raise ValueError("training.eval_steps needs training.eval_fraction > 0 (no held-out instructions)")
        return self


def load_finetune_config(path) -> FinetuneConfig:
    path = Path(path)
    config = _validate(FinetuneConfig, read_yaml(path), path)
    config._path = path.resolve()
    return config


def config_path(config: FinetuneConfig) -> Path:
    """The YAML a config came from (a stand-in in the working directory for configs built in code)."""
    return config._path or (Path.cwd() / "finetune.yaml")


def resolve_input(config: FinetuneConfig, value: str, field: str, *, must_exist: bool = True) -> Path:
    """An input path from the YAML: relative to the YAML's folder (absolute paths kept)."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = config_path(config).parent / path
    path = path.resolve()
    if must_exist and not path.exists():
        raise ConfigError(config_path(config), field, f"{path} not found")
    return path


def resolve_pool(config: FinetuneConfig, value: str) -> str:
    """A pool name stays a name (voices/<name>.yaml); a YAML path resolves against the config's folder."""
    if Path(value).suffix in (".yaml", ".yml"):
        beside = config_path(config).parent / value
        return str(beside.resolve()) if beside.is_file() else value
    return value
