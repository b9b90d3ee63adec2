"""Qwen2-Audio through Hugging Face transformers, batched, on one device.

One call = one padded batch: `score_choices` is a single forward pass, `generate` a single
`model.generate` per distinct `GenerationSettings` (normally one). Rows are LEFT padded so
every row's last prompt token sits at the same (last) position: that is where the
option-letter logits are read and where generation continues.
"""

from __future__ import annotations

import hashlib
import time
from itertools import groupby
from pathlib import Path

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Request, Response

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}
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


class HFQwen2AudioBackend:
    """ModelBackend for Qwen2-Audio checkpoints (hub id or local folder)."""

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        trust_remote_code: bool = False,
        local_files_only: bool = False,
    ):
        self.model_id = str(model)
        self.device = _pick_device(device)
        self.torch_dtype = _pick_dtype(dtype, self.device)
        self.revision = _resolve_revision(self.model_id, revision, local_files_only)
        self.processor, self.model = self._load(trust_remote_code, local_files_only)
        # The hub tokenizer pads on the right by default; batching needs left (see module doc).
        self.processor.tokenizer.padding_side = "left"
        feature_extractor = self.processor.feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        # The feature extractor pads/truncates every clip to chunk_length seconds (30 for
        # Qwen2-Audio); anything longer would be cut silently, so it is the hard limit.
        self.max_audio_seconds: float | None = float(feature_extractor.chunk_length)
        self._stop_ids, self._pad_id = self._special_ids()
        self._letter_ids: dict[str, list[int]] = {}
        self._fingerprint: dict | None = None

    # ----------------------------------------------------------------- loading

    def _load(self, trust_remote_code: bool, local_files_only: bool):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        common = dict(revision=self.revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only)
        try:
            processor = AutoProcessor.from_pretrained(self.model_id, **common)
            model = Qwen2AudioForConditionalGeneration.from_pretrained(
                self.model_id, dtype=self.torch_dtype, **common
            )
        except Exception as exc:  # hub errors come as OSError, ValueError, HTTP errors, ...
            raise BiasbenchError(
                f"cannot load Qwen2-Audio model {self.model_id!r}"
                + (f" (revision {self.revision})" if self.revision else "")
                + f": {type(exc).__name__}: {exc}"
                + ("" if local_files_only else " (if offline, is it in the Hugging Face cache?)")
            ) from exc
        return processor, model.to(self.device).eval()

    def _special_ids(self) -> tuple[list[int], int]:
        tokenizer = self.processor.tokenizer
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
            self._fingerprint = {
                "backend": "hf",
                "model": self.model_id,
                "revision": self.revision,
                "dtype": str(self.torch_dtype).removeprefix("torch."),
                "device": self.device,
                "transformers": transformers.__version__,
                "torch": torch.__version__,
                "local_sha256": _hash_local_model(local) if local.is_dir() else None,
            }
        return dict(self._fingerprint)

    # ----------------------------------------------------------------- inputs

    def _check_audio(self, request: Request) -> np.ndarray:
        audio = np.asarray(request.audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"request {request.request_id}: audio must be a non-empty mono waveform")
        if request.sampling_rate != self.sampling_rate:
            raise ValueError(
                f"request {request.request_id}: audio at {request.sampling_rate} Hz, "
                f"{self.model_id} expects {self.sampling_rate} Hz"
            )
        if request.audio_seconds > self.max_audio_seconds:
            raise ValueError(
                f"request {request.request_id}: audio is {request.audio_seconds:.2f} s, longer than the "
                f"{self.max_audio_seconds:.0f} s {self.model_id} hears; it would be truncated silently"
            )
        return audio

    def _chat_text(self, request: Request) -> str:
        content = [{"type": "text", "text": request.prompt}]
        if request.audio is not None:
            # The template emits one <|audio_bos|><|AUDIO|><|audio_eos|> for this part; the
            # processor then expands <|AUDIO|> to the clip's number of audio tokens.
            content.insert(0, {"type": "audio", "audio": "<waveform>"})
        messages = [{"role": "user", "content": content}]  # no system turn: template default
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _encode(self, requests: list[Request]):
        """Chat-formatted, left-padded batch on the model's device."""
        clips = [self._check_audio(r) for r in requests if r.audio is not None]
        inputs = self.processor(
            text=[self._chat_text(r) for r in requests],
            audio=clips or None,
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.torch_dtype)
        return inputs

    def _option_ids(self, letter: str) -> list[int]:
        """Token ids that spell `letter` as a first answer token: "A" and " A" where each is
        a single token (Qwen's BPE has both; which one the model emits depends on context)."""
        if letter not in self._letter_ids:
            tokenizer = self.processor.tokenizer
            ids = {tuple(tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
            singles = sorted(i[0] for i in ids if len(i) == 1)
            if not singles:
                raise ValueError(f"option {letter!r} is not a single token for {self.model_id}")
            self._letter_ids[letter] = singles
        return self._letter_ids[letter]

    # ----------------------------------------------------------------- scoring

    def score_choices(self, requests: list[Request]) -> list[Response]:
        import torch

        if not requests:
            return []
        for r in requests:
            if not r.choices:
                raise ValueError(f"request {r.request_id}: score_choices needs `choices`")
        start = time.perf_counter()
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

    def _last_position_logits(self, inputs):
        """Float32 logits at the last position only. Runs the base model and applies lm_head
        to one position: the full (batch, seq, 152k-vocab) logits of the real model would
        cost gigabytes for nothing."""
        hidden = self.model.model(
            **inputs, position_ids=_position_ids(inputs["attention_mask"]), use_cache=False
        ).last_hidden_state
        return self.model.get_output_embeddings()(hidden[:, -1, :]).float()

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
        # One model.generate per distinct settings (normally exactly one for the whole list).
        order = sorted(range(len(requests)), key=lambda i: repr(requests[i].settings))
        for _, group in groupby(order, key=lambda i: repr(requests[i].settings)):
            idx = list(group)
            for i, resp in zip(idx, self._generate_batch([requests[i] for i in idx])):
                responses[i] = resp
        return [responses[i] for i in range(len(requests))]

    def _decoding_kwargs(self, settings: GenerationSettings) -> dict:
        """Everything that decides decoding, explicitly: the checkpoint's generation_config
        (Qwen2-Audio-Instruct: sampling, top_k 20, repetition penalty 1.1) must not leak in,
        since only GenerationSettings are part of the cache key."""
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
        inputs = self._encode(requests)
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, **self._decoding_kwargs(settings))
        new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
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
