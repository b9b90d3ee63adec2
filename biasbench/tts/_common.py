"""Small pieces every TTS backend needs: parameter checks, text checks, running a program.

Each backend declares its params as a table of `Param`s; `check_params` refuses anything
else and names the offending key, so a typo in a pool YAML ("lenght_scale") fails loudly
instead of silently making a different voice than the pool describes.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np

from biasbench.errors import BiasbenchError

#: Below this peak amplitude a clip is treated as silent.
SILENCE_PEAK = 1e-4

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")


@dataclass(frozen=True)
class Param:
    """One accepted voice parameter: its type, and optionally a range or a set of choices."""

    type: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    help: str = ""

    def type_name(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " or ".join("number" if t is float else t.__name__ for t in types)


def check_params(engine: str, params: Any, spec: dict[str, Param], required=()) -> None:
    """Raise BiasbenchError naming the first bad key (unknown, missing, wrong type, range)."""
    if not isinstance(params, dict):
        raise BiasbenchError(f"{engine} params must be a dict, got {type(params).__name__}")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(spec), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise BiasbenchError(
            f"{engine} param '{unknown[0]}' is not known{hint}; known params: {', '.join(spec)}"
        )
    for key in required:
        if key not in params:
            raise BiasbenchError(f"{engine} params need '{key}' ({spec[key].help or 'required'})")
    for key, value in params.items():
        check_value(engine, key, value, spec[key])


def check_value(engine: str, key: str, value: Any, param: Param) -> None:
    types = param.type if isinstance(param.type, tuple) else (param.type,)
    if float in types and int not in types:
        types = types + (int,)  # `speed: 1` in YAML means 1.0
    # bool is an int subclass; `speed: true` in YAML is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, types):
        raise BiasbenchError(
            f"{engine} param '{key}' must be {param.type_name()}, got {value!r}"
        )
    if param.choices is not None and value not in param.choices:
        close = difflib.get_close_matches(str(value), param.choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise BiasbenchError(
            f"{engine} param '{key}' must be one of {', '.join(param.choices)}; "
            f"got {value!r}{hint}"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise BiasbenchError(f"{engine} param '{key}' must be a finite number, got {value!r}")
        if param.low is not None and param.high is not None and not param.low <= value <= param.high:
            raise BiasbenchError(
                f"{engine} param '{key}' must be {param.low:g}..{param.high:g}, got {value!r}"
            )


def check_name(engine: str, key: str, value: str) -> None:
    """A voice/file name that must never be read as an option or a path."""
    if not _NAME_RE.match(value):
        raise BiasbenchError(
            f"{engine} param '{key}' must be a plain name (letters, digits, '-', '_', '.'), "
            f"got {value!r}"
        )


def excerpt(text: str, limit: int = 40) -> str:
    """The start of `text` for error messages, on one line."""
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def check_text(engine: str, text: Any) -> None:
    if not isinstance(text, str) or not text.strip():
        raise BiasbenchError(f"{engine} needs non-empty text, got {text!r}")
    if "\x00" in text:
        # C engines stop reading at a NUL byte: the clip would silently lose text.
        raise BiasbenchError(f"text contains a NUL character: {excerpt(text)}")


def require_binary(binary: str, install_hint: str) -> str:
    """Path of `binary`, looked up on every call so a changed PATH is honoured."""
    path = shutil.which(binary)
    if path is None:
        raise BiasbenchError(f"{binary} was not found on PATH; {install_hint}.")
    return path


def run_program(argv: list[str], what: str, timeout: float, stdin: bytes | None = None) -> bytes:
    """Run `argv` (never through a shell); return stdout, or raise BiasbenchError with stderr."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BiasbenchError(f"{what} timed out after {timeout:g}s") from None
    except OSError as err:
        raise BiasbenchError(f"{what} could not be started: {err}") from None
    if proc.returncode != 0:
        detail = proc.stderr.decode("utf-8", "replace").strip() or "no output"
        raise BiasbenchError(f"{what} failed (exit {proc.returncode}): {detail[-500:]}")
    return proc.stdout


def check_not_silent(engine: str, audio: np.ndarray, voice: str, text: str) -> None:
    if audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise BiasbenchError(
            f"{engine} produced no audio for voice {voice!r}, text {excerpt(text)}"
        )


def settings_from_env(cls, env: dict[str, str], overrides: dict):
    """`cls` (a settings dataclass) from the environment variables `env` names per field, then
    `overrides` (None means: not given); unset or empty values keep the field's default."""
    import os

    values = {field: os.environ.get(var, "").strip() for field, var in env.items()}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**{k: v for k, v in values.items() if v})


def pick_device(requested: str, torch) -> str:
    """`requested` when set, else cuda when available, else cpu."""
    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


class BatchedCloner:
    """What the batched cloning engines (f5-tts, maskgct) share: synthesize_batch is their one
    code path, so one clip is a batch of one; and their default batch size (`GPU_BATCH` on a GPU).

    On a CPU the default is one: a single clip already keeps every core busy, and batches
    measured 0.4-1.0x the clips/s of one at a time (benchmarks/bench_cloning.py). On a GPU a
    batch fills the device that one clip leaves idle; GPU_BATCH has not been measured on one
    yet: run the benchmark there and set BIASBENCH_TTS_BATCH_SIZE."""

    GPU_BATCH = 8

    def default_batch_size(self) -> int:
        import torch  # not the engine's own import: without the engine, its clips fail one by one

        return self.GPU_BATCH if "cuda" in pick_device(self.settings.device, torch) else 1

    def synthesize(self, text: str, params: dict):
        made = self.synthesize_batch([(text, params)])[0]
        if isinstance(made, Exception):
            raise made
        return made
