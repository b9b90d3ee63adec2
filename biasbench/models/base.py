"""The small interface every model backend implements.

A backend takes a batch of `Request`s (audio + text prompt, and option letters for
multiple choice) and returns one `Response` per request, in the same order. Backends
know nothing about tasks, voices or storage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class GenerationSettings:
    """How a backend decodes. Part of every cache key: changing it never reuses answers."""

    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Turn:
    """An earlier turn of a conversation: what the user said (a clip and/or text) and the model's reply."""

    prompt: str
    audio: np.ndarray | None
    reply: str


@dataclass
class Request:
    request_id: str
    prompt: str  # the text part of the user turn (instruction, maybe options)
    audio: np.ndarray | None = None  # float32 mono waveform; None for a text-only request
    sampling_rate: int = 16000
    # For multiple choice: the option letters to score ("A", "B", ...). When set and the
    # backend supports it, the answer comes from the letters' log-probabilities at the
    # first generated position (one forward pass, no text parsing).
    choices: Sequence[str] | None = None
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    # Which item and which voice this is (the runner sets them; None elsewhere). A model answers
    # from the content above and must ignore these; a simulated listener seeds its draws with them.
    item_id: str | None = None
    voice_id: str | None = None
    # The task asks for a free answer (output type generate_open): backends generate as always;
    # a simulated listener answers in prose instead of naming a category.
    open_answer: bool = False
    # A multi-turn task: the conversation so far, oldest first (empty for a first turn). The model hears
    # each earlier user turn and its own reply to it, then this request's audio and prompt. Only a backend
    # with `takes_conversation = True` is sent a non-empty history (the runner refuses the rest).
    history: tuple[Turn, ...] = ()
    turn: int = 0  # 0 for the first question, k for the k-th follow-up

    @property
    def audio_seconds(self) -> float:
        return 0.0 if self.audio is None else len(self.audio) / self.sampling_rate


@dataclass
class Response:
    request_id: str
    text: str  # generated text, or the best-scoring letter for scored multiple choice
    option_logprobs: dict[str, float] | None = None  # log-softmax over the option letters
    latency_s: float = 0.0  # wall time of the batch, shared out per request
    n_input_tokens: int | None = None
    n_output_tokens: int | None = None
    # Set when the backend gave up on this request (e.g. an API that kept failing after its
    # retries). The runner does not store such a response, so `--resume` retries it.
    error: str | None = None
    # What an ASR heard, for backends that transcribe first (the cascade control): reports can
    # then separate "the voice changed the transcript" from "the voice changed the reasoning".
    transcript: str | None = None


class ModelBackend(Protocol):
    """What the runner needs from a model."""

    #: Longest audio the model hears in full (Qwen2-Audio: 30 s); None if unbounded.
    max_audio_seconds: float | None

    def fingerprint(self) -> dict:
        """Everything that identifies the model's answers: backend, model id, revision,
        dtype, device, adapter. Goes into the manifest and the response cache key."""

    def score_choices(self, requests: list[Request]) -> list[Response]:
        """Multiple choice from option-letter log-probabilities (requests have `choices`)."""

    def generate(self, requests: list[Request]) -> list[Response]:
        """Free-text generation."""

    # Optional: `usage() -> dict` (tokens, cost, retries) is copied into the run manifest.
    # Optional: `takes_conversation = True` when requests with a `history` are answered as a
    # conversation (multi-turn tasks); a backend without it is refused such a task before any work.


def require_choices(requests: Sequence[Request]) -> None:
    """score_choices needs option letters on every request: fail early, naming the request."""
    for request in requests:
        if not request.choices:
            raise ValueError(f"request {request.request_id}: score_choices needs `choices`")


def settings_groups(requests: Sequence[Request]) -> list[list[int]]:
    """Indices of `requests` grouped by identical GenerationSettings (normally one group):
    one generate call per group, since a batch decodes under one set of settings."""
    groups: dict[GenerationSettings, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.settings, []).append(index)
    return list(groups.values())


def user_turns(request: Request) -> list[tuple[str, np.ndarray | None, str | None]]:
    """The conversation as (prompt, audio, reply) per user turn, oldest first; the last is this request's
    own turn (reply None). A first-turn request is one entry: backends build messages from this."""
    return [*((t.prompt, t.audio, t.reply) for t in request.history), (request.prompt, request.audio, None)]


def takes_conversation(backend) -> bool:
    """Whether `backend` answers requests carrying a conversation history (multi-turn tasks)."""
    return bool(getattr(backend, "takes_conversation", False))
