"""Batch synthesis: engines that speak several clips per call (the cloning engines) get them
in batches, and a batch changes nothing a user can see: the same clips under the same keys,
one bad clip failing alone, a clear error for a bad batch size.

The engine here is espeak-ng behind a batch interface that records each call: F5-TTS's own
batching is tested on a tiny model in test_tts_cloning (it needs the `cloning` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from biasbench.errors import BiasbenchError
from biasbench.tts import registry
from biasbench.tts.base import BatchedTTSBackend
from biasbench.tts.cache import AudioCache
from biasbench.tts.espeak import EspeakBackend
from biasbench.tts.synthesis import BATCH_SIZE_ENV, SynthesisJob, batch_size_for, synthesize_all
from conftest import requires_espeak

pytestmark = requires_espeak

TEXTS = ["Yes.", "Is water wet?", "Name a prime number below ten.", "Count to three.",
         "Which of these animals is a mammal: a cat, a fish or a snake?", "Hello.", "Why is the sky blue?"]


class BatchedEspeak(EspeakBackend):
    """espeak-ng that takes batches, as a cloning engine does, and remembers them."""

    name = "batched-espeak"
    calls: list[list[str]] = []

    def default_batch_size(self) -> int:
        return 3

    def synthesize_batch(self, requests):
        BatchedEspeak.calls.append([text for text, _ in requests])
        if any("EXPLODE" in text for text, _ in requests):
            raise RuntimeError("out of memory")
        made = []
        for text, params in requests:
            try:
                made.append(self.synthesize(text.replace("BROKEN", ""), params) if "BROKEN" not in text
                            else BiasbenchError(f"cannot speak {text!r}"))
            except BiasbenchError as err:
                made.append(err)
        return made


@pytest.fixture
def batched(monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "batched-espeak", BatchedEspeak)
    monkeypatch.delenv(BATCH_SIZE_ENV, raising=False)
    BatchedEspeak.calls = []
    return BatchedEspeak


def jobs(backend: str, texts=TEXTS, voice="en-us"):
    return [SynthesisJob(f"v-{voice}", backend, {"voice": voice}, text, loudness_target=-23.0) for text in texts]


def test_engines_that_speak_in_batches_get_batches_of_similar_length(batched, tmp_path):
    result = synthesize_all(jobs("batched-espeak"), AudioCache(tmp_path), workers=1, progress=False)
    assert result.made == len(TEXTS) and not result.failures
    # The engine's default, 3 per call; the one left over goes through synthesize().
    assert sorted(map(len, batched.calls)) == [3, 3]
    # Shortest texts together, longest together: padding is wasted work on a GPU.
    by_length = sorted(TEXTS, key=len)
    assert sorted(batched.calls, key=lambda call: len(call[0])) == [by_length[0:3], by_length[3:6]]


def test_a_batch_makes_the_clips_one_at_a_time_makes_under_the_same_keys(batched, tmp_path):
    alone = synthesize_all(jobs("espeak-ng"), AudioCache(tmp_path / "alone"), workers=2, progress=False)
    together = synthesize_all(jobs("batched-espeak"), AudioCache(tmp_path / "batched"), workers=2,
                              progress=False, batch_size=4)
    assert sorted(map(len, batched.calls)) == [3, 4]  # 7 clips, 4 per batch
    for single, batch in zip(jobs("espeak-ng"), jobs("batched-espeak")):
        np.testing.assert_array_equal(AudioCache(tmp_path / "alone").get(alone.keys[single]),
                                      AudioCache(tmp_path / "batched").get(together.keys[batch]))
    again = synthesize_all(jobs("batched-espeak"), AudioCache(tmp_path / "batched"), progress=False)
    assert (again.made, again.reused) == (0, len(TEXTS))


def test_a_bad_clip_fails_alone_and_a_failed_batch_fails_only_its_clips(batched, tmp_path):
    texts = TEXTS + ["BROKEN one", "EXPLODE now, please, with a long sentence to sit at the end."]
    result = synthesize_all(jobs("batched-espeak", texts), AudioCache(tmp_path), workers=1, progress=False,
                            batch_size=2)
    failures = {job.text: message for job, message in result.failures}
    assert failures["BROKEN one"] == "cannot speak 'BROKEN one'"
    exploded = [call for call in batched.calls if any("EXPLODE" in text for text in call)][0]
    assert set(failures) == {"BROKEN one", *exploded}
    assert all("RuntimeError: out of memory" in failures[text] for text in exploded)
    assert result.made == len(texts) - len(failures) and result.failed == len(failures)


def test_batch_size_comes_from_the_call_then_the_environment_then_the_engine(batched, monkeypatch):
    engine = BatchedEspeak()
    assert isinstance(engine, BatchedTTSBackend) and not isinstance(EspeakBackend(), BatchedTTSBackend)
    assert batch_size_for(engine) == 3 and batch_size_for(engine, 5) == 5
    assert batch_size_for(EspeakBackend(), 8) == 1  # engines without batches speak one clip per call
    monkeypatch.setenv(BATCH_SIZE_ENV, "7")
    assert batch_size_for(engine) == 7 and batch_size_for(engine, 2) == 2


@pytest.mark.parametrize("value", ["0", "four", "-2", "2.5"])
def test_a_bad_batch_size_is_one_clear_error_before_any_clip_is_made(batched, tmp_path, monkeypatch, value):
    monkeypatch.setenv(BATCH_SIZE_ENV, value)
    with pytest.raises(BiasbenchError, match=f"{BATCH_SIZE_ENV}={value!r}: expected a whole number"):
        synthesize_all(jobs("batched-espeak"), AudioCache(tmp_path), progress=False)
    assert batched.calls == [] and not list(tmp_path.rglob("*.wav"))
    # Also with engines that speak one clip at a time: the setting is wrong whatever the pool.
    with pytest.raises(BiasbenchError, match=BATCH_SIZE_ENV):
        synthesize_all(jobs("espeak-ng"), AudioCache(tmp_path), progress=False)


def test_a_bad_batch_size_stops_a_run_with_one_line_and_exit_2(tmp_path):
    from test_cli import biasbench

    result = biasbench("run", "--model", "simulated-no-bias", "--task", "mmlu", "--data-source", "local",
                       "--limit", "1", "--output-dir", str(tmp_path / "runs"), "--no-progress",
                       env={"BIASBENCH_CACHE": str(tmp_path / "cache"), BATCH_SIZE_ENV: "many"})
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {BATCH_SIZE_ENV}='many': expected a whole number of clips, 1 or more"]
