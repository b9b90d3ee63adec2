"""TTS backends by name, so voice pools can say `backend: espeak-ng`.

Factories import their module only when called: a backend with heavy or optional
dependencies (piper, edge-tts, ...) costs nothing until a pool actually uses it.
"""

from __future__ import annotations

import difflib
from typing import Callable

from biasbench.errors import BiasbenchError
from biasbench.tts.base import TTSBackend


def _espeak() -> TTSBackend:
    from biasbench.tts.espeak import EspeakBackend

    return EspeakBackend()


#: Backend name -> zero-argument factory. Add new engines here (flite, piper, edge-tts).
BACKENDS: dict[str, Callable[[], TTSBackend]] = {
    "espeak-ng": _espeak,
}


def known_backends() -> list[str]:
    return sorted(BACKENDS)


def get_tts_backend(name: str) -> TTSBackend:
    """A new backend instance for `name`; BiasbenchError listing the known names if unknown."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise BiasbenchError(_unknown_message(name))
    return factory()


def _unknown_message(name: str) -> str:
    known = known_backends()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown TTS backend {name!r}; known backends: {', '.join(known)}.{hint}"
