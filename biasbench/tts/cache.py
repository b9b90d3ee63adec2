"""Content-addressed store of synthesised clips.

A clip's key is a hash of everything that determines its samples (engine, engine
version, voice params, text, stored format), so a cached file can never be stale: change
any input and the key changes. Nothing is ever invalidated, only added. A damaged file (cut
short, emptied) counts as absent and is re-made: every use checks the WAV header against the
file's size.

A clip's content is checked too, not trusted: put() records a digest of the file beside it
(`<key>.b2`: BLAKE2b keyed with the clip's cache key, so a clip copied over another key's file,
sidecar and all, does not match either), and every read verifies it. A clip whose bytes changed
since they were written (swapped for another voice's clip, overwritten with noise of the right
length) reads as "changed", and synthesis makes it again. A clip without a digest (written by a
biasbench before digests) is made again once, like a missing one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
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
        self._verified: dict[str, tuple] = {}  # key -> (size, inode, mtime) of the file whose digest matched

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

    def digest_path(self, key: str) -> Path:
        """Where the digest put() recorded for `key`'s clip is kept."""
        return self.path(key).with_suffix(".b2")

    def has(self, key: str) -> bool:
        """True when a whole clip is cached; a damaged one counts as absent, so it is re-made."""
        return self.state(key) == "ok"

    def state(self, key: str) -> str:
        """"ok", "missing" (or written without a digest), "damaged" (cut short, empty, or not the
        WAV put() writes) or "changed" (whole, but not the bytes put() wrote: its digest differs)."""
        path = self.path(key)
        if not path.exists():
            return "missing"
        return self._read(key, samples=False)[0]

    def get(self, key: str) -> np.ndarray | None:
        """The clip as float32, or None when it is not cached, damaged or changed."""
        state, samples = self._read(key, samples=True)
        return samples if state == "ok" else None

    def _read(self, key: str, samples: bool) -> tuple[str, np.ndarray | None]:
        """(state, the samples when asked for). Reading the samples always verifies the digest
        (once per process: the file is read once, its header checked, its digest compared), so no
        changed clip reaches a model. A state check alone trusts a file whose size, inode and
        modification time are those recorded beside its digest when it was last verified: a
        resumed run checks every clip of its plan and reads none, and hashing them all cost
        about a third of its time. A file written since (swapped, overwritten, copied over) has
        another modification time or inode, and is hashed."""
        path = self.path(key)
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                seen = (stat.st_size, stat.st_ino, stat.st_mtime_ns)
                if self._verified.get(key) == seen and not samples:
                    return "ok", None
                recorded, verified_as = self._recorded(key)
                if recorded is None:
                    return "missing", None  # no digest: made again (written before digests, or killed between)
                if not samples and verified_as == seen:
                    return "ok", None
                data = handle.read()
        except FileNotFoundError:
            return "missing", None
        except OSError:
            return "damaged", None
        # Checked first: libsndfile reads a clip cut short without complaint, and a voice
        # silently half-played would be a different stimulus than the other voices got.
        chunk = _data_chunk(data[:4096], len(data))
        if chunk is None:
            return "damaged", None
        if self._verified.get(key) != seen:
            if recorded != clip_digest(key, data):
                with contextlib.suppress(OSError):  # the next synthesis makes it again, whatever its times say
                    self.digest_path(key).unlink()
                return "changed", None
            self._verified[key] = seen
            if verified_as != seen:
                self._record(key, recorded, seen)
        if not samples:
            return "ok", None
        offset, length = chunk
        # The header says mono 16-bit PCM: the samples as soundfile reads them (int16 / 32768).
        pcm = np.frombuffer(data, dtype="<i2", count=length // 2, offset=offset)
        return "ok", pcm.astype(np.float32) * np.float32(1 / 32768)

    def _recorded(self, key: str) -> tuple[str | None, tuple | None]:
        """(the digest put() recorded, the (size, inode, mtime) the clip had when last verified)."""
        try:
            fields = self.digest_path(key).read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            return None, None
        if not fields:
            return None, None
        try:
            verified_as = tuple(int(value) for value in fields[1:4]) if len(fields) == 4 else None
        except ValueError:
            verified_as = None
        return fields[0], verified_as

    def _record(self, key: str, digest: str, seen: tuple) -> None:
        """Note beside the digest the file it was verified on; best effort (a read-only cache is fine)."""
        with contextlib.suppress(OSError):
            _write_atomically(self.digest_path(key), " ".join([digest, *map(str, seen)]).encode("ascii"), key)

    def put(self, key: str, audio: np.ndarray, sr: int) -> Path:
        """Store a mono clip at SAMPLE_RATE, and its digest. Atomic: readers see the old file or
        the whole new one (the digest is replaced first: a kill between the two leaves a clip that
        does not match, which is made again)."""
        samples = _as_storable(audio, sr)
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        sf.write(buffer, samples, sr, format="WAV", subtype="PCM_16")
        data = buffer.getvalue()
        self._verified.pop(key, None)
        _write_atomically(self.digest_path(key), clip_digest(key, data).encode("ascii"), key)
        return _write_atomically(final, data, key)

    def duration(self, key: str) -> float | None:
        """Seconds of audio, from the header only; None when not cached or damaged."""
        path = self.path(key)
        return sf.info(str(path)).duration if _wav_intact(path) else None


def clip_digest(key: str, data: bytes) -> str:
    """BLAKE2b of a clip file's bytes, keyed with its cache key: the same bytes under another
    key give another digest. About 1 GB/s: a few hundred microseconds per clip."""
    return hashlib.blake2b(data, digest_size=16, key=bytes.fromhex(key)).hexdigest()


def _write_atomically(final: Path, data: bytes, key: str) -> Path:
    # Write next to the target and rename: os.replace is atomic within a file system,
    # so a process killed mid-write leaves only a stray .tmp file, never a short file.
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{key}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached clips are not secret
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return final


def _wav_intact(path: Path) -> bool:
    """Whether `path` is a whole clip as put() writes it (see _intact). Header only."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return _intact(head, size)


def _intact(head: bytes, size: int) -> bool:
    """Whether a file of `size` bytes starting with `head` is a whole clip as put() writes it."""
    return _data_chunk(head, size) is not None


def _data_chunk(head: bytes, size: int) -> tuple[int, int] | None:
    """(offset, length) of the samples of a file of `size` bytes starting with `head`, when it is
    a whole clip as put() writes it: RIFF/WAVE, mono 16-bit PCM at SAMPLE_RATE, and every byte
    its data chunk declares present (a truncated write or a half-copied cache fails the last
    test); else None."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt_ok, pos = False, 12
    while pos + 8 <= len(head):
        chunk, length = head[pos:pos + 4], int.from_bytes(head[pos + 4:pos + 8], "little")
        if chunk == b"fmt " and pos + 24 <= len(head):
            channels, rate = struct.unpack_from("<HI", head, pos + 10)
            bits = struct.unpack_from("<H", head, pos + 22)[0]
            fmt_ok = (channels, rate, bits) == (1, SAMPLE_RATE, 16)
        if chunk == b"data":
            whole = fmt_ok and length > 0 and length % 2 == 0 and pos + 8 + length <= size
            return (pos + 8, length) if whole else None
        pos += 8 + length + (length & 1)
    return None


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
