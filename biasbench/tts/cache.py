"""Content-addressed store of synthesised clips.

A clip's key is a hash of everything that determines its samples (engine, engine
version, voice params, text, stored format), so a cached file can never be stale: change
any input and the key changes. Nothing is ever invalidated, only added. A damaged file (cut
short, emptied) counts as absent and is re-made: every use checks the WAV header against the
file's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.paths import cache_dir
from biasbench.tts.base import SAMPLE_RATE

#: The only format stored today; it is part of every key so a new one cannot collide.
DEFAULT_FORMAT = "wav-16k-mono-pcm16"

_KEY_RE = re.compile(r"[0-9a-f]{64}\Z")


def canonical_json(value) -> str:
    """JSON with sorted keys and no whitespace: equal dicts give equal strings."""
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise BiasbenchError(f"TTS params must be plain JSON values: {err}") from None


class AudioCache:
    """Clips stored as `root/<key[:2]>/<key>.wav`, 16-bit PCM, 16 kHz mono."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "tts"

    def key(
        self,
        backend_name: str,
        backend_version: str,
        params: dict,
        text: str,
        fmt: str = DEFAULT_FORMAT,
        loudness_target: float | None = None,
    ) -> str:
        """sha256 hex of a canonical JSON of exactly these fields."""
        fields = {
            "backend": backend_name,
            "version": backend_version,
            "params": params,
            "text": text,
            "format": fmt,
        }
        if loudness_target is not None:  # absent when unset: un-normalised clips keep their keys
            fields["loudness_target"] = float(loudness_target)
        return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()

    def path(self, key: str) -> Path:
        # Two-character fan-out keeps directories small for large voice x question grids.
        _check_key(key)
        return self.root / key[:2] / f"{key}.wav"

    def has(self, key: str) -> bool:
        """True when a whole clip is cached; a damaged one counts as absent, so it is re-made."""
        return self.state(key) == "ok"

    def state(self, key: str) -> str:
        """"ok", "missing" or "damaged" (cut short, empty, or not the WAV put() writes)."""
        path = self.path(key)
        if not path.exists():
            return "missing"
        return "ok" if _wav_intact(path) else "damaged"

    def get(self, key: str) -> np.ndarray | None:
        """The clip as float32, or None when it is not cached or damaged."""
        path = self.path(key)
        # Checked first: libsndfile reads a clip cut short without complaint, and a voice
        # silently half-played would be a different stimulus than the other voices got.
        if not _wav_intact(path):
            return None
        try:
            audio, _ = sf.read(path, dtype="float32")
        except RuntimeError:
            # Treat a damaged file as a miss: the caller re-synthesises and put() replaces it.
            return None
        return audio

    def put(self, key: str, audio: np.ndarray, sr: int) -> Path:
        """Store a mono clip at SAMPLE_RATE. Atomic: readers see the old file or the whole new one."""
        samples = _as_storable(audio, sr)
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Write next to the target and rename: os.replace is atomic within a file system,
        # so a process killed mid-write leaves only a stray .tmp file, never a short .wav.
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                sf.write(handle, samples, sr, format="WAV", subtype="PCM_16")
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached clips are not secret
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return final

    def duration(self, key: str) -> float | None:
        """Seconds of audio, from the header only; None when not cached or damaged."""
        path = self.path(key)
        return sf.info(str(path)).duration if _wav_intact(path) else None


def _wav_intact(path: Path) -> bool:
    """Whether `path` is a whole clip as put() writes it: RIFF/WAVE, mono 16-bit PCM at
    SAMPLE_RATE, and every byte its data chunk declares present. Header only: cheap enough to
    run on every use (a truncated write or a half-copied cache fails the last test)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return False
    fmt_ok, pos = False, 12
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 24 <= len(head):
            channels, rate = struct.unpack_from("<HI", head, pos + 10)
            bits = struct.unpack_from("<H", head, pos + 22)[0]
            fmt_ok = (channels, rate, bits) == (1, SAMPLE_RATE, 16)
        if chunk == b"data":
            return fmt_ok and length > 0 and length % 2 == 0 and pos + 8 + length <= size
        pos += 8 + length + (length & 1)
    return False


def _check_key(key: str) -> None:
    # Keys become file names: refuse anything that is not a sha256 hex digest.
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"not a cache key (64 lowercase hex digits): {key!r}")


def _as_storable(audio: np.ndarray, sr: int) -> np.ndarray:
    samples = np.asarray(audio, dtype=np.float32)
    if sr != SAMPLE_RATE or samples.ndim != 1:
        raise ValueError(
            f"the cache stores mono {SAMPLE_RATE} Hz audio; got {samples.ndim}-D at {sr} Hz "
            "(convert with biasbench.tts.synthesis.to_harness_audio)"
        )
    # Clip so PCM16 conversion saturates instead of depending on libsndfile's overflow rule.
    return np.clip(samples, -1.0, 1.0)
