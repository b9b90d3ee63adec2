"""Multi-turn tasks (a task with `follow_ups`): one conversation per (item, voice, condition, sample).

Turn 0 is the item as every task asks it. Each follow-up (e.g. "That's not right. Are you sure?")
is a further user turn, spoken in the same voice (synthesised through the same TTS path and audio
cache as the first turn; as text in the text condition), answered with every earlier turn as
context: the user's clips and prompts, and the model's own replies as assistant messages
(`Request.history`). The runner answers a batch of conversations turn by turn (each turn one batched
backend call across the batch's voices) and stores each finished conversation whole, in one
transaction: a conversation is never half stored, and a resumed run skips finished conversations
and asks again any it finds half stored (e.g. by a store edited by hand).

Every turn is a row of the store and the tidy table, with its `turn` index and its own request key
(the conversation's key and the turn). Its outcomes (flip after pushback, per-turn metrics and their
change) are computed from those rows by biasbench.analysis.dialogue.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from biasbench.config import stable_hash
from biasbench.errors import BiasbenchError
from biasbench.models.base import Request, Turn
from biasbench.redact import redact_credentials
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.synthesis import SynthesisJob


@dataclass
class FollowUp:
    """One scripted user turn after the first: its text, and (audio condition) the clip of it in the voice."""

    text: str
    job: SynthesisJob | None
    audio_key: str | None = None
    audio_seconds: float | None = None


def plan_follow_ups(texts: list[str] | None, voice, loudness_target: float | None) -> list[FollowUp]:
    """The follow-ups of one conversation: spoken by `voice` (a VoiceSpec), or text when voice is None."""
    return [FollowUp(text, None if voice is None else SynthesisJob.speak(voice, text, loudness_target))
            for text in texts or []]


def attach_follow_up_audio(follow_ups: list[FollowUp], synthesis, cache) -> None:
    for follow_up in follow_ups:
        if follow_up.job is not None and synthesis.ok(follow_up.job):
            follow_up.audio_key = synthesis.keys[follow_up.job]
            follow_up.audio_seconds = cache.duration(follow_up.audio_key)


def conversation_key(first_turn_key: str, follow_ups: list[FollowUp]) -> str:
    """The conversation's key: its first turn's key and every follow-up (text and clip)."""
    return stable_hash({"first": first_turn_key, "follow_ups": [(f.text, f.audio_key) for f in follow_ups]})


def turn_keys(p) -> list[str]:
    """The request key of each turn of a planned conversation (p.request_key is the conversation's)."""
    return [stable_hash({"conversation": p.request_key, "turn": k}) for k in range(len(p.follow_ups) + 1)]


def pending_conversations(plan: list, store) -> list:
    """The conversations still to answer. One found half stored is deleted (in one transaction) and
    asked again whole, so its turns always share one history."""
    done = store.done_keys()
    pending, half = [], []
    for p in plan:
        keys = turn_keys(p)
        stored = [k for k in keys if k in done]
        if len(stored) == len(keys):
            continue
        half += stored
        pending.append(p)
    if half:
        store.delete_keys(half)
    return pending


def clips_missing(p) -> bool:
    """An audio conversation some clip of which was not synthesised (its first question or a follow-up)."""
    return p.condition == "audio" and (p.audio_key is None or any(f.audio_key is None for f in p.follow_ups))


def longest_clip(p) -> float:
    return max([p.audio_seconds or 0.0, *[f.audio_seconds or 0.0 for f in p.follow_ups]])


def follow_up_request(p, first: Request, k: int, history: tuple[Turn, ...], limit: float | None, cache) -> Request:
    """Turn k (>= 1) of conversation p: the k-th follow-up, spoken (or as text), with the task's text
    prompt repeated (so the answer keeps the form the scorer reads) and the conversation so far."""
    follow_up = p.follow_ups[k - 1]
    common = dict(request_id=f"{p.request_key}#{k}", history=history, turn=k)
    if p.condition == "text":
        return replace(first, prompt=f"{follow_up.text}\n{p.item.text_prompt}".strip(), audio=None, **common)
    audio = cache.get(follow_up.audio_key)
    if audio is None:
        raise BiasbenchError(f"audio of follow-up {k} for voice {p.voice_id}, item {p.item.item_id} vanished "
                             "from the cache")
    if limit and len(audio) > limit * SAMPLE_RATE:
        audio = audio[: int(limit * SAMPLE_RATE)]  # the 'truncate' policy, as for the first turn
    return replace(first, prompt=p.item.text_prompt, audio=audio, **common)


def answer_conversations(batch: list, first_requests: list[Request], ask, to_row, limit: float | None, cache,
                         failures: list[dict]) -> list:
    """Answer a batch of conversations turn by turn: each turn is one backend call (`ask`, a list of
    requests -> responses) across every conversation still going. A conversation whose turn fails is
    dropped whole (recorded in `failures`; a resumed run asks it again). Returns the stored rows
    (`to_row(p, response, turn, key)`) of the finished conversations only."""
    alive = list(range(len(batch)))
    requests = list(first_requests)
    histories: list[tuple[Turn, ...]] = [() for _ in batch]
    rows: list[list] = [[] for _ in batch]
    keys = [turn_keys(p) for p in batch]
    for k in range(len(batch[0].follow_ups) + 1 if batch else 0):
        if k:
            requests = [follow_up_request(batch[i], first_requests[i], k, histories[i], limit, cache) for i in alive]
        responses = ask(requests)
        still = []
        for i, request, response in zip(alive, requests, responses):
            if response.error:
                failures.append({"item_id": batch[i].item.item_id, "voice_id": batch[i].voice_id, "turn": k,
                                 "error": redact_credentials(response.error)})
                continue
            rows[i].append(to_row(batch[i], response, k, keys[i][k]))
            histories[i] = (*histories[i], Turn(request.prompt, request.audio, response.text))
            still.append(i)
        alive = still
    return [row for i in alive for row in rows[i]]
