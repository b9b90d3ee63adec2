"""The text control (`--model text:<model>`): the same model, with no audio at all.

The runner sends this control the text condition only: each item's spoken text goes into the
prompt as text (`f"{spoken_text}\\n{instruction}"`), no voice, nothing synthesised. So the gap
between a voice group's answers and the text answers bounds what hearing a voice changes.

This wrapper keeps that promise at the backend too: it refuses a request that carries audio
(the runner never sends one under `text:`), and its fingerprint says "text control", so its
answers never share a cache key or run identity with the audio runs of the same model.
"""

from __future__ import annotations

from biasbench.models.base import Request, Response


class TextOnlyBackend:
    """Wraps any ModelBackend; passes text-only requests through unchanged."""

    max_audio_seconds: float | None = None  # it hears no audio

    def __init__(self, inner):
        self.inner = inner

    def fingerprint(self) -> dict:
        return {**self.inner.fingerprint(), "control": "text"}

    @staticmethod
    def _check(requests: list[Request]) -> list[Request]:
        for r in requests:
            if r.audio is not None or any(turn.audio is not None for turn in r.history):
                raise ValueError(f"request {r.request_id}: the text control (text:<model>) takes no audio; "
                                 "the runner should have sent this item as text")
        return requests

    def score_choices(self, requests: list[Request]) -> list[Response]:
        return self.inner.score_choices(self._check(requests))

    def generate(self, requests: list[Request]) -> list[Response]:
        return self.inner.generate(self._check(requests))

    def __getattr__(self, name):  # usage(), close(), ... of the wrapped backend
        return getattr(self.inner, name)
