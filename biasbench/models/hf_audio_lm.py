"""Audio-in/text-out speech LMs through Hugging Face transformers: the shared machinery.

`HFAudioLMBackend` does everything that does not depend on the model family: device and
dtype choice, optional 8/4-bit loading, revision resolution, hashing a local model folder,
left-padded batches, one-forward-pass option-letter scoring, greedy/sampled `generate`,
token counting and latency. A family (Qwen2-Audio here in hf_qwen2audio.py; Qwen2.5-Omni,
Qwen3-Omni, Audio/Music Flamingo, GLM-ASR, Voxtral, Phi-4-multimodal, Granite Speech, Gemma 3n in
families/) is a small subclass that sets a few class attributes and, where its processor
or model differs, overrides one of the hooks:

=========================  ==========================================================
`model_class`              transformers class name loaded with `from_pretrained`
`_load_processor`          processor (default `AutoProcessor`)
`_read_max_audio_seconds`  longest clip heard in full (longer ones raise, never truncate)
`_user_content`            the chat message for one request (audio part, text part)
`_encode`                  requests -> left-padded model inputs (default: chat template
                           rendered to text, then `processor(text=..., audio=...)`)
`audio_kwarg`              the processor's keyword for the clips (`audio`)
`mask_key`                 the processor's feature-mask key (documents the family: the
                           processor's output goes to the model unchanged)
`explicit_position_ids`    False for M-RoPE models that derive positions from the mask
`mixed_batches`            False when a processor needs one clip per text row
`audio_rows_alone`         True when the audio encoder lets padding leak between the clips
                           of a batch: each clip then gets its own call (answers must never
                           depend on batch neighbours); text-only rows still batch
`_before_batch`            per-call setup, e.g. switching a modality LoRA adapter on or off
`_fingerprint_extra`       what else identifies the answers (e.g. that adapter)
`_base_hidden`             last hidden state of the base model (no lm_head)
`_logits_from_hidden`      lm_head (+ any final soft-capping) at the last position
=========================  ==========================================================

One call = one padded batch: `score_choices` is a single forward pass, `generate` a single
`model.generate` per distinct `GenerationSettings` (split further only where a family says so:
`mixed_batches`, `audio_rows_alone`). Rows are LEFT padded so every row's last
prompt token sits at the same (last) position: that is where the option-letter logits are
read and where generation continues.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.models.base import (GenerationSettings, Request, Response, require_choices, settings_groups,
                                   user_turns)

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}
QUANTIZATIONS = (None, "8bit", "4bit")
# Files of a local model folder that can change its answers (weights, configs, tokenizer,
# chat template); hashed so two different local models never share a cache key.
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".jinja", ".txt", ".model", ".tiktoken")


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # bf16 halves memory on GPU at no accuracy cost worth mentioning; CPUs are slow and
        # inexact in bf16, so float32 there.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise BiasbenchError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPES[dtype])


def _resolve_revision(model: str, revision: str | None, local_files_only: bool) -> str | None:
    """The commit hash a hub revision points to now (None/branch names are mutable), so the
    fingerprint names exactly what was loaded. Local folders and failures keep `revision`."""
    if Path(model).exists():
        return revision
    try:
        from transformers.utils.hub import resolve_revision

        resolved = resolve_revision(model, revision, local_files_only=local_files_only)
    except Exception:  # best effort: older transformers, no hub; loading reports real errors
        return revision
    # huggingface_hub's ResolvedRevision is a str equal to the request, carrying `.resolved`.
    return getattr(resolved, "resolved", None) or resolved


def _hash_local_model(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _HASHED_SUFFIXES):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _position_ids(attention_mask):
    """Positions counted from each row's first real token (left padding must not shift RoPE);
    what `generate` does internally, done by hand for the plain forward pass."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def quantization_config(quantization: str | None, device: str, compute_dtype, skip_modules=()):
    """A `BitsAndBytesConfig` for "8bit" / "4bit" (None: no quantization). bitsandbytes
    quantizes on CUDA only; anywhere else, or without the package, a clear BiasbenchError."""
    if quantization is None:
        return None
    if quantization not in QUANTIZATIONS:
        raise BiasbenchError(f"unknown quantization {quantization!r}; use None, '8bit' or '4bit'")
    if not device.startswith("cuda"):
        raise BiasbenchError(f"{quantization} quantization (bitsandbytes) needs a CUDA GPU; the device here is "
                             f"{device!r}. Leave quantization unset on CPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise BiasbenchError(f"{quantization} quantization needs bitsandbytes: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    # The speech encoder, projector and lm_head stay in `compute_dtype`: they are a small
    # share of the weights, and quantizing them costs accuracy for little memory.
    skip = list(skip_modules) or None
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=True, llm_int8_skip_modules=skip)


class HFAudioLMBackend:
    """ModelBackend for one transformers speech-LM family (hub id or local folder).

    `quantization`: None (weights in `dtype`), "8bit" or "4bit" (bitsandbytes, CUDA only)."""

    #: Short family name (the config's model_type); goes into the fingerprint.
    family: str = ""
    #: Human name for error messages.
    title: str = "speech LM"
    #: transformers class loaded with `from_pretrained`.
    model_class: str = ""
    #: Keyword under which the processor takes the clips.
    audio_kwarg: str = "audio"
    #: Key of the audio feature mask in the processor's output (None: the family has none).
    #: Documentation only: the processor's output is passed to the model as it is.
    mask_key: str | None = "feature_attention_mask"
    #: Pass left-padding-aware position ids to the plain forward pass. False for M-RoPE
    #: models, which derive their (3-D) positions from the attention mask themselves.
    explicit_position_ids: bool = True
    #: Whether one processor call may mix rows with and without a clip.
    mixed_batches: bool = True
    #: Whether each row with a clip needs a call of its own (see the module doc).
    audio_rows_alone: bool = False
    #: Extra keyword arguments for the processor call.
    processor_kwargs: dict = {"padding": True}
    #: Module names kept out of 8/4-bit quantization.
    quantization_skip_modules: tuple[str, ...] = ("audio_tower", "multi_modal_projector", "lm_head")
    #: Whether `family` is part of the fingerprint (Qwen2-Audio leaves it out: its
    #: fingerprint predates the families and must keep matching earlier runs' caches).
    fingerprint_family: bool = True
    #: Multi-turn tasks: earlier turns (clips, prompts, the model's replies) go into the chat template as
    #: user and assistant messages. False for a family whose prompt is built outside the template.
    takes_conversation: bool = True

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        quantization: str | None = None,
    ):
        self.model_id = str(model)
        self.device = _pick_device(device)
        self.torch_dtype = _pick_dtype(dtype, self.device)
        self.quantization = quantization
        bnb = quantization_config(quantization, self.device, self.torch_dtype, self.quantization_skip_modules)
        self.revision = _resolve_revision(self.model_id, revision, local_files_only)
        common = dict(revision=self.revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only)
        try:
            self.processor = self._load_processor(common)
            self.model = self._load_model(common, bnb)
        except BiasbenchError:
            raise
        except Exception as exc:  # hub errors come as OSError, ValueError, HTTP errors, ...
            raise BiasbenchError(
                f"cannot load {self.title} model {self.model_id!r}"
                + (f" (revision {self.revision})" if self.revision else "")
                + f": {type(exc).__name__}: {exc}"
                + ("" if local_files_only else " (if offline, is it in the Hugging Face cache?)")
            ) from exc
        # The hub tokenizer pads on the right by default; batching needs left (see module doc).
        self.tokenizer.padding_side = "left"
        self.sampling_rate = int(self._feature_extractor().sampling_rate)
        self.max_audio_seconds: float | None = self._read_max_audio_seconds()
        self._stop_ids, self._pad_id = self._special_ids()
        self._letter_ids: dict[str, list[int]] = {}
        self._fingerprint: dict | None = None

    # ----------------------------------------------------------------- loading (hooks)

    def _load_processor(self, common: dict):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(self.model_id, **common)

    def _model_config(self, common: dict):
        """The config handed to `from_pretrained` (None: the checkpoint's own)."""
        return None

    def _load_model(self, common: dict, bnb):
        import transformers

        cls = getattr(transformers, self.model_class)
        kwargs = dict(common, dtype=self.torch_dtype)
        config = self._model_config(common)
        if config is not None:
            kwargs["config"] = config
        if bnb is not None:
            # A quantized model is placed while loading and cannot be moved afterwards.
            return cls.from_pretrained(self.model_id, quantization_config=bnb, device_map={"": self.device},
                                       **kwargs).eval()
        return cls.from_pretrained(self.model_id, **kwargs).to(self.device).eval()

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def _feature_extractor(self):
        return self.processor.feature_extractor

    def _read_max_audio_seconds(self) -> float | None:
        """Default: a Whisper-style extractor pads/truncates every clip to `n_samples`
        (chunk_length seconds); anything longer would be cut silently, so it is the limit."""
        fe = self._feature_extractor()
        return float(fe.n_samples) / fe.sampling_rate

    def _special_ids(self) -> tuple[list[int], int]:
        tokenizer = self.tokenizer
        eos = self.model.generation_config.eos_token_id
        stop_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
        pad = self.model.generation_config.pad_token_id
        pad = tokenizer.pad_token_id if pad is None else pad
        return stop_ids, pad if pad is not None else stop_ids[0]

    def fingerprint(self) -> dict:
        import torch
        import transformers

        if self._fingerprint is None:
            local = Path(self.model_id)
            fp = {
                "backend": "hf",
                "model": self.model_id,
                "revision": self.revision,
                "dtype": str(self.torch_dtype).removeprefix("torch."),
                "device": self.device,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "local_sha256": _hash_local_model(local) if local.is_dir() else None,
            }
            if self.fingerprint_family:
                fp["family"] = self.family
            if self.quantization is not None:  # absent when unquantized: earlier caches stay valid
                fp["quantization"] = self.quantization
            fp.update(self._fingerprint_extra())
            self._fingerprint = fp
        return dict(self._fingerprint)

    def _fingerprint_extra(self) -> dict:
        return {}

    # ----------------------------------------------------------------- inputs (hooks)

    def _check_audio(self, request: Request) -> np.ndarray:
        audio = np.asarray(request.audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"request {request.request_id}: audio must be a non-empty mono waveform")
        if request.sampling_rate != self.sampling_rate:
            raise ValueError(
                f"request {request.request_id}: audio at {request.sampling_rate} Hz, "
                f"{self.model_id} expects {self.sampling_rate} Hz"
            )
        if self.max_audio_seconds is not None and request.audio_seconds > self.max_audio_seconds:
            raise ValueError(
                f"request {request.request_id}: audio is {request.audio_seconds:.2f} s, longer than the "
                f"{self.max_audio_seconds:.0f} s {self.model_id} hears; it would be truncated silently"
            )
        return audio

    def _user_content(self, request: Request) -> list[dict]:
        """The user turn: the clip first (as the model cards show it), then the text. The audio
        part carries both `type` and an `audio` key, which every family's template accepts."""
        return self._turn_content(request.prompt, request.audio)

    @staticmethod
    def _turn_content(prompt: str, audio) -> list[dict]:
        content = [{"type": "text", "text": prompt}]
        if audio is not None:
            content.insert(0, {"type": "audio", "audio": "<waveform>"})
        return content

    def _messages(self, request: Request) -> list[dict]:
        """The conversation (no system turn: the template's default): each earlier user turn and the
        model's reply to it as an assistant message, then this request's turn."""
        messages = []
        for prompt, audio, reply in user_turns(request):
            messages.append({"role": "user", "content": self._turn_content(prompt, audio)})
            if reply is not None:
                messages.append({"role": "assistant", "content": reply})
        return messages

    def _chat_text(self, request: Request) -> str:
        return self.processor.apply_chat_template(self._messages(request), add_generation_prompt=True,
                                                  tokenize=False)

    def _clips(self, request: Request) -> list[np.ndarray]:
        """Every clip of the request in the order the template places them (earlier turns first)."""
        return [self._check_audio(replace(request, audio=audio, history=()))
                for _, audio, _ in user_turns(request) if audio is not None]

    def _encode(self, requests: list[Request]):
        """Chat-formatted, left-padded batch on the model's device."""
        clips = [clip for r in requests for clip in self._clips(r)]
        inputs = self.processor(
            text=[self._chat_text(r) for r in requests],
            **{self.audio_kwarg: clips or None},
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            **self.processor_kwargs,
        )
        return self._to_device(inputs)

    def _to_device(self, inputs):
        """Inputs on the model's device; float tensors (audio features) in the model's dtype."""
        import torch

        inputs = inputs.to(self.device)
        for key, value in list(inputs.items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                inputs[key] = value.to(self.torch_dtype)
        return inputs

    def _option_ids(self, letter: str) -> list[int]:
        """Token ids that spell `letter` as a first answer token: "A" and " A" where each is
        a single token (BPE vocabularies often have both; which one the model emits depends
        on context)."""
        if letter not in self._letter_ids:
            tokenizer = self.tokenizer
            ids = {tuple(tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
            singles = sorted(i[0] for i in ids if len(i) == 1)
            if not singles:
                raise ValueError(f"option {letter!r} is not a single token for {self.model_id}")
            self._letter_ids[letter] = singles
        return self._letter_ids[letter]

    def _batches(self, requests: list[Request]) -> list[list[int]]:
        """Indices of the processor calls one list of requests needs: all at once, or (for
        processors that want one clip per text row) the rows with a clip, then those without,
        or (`audio_rows_alone`) each row with a clip alone, then those without."""
        if self.mixed_batches and not self.audio_rows_alone:
            return [list(range(len(requests)))]
        with_audio = [i for i, r in enumerate(requests) if r.audio is not None]
        without = [i for i, r in enumerate(requests) if r.audio is None]
        audio_groups = [[i] for i in with_audio] if self.audio_rows_alone else [with_audio]
        return [group for group in (*audio_groups, without) if group]

    def _before_batch(self, requests: list[Request]) -> None:
        """Called before each processor call, with that call's requests."""

    # ----------------------------------------------------------------- scoring

    def score_choices(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        require_choices(requests)
        responses: dict[int, Response] = {}
        for idx in self._batches(requests):
            for i, resp in zip(idx, self._score_batch([requests[i] for i in idx])):
                responses[i] = resp
        return [responses[i] for i in range(len(requests))]

    def _score_batch(self, requests: list[Request]) -> list[Response]:
        import torch

        start = time.perf_counter()
        self._before_batch(requests)
        inputs = self._encode(requests)
        with torch.inference_mode():
            last_logits = self._last_position_logits(inputs)
        rows = [self._option_logprobs(last_logits[i], r.choices) for i, r in enumerate(requests)]
        latency = (time.perf_counter() - start) / len(requests)
        n_inputs = inputs["attention_mask"].sum(-1).tolist()
        return [
            Response(r.request_id, text=max(lp, key=lp.get), option_logprobs=lp, latency_s=latency,
                     n_input_tokens=int(n), n_output_tokens=0)
            for r, lp, n in zip(requests, rows, n_inputs)
        ]

    def _base_hidden(self, inputs):
        """Last hidden state of the base model (everything but lm_head)."""
        extra = {"position_ids": _position_ids(inputs["attention_mask"])} if self.explicit_position_ids else {}
        return self.model.model(**inputs, **extra, use_cache=False).last_hidden_state

    def _logits_from_hidden(self, hidden):
        """lm_head on the given positions; families with final logit soft-capping add it here."""
        return self.model.get_output_embeddings()(hidden)

    def _last_position_logits(self, inputs):
        """Float32 logits at the last position only. Runs the base model and applies lm_head
        to one position: the full (batch, seq, vocab) logits of a real model would cost
        gigabytes for nothing."""
        hidden = self._base_hidden(inputs)
        return self._logits_from_hidden(hidden[:, -1, :]).float()

    def _option_logprobs(self, logits, choices) -> dict[str, float]:
        import torch

        # Each option's logit = logsumexp over its token variants ("A", " A"), then a
        # log-softmax over the options only: a distribution over the letters.
        option_logits = torch.stack([torch.logsumexp(logits[self._option_ids(c)], dim=0) for c in choices])
        logprobs = torch.log_softmax(option_logits, dim=0).tolist()
        return dict(zip(choices, logprobs))

    # ----------------------------------------------------------------- generation

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        responses: dict[int, Response] = {}
        # One model.generate per distinct settings (normally exactly one for the whole list),
        # and per processor call where the family cannot mix clip and text-only rows.
        for idx in settings_groups(requests):
            for sub in self._batches([requests[i] for i in idx]):
                members = [idx[j] for j in sub]
                for i, resp in zip(members, self._generate_batch([requests[i] for i in members])):
                    responses[i] = resp
        return [responses[i] for i in range(len(requests))]

    def _decoding_kwargs(self, settings: GenerationSettings) -> dict:
        """Everything that decides decoding, explicitly: the checkpoint's generation_config
        (Instruct models: sampling, top_k, repetition penalty) must not leak in, since only
        GenerationSettings are part of the cache key."""
        common = dict(max_new_tokens=settings.max_new_tokens, repetition_penalty=1.0,
                      eos_token_id=self._stop_ids, pad_token_id=self._pad_id)
        if settings.temperature == 0:
            return dict(common, do_sample=False)  # sampling knobs are inert (and warned about) here
        # top_k=0 switches off the checkpoint's top-k: GenerationSettings has no top_k.
        return dict(common, do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)

    def _generate_batch(self, requests: list[Request]) -> list[Response]:
        import torch

        settings = requests[0].settings
        start = time.perf_counter()
        self._before_batch(requests)
        inputs = self._encode(requests)
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self._decoding_kwargs(settings))
        new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        latency = (time.perf_counter() - start) / len(requests)
        n_inputs = inputs["attention_mask"].sum(-1).tolist()
        return [
            Response(r.request_id, text=t.strip(), latency_s=latency, n_input_tokens=int(n),
                     n_output_tokens=self._count_output(toks))
            for r, t, n, toks in zip(requests, texts, n_inputs, new_tokens)
        ]

    def _count_output(self, tokens: list[int]) -> int:
        """Tokens generated before the first stop token (what follows it is padding)."""
        for n, tok in enumerate(tokens):
            if tok in self._stop_ids:
                return n
        return len(tokens)
