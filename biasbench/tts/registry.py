"""TTS backends by name, so voice pools can say `backend: espeak-ng`.

Factories import their module only when called: a backend with heavy or optional
dependencies (piper, kokoro, edge-tts, ...) costs nothing until a pool actually uses it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from biasbench.errors import BiasbenchError
from biasbench.tts.base import TTSBackend


def _espeak() -> TTSBackend:
    from biasbench.tts.espeak import EspeakBackend

    return EspeakBackend()


def _flite() -> TTSBackend:
    from biasbench.tts.flite import FliteBackend

    return FliteBackend()


def _festival() -> TTSBackend:
    from biasbench.tts.festival import FestivalBackend

    return FestivalBackend()


def _piper() -> TTSBackend:
    from biasbench.tts.piper import PiperBackend

    return PiperBackend()


def _kokoro() -> TTSBackend:
    from biasbench.tts.kokoro import KokoroBackend

    return KokoroBackend()


def _edge_tts() -> TTSBackend:
    from biasbench.tts.edge import EdgeTTSBackend

    return EdgeTTSBackend()


def _f5_tts() -> TTSBackend:
    from biasbench.tts.f5 import F5Backend

    return F5Backend()


def _recorded() -> TTSBackend:
    from biasbench.tts.recorded import RecordedBackend

    return RecordedBackend()


def _standin_clone() -> TTSBackend:
    from biasbench.tts.standin_clone import StandinCloneBackend

    return StandinCloneBackend()


def _maskgct() -> TTSBackend:
    from biasbench.tts.maskgct import MaskGCTBackend

    return MaskGCTBackend()


#: Backend name -> zero-argument factory, offline engines first (the order users see).
BACKENDS: dict[str, Callable[[], TTSBackend]] = {
    "espeak-ng": _espeak,
    "flite": _flite,
    "festival": _festival,
    "piper": _piper,
    "kokoro": _kokoro,
    "edge-tts": _edge_tts,
    "f5-tts": _f5_tts,
    "maskgct": _maskgct,
    "standin-clone": _standin_clone,
    "recorded": _recorded,
}

#: Backends that need no network once installed (f5-tts, maskgct: once their checkpoints are
#: downloaded, or given as local paths).
OFFLINE_BACKENDS = ("espeak-ng", "flite", "festival", "piper", "kokoro", "f5-tts", "maskgct", "standin-clone", "recorded")

#: Zero-shot cloning backends: the pool loader passes each voice's reference clip and
#: transcript to them as params (biasbench.tts.reference). standin-clone is a test stand-in
#: (biasbench.tts.standin_clone), not a cloning engine.
CLONING_BACKENDS = ("f5-tts", "maskgct", "standin-clone")


def known_backends() -> list[str]:
    """Registered names, in registration order (the offline default engine first)."""
    return list(BACKENDS)


def get_tts_backend(name: str) -> TTSBackend:
    """A new backend instance for `name`; BiasbenchError listing the known names if unknown."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise BiasbenchError(_unknown_message(name))
    return factory()


@dataclass
class BackendStatus:
    name: str
    installed: bool
    detail: str  # the engine version when installed, else how to install it
    offline: bool


def backend_status(name: str) -> BackendStatus:
    """Whether `name` can run here, without synthesising anything (asks for its version)."""
    try:
        detail = get_tts_backend(name).version()
        installed = True
    except BiasbenchError as err:
        detail, installed = str(err), False
    return BackendStatus(name, installed, detail, name in OFFLINE_BACKENDS)


def _unknown_message(name: str) -> str:
    known = known_backends()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown TTS backend {name!r}; known backends: {', '.join(known)}.{hint}"
