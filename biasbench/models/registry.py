"""Model aliases and how `--model` is resolved to a backend.

`--model` takes an alias (`qwen2audio`, `gpt-4o-audio`), `hf:<hub id or path>`,
`openai:<model>` (the OpenAI API, or any OpenAI-compatible server via `OPENAI_BASE_URL`),
or a local directory. Controls and engines wrap those (see the end of this file):
`text:<model>` (the same model, items as plain text, no audio), `cascade:<asr>+<llm>` (Whisper
then a text LLM), `vllm:<alias, hub id or path>` (vLLM's offline engine). Backends are
imported only when chosen, so `biasbench --help` never loads torch.

Other packages add backends without editing biasbench: an entry point in the group
`biasbench.backends` named NAME makes `--model NAME:<model>` call its factory (see
`load_plugin_backend` and the README's "Adding a model").
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from biasbench.errors import BiasbenchError
from biasbench.models.aliases import ALIASES, ModelAlias

OPENAI_PREFIX = "openai:"
PLUGIN_GROUP = "biasbench.backends"
PLUGIN_BACKEND = "plugin:"  # ModelChoice.backend of a plugin: "plugin:<entry point name>"
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"

PIPELINE_CHECK_ALIAS = "tiny-qwen2audio"


@dataclass
class ModelChoice:
    """What `--model` resolved to, and why."""

    requested: str  # the spec as given (a local model's path included)
    # The alias, or the spec with each local folder named by its folder name only: run ids and
    # tables name a model by what it is, not where it sits (identity: identity_fingerprint).
    name: str
    backend: str
    model: str  # hub id or local path handed to the backend
    pipeline_check: bool  # True when the answers measure the harness, not a real model
    note: str = ""
    # `text:<model>`: the runner plans the text condition only (no audio, nothing synthesised).
    text_only: bool = False
    # `cascade:<asr>+<llm>`: the two models (hub id, local path or builtin:tiny-*).
    parts: tuple[str, str] | None = None


def resolve_model(spec: str, *, offline_fallback: bool = False) -> ModelChoice:
    control = _resolve_control(spec, offline_fallback)  # text:, cascade:, vllm: (end of file)
    if control is not None:
        return control
    plugin = _resolve_plugin(spec)
    if plugin is not None:
        return plugin
    if spec.startswith("hf:"):
        return ModelChoice(spec, "hf:" + _folder_name(spec[3:]), "hf", spec[3:], pipeline_check=False)
    if spec.startswith(OPENAI_PREFIX):
        model = spec[len(OPENAI_PREFIX):].strip()
        if not model:
            raise BiasbenchError("give the model after 'openai:', e.g. openai:gpt-4o-audio-preview")
        return ModelChoice(spec, spec, "openai", model, pipeline_check=False)
    if Path(spec).is_dir():
        return ModelChoice(spec, _folder_name(spec), "hf", str(Path(spec).resolve()), pipeline_check=False)
    alias = ALIASES.get(spec)
    if alias is None:
        raise BiasbenchError(_unknown_alias_message(spec))
    if alias.model.startswith("builtin:"):
        return ModelChoice(spec, alias.name, alias.backend, alias.model, pipeline_check=True,
                           note=alias.pipeline_note or "tiny random model: a pipeline check, not a measurement")
    missing = _why_unavailable(alias)
    if not missing:
        return ModelChoice(spec, alias.name, alias.backend, alias.model, pipeline_check=False)
    if alias.backend == "faster-whisper":  # no tiny stand-in makes sense for a reference ASR
        raise BiasbenchError(f"{alias.name} cannot run here: {missing}")
    if not offline_fallback and alias.backend == "openai":
        raise BiasbenchError(f"{alias.name} ({alias.model}) cannot run here: {missing}. Export your API key "
                             f"as {alias.needs}, or pass --offline-fallback to run the whole pipeline on the "
                             f"tiny local model '{PIPELINE_CHECK_ALIAS}' as a labelled pipeline check.")
    if not offline_fallback:
        raise BiasbenchError(f"{alias.name} ({alias.model}) cannot run here: {missing}. Run it on a "
                             "machine with a CUDA GPU and the model hub (or the weights in the local "
                             "HF cache), or pass --offline-fallback to run the whole pipeline on the "
                             f"tiny local model '{PIPELINE_CHECK_ALIAS}' as a labelled pipeline check.")
    tiny = ALIASES[PIPELINE_CHECK_ALIAS]
    return ModelChoice(spec, tiny.name, tiny.backend, tiny.model, pipeline_check=True,
                       note=f"{alias.name} unavailable ({missing}); ran '{tiny.name}' instead. "
                            "PIPELINE CHECK: these numbers say nothing about any real model.")


def _folder_name(model: str) -> str:
    """A local model folder by its own name (`/data/models/tiny-v1/` -> `tiny-v1`); anything else
    (a hub id) as given."""
    path = Path(model)
    return (path.resolve().name or model) if path.is_dir() else model


def _why_unavailable(alias: ModelAlias) -> str:
    """Empty when the alias can run here; else the reason in a few words."""
    if alias.backend == "faster-whisper" or alias.model.startswith("faster-whisper:"):
        from biasbench.models.asr_faster_whisper import why_unavailable

        return why_unavailable(alias.model.removeprefix("faster-whisper:"))
    if alias.backend == "openai":
        # A key is needed unless OPENAI_BASE_URL points at another (e.g. local vLLM) server.
        if alias.needs and not os.environ.get(alias.needs) and not os.environ.get(OPENAI_BASE_URL_ENV):
            return f"{alias.needs} is not set"
        return ""
    reasons = []
    if alias.needs_gpu and not _cuda_available():
        reasons.append("no CUDA GPU")
    if not _weights_reachable(alias.model):
        reasons.append("model hub unreachable and weights not in the local HF cache")
    return " and ".join(reasons)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _weights_reachable(hub_id: str) -> bool:
    from biasbench.hub import hub_reachable

    if hub_reachable():
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)
    except ImportError:
        return False


def _unknown_alias_message(spec: str) -> str:
    near = difflib.get_close_matches(spec, ALIASES, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(near)}?" if near else ""
    plugins = "".join(f", {name}:<model>" for name in plugin_backends())
    return (f"unknown model {spec!r}.{hint} Known aliases: {', '.join(ALIASES)}; "
            f"or give hf:<hub id or path>, openai:<model name>, vllm:<alias, hub id or path>{plugins}, "
            "text:<model> (text control), cascade:<asr>+<llm> (ASR cascade control), or a local model directory.")


def load_backend(choice: ModelChoice, *, dtype: str = "auto", device: str = "auto",
                 revision: str | None = None, trust_remote_code: bool = False, base_url: str | None = None,
                 quantization: str | None = None, vllm_options: dict | None = None, adapter: str | None = None):
    """Instantiate the chosen backend (imports torch/transformers here, not before).

    `base_url` (else the OPENAI_BASE_URL environment variable) points the `openai` backend at
    an OpenAI-compatible server such as `vllm serve`; other backends ignore it. `quantization`
    (None, "8bit", "4bit": bitsandbytes on a CUDA GPU) applies to the `hf` backend only.
    `vllm_options` (tensor_parallel_size, data_parallel_size, max_model_len, lora, ...) go to
    `VLLMBackend` for `vllm:` models. `adapter`: a LoRA adapter folder (`biasbench finetune`)
    put on an hf or vllm model; refused when made for another base model (see the end of file)."""
    if adapter is not None:
        return _load_with_adapter(choice, adapter, dict(dtype=dtype, device=device, revision=revision,
                                                        trust_remote_code=trust_remote_code, base_url=base_url,
                                                        quantization=quantization, vllm_options=vllm_options))
    if choice.text_only:  # the text control: the same backend, wrapped so it never takes audio
        from biasbench.models.text_control import TextOnlyBackend

        return TextOnlyBackend(load_backend(replace(choice, text_only=False), dtype=dtype, device=device,
                                            revision=revision, trust_remote_code=trust_remote_code,
                                            base_url=base_url, quantization=quantization,
                                            vllm_options=vllm_options))
    if choice.backend == "cascade":
        return _load_cascade(choice, dtype=dtype, device=device, revision=revision,
                             trust_remote_code=trust_remote_code)
    if choice.backend.startswith(PLUGIN_BACKEND):
        return load_plugin_backend(choice, dtype=dtype, device=device, revision=revision,
                                   trust_remote_code=trust_remote_code, base_url=base_url,
                                   quantization=quantization)
    if choice.backend == "openai":
        from biasbench.models.openai_api import OpenAIAudioBackend

        return OpenAIAudioBackend(choice.model, base_url=base_url or os.environ.get(OPENAI_BASE_URL_ENV) or None)
    model = choice.model
    if choice.backend == "simulated":
        from biasbench.models.simulated import simulated_backend

        return simulated_backend(model)
    if model == "builtin:tiny-qwen2audio":
        from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

        model = str(tiny_qwen2audio_path())
    elif model.startswith("builtin:tiny-"):  # the other speech-LM families' tiny models
        from biasbench.models.tiny.families import BUILDERS, tiny_family_path

        if model.removeprefix("builtin:tiny-") in BUILDERS:
            model = str(tiny_family_path(model.removeprefix("builtin:tiny-")))
    if choice.backend == "faster-whisper":
        from biasbench.models.asr_faster_whisper import FasterWhisperBackend

        return FasterWhisperBackend(model, device="cpu" if device == "auto" else device)
    if choice.backend == "hf" and (model == "builtin:tiny-whisper" or _is_whisper(model, revision)):
        from biasbench.models.asr_hf_whisper import HFWhisperBackend  # ASR: transcribe tasks

        return HFWhisperBackend(_cascade_part_path(model), revision=revision, dtype=dtype, device=device,
                                quantization=quantization)
    if choice.backend == "hf":
        # The family (Qwen2-Audio, Qwen2.5-Omni, Voxtral, ...) comes from the config's model_type.
        from biasbench.models.families import backend_for_model

        backend_cls = backend_for_model(model, revision=revision, trust_remote_code=trust_remote_code)
        return backend_cls(model, revision=revision, dtype=dtype, device=device,
                           trust_remote_code=trust_remote_code, quantization=quantization)
    if choice.backend == "vllm":
        from biasbench.models.vllm_backend import VLLMBackend

        return VLLMBackend(model, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code,
                           **(vllm_options or {}))
    raise BiasbenchError(f"backend {choice.backend!r} is not available in this version")


# ---------------------------------------------------------------- controls and engines
# `text:<model>`, `cascade:<asr>+<llm>` and `vllm:<model>` wrap the specs above.

TEXT_PREFIX = "text:"
CASCADE_PREFIX = "cascade:"
VLLM_PREFIX = "vllm:"
TEXT_CONTROL_NOTE = ("TEXT CONTROL: the items were given to the model as plain text, with no voice; "
                     "compare voice groups against these answers.")

# The halves of `cascade:<asr>+<llm>`. Not whole models (an ASR alone answers nothing), so they
# are kept out of ALIASES; backend "asr" / "text-llm" says which half each one can be.
CASCADE_PARTS: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        ModelAlias("whisper-large-v3", "openai/whisper-large-v3", "asr", False,
                   "Whisper large-v3 through transformers (runs on CPU, slowly; a GPU is better)"),
        ModelAlias("tiny-whisper", "builtin:tiny-whisper", "asr", False,
                   "a tiny randomly initialised Whisper of the real classes, built locally: a pipeline check"),
        ModelAlias("whisper-tiny-en", "faster-whisper:tiny.en", "asr", False,
                   "Whisper tiny.en through faster-whisper (int8, CPU, offline, pinned checked weights)"),
        ModelAlias("whisper-base", "faster-whisper:base", "asr", False,
                   "Whisper base through faster-whisper (int8, CPU, offline, pinned checked weights)"),
        ModelAlias("qwen2-7b-instruct", "Qwen/Qwen2-7B-Instruct", "text-llm", True,
                   "Qwen2-7B-Instruct through transformers (the text LLM Qwen2-Audio-7B is built on)"),
        ModelAlias("tiny-qwen2-text", "builtin:tiny-qwen2-text", "text-llm", False,
                   "a tiny randomly initialised Qwen2 text LLM of the real classes, built locally: a pipeline check"),
    ]
}
_TINY_PART = {"asr": "tiny-whisper", "text-llm": "tiny-qwen2-text"}


def _resolve_control(spec: str, offline_fallback: bool) -> ModelChoice | None:
    """`text:`, `cascade:` and `vllm:` specs; None for anything else."""
    if spec.startswith(TEXT_PREFIX):
        inner_spec = spec[len(TEXT_PREFIX):].strip()
        if not inner_spec:
            raise BiasbenchError("give the model after 'text:', e.g. text:qwen2audio")
        if inner_spec.startswith((TEXT_PREFIX, CASCADE_PREFIX)):
            raise BiasbenchError(f"{spec!r}: text: wraps a model, not another control")
        inner = resolve_model(inner_spec, offline_fallback=offline_fallback)
        return replace(inner, requested=spec, name=f"text:{inner.name}", text_only=True,
                       note=" ".join(filter(None, [TEXT_CONTROL_NOTE, inner.note])))
    if spec.startswith(CASCADE_PREFIX):
        return _resolve_cascade(spec, offline_fallback)
    if spec.startswith(VLLM_PREFIX):
        inner = spec[len(VLLM_PREFIX):].strip()
        if not inner:
            raise BiasbenchError("give the model after 'vllm:', e.g. vllm:qwen2audio or vllm:Qwen/Qwen2-Audio-7B-Instruct")
        alias = ALIASES.get(inner)
        if alias is not None and alias.backend == "hf":
            builtin = alias.model.startswith("builtin:")
            return ModelChoice(spec, f"vllm:{alias.name}", "vllm", alias.model, pipeline_check=builtin,
                               note="tiny random model: a pipeline check, not a measurement" if builtin else "")
        model = inner.removeprefix("hf:")
        name = f"vllm:{_folder_name(model)}"
        if Path(model).is_dir():
            model = str(Path(model).resolve())
        return ModelChoice(spec, name, "vllm", model, pipeline_check=False)
    return None


def _resolve_cascade(spec: str, offline_fallback: bool) -> ModelChoice:
    halves = spec[len(CASCADE_PREFIX):].split("+")
    if len(halves) != 2 or not all(h.strip() for h in halves):
        raise BiasbenchError(f"{spec!r}: write cascade:<asr>+<llm>, e.g. cascade:whisper-large-v3+qwen2-7b-instruct "
                             "(each an alias, hf:<hub id>, a hub id or a local folder without '+')")
    resolved = [_resolve_part(h.strip(), kind, offline_fallback) for h, kind in zip(halves, ("asr", "text-llm"))]
    (asr_name, asr_model, asr_note), (llm_name, llm_model, llm_note) = resolved
    builtin = any(m.startswith("builtin:") for m in (asr_model, llm_model))
    notes = [n for n in (asr_note, llm_note) if n]
    if builtin and not notes:
        notes.append("tiny random model in the cascade: a pipeline check, not a measurement")
    return ModelChoice(spec, f"cascade:{asr_name}+{llm_name}", "cascade", f"{asr_model}+{llm_model}",
                       pipeline_check=builtin, note=" ".join(notes), parts=(asr_model, llm_model))


def _resolve_part(part: str, kind: str, offline_fallback: bool) -> tuple[str, str, str]:
    """(name, model, note) for one half of a cascade."""
    alias = CASCADE_PARTS.get(part)
    if alias is None and part.startswith("faster-whisper:") and kind == "asr":  # e.g. a CTranslate2 folder
        alias = ModelAlias("faster-whisper:" + _folder_name(part.removeprefix("faster-whisper:")), part, "asr",
                           False, "")
    if alias is None:
        model = part.removeprefix("hf:")
        if Path(model).is_dir():
            return _folder_name(model), str(Path(model).resolve()), ""
        if "/" in model:  # a hub id
            return part, model, ""
        known = [a.name for a in CASCADE_PARTS.values() if a.backend == kind]
        raise BiasbenchError(f"unknown {kind} model {part!r} in the cascade; known: {', '.join(known)}, "
                             "or a hub id (owner/name) or a local folder")
    if alias.backend != kind:
        raise BiasbenchError(f"{part!r} is a {alias.backend} model; the cascade wants cascade:<asr>+<text-llm>")
    if alias.model.startswith("builtin:"):
        return alias.name, alias.model, ""
    missing = _why_unavailable(alias)
    if not missing:
        return alias.name, alias.model, ""
    if not offline_fallback:
        raise BiasbenchError(f"{alias.name} ({alias.model}) cannot run here: {missing}. Run it where it can, or "
                             "pass --offline-fallback to use the tiny local stand-in as a labelled pipeline check.")
    tiny = CASCADE_PARTS[_TINY_PART[kind]]
    return tiny.name, tiny.model, (f"{alias.name} unavailable ({missing}); ran '{tiny.name}' instead. "
                                   "PIPELINE CHECK: these numbers say nothing about any real model.")


def _is_whisper(model: str, revision: str | None) -> bool:
    from biasbench.models.asr_hf_whisper import is_whisper_checkpoint

    return is_whisper_checkpoint(model, revision=revision)


def _cascade_part_path(model: str) -> str:
    if model == "builtin:tiny-whisper":
        from biasbench.models.tiny.controls import tiny_whisper_path

        return str(tiny_whisper_path())
    if model == "builtin:tiny-qwen2-text":
        from biasbench.models.tiny.controls import tiny_text_llm_path

        return str(tiny_text_llm_path())
    return model


def _load_cascade(choice: ModelChoice, *, dtype: str, device: str, revision: str | None, trust_remote_code: bool):
    from biasbench.models.cascade import CascadeBackend

    if revision is not None:
        raise BiasbenchError("--revision is ambiguous for a cascade (two models): pin each half by a local "
                             "folder or a hub snapshot instead")
    asr, llm = (_cascade_part_path(m) for m in choice.parts)
    return CascadeBackend(asr, llm, dtype=dtype, device=device, trust_remote_code=trust_remote_code)


# ---------------------------------------------------------------- backends from other packages

# Prefixes biasbench itself reads: a plugin cannot take them over.
_BUILTIN_PREFIXES = ("hf", "openai", "text", "cascade", "vllm")
# What the runner calls on every backend (biasbench/models/base.py: ModelBackend).
_BACKEND_METHODS = ("fingerprint", "score_choices", "generate")


def plugin_backends() -> dict:
    """Entry points of the group `biasbench.backends` from installed packages, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name not in _BUILTIN_PREFIXES}


def _resolve_plugin(spec: str) -> ModelChoice | None:
    """`NAME:<model>` where NAME is a plugin's entry point; None for anything else."""
    name, colon, model = spec.partition(":")
    if not colon or name in _BUILTIN_PREFIXES or name not in plugin_backends():
        return None
    if not model.strip():
        raise BiasbenchError(f"give the model after '{name}:', e.g. {name}:<model name>")
    return ModelChoice(spec, spec, PLUGIN_BACKEND + name, model.strip(), pipeline_check=False)


def load_plugin_backend(choice: ModelChoice, **options):
    """Call the plugin's factory: `factory(model, *, dtype, device, revision, trust_remote_code,
    base_url, quantization)`; it returns a ModelBackend (biasbench/models/base.py)."""
    name = choice.backend.removeprefix(PLUGIN_BACKEND)
    entry_point = plugin_backends().get(name)
    if entry_point is None:
        raise BiasbenchError(f"no installed package provides the {PLUGIN_GROUP} entry point {name!r}")
    where = f"the {PLUGIN_GROUP} entry point {name!r} ({entry_point.value}" + (
        f", from {entry_point.dist.name} {entry_point.dist.version})" if entry_point.dist else ")")
    try:
        factory = entry_point.load()
    except Exception as exc:  # the plugin's own import failed: name it, not biasbench
        raise BiasbenchError(f"{where} could not be imported: {type(exc).__name__}: {exc}") from exc
    backend = factory(choice.model, **options)
    missing = [m for m in _BACKEND_METHODS if not callable(getattr(backend, m, None))]
    if not hasattr(backend, "max_audio_seconds"):
        missing.append("max_audio_seconds")
    if missing:
        raise BiasbenchError(f"{where} returned {type(backend).__name__}, which lacks {', '.join(missing)} "
                             "(see biasbench/models/base.py: ModelBackend)")
    return backend


# ---------------------------------------------------------------- LoRA adapters (biasbench finetune)


def _load_with_adapter(choice: ModelChoice, adapter: str, kwargs: dict):
    """The backend with a LoRA adapter: hf (checked against the base, merged, adapter hash in the
    fingerprint: biasbench/models/lora.py) or vllm (its own LoRA support)."""
    if choice.text_only:
        from biasbench.models.text_control import TextOnlyBackend

        return TextOnlyBackend(_load_with_adapter(replace(choice, text_only=False), adapter, kwargs))
    if choice.backend == "vllm":
        return load_backend(choice, **{**kwargs, "vllm_options": {**(kwargs["vllm_options"] or {}),
                                                                   "lora": str(adapter)}})
    if choice.backend != "hf":
        raise BiasbenchError(f"--adapter applies to transformers (hf) and vllm: models; {choice.name} runs on the "
                             f"{choice.backend} backend")
    from biasbench.models.lora import apply_adapter

    return apply_adapter(load_backend(choice, **kwargs), adapter)


# ---------------------------------------------------------------- run identity

#: In a backend fingerprint: a key holding a content hash -> the key holding where that content
#: was read from (hf/vllm `local_sha256` -> `model`, vllm `lora_sha256` -> `lora`, an adapter's
#: `sha256` -> `path`, a faster-whisper model's `model_sha256` -> `model`).
_LOCATED_BY = {"local_sha256": "model", "lora_sha256": "lora", "sha256": "path", "model_sha256": "model"}
#: Hash keys that sit beside a name as well as beside a folder (faster-whisper's `tiny.en`): the
#: name is kept (existing run ids stay), only a folder's path is replaced.
_FOLDERS_ONLY = {"model_sha256"}


def identity_fingerprint(fingerprint: dict) -> dict:
    """The fingerprint as run identity: wherever a folder's content hash is known, the folder's
    path is replaced (in every string, e.g. a cascade's "asr+llm" name) by that hash. Moving
    `BIASBENCH_CACHE`, HOME or a model folder then keeps the run id and every stored answer;
    changing a weight does not. Fingerprints holding no local folder come back unchanged."""
    located: dict[str, str] = {}
    _collect_locations(fingerprint, located)
    return _replace_locations(fingerprint, located) if located else fingerprint


def _collect_locations(value, located: dict[str, str]) -> None:
    if isinstance(value, dict):
        for hash_key, location_key in _LOCATED_BY.items():
            digest, where = value.get(hash_key), value.get(location_key)
            if isinstance(digest, str) and digest and isinstance(where, str) and where and (
                    hash_key not in _FOLDERS_ONLY or "/" in where or Path(where).is_dir()):
                located[where] = digest
        for inner in value.values():
            _collect_locations(inner, located)


def _replace_locations(value, located: dict[str, str]):
    if isinstance(value, dict):
        return {key: _replace_locations(inner, located) for key, inner in value.items()}
    if isinstance(value, list):
        return [_replace_locations(inner, located) for inner in value]
    if isinstance(value, str):
        for where in sorted(located, key=len, reverse=True):  # longest first: a path inside another
            value = value.replace(where, f"sha256:{located[where][:16]}")
    return value
