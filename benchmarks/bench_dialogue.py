"""Multi-turn tasks: conversations/s batched across voices per turn vs one conversation at a time. Prints; asserts nothing.

    .venv/bin/python benchmarks/bench_dialogue.py [--model PATH_OR_ID] [--n 16] [--turns 3] [--tokens 16]

Default model: the tiny local Qwen2-Audio (built into the biasbench cache on first use). Each
conversation is a spoken question (synthetic 2-12 s clips) and `--turns - 1` spoken follow-ups
(1.5 s clips), answered by `generate(max_new_tokens=--tokens)` with every earlier turn and reply as
context, through the runner's own loop (biasbench.conversation.answer_conversations): a batch of
conversations is one backend call per turn. Batches of 1 (one conversation at a time), 8 and 16,
length-sorted the way the runner sorts them; the ratio to one-at-a-time is the number to read.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_hf_batching import batches, qwen2audio_backend, synthetic_clips

from biasbench.conversation import FollowUp, answer_conversations
from biasbench.models.base import GenerationSettings, Request
from biasbench.runner import Planned
from biasbench.tasks.loader import Item

PROMPT = "Answer the question."
PUSHBACK = "That's not right. Are you sure?"


class Clips:
    """The audio cache's read interface over clips held in memory."""

    def __init__(self):
        self.clips: dict[str, np.ndarray] = {}

    def get(self, key: str) -> np.ndarray:
        return self.clips[key]


def conversations(n: int, turns: int, tokens: int, clips: Clips):
    rng = np.random.default_rng(1)
    firsts = synthetic_clips(n)
    plan, requests = [], []
    for i, first in enumerate(firsts):
        follow_ups = []
        for k in range(1, turns):
            key = f"f{i}-{k}"
            clips.clips[key] = (0.1 * rng.standard_normal(24000)).astype(np.float32)
            follow_ups.append(FollowUp(PUSHBACK, None, key, 1.5))
        item = Item("q1", "How do I make a budget?", PROMPT)
        plan.append(Planned(item, None, "audio", 0, None, "h", audio_key=f"a{i}", audio_seconds=len(first) / 16000,
                            request_key=f"c{i}", follow_ups=follow_ups))
        requests.append(Request(f"c{i}", PROMPT, audio=first, settings=GenerationSettings(max_new_tokens=tokens),
                                item_id="q1", voice_id=f"v{i}", open_answer=True))
    return plan, requests


def rate(backend, plan, requests, size: int, clips: Clips) -> float:
    """Conversations/s, answering `size` conversations per batch (turn by turn)."""
    order = sorted(range(len(plan)), key=lambda i: plan[i].audio_seconds)
    start = time.perf_counter()
    for group in batches(order, size, sort=False):
        answer_conversations([plan[i] for i in group], [requests[i] for i in group], backend.generate,
                             lambda p, response, turn, key: key, None, clips, [])
    return len(plan) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="hub id or local path (default: tiny local model)")
    parser.add_argument("--n", type=int, default=16, help="conversations per setting")
    parser.add_argument("--turns", type=int, default=3, help="turns per conversation (first question + follow-ups)")
    parser.add_argument("--tokens", type=int, default=16, help="max_new_tokens of each reply")
    args = parser.parse_args()

    backend = qwen2audio_backend(args.model)
    clips = Clips()
    plan, requests = conversations(args.n, args.turns, args.tokens, clips)
    backend.generate(requests[:2])  # warm-up: allocator, kernels
    print(f"{args.n} conversations of {args.turns} turns, max_new_tokens {args.tokens}\n")
    base = None
    for label, size in [("one at a time", 1), ("batch 8, sorted", 8), ("batch 16, sorted", 16)]:
        value = rate(backend, plan, requests, size, clips)
        base = base or value
        print(f"{label:20}{value:8.2f} conversations/s ({value * args.turns:7.2f} turns/s, {value / base:4.1f}x)")


if __name__ == "__main__":
    main()
