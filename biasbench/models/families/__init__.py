"""Which backend class serves which transformers `model_type`.

`backend_for_model_type("voxtral")` -> `HFVoxtralBackend`. The table maps config
`model_type`s (as in a checkpoint's config.json) to "module:Class"; modules are imported only
when chosen, so listing a family costs nothing. `registry.load_backend` reads the model's
config and dispatches here, which is how `hf:<any supported checkpoint>` finds its family.
"""

from __future__ import annotations

import importlib

from biasbench.errors import BiasbenchError

FAMILIES: dict[str, str] = {
    "qwen2_audio": "biasbench.models.hf_qwen2audio:HFQwen2AudioBackend",
    # The full Omni checkpoint (thinker + talker + token2wav) and a thinker-only one: both
    # load the thinker, the part that hears audio and writes text.
    "qwen2_5_omni": "biasbench.models.families.qwen2_5_omni:HFQwen25OmniBackend",
    "qwen2_5_omni_thinker": "biasbench.models.families.qwen2_5_omni:HFQwen25OmniBackend",
    "qwen3_omni_moe": "biasbench.models.families.qwen3_omni_moe:HFQwen3OmniMoeBackend",
    "qwen3_omni_moe_thinker": "biasbench.models.families.qwen3_omni_moe:HFQwen3OmniMoeBackend",
    "audioflamingo3": "biasbench.models.families.audioflamingo3:HFAudioFlamingo3Backend",
    "musicflamingo": "biasbench.models.families.audioflamingo3:HFMusicFlamingoBackend",
    "glmasr": "biasbench.models.families.audioflamingo3:HFGlmAsrBackend",
    "voxtral": "biasbench.models.families.voxtral:HFVoxtralBackend",
    "phi4_multimodal": "biasbench.models.families.phi4_multimodal:HFPhi4MultimodalBackend",
    # These two need optional extras (`granite`: torchaudio; `gemma3n`: timm + torchvision); their
    # backends say so before loading anything when those do not import.
    "granite_speech": "biasbench.models.families.granite_speech:HFGraniteSpeechBackend",
    "gemma3n": "biasbench.models.families.gemma3n:HFGemma3nBackend",
}

#: Speech-LM families transformers has but biasbench cannot serve yet, and why.
UNSUPPORTED: dict[str, str] = {
    "phi4mm": "this is Phi-4-multimodal's older remote-code format; use a transformers-format checkpoint "
              "(model_type phi4_multimodal)",
}


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def backend_for_model_type(model_type: str):
    """The backend class for a config `model_type`; BiasbenchError when there is none."""
    target = FAMILIES.get(model_type)
    if target is None:
        why = UNSUPPORTED.get(model_type)
        if why:
            raise BiasbenchError(f"model_type {model_type!r} is a speech LM biasbench cannot run yet: {why}")
        raise BiasbenchError(f"no speech-LM backend for model_type {model_type!r}; supported: "
                             f"{', '.join(supported_model_types())}")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


# Config attributes that only a model with an audio (or omni) front end has.
_AUDIO_CONFIG_ATTRS = ("audio_config", "encoder_config", "audio_token_id", "audio_token_index", "thinker_config")


def read_model_config(model: str, *, revision: str | None = None, trust_remote_code: bool = False,
                      local_files_only: bool = False):
    """The checkpoint's config: config.json for a local folder, else `AutoConfig` (hub or HF
    cache). None when it cannot be read (the backend's own loading then reports why)."""
    import json
    from pathlib import Path

    folder = Path(model)
    if folder.is_dir():
        path = folder / "config.json"
        if not path.is_file():
            return None
        from transformers import PretrainedConfig

        return PretrainedConfig(**json.loads(path.read_text(encoding="utf-8")))
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code,
                                          local_files_only=local_files_only)
    except Exception:
        return None


def backend_for_model(model: str, *, revision: str | None = None, trust_remote_code: bool = False,
                      local_files_only: bool = False):
    """The backend class for a hub id or local folder, by its config's `model_type`.

    Text-only models (no audio front end) get a BiasbenchError pointing at the cascade; a
    config that cannot be read falls back to Qwen2-Audio, whose loading then says what is wrong."""
    config = read_model_config(model, revision=revision, trust_remote_code=trust_remote_code,
                               local_files_only=local_files_only)
    model_type = getattr(config, "model_type", None) if config is not None else None
    if not model_type:
        return backend_for_model_type("qwen2_audio")
    if model_type not in FAMILIES and model_type not in UNSUPPORTED:
        if not any(getattr(config, attr, None) is not None for attr in _AUDIO_CONFIG_ATTRS):
            raise BiasbenchError(
                f"model {model} is text-only (model_type {model_type!r}, no audio encoder); use it as the text "
                "LLM of a cascade: Whisper transcribes, this model answers the transcript "
                "(biasbench.models.cascade.CascadeBackend(asr=<whisper id>, llm=" + repr(model) + "))")
    return backend_for_model_type(model_type)
