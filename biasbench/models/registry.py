"""Model aliases and how `--model` is resolved to a backend.

`--model` takes an alias (`qwen2audio`, `gpt-4o-audio`), `hf:<hub id or path>`,
`openai:<model>` (the OpenAI API, or any OpenAI-compatible server via `OPENAI_BASE_URL`),
or a local directory. Backends are imported only when chosen, so `biasbench --help` never
loads torch.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from biasbench.errors import BiasbenchError


@dataclass(frozen=True)
class ModelAlias:
    name: str
    model: str  # hub id, or "builtin:<name>" for models biasbench builds itself
    backend: str
    needs_gpu: bool
    description: str
    needs: str = ""  # what else it needs to run, e.g. an API key's environment variable


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        ModelAlias("qwen2audio", "Qwen/Qwen2-Audio-7B-Instruct", "hf", True,
                   "Qwen2-Audio-7B-Instruct through transformers (bf16 on a CUDA GPU)"),
        ModelAlias("tiny-qwen2audio", "builtin:tiny-qwen2audio", "hf", False,
                   "a tiny randomly initialised Qwen2-Audio of the real classes, built locally: "
                   "for pipeline checks and tests, its answers mean nothing"),
        ModelAlias("gpt-4o-audio", "gpt-4o-audio-preview", "openai", False,
                   "GPT-4o audio through the OpenAI API (paid per token)", needs="OPENAI_API_KEY"),
        ModelAlias("gpt-4o-mini-audio", "gpt-4o-mini-audio-preview", "openai", False,
                   "GPT-4o mini audio through the OpenAI API (paid per token)", needs="OPENAI_API_KEY"),
    ]
}

OPENAI_PREFIX = "openai:"
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"

PIPELINE_CHECK_ALIAS = "tiny-qwen2audio"


@dataclass
class ModelChoice:
    """What `--model` resolved to, and why."""

    requested: str
    name: str  # the alias, or the spec as given
    backend: str
    model: str  # hub id or local path handed to the backend
    pipeline_check: bool  # True when the answers measure the harness, not a real model
    note: str = ""


def resolve_model(spec: str, *, offline_fallback: bool = False) -> ModelChoice:
    if spec.startswith("hf:"):
        return ModelChoice(spec, spec, "hf", spec[3:], pipeline_check=False)
    if spec.startswith(OPENAI_PREFIX):
        model = spec[len(OPENAI_PREFIX):].strip()
        if not model:
            raise BiasbenchError("give the model after 'openai:', e.g. openai:gpt-4o-audio-preview")
        return ModelChoice(spec, spec, "openai", model, pipeline_check=False)
    if Path(spec).is_dir():
        return ModelChoice(spec, spec, "hf", str(Path(spec).resolve()), pipeline_check=False)
    alias = ALIASES.get(spec)
    if alias is None:
        raise BiasbenchError(_unknown_alias_message(spec))
    if alias.model.startswith("builtin:"):
        return ModelChoice(spec, alias.name, alias.backend, alias.model, pipeline_check=True,
                           note="tiny random model: a pipeline check, not a measurement")
    missing = _why_unavailable(alias)
    if not missing:
        return ModelChoice(spec, alias.name, alias.backend, alias.model, pipeline_check=False)
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


def _why_unavailable(alias: ModelAlias) -> str:
    """Empty when the alias can run here; else the reason in a few words."""
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
    return (f"unknown model {spec!r}.{hint} Known aliases: {', '.join(ALIASES)}; "
            "or give hf:<hub id or path>, openai:<model name>, or a local model directory.")


def load_backend(choice: ModelChoice, *, dtype: str = "auto", device: str = "auto",
                 revision: str | None = None, trust_remote_code: bool = False, base_url: str | None = None):
    """Instantiate the chosen backend (imports torch/transformers here, not before).

    `base_url` (else the OPENAI_BASE_URL environment variable) points the `openai` backend at
    an OpenAI-compatible server such as `vllm serve`; other backends ignore it."""
    if choice.backend == "openai":
        from biasbench.models.openai_api import OpenAIAudioBackend

        return OpenAIAudioBackend(choice.model, base_url=base_url or os.environ.get(OPENAI_BASE_URL_ENV) or None)
    model = choice.model
    if model == "builtin:tiny-qwen2audio":
        from biasbench.models.tiny import tiny_qwen2audio_path

        model = str(tiny_qwen2audio_path())
    if choice.backend == "hf":
        from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend

        return HFQwen2AudioBackend(model, revision=revision, dtype=dtype, device=device,
                                   trust_remote_code=trust_remote_code)
    raise BiasbenchError(f"backend {choice.backend!r} is not available in this version")
