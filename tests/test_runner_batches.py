"""The runner's answering loop: clips read one batch ahead, every batch stored before the next
is answered (what makes a killed run lose at most the batch in flight). No model, no TTS."""

from types import SimpleNamespace

import numpy as np
import pytest

from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Response
from biasbench.runner import Planned, _answer_in_batches
from biasbench.store import ResponseStore
from biasbench.tasks.loader import Item
from biasbench.tasks.scoring import Scored


class FakeCache:
    def __init__(self, missing=()):
        self.missing, self.reads = set(missing), []

    def get(self, key):
        self.reads.append(key)
        return None if key in self.missing else np.full(160, float(int(key)), dtype=np.float32)


class FakeBackend:
    """Answers 'A'; at each call records how many answers the store already holds."""

    max_audio_seconds = None

    def __init__(self, store):
        self.store, self.stored_at_call, self.seen = store, [], []

    def generate(self, requests):
        self.stored_at_call.append(self.store.count())
        self.seen += [(r.request_id, float(r.audio[0])) for r in requests]
        return [Response(r.request_id, "A") for r in requests]


def plan(n):
    item = Item("i1", "Say it.", "Answer.", ("x", "y"), 0)
    voice = SimpleNamespace(id="v1")
    return [Planned(item, voice, "audio", 0, None, "p", audio_key=str(k), audio_seconds=1.0,
                    request_key=f"key-{k}") for k in range(n)]


TASK = SimpleNamespace(config=SimpleNamespace(output_type="multiple_choice", scoring="generate"),
                       scorer=lambda item, text, logprobs: Scored(text, "valid", 1.0))


def answer(todo, store, cache, batch_size=3):
    backend = FakeBackend(store)
    options = SimpleNamespace(batch_size=batch_size, progress=False)
    n_new = _answer_in_batches(todo, backend, TASK, GenerationSettings(), options, store, cache, [])
    return n_new, backend


def test_each_batch_is_stored_before_the_next_is_answered(tmp_path):
    store, cache = ResponseStore(tmp_path / "r.sqlite"), FakeCache()
    n_new, backend = answer(plan(8), store, cache)
    assert n_new == 8 and store.count() == 8
    assert backend.stored_at_call == [0, 3, 6]  # batches of 3, 3, 2, each committed in turn
    # Every request met the model once, in order, with its own clip, and each clip was read once.
    assert backend.seen == [(f"key-{k}", float(k)) for k in range(8)]
    assert sorted(cache.reads, key=int) == [str(k) for k in range(8)]


def test_a_vanished_clip_stops_the_run_after_the_batches_before_it(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    with pytest.raises(BiasbenchError, match="vanished"):
        answer(plan(8), store, FakeCache(missing={"4"}))  # in the second batch
    assert store.count() == 3  # the first batch is kept; nothing of the broken one


def test_nothing_to_answer(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite")
    assert answer([], store, FakeCache())[0] == 0 and store.count() == 0
