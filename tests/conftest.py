import os
import shutil
from pathlib import Path

# One thread per process, set before numpy or torch load their thread pools: pytest-xdist already
# runs a test on every core, and console-script tests inherit this. Two BLAS/torch threads per
# worker on a 2-core machine cost far more CPU than they save (measured: a resemblyzer embedding
# took 1.5 s of CPU with 2 threads against 0.4 s with 1 while the other core was busy).
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402  (after the thread settings above)
import pytest

PROJECT = Path(__file__).resolve().parent.parent

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """Tests never reach a hub: the hub check answers 'unreachable' at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from biasbench.hub import hub_reachable

    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def biasbench_cache(tmp_path_factory) -> Path:
    """One cache (tiny models, audio) for the whole test session, never the user's ~/.cache.

    Under pytest-xdist every worker is a session of its own; they share one cache folder beside
    their own temporary folders, so each tiny model and clip is built once, not once per worker.
    That is safe: models and clips are written to a temporary name and renamed into place
    (biasbench.paths.cached_model, biasbench.tts.cache), so a reader never sees half a file.
    """
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "biasbench-cache"
    root.mkdir(exist_ok=True)
    os.environ["BIASBENCH_CACHE"] = str(root)
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sparse_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    """A 16-bit mono WAV whose header says `seconds` long, sparse on disk: the test of a file
    that must be refused from its header (10 hours take 1.15 GB of length, almost no disk)."""
    import soundfile as sf

    sf.write(path, np.zeros(sr, np.int16), sr, subtype="PCM_16")
    n = int(seconds * sr) * 2
    data = bytearray(path.read_bytes()[:44])
    data[4:8], data[40:44] = (36 + n).to_bytes(4, "little"), n.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with path.open("r+b") as handle:
        handle.truncate(44 + n)
    return path


def clip(seconds: float, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A test clip: a sine plus noise, deterministic, different per seed (no TTS needed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


LETTERS = ["A", "B", "C", "D"]
PROMPT = "Which option fits the speaker? Answer A, B, C or D."


def mc(rid: str, seconds: float | None, seed: int = 0, choices=LETTERS, prompt: str = PROMPT):
    """A multiple-choice request; `seconds=None` makes it text-only, else it carries clip(seconds, seed)."""
    from biasbench.models.base import Request

    return Request(rid, prompt, audio=None if seconds is None else clip(seconds, seed), choices=list(choices))


def gen(rid: str, seconds: float | None, seed: int = 0, prompt: str = PROMPT, max_new_tokens: int = 6, **settings):
    """A free-generation request, like mc() (greedy unless `settings` say otherwise)."""
    from biasbench.models.base import GenerationSettings, Request

    return Request(rid, prompt, audio=None if seconds is None else clip(seconds, seed),
                   settings=GenerationSettings(max_new_tokens=max_new_tokens, **settings))
