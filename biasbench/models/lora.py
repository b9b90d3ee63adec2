"""LoRA adapters on a model backend at evaluation time (`biasbench run --adapter DIR`).

`read_adapter` reads a PEFT adapter folder (and the `finetune_manifest.json` that
`biasbench finetune` writes beside it); `check_adapter_base` refuses an adapter made for
another base model (name, config, weights hash, and every LoRA matrix's shape against the
module it adapts); `apply_adapter` puts it on an hf backend's model and wraps the backend so
the adapter's hash is part of the fingerprint, hence of every cache key and run identity.
Training (finetune/adapter.py) writes adapters in this format; this module needs nothing
from finetune/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError

MANIFEST_NAME = "finetune_manifest.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
#: Config keys that do not change the architecture or the weights (left out of the config hash).
_VOLATILE_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "_attn_implementation",
    "_attn_implementation_autoset", "attn_implementation", "quantization_config", "_commit_hash",
    "architectures", "output_hidden_states", "output_attentions", "return_dict", "pad_token_id",
    "bos_token_id", "eos_token_id", "_experts_implementation", "use_return_dict", "chunk_size_feed_forward",
})


def config_signature(config) -> dict:
    """The model config without keys that change neither architecture nor weights."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _VOLATILE_CONFIG_KEYS}
        return value

    return clean(config.to_dict())


def adapter_sha256(folder: Path) -> str:
    """sha256 over the files that decide the adapter's effect (config + weights)."""
    from biasbench.tts.weights import sha256_of_files

    return sha256_of_files(folder, (ADAPTER_CONFIG, *ADAPTER_WEIGHTS))


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
