"""espeak-ng as a TTS backend: a formant synthesiser that runs offline as a subprocess.

Voices are an accent (`voice`, e.g. "en-029") plus an optional speaker variant
(`variant`, e.g. "f2" for a female voice, "m3" for a male one). The demographic labels
the voice pool puts on these are proxies: espeak-ng is robotic, and its "accents" are
pronunciation rules, not recordings of people.

MBROLA voices (`voice: mb-us1`, a diphone synthesiser espeak-ng drives) sound less robotic.
Debian ships four English ones in non-free: mbrola-us1 (US female), mbrola-us2 and
mbrola-us3 (US male), mbrola-en1 (British male); scripts/install.sh installs them on
Debian. Their licence allows non-commercial and research use only. They are not in the
balanced pools: all four are US/British accents and three are male, so they would tie
the engine to one group (voices/README.md).
"""

from __future__ import annotations

import difflib
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import to_harness_audio

BINARY = "espeak-ng"
INSTALL_HINT = "install it with `sudo apt-get install espeak-ng` (Debian/Ubuntu)"
MBROLA_PREFIX = "mb-"
MBROLA_HINT = ("MBROLA voices need Debian's mbrola package and one per voice (mbrola-us1, mbrola-us2, "
               "mbrola-us3, mbrola-en1; non-free: scripts/install.sh adds them)")

#: A hung espeak-ng must not block a synthesis worker forever.
TIMEOUT_S = 120

#: Accepted params: name -> type. Anything else is rejected, so a typo ("pitchrange")
#: fails loudly instead of silently making a different voice than the pool describes.
PARAM_TYPES: dict[str, type] = {
    "voice": str,
    "variant": str,
    "speed": int,
    "pitch": int,
    "pitch_range": int,
}
#: Inclusive ranges espeak-ng documents (speed in words per minute).
PARAM_RANGES: dict[str, tuple[int, int]] = {
    "speed": (80, 450),
    "pitch": (0, 99),
    "pitch_range": (0, 99),
}
#: Command-line flag for each numeric param.
PARAM_FLAGS = {"speed": "-s", "pitch": "-p", "pitch_range": "-P"}

# Voice and variant names are file names in espeak-ng-data; this also keeps a name
# from ever being read as an option.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
# Below this peak amplitude a clip is treated as silent (espeak-ng emits a short
# all-zero buffer for text it cannot speak, e.g. only punctuation).
_SILENCE_PEAK = 1e-4


def _binary() -> str:
    """Path of espeak-ng, looked up on every call so a changed PATH is honoured."""
    path = shutil.which(BINARY)
    if path is None:
        raise BiasbenchError(f"{BINARY} was not found on PATH; {INSTALL_HINT}.")
    return path


def _excerpt(text: str, limit: int = 40) -> str:
    """The start of `text` for error messages, on one line."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key (unknown, wrong type, out of range)."""
    if not isinstance(params, dict):
        raise BiasbenchError(f"espeak-ng params must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAM_TYPES))
    if unknown:
        raise BiasbenchError(
            f"espeak-ng param '{unknown[0]}' is not known; known params: {', '.join(PARAM_TYPES)}"
        )
    if "voice" not in params:
        raise BiasbenchError("espeak-ng params need 'voice' (an accent such as 'en-us')")
    for key, value in params.items():
        _check_value(key, value)


def _check_value(key: str, value) -> None:
    expected = PARAM_TYPES[key]
    # bool is an int subclass; `pitch: true` in YAML is a mistake, not pitch 1.
    if not isinstance(value, expected) or isinstance(value, bool):
        raise BiasbenchError(
            f"espeak-ng param '{key}' must be {expected.__name__}, got {value!r}"
        )
    if key in PARAM_RANGES:
        low, high = PARAM_RANGES[key]
        if not low <= value <= high:
            raise BiasbenchError(f"espeak-ng param '{key}' must be {low}..{high}, got {value}")
    elif not _NAME_RE.match(value):
        # '+' is refused too: "en-us+f2" and voice=en-us, variant=f2 make the same audio
        # but different cache keys, so only the second spelling is accepted.
        raise BiasbenchError(
            f"espeak-ng param '{key}' must be a plain name (letters, digits, '-', '_', '.'), "
            f"got {value!r}" + ("; put the part after '+' in 'variant'" if "+" in value else "")
        )


class EspeakBackend:
    """`TTSBackend` running the espeak-ng command-line program."""

    name = "espeak-ng"

    def __init__(self) -> None:
        self._version_line: str | None = None
        self._variants: frozenset[str] | None = None
        self._voices: frozenset[str] | None = None

    def version(self) -> str:
        """E.g. "1.51": part of the cache key, so an upgrade re-synthesises."""
        line = self._version_info()
        match = re.search(r"text-to-speech:\s*(\S+)", line)
        return match.group(1) if match else line

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        """Speak `text`; return 16 kHz mono float32 audio and SAMPLE_RATE."""
        self._check_request(text, params)
        wav = self._run(text, params)
        audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
        audio = to_harness_audio(audio, rate)
        if audio.size == 0 or float(np.max(np.abs(audio))) < _SILENCE_PEAK:
            raise BiasbenchError(
                f"espeak-ng produced no audio for voice {_voice_arg(params)!r}, "
                f"text {_excerpt(text)}"
            )
        return audio, SAMPLE_RATE

    def voice_problem(self, params: dict) -> str | None:
        """Why espeak-ng cannot speak these params as asked (None when it can), checked once per
        voice before a run: espeak-ng refuses an unknown voice only clip by clip, and speaks its
        default voice for an unknown variant."""
        try:
            check_params(params)
            known = self.voice_names()
            voice = str(params["voice"])
            if known and voice.lower() not in known:
                close = difflib.get_close_matches(voice.lower(), known, n=3)
                return f"espeak-ng has no voice {voice!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
            self._check_variant(params.get("variant"))
        except BiasbenchError as err:
            return str(err)
        return None

    def voice_names(self) -> frozenset[str]:
        """Every name `-v` accepts (lower case): languages, voice names and voice files, MBROLA's too."""
        if self._voices is None:
            names: set[str] = set()
            for listing in ("--voices", "--voices=mb"):
                proc = subprocess.run([_binary(), listing], capture_output=True, text=True, timeout=TIMEOUT_S)
                for line in proc.stdout.splitlines()[1:]:
                    cols = line.split()
                    if len(cols) >= 5:
                        names |= {cols[1], cols[3], cols[4], cols[4].rsplit("/", 1)[-1]}
                        names |= set(re.findall(r"\((\S+) \d+\)", line))  # "Other Languages": (en 3)
            self._voices = frozenset(name.lower() for name in names)
        return self._voices

    def variants(self) -> frozenset[str]:
        """Variant names installed with espeak-ng (file names under voices/!v)."""
        if self._variants is None:
            match = re.search(r"Data at:\s*(.+)$", self._version_info())
            folder = Path(match.group(1).strip()) / "voices" / "!v" if match else None
            found = {p.name for p in folder.iterdir()} if folder and folder.is_dir() else set()
            self._variants = frozenset(found)
        return self._variants

    # -- internals ---------------------------------------------------------------

    def _version_info(self) -> str:
        """First line of `espeak-ng --version`, run once per instance."""
        if self._version_line is None:
            proc = subprocess.run(
                [_binary(), "--version"], capture_output=True, text=True, timeout=TIMEOUT_S
            )
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise BiasbenchError(f"`{BINARY} --version` failed: {proc.stderr.strip()}")
            self._version_line = lines[0].strip()
        return self._version_line

    def _check_request(self, text: str, params: dict) -> None:
        if not isinstance(text, str) or not text.strip():
            raise BiasbenchError(f"espeak-ng needs non-empty text, got {text!r}")
        if "\x00" in text:
            # espeak-ng stops reading at a NUL byte: the clip would silently lose text.
            raise BiasbenchError(f"text contains a NUL character: {_excerpt(text)}")
        check_params(params)
        self._check_variant(params.get("variant"))

    def _check_variant(self, variant: str | None) -> None:
        # espeak-ng silently ignores an unknown variant and speaks the default male voice,
        # which would mislabel a "female" pool entry; so check against the installed list.
        known = self.variants()
        if variant is None or not known or variant in known:
            return
        close = difflib.get_close_matches(variant, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BiasbenchError(f"espeak-ng param 'variant': {variant!r} is not installed{hint}")

    def _run(self, text: str, params: dict) -> bytes:
        """Run espeak-ng with text on stdin (no shell) and return the WAV bytes it prints."""
        argv = [_binary(), "--stdin", "-b", "1", "--stdout", "-v", _voice_arg(params)]
        for key, flag in PARAM_FLAGS.items():
            if key in params:
                argv += [flag, str(params[key])]
        try:
            proc = subprocess.run(
                argv, input=text.encode("utf-8"), capture_output=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise BiasbenchError(
                f"espeak-ng timed out after {TIMEOUT_S}s on voice {_voice_arg(params)!r}, "
                f"text {_excerpt(text)}"
            ) from None
        if proc.returncode != 0 or not proc.stdout:
            detail = proc.stderr.decode("utf-8", "replace").strip() or "no output"
            if str(params.get("voice", "")).startswith(MBROLA_PREFIX):
                detail = f"{MBROLA_HINT}. espeak-ng said: {detail}"
            raise BiasbenchError(
                f"espeak-ng failed (exit {proc.returncode}) on voice {_voice_arg(params)!r}, "
                f"text {_excerpt(text)}: {detail}"
            )
        # The WAV header espeak-ng streams to stdout carries placeholder sizes
        # (0x7ffff000); libsndfile clamps them to the bytes actually present.
        return proc.stdout


def _voice_arg(params: dict) -> str:
    """The `-v` argument: accent plus optional '+variant'."""
    voice = str(params.get("voice"))
    return f"{voice}+{params['variant']}" if params.get("variant") else voice
