"""Reference clips for zero-shot cloning backends: checking them and passing them on.

A cloning voice (voices/cloning-template.yaml) names a recording (`reference_clip`,
relative to the pool YAML) and its transcript (`reference_text`). When a pool is loaded,
`attach_references` gives every voice whose backend clones (registry.CLONING_BACKENDS) these
extra TTS params, which is how they reach the backend and the audio cache key:

  reference_audio   absolute path of the clip (not in the cache key: its sha256 is)
  reference_text    its transcript
  reference_sha256  sha256 of the clip's bytes: a re-recorded clip gets new cache keys,
                    so a replaced recording can never return stale clones
  reference_error   only when the clip or transcript is unusable: the message (naming the
                    pool file, voice id and field), raised by the backend for each clip of
                    that voice, so the rest of the pool is still synthesised

They are held outside the pool's fields (`TTSSpec.attach`), so pool hashes do not change.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts._common import SILENCE_PEAK, check_text, excerpt

#: Shorter than this there is too little voice to clone: refused.
MIN_SECONDS = 1.0
#: F5-TTS's advice (f5_tts/infer/README.md): reference audio of about 3 s to under 12 s.
#: Outside that range the clip is used, with a warning.
ADVISED_SECONDS = (3.0, 12.0)
#: F5-TTS generates at most 30 s per pass, reference included: longer clips are refused.
MAX_SECONDS = 30.0
#: Below this sample rate a clip is used with a warning (telephone audio clones poorly).
ADVISED_MIN_RATE = 16000

#: The params attach_references adds; a backend that clones accepts exactly these.
REFERENCE_PARAMS = ("reference_audio", "reference_text", "reference_sha256", "reference_error")


@dataclass
class ReferenceInfo:
    path: Path
    sha256: str
    seconds: float
    sample_rate: int
    warnings: list[str] = field(default_factory=list)


def require_reference(engine: str, text: str, params: dict) -> str:
    """A cloning voice's reference transcript; BiasbenchError when its reference cannot be used
    (the pool loader's message for a bad clip, or params without a clip or transcript)."""
    if "reference_error" in params:
        raise BiasbenchError(f"{params['reference_error']} (text {excerpt(text)})")
    if "reference_audio" not in params or "reference_sha256" not in params:
        raise BiasbenchError(f"{engine} needs a reference clip: give the voice `reference_clip` and "
                             "`reference_text` in the pool YAML (voices/cloning-template.yaml)")
    reference_text = params.get("reference_text", "").strip()
    if not reference_text:
        raise BiasbenchError(f"{engine} needs the transcript of reference clip "
                             f"{params['reference_audio']} (reference_text is empty)")
    return reference_text


def precheck_requests(engine: str, requests: list[tuple[str, dict]], check_params) -> list:
    """What a cloning backend's synthesize_batch can refuse without its engine (text, params,
    reference), before importing it: per request the BiasbenchError, or None to go on."""
    results: list = [None] * len(requests)
    for index, (text, params) in enumerate(requests):
        try:
            check_text(engine, text)
            check_params(params)
            require_reference(engine, text, params)
        except BiasbenchError as err:
            results[index] = err
    return results


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: A reference file larger than this is refused before it is read: 30 s of audio is far less
#: (8 channels of 32-bit samples at 192 kHz are 184 MB), so hashing or decoding it would only cost.
MAX_FILE_BYTES = 256 * 1024 * 1024
#: Frames decoded at a time when a clip is checked: memory stays bounded whatever the file holds.
_BLOCK_FRAMES = 1 << 16


def inspect_clip(path: str | Path) -> ReferenceInfo:
    """Read and check one reference clip; BiasbenchError (without a voice name) if unusable.

    Its duration comes from the header (soundfile.info) and is checked before anything is
    hashed or decoded, so a 10-hour file is refused at once; the samples are then read block by
    block, at most MAX_SECONDS of them, so memory stays small whatever the file."""
    path = Path(path)
    if not path.exists():
        raise BiasbenchError(f"file not found: {path}")
    if not path.is_file():
        raise BiasbenchError(f"not a file: {path}")
    header = audio_header(path)
    rate = int(header.samplerate)
    seconds = header.frames / float(rate) if rate > 0 else 0.0
    if seconds > MAX_SECONDS:
        raise BiasbenchError(f"{path} is too long ({seconds:.1f} s; the cloning engine takes at most "
                             f"{MAX_SECONDS:g} s, use {ADVISED_SECONDS[0]:g}-{ADVISED_SECONDS[1]:g} s "
                             "and cut reference_text to match)")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BiasbenchError(f"{path} is {path.stat().st_size / 2**20:.0f} MiB, more than a {MAX_SECONDS:g} s "
                             f"reference clip can be ({MAX_FILE_BYTES // 2**20} MiB at most)")
    try:
        sha = file_sha256(path)
        frames, peak, finite = _scan(path, int(MAX_SECONDS * rate) + 1)
    except OSError as err:
        raise BiasbenchError(f"cannot read {path}: {err.strerror or err}") from None
    except (RuntimeError, ValueError, TypeError) as err:  # soundfile: damaged past its header
        raise BiasbenchError(f"{path} is not a readable audio file (WAV, FLAC or OGG): {err}") from None
    seconds = frames / float(rate) if rate else 0.0  # what could be decoded, not what the header says
    if seconds < MIN_SECONDS:
        raise BiasbenchError(f"{path} is too short to clone from ({seconds:.2f} s; "
                             f"use {ADVISED_SECONDS[0]:g}-{ADVISED_SECONDS[1]:g} s of speech)")
    if seconds > MAX_SECONDS:  # a header that understated the length
        raise BiasbenchError(f"{path} holds more than {MAX_SECONDS:g} s of audio (its header says "
                             f"{header.frames / float(rate):.1f} s); the cloning engine takes at most {MAX_SECONDS:g} s")
    if not finite or peak < SILENCE_PEAK:
        raise BiasbenchError(f"{path} is silent (or holds non-finite samples)")
    notes = []
    if seconds < ADVISED_SECONDS[0]:
        notes.append(f"{path} is short ({seconds:.1f} s); F5-TTS advises {ADVISED_SECONDS[0]:g}-"
                     f"{ADVISED_SECONDS[1]:g} s, clones from short clips resemble the speaker less")
    elif seconds > ADVISED_SECONDS[1]:
        notes.append(f"{path} is {seconds:.1f} s; F5-TTS cuts references to about {ADVISED_SECONDS[1]:g} s, "
                     "so the end of reference_text would no longer match the audio: trim the clip "
                     "and its transcript to under 12 s")
    if rate < ADVISED_MIN_RATE:
        notes.append(f"{path} is sampled at {rate} Hz; record at {ADVISED_MIN_RATE} Hz or more")
    return ReferenceInfo(path, sha, seconds, rate, notes)


def audio_header(path: Path):
    """soundfile's reading of the header (frames, rate, channels), decoding nothing; one clear
    BiasbenchError when it is not audio soundfile knows or the header is damaged."""
    try:
        header = sf.info(str(path))
    except OSError as err:
        raise BiasbenchError(f"cannot read {path}: {err.strerror or err}") from None
    except (RuntimeError, ValueError, TypeError) as err:  # soundfile: not audio it knows
        raise BiasbenchError(f"{path} is not a readable audio file (WAV, FLAC or OGG): {err}") from None
    if header.samplerate <= 0 or header.channels <= 0 or header.frames < 0:
        raise BiasbenchError(f"{path} has a damaged header ({header.samplerate} Hz, {header.channels} channels)")
    return header


def _scan(path: Path, max_frames: int) -> tuple[int, float, bool]:
    """(frames read, peak sample, all samples finite), reading at most `max_frames`
    frames in blocks."""
    frames, peak, finite = 0, 0.0, True
    with sf.SoundFile(str(path)) as handle:
        while frames < max_frames:
            block = handle.read(min(_BLOCK_FRAMES, max_frames - frames), dtype="float32", always_2d=True)
            if not len(block):
                break
            frames += len(block)
            finite = finite and bool(np.isfinite(block).all())
            if finite:
                peak = max(peak, float(np.max(np.abs(block))))
    return frames, peak, finite


def reference_params(clip: str | Path, text: str | None, where: str = "") -> dict:
    """The params a cloning backend needs for one voice; never raises.

    `where` names the voice in messages, e.g. "voice pool p.yaml: voice 'v1'". A problem
    becomes `reference_error` (raised by the backend for each of the voice's clips) and a
    doubtful clip a warning."""
    prefix = f"{where}: " if where else ""
    params = {"reference_audio": str(Path(clip).resolve()), "reference_text": text or ""}
    try:
        info = inspect_clip(clip)
    except BiasbenchError as err:
        params["reference_error"] = f"{prefix}field 'reference_clip': {err}"
        return params
    params["reference_sha256"] = info.sha256
    for note in info.warnings:
        warnings.warn(f"{prefix}field 'reference_clip': {note}", UserWarning, stacklevel=2)
    if not (text or "").strip():
        params["reference_error"] = (
            f"{prefix}field 'reference_text' is empty: give the exact transcript of {info.path} "
            "(the cloning engine aligns the clip on it)")
    return params


def attach_references(pool, path: str | Path, cloning_backends) -> None:
    """Give every voice of `pool` (loaded from `path`) whose backend clones its reference params."""
    base = Path(path).resolve().parent
    for index, voice in enumerate(pool.voices):
        if voice.tts.backend not in cloning_backends:
            continue
        where = f"voice pool {path}: voice {voice.id!r}"
        if not voice.reference_clip:
            voice.tts.attach({"reference_error": (
                f"{where}: field 'reference_clip' is missing: backend {voice.tts.backend} clones a "
                f"recording of the speaker (set voices.{index}.reference_clip, relative to the pool file)")})
            continue
        voice.tts.attach(reference_params(base / voice.reference_clip, voice.reference_text, where))
