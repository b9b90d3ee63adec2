"""LoRA adapters: the base model they train on, saving them safely, loading them for evaluation.

- `resolve_base_model` / `load_base_model`: the `--model` spec (alias, hf:<id or path>, local
  folder, builtin tiny model) -> processor + transformers model, for fine-tuning.
- `add_lora`: LoRA on the language model only (the audio encoder and projector stay frozen,
  bit-identical), checked after injection.
- `save_adapter`: written into a hidden temporary folder beside the target, with
  `finetune_manifest.json`, then renamed into place: a failure never leaves a partial adapter
  under the real name.
- `check_adapter_base` / `apply_adapter` (biasbench/models/lora.py, re-exported here):
  evaluation (`biasbench run --adapter DIR`) refuses an adapter made for another base model
  and makes the adapter's hash part of the fingerprint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError
from biasbench.finetune.config import FROZEN_MODULES
from biasbench.formats import dumps

# Reading and applying an adapter at evaluation time lives with the model backends
# (models/lora.py), so that models/ never imports finetune/; re-exported for training code.
from biasbench.models.lora import (  # noqa: F401
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST_NAME, AdapterBackend, AdapterInfo, adapter_sha256, apply_adapter,
    check_adapter_base, config_signature, read_adapter,
)

#: Families fine-tuning is built and tested for (the collator's audio keys are Qwen2-Audio's).
SUPPORTED_MODEL_TYPES = ("qwen2_audio",)


# --------------------------------------------------------------------------- base model


@dataclass
class BaseModelRef:
    requested: str  # what the config said
    name: str  # alias or spec
    model: str  # hub id or local folder handed to from_pretrained
    pipeline_check: bool  # a builtin tiny model: the result measures the harness only
    note: str = ""


def resolve_base_model(spec: str) -> BaseModelRef:
    """`spec` as `biasbench run --model` reads it; only transformers (hf) models can be fine-tuned."""
    from biasbench.models.registry import resolve_model

    choice = resolve_model(spec)
    if choice.backend != "hf" or choice.text_only:
        raise BiasbenchError(f"{spec!r} resolves to the {choice.backend} backend"
                             f"{' (text control)' if choice.text_only else ''}; fine-tuning needs a transformers "
                             "model: an alias such as qwen2audio, hf:<hub id or path>, or a local model folder")
    return BaseModelRef(spec, choice.name, materialize(choice.model), choice.pipeline_check, choice.note)


def materialize(model: str) -> str:
    """builtin:tiny-* -> the local folder of the tiny model (built on first use); else unchanged."""
    if model == "builtin:tiny-qwen2audio":
        from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

        return str(tiny_qwen2audio_path())
    if model.startswith("builtin:tiny-"):
        from biasbench.models.tiny.families import BUILDERS, tiny_family_path

        family = model.removeprefix("builtin:tiny-")
        if family in BUILDERS:
            return str(tiny_family_path(family))
    return model


def pick_device_dtype(device: str, dtype: str):
    from biasbench.models.hf_qwen2audio import _pick_device, _pick_dtype

    device = _pick_device(device)
    return device, _pick_dtype(dtype, device)


def load_base_model(ref: BaseModelRef, *, device: str = "auto", dtype: str = "auto", revision: str | None = None):
    """(processor, model, device) with every base weight frozen; refuses unsupported families."""
    import transformers

    from biasbench.models.families import read_model_config

    device, torch_dtype = pick_device_dtype(device, dtype)
    try:
        config = read_model_config(ref.model, revision=revision)
    except BiasbenchError:
        raise
    except Exception as exc:  # hub/OS errors
        raise BiasbenchError(f"cannot read the config of {ref.model!r}: {type(exc).__name__}: {exc}") from exc
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise BiasbenchError(f"fine-tuning supports {', '.join(SUPPORTED_MODEL_TYPES)} checkpoints for now; "
                             f"{ref.model!r} is model_type {model_type!r}")
    try:
        processor = transformers.AutoProcessor.from_pretrained(ref.model, revision=revision)
        model = transformers.Qwen2AudioForConditionalGeneration.from_pretrained(
            ref.model, revision=revision, dtype=torch_dtype).to(device)
    except Exception as exc:
        raise BiasbenchError(f"cannot load {ref.model!r}: {type(exc).__name__}: {exc}") from exc
    model.requires_grad_(False)
    return processor, model, device


def base_fingerprint(model_id: str, model, revision: str | None = None) -> dict:
    """What identifies the base model an adapter belongs to (recorded in the manifest)."""
    from biasbench.models.hf_qwen2audio import _hash_local_model, _resolve_revision

    local = Path(model_id)
    signature = config_signature(model.config)
    return {
        "model": model_id,
        "revision": _resolve_revision(model_id, revision, local_files_only=False),
        "class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "config_sha256": stable_hash(signature),
        "local_sha256": _hash_local_model(local) if local.is_dir() else None,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


# --------------------------------------------------------------------------- LoRA


def lora_config(spec):
    from peft import LoraConfig

    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, bias="none", task_type="CAUSAL_LM")


def adapted_modules(model) -> list[str]:
    """Names of the modules that carry a LoRA layer."""
    from peft.tuners.lora import LoraLayer

    return [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]


def check_lora_placement(model) -> list[str]:
    """The adapted modules; refuses none, or any inside the audio encoder / projector."""
    names = adapted_modules(model)
    if not names:
        raise BiasbenchError("the LoRA target_modules regex matched no module of the model; it must match the "
                             "language model's projection layers, e.g. .*language_model.*\\.(q_proj|v_proj)")
    frozen = [n for n in names if any(part in n for part in FROZEN_MODULES)]
    if frozen:
        raise BiasbenchError(f"the LoRA target_modules regex reaches the audio encoder or projector ({frozen[0]}, "
                             f"{len(frozen)} modules); restrict it to the language model")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    if trainable:
        raise BiasbenchError(f"parameters other than LoRA would be trained: {trainable[:3]}")
    return names


def add_lora(model, spec):
    """A PeftModel with LoRA on the language model only (checked)."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(spec))
    check_lora_placement(peft_model)
    return peft_model


def load_trainable_adapter(model, adapter_dir: Path, model_id: str):
    """A PeftModel continuing an existing adapter (checked against the base first)."""
    from peft import PeftModel

    info = read_adapter(adapter_dir)
    check_adapter_base(model, model_id, info)
    peft_model = PeftModel.from_pretrained(model, str(info.path), is_trainable=True)
    check_lora_placement(peft_model)
    return peft_model, info


# --------------------------------------------------------------------------- saving


def versions() -> dict:
    """Package versions, and the biasbench checkout's git commit."""
    from biasbench.paths import checkout_commit

    found = {"biasbench_git_commit": checkout_commit()}
    for name in ("biasbench", "torch", "transformers", "peft", "trl", "accelerate", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def save_adapter(peft_model, target: Path, manifest: dict, *, adapter_name: str = "default") -> Path:
    """Save the adapter + `finetune_manifest.json` into `target`, atomically.

    Everything is written into a hidden temporary folder beside `target` and renamed into
    place at the end; on any failure the temporary folder is removed and an earlier adapter
    at `target` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-partial-", dir=target.parent))
    old = None
    try:
        peft_model.save_pretrained(str(tmp), selected_adapters=[adapter_name])
        if adapter_name != "default":  # PEFT writes non-default adapters to a subfolder
            for item in (tmp / adapter_name).iterdir():
                os.replace(item, tmp / item.name)
            (tmp / adapter_name).rmdir()
        if not (tmp / ADAPTER_CONFIG).is_file() or not any((tmp / w).is_file() for w in ADAPTER_WEIGHTS):
            raise BiasbenchError(f"PEFT wrote no adapter files into {tmp}")
        full = {**manifest, "adapter_sha256": adapter_sha256(tmp)}
        (tmp / MANIFEST_NAME).write_text(dumps(full, indent=2, sort_keys=True), encoding="utf-8")
        if target.exists():
            old = target.with_name(f".{target.name}-old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        os.rename(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.rename(old, target)  # put the earlier adapter back
            old = None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target
