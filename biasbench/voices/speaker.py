"""Speaker embeddings, offline: is a clip one speaker, does a clone sound like its reference,
are the voices of a pool different people?

The encoder is Resemblyzer's (GE2E, Wan et al. 2018: a 3-layer LSTM trained on LibriSpeech,
VoxCeleb 1 and 2, 256-dimensional unit-norm embeddings, Apache-2.0). Its weights
(`pretrained.pt`, 17 MB) ship inside the `resemblyzer` wheel on PyPI, so it loads with no hub.
The package only carries weights that biasbench trusts, so its version is pinned in
pyproject.toml's `speaker` extra and `pretrained.pt` is checked against
biasbench/tts/data/checksums.json before torch reads it (a mismatch is a BiasbenchError).

Cosine similarity of two embeddings (both unit norm, so a dot product) is the one number used:

- `self_similarity`: the smallest similarity of a speaker's utterances (or a clip's ~1.6 s
  windows) to their mean: low when a clip holds two people (voices build's single-speaker gate).
- `clone_fidelity`: similarity of a voice's clones (mean embedding of its QC clips) to its
  reference clip.
- `nearest_similarity`: a voice's highest similarity to another voice of the pool.

Thresholds, and why (Resemblyzer's own README and the GE2E paper report same-speaker pairs of
clean read speech mostly above ~0.75 and different speakers mostly below ~0.7; cross-channel
and cross-style pairs score lower). They are defaults, written into every output that uses them:

- `MIN_CLONE_FIDELITY = 0.75`: a clone below it is more likely judged another person than the
  reference speaker. Zero-shot cloners (F5-TTS, MaskGCT) report speaker similarity of their
  clones with their own (WavLM-based) verifiers; GE2E is coarser, so this is a floor that catches
  failed clones (wrong gender, a generic timbre), not proof of identity.
- `MIN_SELF_SIMILARITY = 0.7`: whole utterances of one person score above it with one another.
- `MIN_WINDOW_SIMILARITY = 0.6`: the least similar pair of ~1.6 s windows of a clip. Measured on
  espeak-ng clips: one voice 0.69-0.80 (lower the longer the clip: more pairs), two different
  voices joined 0.53-0.64. A screen for a second, clearly different voice in a clip (another sex,
  another timbre), not for two similar people.
- `MAX_SAME_CELL_SIMILARITY = 0.92`: two "different" voices of a cell that close are probably the
  same person twice (a corpus listing a speaker under two ids) or clones collapsed into one
  timbre; the cell then has fewer independent voices than it claims.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from functools import lru_cache

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra

INSTALL_HINT = (f"install the pinned speaker-embedding packages with `{install_extra('speaker')}` and "
                "`pip install --no-deps resemblyzer==0.1.4` (scripts/install.sh does both)")
PACKAGE = "resemblyzer"
WEIGHTS = "pretrained.pt"
EMBEDDING_RATE = 16000
MIN_CLONE_FIDELITY = 0.75
MIN_SELF_SIMILARITY = 0.7
MIN_WINDOW_SIMILARITY = 0.6
MAX_SAME_CELL_SIMILARITY = 0.92


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec(PACKAGE) is not None


@lru_cache(maxsize=1)
def _encoder():
    """Resemblyzer's VoiceEncoder on CPU, from its checksum-verified packaged weights."""
    from biasbench.tts.weights import require_packages, verified_package_file

    require_packages([PACKAGE], INSTALL_HINT)
    weights = verified_package_file(PACKAGE, WEIGHTS, INSTALL_HINT)
    with warnings.catch_warnings():  # resemblyzer imports a scipy namespace deprecated in SciPy 1.8
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder
    with contextlib.redirect_stdout(io.StringIO()):
        return VoiceEncoder(device="cpu", weights_fpath=weights, verbose=False)


def fingerprint() -> dict:
    from biasbench.tts.weights import checksums, installed_version

    return {"encoder": "resemblyzer-ge2e", "version": installed_version(PACKAGE),
            "weights_sha256": checksums()["packages"][PACKAGE]["files"][WEIGHTS]}


def _prepared(audio: np.ndarray, sr: int) -> np.ndarray:
    from biasbench.tts.audio import resample

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import preprocess_wav
    wav = preprocess_wav(resample(np.asarray(audio, dtype=np.float32), sr, EMBEDDING_RATE))
    if wav.size < EMBEDDING_RATE // 2:
        raise BiasbenchError(f"too little voiced audio for a speaker embedding ({wav.size / EMBEDDING_RATE:.2f} s "
                             "after silence removal; at least 0.5 s)")
    return wav


def embed(audio: np.ndarray, sr: int = EMBEDDING_RATE) -> np.ndarray:
    """The unit-norm speaker embedding (256 floats) of one clip."""
    return _encoder().embed_utterance(_prepared(audio, sr)).astype(np.float64)


def embed_windows(audio: np.ndarray, sr: int = EMBEDDING_RATE) -> np.ndarray:
    """Embeddings of a clip's ~1.6 s windows (50% overlap), one row each."""
    _, partials, _ = _encoder().embed_utterance(_prepared(audio, sr), return_partials=True)
    return np.asarray(partials, dtype=np.float64)


def mean_embedding(embeddings) -> np.ndarray:
    """The normalised mean of unit embeddings (a speaker's voice over several clips)."""
    stacked = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    mean = stacked.mean(axis=0)
    return mean / (np.linalg.norm(mean) or 1.0)


def self_similarity(embeddings) -> float:
    """The smallest cosine of any row to the rows' mean: 1 for identical rows, low when one
    row (an utterance, a window) is someone else."""
    stacked = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    if len(stacked) < 2:
        return 1.0
    return float(np.min(stacked @ mean_embedding(stacked)))


def similarity_matrix(embeddings: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Ids and their pairwise cosine similarities."""
    ids = list(embeddings)
    matrix = np.vstack([embeddings[i] for i in ids]) if ids else np.zeros((0, 0))
    return ids, matrix @ matrix.T


def nearest_voices(embeddings: dict[str, np.ndarray]) -> dict[str, tuple[str, float]]:
    """For each id, the other id most similar to it and that similarity."""
    ids, sims = similarity_matrix(embeddings)
    nearest = {}
    for i, voice in enumerate(ids):
        row = sims[i].copy()
        row[i] = -np.inf
        j = int(np.argmax(row)) if len(ids) > 1 else i
        nearest[voice] = (ids[j], float(row[j])) if len(ids) > 1 else ("", float("nan"))
    return nearest


def group_similarity(embeddings: dict[str, np.ndarray], groups: dict[str, str]) -> dict:
    """Mean similarity of voices within a group and between groups: when clones collapse into
    one synthetic timbre, between-group similarity rises towards within-group similarity."""
    ids, sims = similarity_matrix(embeddings)
    within, between = [], []
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            (within if groups[ids[i]] == groups[ids[j]] else between).append(sims[i, j])
    return {"within_group_mean": float(np.mean(within)) if within else None,
            "between_group_mean": float(np.mean(between)) if between else None,
            "n_within_pairs": len(within), "n_between_pairs": len(between)}
