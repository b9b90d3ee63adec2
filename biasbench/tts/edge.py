"""Microsoft Edge's online neural voices (PyPI `edge-tts`) as a TTS backend.

NEEDS INTERNET: synthesis sends the text to Microsoft's read-aloud service. Everything up
to the request (voice name, prosody formatting, SSML escaping) is built here and tested
offline; clips already in the audio cache are reused without any network access.

The service can change a voice's sound without notice, and the cache key can only see
the edge-tts version: so a study should synthesise all of its clips in one go and keep
the cache (it is the record of what the model heard).

Params: `voice` (a ShortName such as "en-NG-EzinneNeural", checked against the shipped
catalogue `data/edge_tts_voices.json`), `rate` and `volume` (integer percent change, e.g.
-10), `pitch` (integer Hz change, e.g. +5).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import difflib
import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.formats import dumps
from biasbench.paths import install_extra
from biasbench.tts import _common
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import to_harness_audio

INSTALL_HINT = f"install it with `pip install 'edge-tts>=7.2'` (or `{install_extra('tts')}`)"
CATALOGUE_PATH = Path(__file__).resolve().parent / "data" / "edge_tts_voices.json"
TIMEOUT_S = 60

#: ll-CC-NameNeural, optionally with a region part (zh-CN-liaoning-XiaobeiNeural).
_VOICE_RE = re.compile(r"[a-z]{2,3}-[A-Z]{2,}(-[A-Za-z]+)?-[A-Za-z0-9]+Neural\Z")

PARAMS: dict[str, Param] = {
    "voice": Param(str, help="a voice ShortName, e.g. en-NG-EzinneNeural"),
    "rate": Param(int, -50, 100, help="speaking-rate change in percent"),
    "volume": Param(int, -50, 50, help="volume change in percent"),
    "pitch": Param(int, -50, 50, help="pitch change in Hz"),
}


@lru_cache(maxsize=1)
def catalogue() -> dict:
    """The shipped voice catalogue (see its `_about` for where it came from)."""
    return json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))


def catalogue_voices() -> dict[str, dict]:
    return {v["name"]: v for v in catalogue()["voices"]}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params("edge-tts", params, PARAMS, required=("voice",))
    voice = params["voice"]
    if not _VOICE_RE.match(voice):
        raise BiasbenchError(
            f"edge-tts param 'voice' must be a voice ShortName like 'en-US-AriaNeural', got {voice!r}"
        )
    known = catalogue_voices()
    if voice not in known:
        close = difflib.get_close_matches(voice, list(known), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BiasbenchError(
            f"edge-tts param 'voice': {voice!r} is not in the shipped catalogue "
            f"({CATALOGUE_PATH.name}).{hint} If Microsoft added it, run "
            "`biasbench voices catalogue --refresh` (needs internet)."
        )


def _signed(value: int, unit: str) -> str:
    return f"{'+' if value >= 0 else '-'}{abs(int(value))}{unit}"


@dataclass(frozen=True)
class EdgeRequest:
    """Exactly what is sent to the service for one clip."""

    voice: str
    rate: str  # "+0%"
    volume: str  # "+0%"
    pitch: str  # "+0Hz"
    text: str

    def communicate_kwargs(self) -> dict:
        """Keyword arguments for `edge_tts.Communicate`."""
        return {"text": self.text, "voice": self.voice, "rate": self.rate,
                "volume": self.volume, "pitch": self.pitch}

    def ssml(self) -> str:
        """The SSML document the service receives (edge-tts builds the same one)."""
        return (
            "<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' xml:lang='en-US'>"
            f"<voice name='{service_voice_name(self.voice)}'>"
            f"<prosody pitch='{self.pitch}' rate='{self.rate}' volume='{self.volume}'>"
            f"{escape_text(self.text)}"
            "</prosody></voice></speak>"
        )


def escape_text(text: str) -> str:
    """Text as SSML character data: XML-escaped, and without the control characters
    the service rejects (they become spaces, as edge-tts does)."""
    cleaned = "".join(
        " " if (ord(c) <= 8 or 11 <= ord(c) <= 12 or 14 <= ord(c) <= 31) else c for c in text
    )
    return escape(cleaned)


def service_voice_name(short_name: str) -> str:
    """en-US-AriaNeural -> 'Microsoft Server Speech Text to Speech Voice (en-US, AriaNeural)'."""
    match = re.match(r"^([a-z]{2,3})-([A-Z]{2,})-(.+Neural)$", short_name)
    if match is None:
        return short_name
    lang, region, name = match.groups()
    if "-" in name:  # zh-CN-liaoning-XiaobeiNeural: the region has a part of its own
        head, name = name.split("-", 1)
        region = f"{region}-{head}"
    return f"Microsoft Server Speech Text to Speech Voice ({lang}-{region}, {name})"


def build_request(text: str, params: dict) -> EdgeRequest:
    """Check text and params, and format them the way the service expects."""
    _common.check_text("edge-tts", text)
    check_params(params)
    return EdgeRequest(
        voice=params["voice"],
        rate=_signed(params.get("rate", 0), "%"),
        volume=_signed(params.get("volume", 0), "%"),
        pitch=_signed(params.get("pitch", 0), "Hz"),
        text=text,
    )


def _import_edge():
    try:
        import edge_tts
    except ImportError:
        raise BiasbenchError(f"the edge-tts client (PyPI edge-tts) is not installed; {INSTALL_HINT}") from None
    return edge_tts


async def _fetch_audio(request: EdgeRequest) -> bytes:
    edge_tts = _import_edge()
    communicate = edge_tts.Communicate(**request.communicate_kwargs(), receive_timeout=TIMEOUT_S)
    chunks = []
    async for chunk in communicate.stream():
        if chunk.get("type") == "audio":
            chunks.append(chunk["data"])
    return b"".join(chunks)


def decode_mp3(data: bytes) -> tuple[np.ndarray, int]:
    """The service answers with MP3 (24 kHz mono); libsndfile >= 1.1 decodes it."""
    try:
        return sf.read(io.BytesIO(data), dtype="float32")
    except (RuntimeError, sf.LibsndfileError) as err:
        raise BiasbenchError(f"could not decode the edge-tts audio ({len(data)} bytes): {err}") from None


class EdgeTTSBackend:
    """`TTSBackend` for Microsoft Edge's neural voices (online)."""

    name = "edge-tts"

    def version(self) -> str:
        """The client version (the service's own version is not visible to clients)."""
        _import_edge()
        return f"edge-tts {_installed_version()}"

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        request = build_request(text, params)
        try:
            data = asyncio.run(_fetch_audio(request))
        except BiasbenchError:
            raise
        except Exception as err:  # noqa: BLE001 - network, auth and service errors alike
            raise BiasbenchError(
                f"edge-tts request failed for voice {request.voice!r}, text "
                f"{_common.excerpt(text)}: {type(err).__name__}: {err} (it needs internet)"
            ) from None
        if not data:
            raise BiasbenchError(f"edge-tts returned no audio for voice {request.voice!r}")
        audio, rate = decode_mp3(data)
        audio = to_harness_audio(audio, rate)
        _common.check_not_silent("edge-tts", audio, request.voice, text)
        return audio, SAMPLE_RATE


def _installed_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("edge-tts")
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- catalogue refresh (online) --------------------------------------------------------


def catalogue_entries(raw_voices: list[dict], locale_prefix: str = "en-") -> list[dict]:
    """Vendor voice records (edge_tts.list_voices()) -> the catalogue's entries."""
    entries = []
    for voice in raw_voices:
        locale = voice.get("Locale", "")
        if not locale.startswith(locale_prefix):
            continue
        entries.append({
            "name": voice["ShortName"],
            "locale": locale,
            "gender": str(voice.get("Gender", "")).lower(),
        })
    return sorted(entries, key=lambda e: (e["locale"], e["name"]))


def refresh_catalogue(path: Path | None = None) -> Path:
    """Download the vendor's voice list and rewrite the catalogue file (needs internet).

    Untested live here (no network); `catalogue_entries` is tested offline.
    """
    edge_tts = _import_edge()
    try:
        raw = asyncio.run(edge_tts.list_voices())
    except Exception as err:  # noqa: BLE001
        raise BiasbenchError(f"could not download the edge-tts voice list: {err} (it needs internet)") from None
    path = Path(path) if path is not None else CATALOGUE_PATH
    document = {
        "_about": (
            "English voices of Microsoft Edge's online TTS with the vendor's gender metadata, "
            f"downloaded with edge_tts.list_voices() (edge-tts {_installed_version()}) on "
            f"{dt.date.today().isoformat()} by `biasbench voices catalogue --refresh`."
        ),
        "source": "edge_tts.list_voices()",
        "voices": catalogue_entries(raw),
    }
    path.write_text(dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    catalogue.cache_clear()
    return path
