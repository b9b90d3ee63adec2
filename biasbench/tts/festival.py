"""Festival as a TTS backend, through its `text2wave` script, offline.

Voices (Debian, main): `cmu_us_slt_arctic_hts` (festvox-us-slt-hts: the CMU ARCTIC slt
speaker, US English, female, an HTS statistical voice) and `kal_diphone` (festvox-kallpc16k:
a US English male diphone voice). `rab_diphone` (British male) is in Debian contrib.

Safety: the text is written to a file that text2wave reads in plain-text mode; it never
appears on a command line, in a shell, or inside a Scheme expression. The only Scheme that
is evaluated is built here from a voice name checked against a fixed list and numbers
formatted by Python, so no pool or question can inject code.

Params: `voice` (required); `duration_stretch` (> 1 slower, relative to the voice's own
default); `f0_mean` (target mean pitch in Hz, diphone voices only: the HTS voice has its
own pitch model and ignores it, so it is refused there).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts import _common
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import to_harness_audio

BINARY = "text2wave"
APT_PACKAGES = "festival festvox-kallpc16k festvox-us-slt-hts"
INSTALL_HINT = f"install it with `sudo apt-get install {APT_PACKAGES}` (Debian/Ubuntu)"
TIMEOUT_S = 180

#: Known voices -> (Debian package that provides it, synthesis method).
VOICES: dict[str, tuple[str, str]] = {
    "cmu_us_slt_arctic_hts": ("festvox-us-slt-hts", "hts"),
    "kal_diphone": ("festvox-kallpc16k", "diphone"),
    "rab_diphone": ("festvox-rablpc16k (Debian contrib)", "diphone"),
    "ked_diphone": ("festvox-kdlpc16k", "diphone"),
}

PARAMS: dict[str, Param] = {
    "voice": Param(str, choices=tuple(VOICES), help="one of " + ", ".join(VOICES)),
    "duration_stretch": Param(float, 0.5, 2.0, help="> 1 speaks slower"),
    "f0_mean": Param((int, float), 50, 300, help="target mean pitch in Hz (diphone voices)"),
}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params("festival", params, PARAMS, required=("voice",))
    if "f0_mean" in params and VOICES[params["voice"]][1] != "diphone":
        raise BiasbenchError(
            f"festival param 'f0_mean' has no effect on voice {params['voice']!r} "
            "(an HTS voice with its own pitch model); use it with a diphone voice"
        )


def scheme_setup(params: dict) -> list[str]:
    """The `-eval` expressions for these (already checked) params, in order.

    Everything interpolated is a checked voice name or a number printed by Python.
    """
    voice = params["voice"]
    if voice not in VOICES:  # defence in depth: check_params has refused it already
        raise BiasbenchError(f"festival param 'voice': {voice!r} is not a known voice")
    exprs = [f"(voice_{voice})"]
    stretch = float(params.get("duration_stretch", 1.0))
    if VOICES[voice][1] == "hts":
        if stretch != 1.0:
            # hts_engine's -r is a speaking rate: the inverse of a duration stretch.
            exprs.append(
                "(set! hts_engine_params (append hts_engine_params "
                f"(list (list \"-r\" {1.0 / stretch:.6f}))))"
            )
    else:
        if stretch != 1.0:
            exprs.append(
                "(Parameter.set 'Duration_Stretch "
                f"(* (Parameter.get 'Duration_Stretch) {stretch:.6f}))"
            )
        if "f0_mean" in params:
            exprs.append(
                f"(set! int_lr_params (cons '(target_f0_mean {float(params['f0_mean']):.3f}) "
                "int_lr_params))"
            )
    return exprs


class FestivalBackend:
    """`TTSBackend` running Festival's text2wave."""

    name = "festival"

    def __init__(self) -> None:
        self._version: str | None = None
        self._installed: frozenset[str] | None = None

    def version(self) -> str:
        """E.g. "2.5.0": part of the cache key."""
        if self._version is None:
            festival = _common.require_binary("festival", INSTALL_HINT)
            self._binary()
            out = _common.run_program([festival, "--version"], "festival --version", TIMEOUT_S)
            text = out.decode("utf-8", "replace")
            match = re.search(r"System:\s*([0-9][^:\s]*)", text)
            self._version = match.group(1) if match else text.strip()
        return self._version

    def installed_voices(self) -> frozenset[str]:
        """Voices Festival can find (`(voice.list)`), asked once per instance."""
        if self._installed is None:
            festival = _common.require_binary("festival", INSTALL_HINT)
            out = _common.run_program(
                [festival, "-b", "(print (voice.list))"], "festival (voice.list)", TIMEOUT_S
            )
            names = re.findall(r"[A-Za-z0-9_]+", out.decode("utf-8", "replace"))
            self._installed = frozenset(names)
        return self._installed

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        _common.check_text("festival", text)
        check_params(params)
        binary = self._binary()
        voice = params["voice"]
        if voice not in self.installed_voices():
            package = VOICES[voice][0]
            raise BiasbenchError(
                f"festival voice {voice!r} is not installed; install it with "
                f"`sudo apt-get install {package.split()[0]}`"
            )
        with tempfile.TemporaryDirectory(prefix="biasbench-festival-") as tmp:
            # No file extension: text2wave picks a text mode (e.g. SABLE markup) from the
            # extension, and this text must be read as plain text.
            text_path = Path(tmp) / "utterance"
            text_path.write_text(text, encoding="utf-8")
            wav_path = Path(tmp) / "out.wav"
            argv = [binary, "-o", str(wav_path)]
            for expr in scheme_setup(params):
                argv += ["-eval", expr]
            argv.append(str(text_path))
            what = f"festival on voice {voice!r}, text {_common.excerpt(text)}"
            _common.run_program(argv, what, TIMEOUT_S)
            if not wav_path.is_file() or wav_path.stat().st_size == 0:
                raise BiasbenchError(f"{what} wrote no audio")
            audio, rate = sf.read(wav_path, dtype="float32")
        audio = to_harness_audio(audio, rate)
        _common.check_not_silent("festival", audio, voice, text)
        return audio, SAMPLE_RATE

    @staticmethod
    def _binary() -> str:
        return _common.require_binary(BINARY, INSTALL_HINT)
