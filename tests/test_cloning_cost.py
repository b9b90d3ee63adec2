"""`biasbench plan` counts voice-cloning time (biasbench.tts.cost)."""

from biasbench.plan import format_estimate
from biasbench.tts.cost import DEFAULT_CLONE_S_PER_CLIP, ENV, cloning_estimate
from biasbench.tts.synthesis import SynthesisJob


def jobs(backend, n):
    return [SynthesisJob(f"v{i}", backend, {}, f"text {i}") for i in range(n)]


def test_only_real_cloning_engines_count(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    estimate = cloning_estimate(jobs("f5-tts", 3600) + jobs("maskgct", 3600) + jobs("espeak-ng", 500)
                                + jobs("standin-clone", 50))
    assert estimate["n_clips_to_clone"] == 7200
    assert abs(estimate["cloning_hours"] - 2 * DEFAULT_CLONE_S_PER_CLIP) < 1e-9
    assert "assumed" in estimate["cloning_source"]


def test_measured_seconds_per_clip_from_the_environment(monkeypatch):
    monkeypatch.setenv(ENV, "0.25")
    estimate = cloning_estimate(jobs("f5-tts", 14400))
    assert estimate["cloning_hours"] == 1.0 and ENV in estimate["cloning_source"]


def test_plan_text_shows_cloning_only_when_there_is_some():
    base = {"task": "t", "pool": "p", "model": "m", "backend": "hf", "pipeline_check": False, "n_requests": 1,
            "n_items": 1, "n_voices": 1, "samples": 1, "conditions": ["audio"], "n_clips": 1, "n_clips_cached": 0,
            "n_clips_to_synthesise": 1, "audio_hours_to_synthesise": 0.0, "audio_hours_cached": 0.0,
            "audio_hours_to_send": 0.0, "latency_s_per_request": 0.1, "latency_source": "x", "model_hours": 0.0,
            "is_api": False, "api_cost_usd": None, "cost_source": ""}
    assert "voice cloning" not in format_estimate({**base, **cloning_estimate(jobs("espeak-ng", 2))})
    assert "voice cloning (GPU):   0.001 h for 2 clips" in format_estimate({**base, **cloning_estimate(jobs("f5-tts", 2))})
