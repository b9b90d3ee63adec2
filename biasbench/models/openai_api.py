"""GPT-4o audio models, and any OpenAI-compatible chat-completions server (e.g. `vllm serve`).

Requests go through the official `openai` client (`pip install 'biasbench[openai]'`): it
owns the HTTP layer (connection pool, proxies, timeouts, auth headers, base_url for
compatible servers) and gives typed errors. Retries are NOT left to the client
(`max_retries=0`): they are done here so that they are counted in `usage()`, follow the
rules below, and stop at once on Ctrl-C (the client's own retry loop sleeps through an
interrupt). One POST per request to `<base_url>/chat/completions` (the client joins the
path; a query string in the base URL, e.g. an Azure-style `?api-version=...`, is sent as query
parameters of every request, never pasted into the path), a bounded thread pool per batch:

* retried, with exponential backoff and full jitter: 429 (honouring `retry-after-ms` /
  `retry-after`), 408, 5xx, timeouts, connection errors, and bodies that are not the JSON
  a chat completion should be;
* not retried: every other 4xx (bad request, bad key, unknown model), and a 429 whose
  code is `insufficient_quota` (waiting does not refill a quota);
* after `max_retries` a request comes back as a `Response` with `error` set: one bad
  request never raises, and the runner leaves it unstored so `--resume` tries it again.

A refusal (a `refusal` message, or `finish_reason == "content_filter"`) is an answer, not an
error: its text is returned for the harness to record as a refusal.

The API key is read from an environment variable only and is never put into a
fingerprint, usage record, error message, log line or repr; credentials inside the base URL
(user information, query values, key-like path segments) are redacted wherever it is shown.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import os
import random
import ssl
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlparse, urlsplit, urlunsplit

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.models.base import Request, Response
from biasbench.paths import install_extra
from biasbench.redact import redact_credentials, redact_url

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
# vLLM and other local servers ignore the key but the header must be well formed.
DUMMY_API_KEY = "EMPTY"

# USD per million tokens: (text input, text output, audio input, audio output).
# From the model pages on developers.openai.com, checked 2026-11-26. Exact model names
# only: older snapshots were priced differently (gpt-4o-audio-preview-2024-10-01 charged
# more for audio), so an unlisted name gets no estimate unless prices are passed in.
PRICES_PER_MILLION: dict[str, tuple[float, float, float, float]] = {
    "gpt-4o-audio-preview": (2.50, 10.00, 40.00, 80.00),
    "gpt-4o-audio-preview-2024-12-17": (2.50, 10.00, 40.00, 80.00),
    "gpt-4o-audio-preview-2025-06-03": (2.50, 10.00, 40.00, 80.00),
    "gpt-4o-mini-audio-preview": (0.15, 0.60, 10.00, 20.00),
    "gpt-4o-mini-audio-preview-2024-12-17": (0.15, 0.60, 10.00, 20.00),
}

# What a refusal without words of its own (finish_reason == content_filter) reads as:
# short, worded so the harness's refusal detector recognises it, naming no option letter
# (and few words an option's text could match).
CONTENT_FILTER_TEXT = "I can't answer (content_filter)."

# Ask for 20 alternatives (the OpenAI maximum, vLLM's default cap); a server that refuses
# gets 5, and one that refuses logprobs altogether is scored from the generated text.
_TOP_LOGPROBS_STEPS = (20, 5)
_ERROR_BODY_CHARS = 300


@dataclass
class _Outcome:
    """One HTTP attempt, classified."""

    data: dict | None = None  # the parsed completion when the attempt succeeded
    error: str | None = None  # what went wrong, for Response.error (key already redacted)
    retryable: bool = False
    wait_hint_s: float | None = None  # from retry-after(-ms)
    logprobs_rejected: bool = False  # a 4xx that names logprobs: step top_logprobs down


class _Secret:
    """Holds the API key; its repr/str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class OpenAIAudioBackend:
    """`ModelBackend` for the OpenAI chat-completions API with `input_audio` content parts."""

    takes_conversation = True  # earlier turns: input_audio user messages and the model's replies as assistant text

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str = DEFAULT_API_KEY_ENV,
                 max_concurrency: int = 8, max_retries: int = 5, timeout_s: float = 60.0,
                 price_per_million_input_tokens: float | None = None,
                 price_per_million_output_tokens: float | None = None,
                 price_per_million_audio_input_tokens: float | None = None,
                 max_audio_seconds: float | None = None,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 30.0, retry_after_max_s: float = 120.0):
        if not model:
            raise BiasbenchError("an OpenAI model name is required, e.g. openai:gpt-4o-audio-preview")
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise BiasbenchError("max_concurrency must be >= 1, max_retries >= 0 and timeout_s > 0")
        self.model = model
        server_url, query = _normalise_base_url(base_url or DEFAULT_BASE_URL)
        self.base_url = redact_url(server_url)  # for people: the real one (credentials and all) stays private
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            if _is_openai_host(server_url):
                raise BiasbenchError(f"the environment variable {api_key_env} is not set: export your OpenAI "
                                     f"API key as {api_key_env} (the key is read from the environment only).")
            key = DUMMY_API_KEY  # a local OpenAI-compatible server (vLLM) needs no real key
        if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
            # Refused here: http.client would otherwise quote the bad header, key and all.
            raise BiasbenchError(f"the API key in {api_key_env} has spaces or unprintable characters; "
                                 "check how it was exported (the key itself is not shown).")
        self._key = _Secret(key)
        self.max_concurrency = int(max_concurrency)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.backoff_base_s, self.backoff_max_s = float(backoff_base_s), float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.max_audio_seconds = max_audio_seconds
        self._prices = _prices(model, price_per_million_input_tokens, price_per_million_output_tokens,
                               price_per_million_audio_input_tokens)

        self._slots = threading.BoundedSemaphore(self.max_concurrency)  # across concurrent batches too
        self._lock = threading.Lock()
        self._random = random.Random()
        self._stop = threading.Event()  # set on Ctrl-C: waiting retries give up at once
        self._client = _openai_client(key, server_url, query, self.timeout_s)
        self._top_logprobs: int | None = _TOP_LOGPROBS_STEPS[0]  # None: the server gives no logprobs
        self._reported_models: list[str] = []
        self._system_fingerprints: list[str] = []
        self._counts = {"requests": 0, "http_calls": 0, "retries": 0, "failures": 0, "refusals": 0,
                        "prompt_tokens": 0, "completion_tokens": 0}
        self._audio_prompt_tokens: int | None = None
        self._audio_completion_tokens: int | None = None

    def __repr__(self) -> str:
        return (f"OpenAIAudioBackend(model={self.model!r}, base_url={self.base_url!r}, "
                f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})")

    # ------------------------------------------------------------------ ModelBackend

    def fingerprint(self) -> dict:
        """Backend, model and host (no port, no key). The server-reported model and system
        fingerprint are known only after a first call: the runner reads the fingerprint
        before any call (it is part of the response cache key, so it must not change between
        a run and its resume), and `usage()` lists every one seen, for the manifest."""
        fp: dict[str, Any] = {"backend": "openai", "model": self.model, "base_url": _host(self.base_url),
                              "api": "chat.completions"}
        with self._lock:
            if self._reported_models:
                fp["reported_model"] = self._reported_models[0]
            if self._system_fingerprints:
                fp["system_fingerprint"] = self._system_fingerprints[0]
        return fp

    def score_choices(self, requests: list[Request]) -> list[Response]:
        return self._run_batch(requests, scoring=True)

    def generate(self, requests: list[Request]) -> list[Response]:
        return self._run_batch(requests, scoring=False)

    def usage(self) -> dict:
        with self._lock:
            counts = dict(self._counts)
            audio_in, audio_out = self._audio_prompt_tokens, self._audio_completion_tokens
            top = self._top_logprobs
            models, fingerprints = list(self._reported_models), list(self._system_fingerprints)
        return {
            **counts,
            "audio_prompt_tokens": audio_in,
            "audio_completion_tokens": audio_out,
            "estimated_cost_usd": self._cost(counts["prompt_tokens"], counts["completion_tokens"],
                                             audio_in or 0, audio_out or 0),
            "prices_per_million_tokens": dict(zip(("input", "output", "audio_input", "audio_output"),
                                                  self._prices)) if self._prices else None,
            "top_logprobs": top,
            "reported_models": models,
            "system_fingerprints": fingerprints,
        }

    # ------------------------------------------------------------------ batches

    def _run_batch(self, requests: list[Request], *, scoring: bool) -> list[Response]:
        if not requests:
            return []
        start = time.perf_counter()
        self._stop.clear()
        workers = min(self.max_concurrency, len(requests))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai")
        try:
            # map() keeps the input order whatever order the answers arrive in.
            responses = list(pool.map(lambda r: self._answer_safely(r, scoring), requests))
        except BaseException:  # Ctrl-C: queued requests are dropped, waiting retries end now
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        share = (time.perf_counter() - start) / len(requests)
        for response in responses:
            response.latency_s = share
        return responses

    def _answer_safely(self, request: Request, scoring: bool) -> Response:
        try:
            response = self._answer(request, scoring)
        except Exception as exc:  # a bug or odd input must not sink the other requests of the batch
            error = self._redact(f"{type(exc).__name__}: {exc}")
            log.error("request %s failed unexpectedly: %s", request.request_id, error)  # no traceback: no key
            response = Response(request.request_id, "", error=error)
        with self._lock:
            self._counts["requests"] += 1
            self._counts["failures"] += response.error is not None
        return response

    def _answer(self, request: Request, scoring: bool) -> Response:
        content = _user_content(request)
        retries = 0
        while True:
            top = self._top_logprobs if scoring else None
            outcome = self._post(self._body(request, content, scoring, top))
            if outcome.data is not None:
                return self._response(request, outcome.data, scoring)
            if outcome.logprobs_rejected and scoring and top is not None:
                self._step_down_logprobs(top, outcome.error)
                continue  # not a retry: the same request, asked the way this server accepts
            if not outcome.retryable or retries >= self.max_retries:
                attempts = retries + 1
                return Response(request.request_id, "",
                                error=f"{outcome.error} (after {attempts} attempt{'s' * (attempts > 1)})")
            wait = self._backoff(retries, outcome.wait_hint_s)
            retries += 1
            with self._lock:
                self._counts["retries"] += 1
            log.info("request %s: %s; retry %d/%d in %.2fs", request.request_id, outcome.error, retries,
                     self.max_retries, wait)
            if self._stop.wait(wait):
                return Response(request.request_id, "", error=f"{outcome.error} (interrupted before a retry)")

    def _body(self, request: Request, content: list[dict], scoring: bool, top_logprobs: int | None) -> dict:
        body: dict[str, Any] = {"model": self.model, "messages": [*_earlier_messages(request),
                                                                  {"role": "user", "content": content}],
                                "modalities": ["text"]}
        s = request.settings
        if scoring:
            body.update(temperature=0.0, seed=s.seed)
            if top_logprobs is not None:
                body.update(max_tokens=1, logprobs=True, top_logprobs=top_logprobs)
            else:  # no logprobs from this server: let it say the letter, parsed by the harness
                body.update(max_tokens=s.max_new_tokens)
        else:
            body.update(temperature=s.temperature, top_p=s.top_p, seed=s.seed, max_tokens=s.max_new_tokens)
        return body

    def _step_down_logprobs(self, sent: int, why: str | None) -> None:
        with self._lock:
            if self._top_logprobs != sent:
                return  # another thread already stepped down
            lower = [n for n in _TOP_LOGPROBS_STEPS if n < sent]
            self._top_logprobs = lower[0] if lower else None
            now = self._top_logprobs
        log.warning("server refused top_logprobs=%d (%s); %s", sent, why,
                    f"using top_logprobs={now}" if now else "scoring from generated text instead")

    def _backoff(self, retry_index: int, hint: float | None) -> float:
        """Full jitter: uniform(0, min(cap, base * 2^n)); a server's retry-after is a floor."""
        jitter = self._random.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** retry_index))
        if hint is None:
            return jitter
        return min(hint, self.retry_after_max_s) + self._random.uniform(0.0, self.backoff_base_s)

    # ------------------------------------------------------------------ HTTP

    def _post(self, body: dict) -> _Outcome:
        outcome = self._post_once(body)
        if outcome.error:
            outcome.error = self._redact(outcome.error)  # a server may echo the key back
        return outcome

    def _post_once(self, body: dict) -> _Outcome:
        import openai

        with self._slots:
            with self._lock:
                self._counts["http_calls"] += 1
            try:
                # The raw reply: parsed here, so a server's extra or missing fields (vLLM) and
                # malformed JSON are handled the same way for every server.
                reply = self._client.chat.completions.with_raw_response.create(**body)
                raw = reply.http_response.content
            except openai.APITimeoutError:
                return _Outcome(error=f"timed out after {self.timeout_s:g}s", retryable=True)
            except openai.APIConnectionError as exc:
                cause = _root_cause(exc)
                return _Outcome(error=self._redact(f"connection error: {type(cause).__name__}: {cause}"),
                                retryable=not isinstance(cause, ssl.SSLCertVerificationError))
            except openai.APIStatusError as exc:
                return self._status_error(exc.status_code, exc.response.headers, exc.response.content)
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _Outcome(error=f"malformed JSON from the server: {_snippet(raw)!r}", retryable=True)
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"] \
                or not isinstance(data["choices"][0], dict):
            return _Outcome(error=self._redact(f"unexpected reply from the server (no choices): "
                                               f"{_snippet(raw)!r}"), retryable=True)
        return _Outcome(data=data)

    def _status_error(self, status: int, headers, raw: bytes) -> _Outcome:
        """Classify a 4xx/5xx reply: retry or not, how long to wait, logprobs refused."""
        message = _error_message(raw)
        error = self._redact(f"HTTP {status} from {_host(self.base_url)}: {message}")
        should_retry = (headers.get("x-should-retry") or "").lower() if headers else ""
        if status == 429:
            quota = "insufficient_quota" in message or "insufficient_quota" in _snippet(raw, 2000)
            return _Outcome(error=error, retryable=not quota and should_retry != "false",
                            wait_hint_s=_retry_after(headers))
        if status in (408,) or status >= 500:
            return _Outcome(error=error, retryable=should_retry != "false", wait_hint_s=_retry_after(headers))
        rejected = status in (400, 422) and "logprob" in (message + _snippet(raw, 2000)).lower()
        return _Outcome(error=error, retryable=should_retry == "true", logprobs_rejected=rejected)

    def _redact(self, text: str) -> str:
        """The key, and credentials inside any URL, out of a text that may be recorded."""
        key = self._key.reveal()
        text = text.replace(key, "<redacted>") if key and key != DUMMY_API_KEY else text
        return redact_credentials(text)

    # ------------------------------------------------------------------ replies

    def _response(self, request: Request, data: dict, scoring: bool) -> Response:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        content = _text_of(message.get("content"))
        refusal = message.get("refusal")
        usage = data.get("usage") or {}
        self._account(data, usage)
        prompt_tokens, completion_tokens = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        if refusal or choice.get("finish_reason") == "content_filter":
            with self._lock:
                self._counts["refusals"] += 1
            text = refusal if isinstance(refusal, str) and refusal.strip() else CONTENT_FILTER_TEXT
            return Response(request.request_id, text, None, n_input_tokens=prompt_tokens,
                            n_output_tokens=completion_tokens)
        option_logprobs = None
        if scoring and request.choices:
            option_logprobs = option_logprobs_from(choice.get("logprobs"), request.choices)
        if option_logprobs:
            text = max(option_logprobs, key=option_logprobs.get)
        else:
            text = content
        return Response(request.request_id, text, option_logprobs, n_input_tokens=prompt_tokens,
                        n_output_tokens=completion_tokens)

    def _account(self, data: dict, usage: dict) -> None:
        audio_in = _int((usage.get("prompt_tokens_details") or {}).get("audio_tokens"))
        audio_out = _int((usage.get("completion_tokens_details") or {}).get("audio_tokens"))
        with self._lock:
            self._counts["prompt_tokens"] += _int(usage.get("prompt_tokens")) or 0
            self._counts["completion_tokens"] += _int(usage.get("completion_tokens")) or 0
            if audio_in is not None:
                self._audio_prompt_tokens = (self._audio_prompt_tokens or 0) + audio_in
            if audio_out is not None:
                self._audio_completion_tokens = (self._audio_completion_tokens or 0) + audio_out
            for value, seen in ((data.get("model"), self._reported_models),
                                (data.get("system_fingerprint"), self._system_fingerprints)):
                if isinstance(value, str) and value and value not in seen:
                    seen.append(value)

    def _cost(self, prompt: int, completion: int, audio_in: int, audio_out: int) -> float | None:
        if not self._prices:
            return None
        text_in, text_out, audio_in_price, audio_out_price = self._prices
        cost = ((prompt - audio_in) * text_in + audio_in * audio_in_price
                + (completion - audio_out) * text_out + audio_out * audio_out_price) / 1e6
        return round(cost, 6)


# ---------------------------------------------------------------------- helpers


def option_logprobs_from(logprobs: dict | None, letters) -> dict[str, float] | None:
    """Log-probabilities of the option letters at the first generated token, renormalised
    over the letters. "A" and " A" (any surrounding whitespace) count as A, their
    probabilities summed; a letter absent from the top-k gets -inf. None when no letter is
    among the alternatives (the caller then falls back to the generated text)."""
    content = (logprobs or {}).get("content") or []
    if not content or not isinstance(content[0], dict):
        return None
    first = content[0]
    candidates = [(t.get("token"), t.get("logprob")) for t in first.get("top_logprobs") or [] if isinstance(t, dict)]
    if (first.get("token"), first.get("logprob")) not in candidates:  # the sampled token, if not listed
        candidates.append((first.get("token"), first.get("logprob")))
    found: dict[str, list[float]] = {letter: [] for letter in letters}
    for token, logprob in candidates:
        if isinstance(token, str) and isinstance(logprob, (int, float)) and token.strip() in found:
            found[token.strip()].append(float(logprob))
    summed = {letter: _logsumexp(values) for letter, values in found.items()}
    present = [v for v in summed.values() if v > -math.inf]
    if not present:
        return None
    total = _logsumexp(present)
    return {letter: (v - total if v > -math.inf else -math.inf) for letter, v in summed.items()}


def wav_base64(audio: np.ndarray, sampling_rate: int) -> str:
    """float32 waveform in [-1, 1] -> 16-bit PCM mono WAV in memory -> base64."""
    samples = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1), nan=0.0, posinf=1.0, neginf=-1.0)
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sampling_rate))
        wav.writeframes(pcm.tobytes())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class _RedactURLs(logging.Filter):
    """On the HTTP client's loggers: a request line (`HTTP Request: POST http://h/v1?k=...`)
    is logged with the URL's credentials redacted, like every message biasbench writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_credentials(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_URL_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai", "openai._base_client")
_URL_FILTER = _RedactURLs()


def _redact_client_logs() -> None:
    for name in _URL_LOGGERS:
        logger = logging.getLogger(name)
        if _URL_FILTER not in logger.filters:
            logger.addFilter(_URL_FILTER)


def _openai_client(key: str, base_url: str, query: dict, timeout_s: float):
    """The official client, without its own retries (done by the backend, see the docstring).
    The client joins `base_url` and `chat/completions` as paths; the query goes apart
    (`default_query`), since a query left in base_url would end up inside the path."""
    try:
        import openai
    except ImportError as exc:
        raise BiasbenchError(f"the openai: backend needs the openai package: {install_extra('openai')}") \
            from exc
    _redact_client_logs()
    return openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout_s, max_retries=0,
                         default_headers={"User-Agent": "biasbench"}, default_query=query or None)


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause of a connection error (refused, reset, certificate...)."""
    for _ in range(20):  # a bound, in case a library ever chains an exception to itself
        inner = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
        if inner is None:
            break
        exc = inner
    return exc


def _user_content(request: Request) -> list[dict]:
    return _turn_content(request.prompt, request.audio, request.sampling_rate)


def _turn_content(prompt: str, audio, sampling_rate: int) -> list[dict]:
    parts: list[dict] = []
    if audio is not None:
        parts.append({"type": "input_audio",
                      "input_audio": {"data": wav_base64(audio, sampling_rate), "format": "wav"}})
    if prompt or not parts:
        parts.append({"type": "text", "text": prompt})
    return parts


def _earlier_messages(request: Request) -> list[dict]:
    """A multi-turn request's earlier turns: each user turn (its clip as input_audio) and the model's reply
    as an assistant message (text)."""
    messages = []
    for turn in request.history:
        messages += [{"role": "user", "content": _turn_content(turn.prompt, turn.audio, request.sampling_rate)},
                     {"role": "assistant", "content": turn.reply}]
    return messages


def _logsumexp(values: list[float]) -> float:
    if not values:
        return -math.inf
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers return content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _int(value) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` (OpenAI), else `retry-after` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _error_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            code = error.get("code") or error.get("type")
            return f"{error['message']}" + (f" [{code}]" if code else "")
        if isinstance(error, str):
            return error
        if isinstance(data, dict) and isinstance(data.get("message"), str):  # vLLM / FastAPI style
            return data["message"]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    return _snippet(raw) or "(empty body)"


def _snippet(raw: bytes, limit: int = _ERROR_BODY_CHARS) -> str:
    return raw[:limit].decode("utf-8", errors="replace")


def _normalise_base_url(url: str) -> tuple[str, dict]:
    """(the server's base URL without query or fragment, its query parameters). Parsed with
    urllib, so `http://h/v1?k=x` is the path /v1 and the parameter k, whatever the order."""
    url = url.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in url):  # urlsplit drops some (tabs, newlines): refused whole
        raise BiasbenchError(f"base_url {redact_url(url)!r} holds control characters (a newline, tab or other "
                             "unprintable character); give a plain http(s) URL, e.g. http://localhost:8000/v1")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise BiasbenchError(f"base_url {redact_url(url)!r} is not an http(s) URL, e.g. "
                             "http://localhost:8000/v1")
    path = parts.path.rstrip("/") or "/v1"  # `vllm serve` answers at /v1/chat/completions
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in query:  # the client would send a list as name[]=..., which no server expects
            raise BiasbenchError(f"base_url {redact_url(url)!r} gives the query parameter {name!r} twice; "
                                 "give each parameter once")
        query[name] = value
    return urlunsplit((parts.scheme, parts.netloc, path, "", "")), query


def _host(url: str) -> str:
    return urlparse(url).hostname or url


def _is_openai_host(url: str) -> bool:
    return _host(url) == urlparse(DEFAULT_BASE_URL).hostname


def _prices(model: str, text_in, text_out, audio_in) -> tuple[float, float, float, float] | None:
    known = PRICES_PER_MILLION.get(model)
    if text_in is None and text_out is None and audio_in is None:
        return known
    if text_in is None or text_out is None:
        if known is None:
            raise BiasbenchError("give both price_per_million_input_tokens and price_per_million_output_tokens")
        text_in = known[0] if text_in is None else text_in
        text_out = known[1] if text_out is None else text_out
    audio_in = audio_in if audio_in is not None else (known[2] if known else text_in)
    audio_out = known[3] if known else text_out
    return float(text_in), float(text_out), float(audio_in), float(audio_out)
