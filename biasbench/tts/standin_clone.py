"""`backend: standin-clone`: a STAND-IN for a zero-shot cloning engine, for tests and CPU-only
pipeline checks. It is not a cloning engine and its clones are not the reference speaker.

F5-TTS and MaskGCT need a GPU and downloaded checkpoints. So that the chain build -> clone ->
QC -> run -> report can run offline, this backend takes the same inputs as they do (a reference
clip and its transcript, attached by biasbench.tts.reference) and makes a deterministic
imitation: espeak-ng speaks the text with a male or female variant (reference median pitch below
or above 165 Hz), shifted with sox to the reference's median pitch. Its clones share the
reference's pitch, not its timbre: their clone fidelity (biasbench.voices.speaker) is low, as it
should be, and a pool made with it must never be used for a study. Its voices' results say
`standin-clone` in every manifest and export.
"""

from __future__ import annotations

import io
import math

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts._common import check_text, require_binary, run_program
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.pitch import median_pitch_hz
from biasbench.tts.reference import REFERENCE_PARAMS, require_reference

NAME = "standin-clone"
FEMALE_ABOVE_HZ = 165.0
VARIANTS = {"male": "m3", "female": "f2"}
VERSION = "standin-clone-1"


class StandinCloneBackend:
    name = NAME

    def __init__(self):
        from biasbench.tts.espeak import EspeakBackend

        self._espeak = EspeakBackend()
        self._pitch: dict[str, float] = {}  # reference sha256 -> median pitch

    def version(self) -> str:
        require_binary("sox", "install sox (apt-get install sox)")
        return f"{VERSION} ({self._espeak.version()})"

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        check_text(NAME, text)
        unknown = set(params) - set(REFERENCE_PARAMS)
        if unknown:
            raise BiasbenchError(f"{NAME} takes no voice params besides the reference clip; got {sorted(unknown)}")
        require_reference(NAME, text, params)
        target = self._reference_pitch(params)
        variant = VARIANTS["female" if target > FEMALE_ABOVE_HZ else "male"]
        audio, rate = self._espeak.synthesize(text, {"voice": "en-us", "variant": variant})
        own = median_pitch_hz(audio, rate)
        if not (math.isfinite(own) and math.isfinite(target)):
            return audio, rate
        return self._shift(audio, rate, 1200 * math.log2(target / own)), SAMPLE_RATE

    def _reference_pitch(self, params: dict) -> float:
        key = params["reference_sha256"]
        if key not in self._pitch:
            try:
                audio, rate = sf.read(params["reference_audio"], dtype="float32", always_2d=True)
            except (RuntimeError, OSError) as exc:
                raise BiasbenchError(f"{NAME}: cannot read reference {params['reference_audio']}: {exc}") from None
            self._pitch[key] = median_pitch_hz(audio.mean(axis=1), rate)
        return self._pitch[key]

    @staticmethod
    def _shift(audio: np.ndarray, rate: int, cents: float) -> np.ndarray:
        buffer = io.BytesIO()
        sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
        sox = require_binary("sox", "install sox (apt-get install sox)")
        out = run_program([sox, "-q", "-t", "wav", "-", "-t", "wav", "-r", str(SAMPLE_RATE), "-", "pitch",
                           f"{cents:.0f}"], "sox pitch shift", 30, stdin=buffer.getvalue())
        shifted, _ = sf.read(io.BytesIO(out), dtype="float32")
        return np.ascontiguousarray(shifted, dtype=np.float32)
