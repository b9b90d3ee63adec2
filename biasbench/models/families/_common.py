"""Helpers shared by the family modules."""

from __future__ import annotations


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
