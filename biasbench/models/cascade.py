"""The ASR cascade control: Whisper transcribes each clip, a text LLM answers the transcript.

Why: a speech LM can react to a voice in two ways — it can mishear the words, or it can hear
them right and still answer differently. The cascade can only do the first (the text LLM never
hears the voice), so its group gaps bound what "the voice changed the transcript" explains; the
transcript is kept on every `Response` so reports can separate the two.

The text LLM sees the transcript exactly where the runner's text control puts the item's
spoken text: `f"{transcript}\\n{prompt}"`. With a perfect ASR, the cascade's answers are the
text control's answers for that LLM.

Both halves are batched (one Whisper `generate` for all clips of a call, then one LLM forward
pass or `generate`, left padded) and greedy where it matters: ASR decoding is always greedy,
forced to `asr_language` ("en"; None lets Whisper detect it — which an accent can change).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Request, Response, require_choices, settings_groups
from biasbench.models.hf_qwen2audio import (
    _hash_local_model,
    _pick_device,
    _pick_dtype,
    _position_ids,
    _resolve_revision,
)

# Whisper decodes at most max_target_positions (448) tokens, 4 of them the forced prompt
# <|startoftranscript|><|en|><|transcribe|><|notimestamps|>.
_WHISPER_PROMPT_TOKENS = 4


def transcript_prompt(transcript: str, prompt: str) -> str:
    """What the text LLM reads: the transcript in place of the audio, then the request's prompt
    (the same layout as the runner's text control, so the two are directly comparable)."""
    return f"{transcript}\n{prompt}".strip()


def _load_error(kind: str, model: str, revision: str | None, exc: Exception, local_files_only: bool):
    return BiasbenchError(
        f"cannot load {kind} {model!r}" + (f" (revision {revision})" if revision else "")
        + f": {type(exc).__name__}: {exc}"
        + ("" if local_files_only else " (if offline, is it in the Hugging Face cache?)")
    )


def _component_fingerprint(backend: str, model: str, revision, torch_dtype, device: str) -> dict:
    local = Path(model)
    return {"backend": backend, "model": model, "revision": revision,
            "dtype": str(torch_dtype).removeprefix("torch."), "device": device,
            "local_sha256": _hash_local_model(local) if local.is_dir() else None}


class WhisperASR:
    """Batched greedy Whisper transcription through transformers."""

    def __init__(self, model: str, revision: str | None = None, dtype: str = "auto", device: str = "auto",
                 local_files_only: bool = False, language: str | None = "en", max_new_tokens: int | None = None):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self.model_id = str(model)
        self.device = _pick_device(device)
        self.torch_dtype = _pick_dtype(dtype, self.device)
        self.revision = _resolve_revision(self.model_id, revision, local_files_only)
        common = dict(revision=self.revision, local_files_only=local_files_only)
        try:
            self.processor = WhisperProcessor.from_pretrained(self.model_id, **common)
            model_ = WhisperForConditionalGeneration.from_pretrained(self.model_id, dtype=self.torch_dtype, **common)
        except Exception as exc:
            raise _load_error("Whisper ASR model", self.model_id, self.revision, exc, local_files_only) from exc
        self.model = model_.to(self.device).eval()
        feature_extractor = self.processor.feature_extractor
        self.sampling_rate = int(feature_extractor.sampling_rate)
        self.max_audio_seconds = float(feature_extractor.chunk_length)  # longer clips are cut silently
        self.language = language
        longest = int(self.model.config.max_target_positions) - _WHISPER_PROMPT_TOKENS
        self.max_new_tokens = longest if max_new_tokens is None else min(int(max_new_tokens), longest)

    def fingerprint(self) -> dict:
        return {**_component_fingerprint("hf-whisper", self.model_id, self.revision, self.torch_dtype, self.device),
                "language": self.language, "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def check(self, request: Request) -> np.ndarray:
        audio = np.asarray(request.audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"request {request.request_id}: audio must be a non-empty mono waveform")
        if request.sampling_rate != self.sampling_rate:
            raise ValueError(f"request {request.request_id}: audio at {request.sampling_rate} Hz, "
                             f"{self.model_id} expects {self.sampling_rate} Hz")
        if self.max_audio_seconds is not None and request.audio_seconds > self.max_audio_seconds:
            raise ValueError(f"request {request.request_id}: audio is {request.audio_seconds:.2f} s, longer than "
                             f"the {self.max_audio_seconds:.0f} s {self.model_id} hears; it would be truncated")
        return audio

    def transcribe(self, clips: list[np.ndarray]) -> list[str]:
        """One transcript per clip, in order: one padded batch, one greedy `generate`."""
        import torch

        if not clips:
            return []
        features = self.processor.feature_extractor(
            clips, sampling_rate=self.sampling_rate, return_tensors="pt", return_attention_mask=True)
        kwargs = dict(max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1, task="transcribe",
                      attention_mask=features["attention_mask"].to(self.device))
        if self.language is not None:
            kwargs["language"] = self.language
        with torch.inference_mode():
            out = self.model.generate(features["input_features"].to(self.device, self.torch_dtype), **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        return [t.strip() for t in self.processor.batch_decode(sequences, skip_special_tokens=True)]


#: A cascade half `faster-whisper:<tiny.en | base | CTranslate2 folder>`: the offline Whisper.
FASTER_WHISPER_PREFIX = "faster-whisper:"


class FasterWhisperASR(WhisperASR):
    """The offline Whisper (faster-whisper on CTranslate2, pinned checked weights) as the ASR half,
    decoding exactly as the transcribe task and voice QC do: greedy, one clip at a time, so a
    transcript never depends on its batch. Long clips are walked in 30 s windows, never cut."""

    max_audio_seconds = None

    def __init__(self, model: str, device: str = "auto", language: str | None = "en"):
        from biasbench.models.asr_faster_whisper import SAMPLE_RATE, FasterWhisperBackend

        self.backend = FasterWhisperBackend(model, device="cpu" if device == "auto" else device, language=language)
        self.model_id, self.sampling_rate, self.language = f"{FASTER_WHISPER_PREFIX}{model}", SAMPLE_RATE, language

    def fingerprint(self) -> dict:
        return self.backend.fingerprint()

    def transcribe(self, clips: list[np.ndarray]) -> list[str]:
        return [self.backend.transcribe(clip) for clip in clips]


def asr_half(model: str, revision: str | None, dtype: str, device: str, local_files_only: bool,
             language: str | None, max_new_tokens: int | None) -> WhisperASR:
    """`faster-whisper:<model>` runs on CTranslate2; anything else is a transformers Whisper."""
    if model.startswith(FASTER_WHISPER_PREFIX):
        if revision is not None:
            raise BiasbenchError("faster-whisper models are pinned by their package versions; drop the revision")
        return FasterWhisperASR(model.removeprefix(FASTER_WHISPER_PREFIX), device, language)
    return WhisperASR(model, revision, dtype, device, local_files_only, language, max_new_tokens)


class TextLLM:
    """A chat text LLM through transformers: left padded batches, letter log-probs, greedy or seeded sampling."""

    def __init__(self, model: str, revision: str | None = None, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, local_files_only: bool = False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = str(model)
        self.device = _pick_device(device)
        self.torch_dtype = _pick_dtype(dtype, self.device)
        self.revision = _resolve_revision(self.model_id, revision, local_files_only)
        common = dict(revision=self.revision, trust_remote_code=trust_remote_code, local_files_only=local_files_only)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_id, **common)
            model_ = AutoModelForCausalLM.from_pretrained(self.model_id, dtype=self.torch_dtype, **common)
        except Exception as exc:
            raise _load_error("text LLM", self.model_id, self.revision, exc, local_files_only) from exc
        self.model = model_.to(self.device).eval()
        if self.tokenizer.chat_template is None:
            raise BiasbenchError(f"text LLM {self.model_id!r} has no chat template; use an instruct/chat model")
        self.tokenizer.padding_side = "left"  # every row's last prompt token at the last position
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = [eos] if isinstance(eos, int) else list(eos or [self.tokenizer.eos_token_id])
        pad = self.model.generation_config.pad_token_id
        pad = self.tokenizer.pad_token_id if pad is None else pad
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.pad_id
        self._letter_ids: dict[str, list[int]] = {}

    def fingerprint(self) -> dict:
        return _component_fingerprint("hf-causal-lm", self.model_id, self.revision, self.torch_dtype, self.device)

    def encode(self, prompts: list[str | list[dict]]):
        """A batch of prompts: each a user text, or a whole conversation (chat messages)."""
        texts = [self.tokenizer.apply_chat_template(p if isinstance(p, list) else [{"role": "user", "content": p}],
                                                    add_generation_prompt=True, tokenize=False) for p in prompts]
        # The chat template already wrote any BOS: add_special_tokens=False avoids doubling it.
        return self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=False).to(self.device)

    def option_ids(self, letter: str) -> list[int]:
        """Single-token spellings of `letter` as a first answer token ("A" and " A")."""
        if letter not in self._letter_ids:
            ids = {tuple(self.tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
            singles = sorted(i[0] for i in ids if len(i) == 1)
            if not singles:
                raise ValueError(f"option {letter!r} is not a single token for {self.model_id}")
            self._letter_ids[letter] = singles
        return self._letter_ids[letter]

    def last_logits(self, inputs):
        """Float32 logits at the last position: base model + lm_head on one position only."""
        # `base_model` is the decoder under the LM head whatever the architecture calls it.
        hidden = self.model.base_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       position_ids=_position_ids(inputs["attention_mask"]),
                                       use_cache=False).last_hidden_state
        return self.model.get_output_embeddings()(hidden[:, -1, :]).float()

    def option_logprobs(self, logits, choices) -> dict[str, float]:
        import torch

        option_logits = torch.stack([torch.logsumexp(logits[self.option_ids(c)], dim=0) for c in choices])
        return dict(zip(choices, torch.log_softmax(option_logits, dim=0).tolist()))

    def decoding_kwargs(self, settings: GenerationSettings) -> dict:
        """Only GenerationSettings decide decoding (they are the cache key): the checkpoint's
        generation_config (Instruct models sample, with top_k and a repetition penalty) must not leak in."""
        common = dict(max_new_tokens=settings.max_new_tokens, repetition_penalty=1.0,
                      eos_token_id=self.stop_ids, pad_token_id=self.pad_id)
        if settings.temperature == 0:
            return dict(common, do_sample=False)
        return dict(common, do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)

    def count_output(self, tokens: list[int]) -> int:
        for n, tok in enumerate(tokens):
            if tok in self.stop_ids:
                return n
        return len(tokens)


class CascadeBackend:
    """ModelBackend: Whisper ASR, then a text LLM answering the transcript.

    `asr` / `llm` are hub ids or local folders (`asr` may also be `faster-whisper:<model>`).
    Text-only requests (the runner's text condition) skip the ASR and reach the LLM unchanged;
    their `transcript` stays None.
    """

    takes_conversation = True  # earlier turns: their transcripts and the LLM's replies, as chat messages

    def __init__(self, asr: str, llm: str, *, asr_revision: str | None = None, llm_revision: str | None = None,
                 dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
                 local_files_only: bool = False, asr_language: str | None = "en",
                 asr_max_new_tokens: int | None = None, transcript_cache_size: int = 10_000):
        self.asr = asr_half(asr, asr_revision, dtype, device, local_files_only, asr_language, asr_max_new_tokens)
        self.llm = TextLLM(llm, llm_revision, dtype, device, trust_remote_code, local_files_only)
        self.max_audio_seconds: float | None = self.asr.max_audio_seconds
        self._fingerprint: dict | None = None
        # Greedy ASR is a function of the clip, so a clip heard again (n samples of one item and
        # voice, or scoring then generating) reuses its transcript. Keyed by the waveform's hash.
        self._transcripts: OrderedDict[str, str] = OrderedDict()
        self._transcript_cache_size = transcript_cache_size

    def fingerprint(self) -> dict:
        import torch
        import transformers

        if self._fingerprint is None:
            self._fingerprint = {
                "backend": "cascade",
                "model": f"{self.asr.model_id}+{self.llm.model_id}",
                "asr": self.asr.fingerprint(),
                "llm": self.llm.fingerprint(),
                "prompt_format": "transcript\\nprompt",
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            }
        return dict(self._fingerprint)

    def transcribe(self, requests: list[Request]) -> list[str | None]:
        """One transcript per request (None for text-only ones); the clips not transcribed
        before go through the ASR in one batch."""
        keys: list[str | None] = [None] * len(requests)
        todo: dict[str, np.ndarray] = {}
        for i, r in enumerate(requests):
            if r.audio is None:
                continue
            audio = self.asr.check(r)
            keys[i] = hashlib.sha256(audio.tobytes()).hexdigest()
            if keys[i] not in self._transcripts:
                todo.setdefault(keys[i], audio)
        fresh = dict(zip(todo, self.asr.transcribe(list(todo.values()))))
        transcripts = [None if k is None else fresh.get(k, self._transcripts.get(k)) for k in keys]
        for key, text in fresh.items():
            self._transcripts[key] = text
        while len(self._transcripts) > self._transcript_cache_size:
            self._transcripts.popitem(last=False)
        return transcripts

    def _llm_prompts(self, requests: list[Request], transcripts: list[str | None]) -> list[str | list[dict]]:
        """What the LLM reads per request: the transcript and prompt, or (a request with a history) the
        conversation, each earlier clip replaced by its transcript and the LLM's replies as assistant turns."""
        prompts = []
        for r, t in zip(requests, transcripts):
            current = r.prompt if t is None else transcript_prompt(t, r.prompt)
            if not r.history:
                prompts.append(current)
                continue
            earlier = self.transcribe([replace(r, audio=turn.audio, history=()) for turn in r.history])
            messages = []
            for turn, heard in zip(r.history, earlier):
                messages += [{"role": "user", "content": turn.prompt if heard is None
                              else transcript_prompt(heard, turn.prompt)},
                             {"role": "assistant", "content": turn.reply}]
            prompts.append([*messages, {"role": "user", "content": current}])
        return prompts

    def score_choices(self, requests: list[Request]) -> list[Response]:
        import torch

        if not requests:
            return []
        require_choices(requests)
        start = time.perf_counter()
        transcripts = self.transcribe(requests)
        inputs = self.llm.encode(self._llm_prompts(requests, transcripts))
        with torch.inference_mode():
            logits = self.llm.last_logits(inputs)
        rows = [self.llm.option_logprobs(logits[i], r.choices) for i, r in enumerate(requests)]
        latency = (time.perf_counter() - start) / len(requests)
        n_inputs = inputs["attention_mask"].sum(-1).tolist()
        return [Response(r.request_id, text=max(lp, key=lp.get), option_logprobs=lp, latency_s=latency,
                         n_input_tokens=int(n), n_output_tokens=0, transcript=t)
                for r, lp, n, t in zip(requests, rows, n_inputs, transcripts)]

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        responses: dict[int, Response] = {}
        for idx in settings_groups(requests):
            for i, resp in zip(idx, self._generate_batch([requests[i] for i in idx])):
                responses[i] = resp
        return [responses[i] for i in range(len(requests))]

    def _generate_batch(self, requests: list[Request]) -> list[Response]:
        import torch

        settings = requests[0].settings
        start = time.perf_counter()
        transcripts = self.transcribe(requests)
        inputs = self.llm.encode(self._llm_prompts(requests, transcripts))
        if settings.temperature > 0:
            torch.manual_seed(settings.seed)
        with torch.inference_mode():
            out = self.llm.model.generate(**inputs, **self.llm.decoding_kwargs(settings))
        new_tokens = out[:, inputs["input_ids"].shape[1]:].tolist()
        texts = self.llm.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        latency = (time.perf_counter() - start) / len(requests)
        n_inputs = inputs["attention_mask"].sum(-1).tolist()
        return [Response(r.request_id, text=text.strip(), latency_s=latency, n_input_tokens=int(n),
                         n_output_tokens=self.llm.count_output(toks), transcript=t)
                for r, text, n, toks, t in zip(requests, texts, n_inputs, new_tokens, transcripts)]
