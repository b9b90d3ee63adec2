"""LoRA adapters: the base model they train on, saving them safely, loading them for evaluation.

- `resolve_base_model` / `load_base_model`: the `--model` spec (alias, hf:<id or path>, local
  folder, builtin tiny model) -> processor + transformers model, for fine-tuning.
- `add_lora`: LoRA on the language model only (the audio encoder and projector stay frozen,
  bit-identical), checked after injection.
- `save_adapter`: written into a hidden temporary folder beside the target, with
  `finetune_manifest.json`, then renamed into place: a failure never leaves a partial adapter
  under the real name.
- `check_adapter_base` / `apply_adapter`: evaluation (`biasbench run --adapter DIR`) refuses an
  adapter made for another base model (name, config, weights hash, and every LoRA matrix's
  shape against the module it adapts), then wraps the backend so the adapter's hash is part
  of the fingerprint, hence of every cache key and run identity.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError
from biasbench.finetune.config import FROZEN_MODULES

MANIFEST_NAME = "finetune_manifest.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
#: Families fine-tuning is built and tested for (the collator's audio keys are Qwen2-Audio's).
SUPPORTED_MODEL_TYPES = ("qwen2_audio",)
#: Config keys that do not change the architecture or the weights (left out of the config hash).
_VOLATILE_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "_attn_implementation",
    "_attn_implementation_autoset", "attn_implementation", "quantization_config", "_commit_hash",
    "architectures", "output_hidden_states", "output_attentions", "return_dict", "pad_token_id",
    "bos_token_id", "eos_token_id", "_experts_implementation", "use_return_dict", "chunk_size_feed_forward",
})


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
        from biasbench.models.tiny import tiny_qwen2audio_path

        return str(tiny_qwen2audio_path())
    if model.startswith("builtin:tiny-"):
        from biasbench.models.tiny_families import BUILDERS, tiny_family_path

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


def config_signature(config) -> dict:
    """The model config without keys that change neither architecture nor weights."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    return clean(config.to_dict())


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


def adapter_sha256(folder: Path) -> str:
    """sha256 over the files that decide the adapter's effect (config + weights)."""
    digest = hashlib.sha256()
    for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS):
        path = Path(folder) / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


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
        (tmp / MANIFEST_NAME).write_text(json.dumps(full, indent=2, sort_keys=True, default=str), encoding="utf-8")
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


# --------------------------------------------------------------------------- loading


@dataclass
class AdapterInfo:
    path: Path
    config: dict  # adapter_config.json
    manifest: dict | None  # finetune_manifest.json (adapters made by biasbench)
    sha256: str


def read_adapter(adapter_dir) -> AdapterInfo:
    path = Path(adapter_dir).expanduser().resolve()
    if not path.is_dir():
        raise BiasbenchError(f"adapter folder {path} not found")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file() or not any((path / w).is_file() for w in ADAPTER_WEIGHTS):
        raise BiasbenchError(f"{path} is not a complete PEFT adapter (needs {ADAPTER_CONFIG} and "
                             f"{' or '.join(ADAPTER_WEIGHTS)})")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        manifest_file = path / MANIFEST_NAME
        manifest = json.loads(manifest_file.read_text(encoding="utf-8")) if manifest_file.is_file() else None
    except (OSError, ValueError) as exc:
        raise BiasbenchError(f"adapter {path}: unreadable {ADAPTER_CONFIG} or {MANIFEST_NAME}: {exc}") from exc
    if config.get("peft_type", "LORA") != "LORA":
        raise BiasbenchError(f"adapter {path} is a {config.get('peft_type')} adapter; only LoRA is supported")
    return AdapterInfo(path, config, manifest, adapter_sha256(path))


def _adapter_tensors(info: AdapterInfo) -> dict[str, tuple[int, ...]]:
    weights = next(info.path / w for w in ADAPTER_WEIGHTS if (info.path / w).is_file())
    if weights.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    import torch

    return {k: tuple(v.shape) for k, v in torch.load(weights, map_location="meta", weights_only=True).items()}


def _module_dims(module) -> tuple[int, int] | None:
    """(in, out) features of a linear-like module (also bitsandbytes' quantized ones)."""
    inp, out = getattr(module, "in_features", None), getattr(module, "out_features", None)
    return (int(inp), int(out)) if inp is not None and out is not None else None


def _same_model_id(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return False


def check_adapter_base(model, model_id: str, info: AdapterInfo, *, local_sha256: str | None = None) -> None:
    """Refuse an adapter whose base model is not `model` (loaded from `model_id`), clearly.

    Checks, in order: the manifest's base fingerprint (config hash; weights hash of a local
    folder; hub id) when the adapter came from biasbench, else adapter_config.json's
    `base_model_name_or_path`; then every LoRA matrix against the module it adapts.
    `local_sha256`: the local folder's hash when already known (else the folder is read in full)."""
    from biasbench.models.hf_qwen2audio import _hash_local_model

    where = f"adapter {info.path}"
    declared = info.config.get("base_model_name_or_path") or ""
    base = (info.manifest or {}).get("base_model")
    if base:
        signature = config_signature(model.config)
        if base.get("config_sha256") and base["config_sha256"] != stable_hash(signature):
            raise BiasbenchError(f"{where} was trained on {base.get('model')!r}, a model with a different "
                                 f"architecture/config than {model_id!r}; load it on its own base model")
        local = Path(model_id)
        if base.get("local_sha256") and local.is_dir() and \
                base["local_sha256"] != (local_sha256 or _hash_local_model(local)):
            raise BiasbenchError(f"{where} was trained on {base.get('model')!r}, whose weights differ from those "
                                 f"of {model_id!r} (local folder hashes differ); load it on its own base model")
        if not Path(base.get("model", "")).exists() and not local.exists() and base.get("model") != model_id:
            raise BiasbenchError(f"{where} was trained on {base.get('model')!r}, not {model_id!r}")
    elif declared and not _same_model_id(declared, model_id):
        raise BiasbenchError(f"{where} declares base model {declared!r} (adapter_config.json "
                             f"base_model_name_or_path), but the loaded model is {model_id!r}")
    modules = dict(model.named_modules())
    for key, shape in sorted(_adapter_tensors(info).items()):
        for part, dim in ((".lora_A.", 1), (".lora_B.", 0)):
            if part not in key:
                continue
            name = key.split(part)[0].removeprefix("base_model.model.")
            module = modules.get(name)
            dims = _module_dims(module) if module is not None else None
            if dims is None:
                raise BiasbenchError(f"{where} adapts module {name!r}, which the model {model_id!r} does not have "
                                     "as a linear layer: it was made for another base model")
            expected = dims[0] if dim == 1 else dims[1]
            if len(shape) != 2 or shape[dim] != expected:
                raise BiasbenchError(f"{where}: {key} has shape {list(shape)}, but {name} of {model_id!r} has "
                                     f"{dims[0]} inputs and {dims[1]} outputs: the adapter was made for another "
                                     "base model")


class AdapterBackend:
    """A backend whose model carries a LoRA adapter; the adapter is part of its fingerprint."""

    def __init__(self, inner, info: AdapterInfo):
        self.inner = inner
        self.adapter = info

    def fingerprint(self) -> dict:
        return {**self.inner.fingerprint(),
                "adapter": {"path": str(self.adapter.path), "sha256": self.adapter.sha256,
                            "name": (self.adapter.manifest or {}).get("name")}}

    def score_choices(self, requests):
        return self.inner.score_choices(requests)

    def generate(self, requests):
        return self.inner.generate(requests)

    def __getattr__(self, name):  # max_audio_seconds, usage(), processor, ... of the wrapped backend
        return getattr(self.inner, name)


def apply_adapter(backend, adapter_dir) -> AdapterBackend:
    """Load a LoRA adapter onto an hf backend's model (checked first) and wrap the backend.

    The adapter is merged into the weights for speed, except on a quantized model, where it
    stays a separate LoRA layer."""
    from peft import PeftModel

    info = read_adapter(adapter_dir)
    model = getattr(backend, "model", None)
    model_id = getattr(backend, "model_id", "the model")
    if model is None:
        raise BiasbenchError(f"{type(backend).__name__} holds no transformers model to put adapter {info.path} on")
    known = backend.fingerprint().get("local_sha256") if hasattr(backend, "fingerprint") else None
    check_adapter_base(model, model_id, info, local_sha256=known)
    try:
        peft_model = PeftModel.from_pretrained(model, str(info.path), is_trainable=False)
    except Exception as exc:
        raise BiasbenchError(f"cannot load adapter {info.path} onto {model_id!r}: "
                             f"{type(exc).__name__}: {exc}") from exc
    quantized = getattr(backend, "quantization", None) is not None
    backend.model = (peft_model.get_base_model() if quantized else peft_model.merge_and_unload()).eval()
    return AdapterBackend(backend, info)
