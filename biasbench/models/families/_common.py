"""Helpers shared by the family modules."""

from __future__ import annotations

from pathlib import Path

from biasbench.errors import BiasbenchError

SPEECH_ADAPTER = "speech"


def read_chat_template(model_id: str, common: dict) -> str | None:
    """The processor-level chat template of a checkpoint (`chat_template.jinja`, or the older
    `chat_template.json`), or None when it has none."""
    import json

    from transformers.utils import cached_file

    kwargs = {k: v for k, v in common.items() if k in ("revision", "local_files_only")}
    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(model_id, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **kwargs)
        if path:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def audio_only_processor(processor_cls, model_id: str, common: dict, *, dropped: tuple[str, ...],
                         audio_attr: str = "feature_extractor", tokens: dict[str, str] | None = None, **init):
    """`processor_cls` built with only its tokenizer and audio feature extractor.

    Omni-style processors also hold image and video processors, which in transformers 5 need
    torchvision (absent beside the CPU torch wheel). biasbench never sends images or videos,
    so those parts are left out (`dropped`); the text and audio path is the class's own code.
    The result is the same with or without torchvision installed. `tokens` names special
    tokens the processor reads from the tokenizer (`audio_token`, ...) with their defaults,
    for tokenizers saved before transformers exposed them as attributes.
    """
    from transformers import AutoFeatureExtractor, AutoTokenizer

    kwargs = {k: v for k, v in common.items() if k in ("revision", "local_files_only", "trust_remote_code")}
    tokenizer = AutoTokenizer.from_pretrained(model_id, **kwargs)
    missing = {name: tok for name, tok in (tokens or {}).items() if getattr(tokenizer, name, None) is None}
    if missing:
        tokenizer._set_model_specific_special_tokens(special_tokens=missing)
    feature_extractor = AutoFeatureExtractor.from_pretrained(model_id, **kwargs)
    chat_template = read_chat_template(model_id, common) or getattr(tokenizer, "chat_template", None)

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument is None and argument_name in dropped:
            return None
        return processor_cls.check_argument_for_proper_class(self, argument_name, argument)

    cls = type(f"AudioOnly{processor_cls.__name__}", (processor_cls,),
               {"check_argument_for_proper_class": check_argument_for_proper_class})
    return cls(**{name: None for name in dropped}, **{audio_attr: feature_extractor}, tokenizer=tokenizer,
               chat_template=chat_template, **init)


class SpeechAdapterMixin:
    """For checkpoints that ship their speech skills as a LoRA adapter beside the weights, meant
    to be on for audio and off for text (Phi-4-multimodal's `speech-lora/`, Granite Speech's
    root `adapter_config.json`). The adapter is loaded with peft directly (transformers 5.24's
    `load_adapter` wants peft >= 0.22) as adapter SPEECH_ADAPTER; peft injects its layers into
    the model in place, so the backend keeps calling the model and switches the adapter before
    each call, which never mixes rows with and without audio (`audio_rows_alone`). A checkpoint
    without the adapter runs the base weights; `_adapter` says which."""

    speech_adapter_subfolder = ""  # "" = the checkpoint's root
    speech_adapter_install = "pip install peft"

    def _with_speech_adapter(self, model, common: dict):
        """`model` with the checkpoint's speech adapter loaded (when it ships one)."""
        self._adapter = self._find_speech_adapter(common)
        self._peft = None
        if self._adapter is None:
            return model
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BiasbenchError(f"{self.model_id} ships its speech skills as a LoRA adapter "
                                 f"({self._adapter_config_name()}), which needs peft: "
                                 f"{self.speech_adapter_install}") from exc
        extra = {"revision": common["revision"]} if common.get("revision") else {}
        if self.speech_adapter_subfolder:
            extra["subfolder"] = self.speech_adapter_subfolder
        self._peft = PeftModel.from_pretrained(model, self.model_id, adapter_name=SPEECH_ADAPTER, is_trainable=False,
                                               local_files_only=bool(common.get("local_files_only")), **extra)
        return self._peft.get_base_model().eval()

    def _adapter_config_name(self) -> str:
        return "/".join(filter(None, (self.speech_adapter_subfolder, "adapter_config.json")))

    def _find_speech_adapter(self, common: dict) -> str | None:
        """The adapter's folder (local) or its hub config file, None when the checkpoint has none."""
        local = Path(self.model_id)
        if local.is_dir():
            path = local / self._adapter_config_name()
            return str(path.parent) if path.is_file() else None
        from transformers.utils import cached_file

        kwargs = {k: v for k, v in common.items() if k in ("revision", "local_files_only")}
        return cached_file(self.model_id, self._adapter_config_name(), _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **kwargs)

    def _before_batch(self, requests) -> None:
        if self._peft is None:
            return
        if any(r.audio is not None for r in requests):  # calls never mix (audio_rows_alone)
            self._peft.base_model.enable_adapter_layers()
        else:
            self._peft.base_model.disable_adapter_layers()
