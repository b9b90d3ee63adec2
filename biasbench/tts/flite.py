"""CMU Flite as a TTS backend: small statistical-parametric voices, offline, as a subprocess.

Built-in voices (Debian `flite`): slt (US English, female), rms (US English, male), kal and
kal16 (the same US male speaker as a diphone voice at 8 and 16 kHz), awb (Scottish English,
male). slt, rms and awb are CMU ARCTIC speakers; their ethnicity is not documented, so any
ethnicity label a pool gives them is a proxy.

Params: `voice` (required), `duration_stretch` (>1 is slower), `f0_mean` (target mean
pitch in Hz; rms ignores it, so it is refused there), `f0_stddev` (pitch range in Hz).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts import _common
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.audio import to_harness_audio

BINARY = "flite"
INSTALL_HINT = "install it with `sudo apt-get install flite` (Debian/Ubuntu)"
TIMEOUT_S = 120

VOICES = ("slt", "rms", "kal", "kal16", "awb")
#: Voices whose pitch does not follow int_f0_target_mean (checked by measurement: rms's
#: median f0 stays at ~101 Hz for any target), so `f0_mean` would silently do nothing.
NO_F0_CONTROL = frozenset({"rms"})

PARAMS: dict[str, Param] = {
    "voice": Param(str, choices=VOICES, help="one of " + ", ".join(VOICES)),
    "duration_stretch": Param(float, 0.5, 2.0, help="> 1 speaks slower"),
    "f0_mean": Param((int, float), 50, 400, help="target mean pitch in Hz"),
    "f0_stddev": Param((int, float), 0, 100, help="target pitch standard deviation in Hz"),
}
#: flite `--setf` feature for each numeric param.
FEATURES = {
    "duration_stretch": "duration_stretch",
    "f0_mean": "int_f0_target_mean",
    "f0_stddev": "int_f0_target_stddev",
}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params("flite", params, PARAMS, required=("voice",))
    if params["voice"] in NO_F0_CONTROL:
        for key in ("f0_mean", "f0_stddev"):
            if key in params:
                raise BiasbenchError(
                    f"flite param '{key}' has no effect on voice {params['voice']!r}; "
                    "use duration_stretch, or another voice"
                )


class FliteBackend:
    """`TTSBackend` running the flite command-line program."""

    name = "flite"

    def __init__(self) -> None:
        self._version: str | None = None

    def version(self) -> str:
        """E.g. "2.2-current": part of the cache key."""
        if self._version is None:
            # `flite --version` prints its banner and exits 1, so read the text, not the code.
            try:
                proc = subprocess.run(
                    [self._binary(), "--version"], capture_output=True, timeout=TIMEOUT_S
                )
            except (OSError, subprocess.TimeoutExpired) as err:
                raise BiasbenchError(f"`flite --version` failed: {err}") from None
            text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
            match = re.search(r"flite-(\S+)", text)
            if match is None:
                raise BiasbenchError(f"`flite --version` printed no version: {text.strip()!r}")
            self._version = match.group(1)
        return self._version

    def voices(self) -> list[str]:
        """Voices compiled into this flite (`flite -lv`)."""
        out = _common.run_program([self._binary(), "-lv"], "flite -lv", TIMEOUT_S)
        return out.decode("utf-8", "replace").split(":", 1)[-1].split()

    def synthesize(self, text: str, params: dict) -> tuple[np.ndarray, int]:
        _common.check_text("flite", text)
        check_params(params)
        binary = self._binary()
        with tempfile.TemporaryDirectory(prefix="biasbench-flite-") as tmp:
            # Text goes through a file, never the command line: no length limit, no option
            # injection from text starting with '-'.
            text_path = Path(tmp) / "text.txt"
            text_path.write_text(text, encoding="utf-8")
            wav_path = Path(tmp) / "out.wav"
            argv = [binary, "-voice", params["voice"]]
            for key, feature in FEATURES.items():
                if key in params:
                    argv += ["--setf", f"{feature}={float(params[key]):g}"]
            argv += ["-f", str(text_path), "-o", str(wav_path)]
            what = f"flite on voice {params['voice']!r}, text {_common.excerpt(text)}"
            _common.run_program(argv, what, TIMEOUT_S)
            if not wav_path.is_file():
                raise BiasbenchError(f"{what} wrote no audio")
            audio, rate = sf.read(wav_path, dtype="float32")
        audio = to_harness_audio(audio, rate)
        _common.check_not_silent("flite", audio, params["voice"], text)
        return audio, SAMPLE_RATE

    @staticmethod
    def _binary() -> str:
        return _common.require_binary(BINARY, INSTALL_HINT)

