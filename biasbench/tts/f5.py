"""F5-TTS (zero-shot voice cloning: a flow-matching DiT plus the Vocos vocoder) as a TTS backend.

Each voice is a reference recording of a real, consenting speaker and its transcript
(`reference_clip`, `reference_text` in the pool YAML: voices/cloning-template.yaml); the
pool loader hands them over as params (biasbench.tts.reference), including the sha256 of
the clip's bytes, so a re-recorded clip gets new cache keys. Inference is F5-TTS's own
code (f5_tts.infer.utils_infer: load_model, load_vocoder, preprocess_ref_audio_text,
chunk_text, infer_batch_process). Install with `pip install 'biasbench[cloning]'`; a CUDA
GPU is advised (CPU works, slowly). The official weights are CC-BY-NC 4.0.

The engine is chosen per machine, not per voice, by environment variables (all optional):

  BIASBENCH_F5_MODEL       a config shipped with f5-tts (default F5TTS_v1_Base) or the path
                           of a config YAML of the same shape (model.backbone, model.arch,
                           model.mel_spec)
  BIASBENCH_F5_CHECKPOINT  `hf://owner/repo/file` or a local .safetensors/.pt file (default:
                           the official checkpoint of the model, downloaded once)
  BIASBENCH_F5_VOCAB       vocab.txt of the checkpoint (default: the one f5-tts ships)
  BIASBENCH_F5_VOCODER     a local Vocos directory (config.yaml + pytorch_model.bin) or the
                           hub id charactr/vocos-mel-24khz (default)
  BIASBENCH_F5_DEVICE      cuda, cuda:1, cpu ... (default cuda when available, else cpu)

version() names the f5-tts release, the model, checkpoint, vocab and vocoder (hub ids, or
the sha256 of local files) and the device precision, so changing any of them re-synthesises.

Clips are cloned in batches (BIASBENCH_TTS_BATCH_SIZE clips per forward pass; default 8 on a
GPU, 1 on a CPU): padded, with the padding masked in attention too, so a clip comes out as it
does alone, to float rounding, and the batch size is not part of the cache key.

Params (besides the reference ones): `seed` (default 0; F5 samples its starting noise, and
the same seed gives the same clip), `speed`, `nfe_step` (flow steps, default 32),
`cfg_strength` (default 2), `sway_sampling_coef` (default -1).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.paths import install_extra
from biasbench.tts import _common
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.reference import precheck_requests
from biasbench.tts.audio import to_harness_audio
from biasbench.tts.weights import files_identity, sha256_of

ENGINE = "f5-tts"
INSTALL_HINT = (
    f"install the cloning extra with `{install_extra('cloning')}` on a machine whose "
    "torch has a matching torchaudio (a CUDA GPU machine; see voices/README.md)"
)

DEFAULT_MODEL = "F5TTS_v1_Base"
DEFAULT_VOCODER = "charactr/vocos-mel-24khz"
#: Official checkpoints of the shipped configs (as f5_tts.api.F5TTS picks them).
OFFICIAL_CHECKPOINTS = {
    "F5TTS_v1_Base": "hf://SWivid/F5-TTS/F5TTS_v1_Base/model_1250000.safetensors",
    "F5TTS_Base": "hf://SWivid/F5-TTS/F5TTS_Base/model_1200000.safetensors",
    "E2TTS_Base": "hf://SWivid/E2-TTS/E2TTS_Base/model_1200000.safetensors",
}
ENV = {
    "model": "BIASBENCH_F5_MODEL",
    "checkpoint": "BIASBENCH_F5_CHECKPOINT",
    "vocab": "BIASBENCH_F5_VOCAB",
    "vocoder": "BIASBENCH_F5_VOCODER",
    "device": "BIASBENCH_F5_DEVICE",
}

PARAMS: dict[str, Param] = {
    # Set by the pool loader from the voice's reference_clip / reference_text.
    "reference_audio": Param(str, help="absolute path of the reference clip"),
    "reference_text": Param(str, help="transcript of the reference clip"),
    "reference_sha256": Param(str, help="sha256 of the reference clip's bytes"),
    "reference_error": Param(str, help="why the reference cannot be used"),
    # Voice params a pool may set.
    "seed": Param(int, 0, 2**31 - 1, help="noise seed (default 0)"),
    "speed": Param(float, 0.5, 2.0, help="> 1 speaks faster"),
    "nfe_step": Param(int, 4, 128, help="flow-matching steps (default 32)"),
    "cfg_strength": Param(float, 0.0, 10.0, help="classifier-free guidance (default 2)"),
    "sway_sampling_coef": Param(float, -1.0, 1.0, help="sway sampling (default -1)"),
}
#: F5-TTS's inference defaults (f5_tts/infer/utils_infer.py).
DEFAULTS = {"seed": 0, "speed": 1.0, "nfe_step": 32, "cfg_strength": 2.0, "sway_sampling_coef": -1.0}
CROSS_FADE_SECONDS = 0.15

_import_lock = threading.Lock()
_load_lock = threading.Lock()
# One synthesis at a time: the model is shared, and seeding is process-global.
_infer_lock = threading.Lock()
_ref_lock = threading.Lock()
_modules: dict | None = None
_engines: dict[tuple, "_Engine"] = {}
_references: dict[tuple[str, str, str], tuple[np.ndarray, int, str]] = {}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params(ENGINE, params, PARAMS)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Which model this machine runs; from the BIASBENCH_F5_* variables unless given."""

    model: str = DEFAULT_MODEL
    checkpoint: str = ""
    vocab: str = ""
    vocoder: str = DEFAULT_VOCODER
    device: str = ""

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        return _common.settings_from_env(cls, ENV, overrides)

    def config_path(self) -> Path:
        if self.model.endswith((".yaml", ".yml")):
            path = Path(self.model).expanduser()
            if not path.is_file():
                raise BiasbenchError(f"{ENGINE} model config {path} ({ENV['model']}) not found")
            return path
        from importlib.resources import files

        path = Path(str(files("f5_tts").joinpath(f"configs/{self.model}.yaml")))
        if not path.is_file():
            shipped = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise BiasbenchError(f"{ENGINE} model {self.model!r} ({ENV['model']}) is not a config shipped "
                                 f"with f5-tts ({', '.join(shipped)}) nor a .yaml path")
        return path

    def checkpoint_ref(self) -> str:
        if self.checkpoint:
            return self.checkpoint
        if self.model in OFFICIAL_CHECKPOINTS:
            return OFFICIAL_CHECKPOINTS[self.model]
        raise BiasbenchError(f"{ENGINE} model {self.model!r} has no official checkpoint: "
                             f"set {ENV['checkpoint']} to its .safetensors/.pt file")


def _identity(ref: str, what: str) -> str:
    """A hub reference as written; a local file or directory by the sha256 of its bytes."""
    if not ref or ref.startswith("hf://") or not Path(ref).expanduser().exists():
        return ref or "default"
    try:
        return files_identity(Path(ref).expanduser())
    except BiasbenchError as err:
        raise BiasbenchError(f"{ENGINE} {what}: {err}") from None


# --------------------------------------------------------------------------- engine


def _import_f5() -> dict:
    """F5-TTS's modules, imported once; BiasbenchError with the install command otherwise."""
    global _modules
    with _import_lock:
        if _modules is None:
            try:
                # f5-tts prints and warns on import (pydub looking for ffmpeg); keep stdout clean.
                with contextlib.redirect_stdout(io.StringIO()):
                    import torch
                    import torchaudio
                    from f5_tts.infer import utils_infer
                    from f5_tts.model import utils as model_utils
            except ImportError as err:
                missing = getattr(err, "name", None) or str(err)
                raise BiasbenchError(f"the {ENGINE} engine (PyPI f5-tts) is not installed or cannot be "
                                     f"imported ({missing}); {INSTALL_HINT}") from None
            except Exception as err:  # noqa: BLE001 - e.g. a torchaudio built for another torch
                raise BiasbenchError(f"the {ENGINE} engine (PyPI f5-tts) cannot be imported here "
                                     f"({type(err).__name__}: {str(err)[:300]}); {INSTALL_HINT}") from None
            _modules = {"torch": torch, "torchaudio": torchaudio, "utils_infer": utils_infer,
                        "model_utils": model_utils}
        return _modules


def _precision(device: str, torch) -> str:
    """The dtype f5_tts.infer.utils_infer.load_checkpoint picks for a vocos model on `device`."""
    if "cuda" in device and torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(device)
        if properties.major >= 7 and not torch.cuda.get_device_name(device).endswith("[ZLUDA]"):
            return "float16"
    return "float32"


@dataclass
class _Engine:
    model: object  # f5_tts.model.CFM, EMA weights
    vocoder: object  # vocos.Vocos
    device: str
    sample_rate: int
    hop_length: int


def _load(settings: Settings) -> _Engine:
    """The model and vocoder for `settings`, loaded once per process."""
    modules = _import_f5()
    torch, utils_infer = modules["torch"], modules["utils_infer"]
    device = _common.pick_device(settings.device, torch)
    key = (settings, device)
    with _load_lock:
        if key not in _engines:
            _engines[key] = _load_engine(settings, device, torch, utils_infer)
        return _engines[key]


def _load_engine(settings: Settings, device: str, torch, utils_infer) -> _Engine:
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    config_path = settings.config_path()
    try:
        config = OmegaConf.load(str(config_path)).model
        backbone, arch, mel = config.backbone, OmegaConf.to_container(config.arch), config.mel_spec
    except Exception as err:  # noqa: BLE001 - omegaconf raises many kinds
        raise BiasbenchError(f"{ENGINE} model config {config_path} is not an F5-TTS config "
                             f"(model.backbone, model.arch, model.mel_spec): {err}") from None
    if mel.get("mel_spec_type", "vocos") != "vocos":
        raise BiasbenchError(f"{ENGINE} model config {config_path}: only the vocos vocoder is supported "
                             f"(BigVGAN needs F5-TTS's git submodule), got {mel.get('mel_spec_type')!r}")
    # load_model builds the mel front end from utils_infer's module constants, not the config.
    expected = {"target_sample_rate": utils_infer.target_sample_rate, "n_mel_channels": utils_infer.n_mel_channels,
                "hop_length": utils_infer.hop_length, "win_length": utils_infer.win_length, "n_fft": utils_infer.n_fft}
    for name, value in expected.items():
        if name in mel and int(mel[name]) != int(value):
            raise BiasbenchError(f"{ENGINE} model config {config_path}: model.mel_spec.{name} is "
                                 f"{mel[name]}, F5-TTS inference supports {value}")
    checkpoint = _checkpoint_file(settings.checkpoint_ref())
    vocab = settings.vocab
    if vocab and not Path(vocab).expanduser().is_file():
        raise BiasbenchError(f"{ENGINE} vocab file {vocab} ({ENV['vocab']}) not found")
    local_vocoder = settings.vocoder != DEFAULT_VOCODER
    if local_vocoder and not (Path(settings.vocoder) / "config.yaml").is_file():
        raise BiasbenchError(f"{ENGINE} vocoder {settings.vocoder} ({ENV['vocoder']}) must be "
                             f"{DEFAULT_VOCODER} or a directory with config.yaml and pytorch_model.bin")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # both loaders print paths
            vocoder = utils_infer.load_vocoder("vocos", local_vocoder, settings.vocoder, device)
            model = utils_infer.load_model(get_class(f"f5_tts.model.{backbone}"), arch, str(checkpoint),
                                           mel_spec_type="vocos", vocab_file=str(vocab or ""),
                                           ode_method="euler", use_ema=True, device=device)
    except Exception as err:  # noqa: BLE001 - hub, torch and state-dict errors alike
        raise BiasbenchError(
            f"{ENGINE} could not load model {settings.model} (checkpoint {checkpoint}, vocoder "
            f"{settings.vocoder}) on {device}: {type(err).__name__}: {str(err)[:400]}. Without hub access, "
            f"download them first and point {ENV['checkpoint']} / {ENV['vocoder']} at the local files."
        ) from None
    _mask_padding_in_attention(model)
    return _Engine(model, vocoder, device, int(utils_infer.target_sample_rate), int(utils_infer.hop_length))


def _mask_padding_in_attention(model) -> None:
    """Let attention ignore a batch's padding, as every other layer of the DiT already does.

    F5TTS_v1_Base ships with attn_mask_enabled: False (trained one length per batch), so in a
    batch of clips of different lengths a short clip would attend to the padding and come
    out different from the same clip made alone. One clip at a time passes no mask, so
    this changes nothing there."""
    for module in model.modules():
        processor = getattr(module, "processor", None)
        if hasattr(processor, "attn_mask_enabled"):
            processor.attn_mask_enabled = True


def _checkpoint_file(ref: str) -> Path:
    if ref.startswith("hf://"):
        try:
            from cached_path import cached_path

            return Path(cached_path(ref))
        except Exception as err:  # noqa: BLE001 - network and hub errors
            raise BiasbenchError(
                f"{ENGINE} could not download checkpoint {ref}: {type(err).__name__}: {str(err)[:300]}. "
                f"Without hub access, copy the file here and set {ENV['checkpoint']} to its path."
            ) from None
    path = Path(ref).expanduser()
    if not path.is_file():
        raise BiasbenchError(f"{ENGINE} checkpoint {path} ({ENV['checkpoint']}) not found")
    return path


# --------------------------------------------------------------------------- reference clips


def _reference(params: dict, utils_infer) -> tuple[np.ndarray, int, str]:
    """(mono audio, rate, transcript) of the voice's reference, prepared by F5-TTS once.

    preprocess_ref_audio_text cuts the clip to ~12 s at a silence, trims the edges and ends
    the transcript with punctuation. It reads through pydub, which needs ffmpeg for
    anything but WAV, so the clip (any format soundfile reads) is handed over as a WAV."""
    path, text = params["reference_audio"], params.get("reference_text", "")
    try:
        current = sha256_of(Path(path))
    except OSError as err:
        raise BiasbenchError(f"reference clip {path} cannot be read: {err.strerror or err}") from None
    if current != params["reference_sha256"]:
        raise BiasbenchError(f"reference clip {path} changed after the pool was loaded "
                             "(its sha256 differs); load the pool again")
    key = (current, text, path)
    with _ref_lock:
        if key not in _references:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
            with tempfile.TemporaryDirectory(prefix="biasbench-f5-") as tmp:
                wav = Path(tmp) / "reference.wav"
                sf.write(str(wav), audio.mean(axis=1), rate, subtype="PCM_16")
                notes: list[str] = []
                with contextlib.redirect_stdout(io.StringIO()):
                    prepared, prepared_text = utils_infer.preprocess_ref_audio_text(str(wav), text, show_info=notes.append)
            try:
                ref_audio, ref_rate = sf.read(prepared, dtype="float32", always_2d=True)
            finally:
                # F5 keeps its temp file and remembers it by content hash; drop both.
                for digest, cached in list(utils_infer._ref_audio_cache.items()):
                    if cached == prepared:
                        utils_infer._ref_audio_cache.pop(digest, None)
                with contextlib.suppress(OSError):
                    os.unlink(prepared)
            _references[key] = (ref_audio.mean(axis=1), int(ref_rate), prepared_text)
        return _references[key]


def _cross_fade(waves: list[np.ndarray], rate: int, seconds: float = CROSS_FADE_SECONDS) -> np.ndarray:
    """Join chunk waves with linear cross-fades, as infer_batch_process does."""
    final = waves[0]
    for wave in waves[1:]:
        n = min(int(seconds * rate), len(final), len(wave))
        if n <= 0:
            final = np.concatenate([final, wave])
            continue
        faded = final[-n:] * np.linspace(1, 0, n) + wave[:n] * np.linspace(0, 1, n)
        final = np.concatenate([final[:-n], faded, wave[n:]])
    return final


@dataclass
class _Piece:
    """One chunk of one clip, ready for the model."""

    clip: int  # index of the clip in its batch
    chunk: int  # index of the chunk in its clip
    cond: object  # the reference's mel frames (n, mels), a tensor on the engine's device
    ref_frames: int  # the reference's length in hops: where the new speech starts
    tokens: list[str]  # reference transcript + chunk, as F5 tokenises them
    frames: int  # reference + chunk length to generate, in hops
    rescale: float | None  # reference rms / F5's target rms, when the reference was quieter
    seed: int
    sampling: tuple  # (nfe_step, cfg_strength, sway_sampling_coef): shared by one forward pass


def _vocode(piece: _Piece, mel, engine: _Engine) -> np.ndarray:
    """The waveform of the new speech in `mel` (the model's output for `piece`, padded)."""
    # CFM.sample lengthens a clip to at least its tokens and reference plus one frame.
    frames = max(piece.frames, max(len(piece.tokens), piece.cond.shape[0]) + 1)
    wave = engine.vocoder.decode(mel[piece.ref_frames:frames].T.unsqueeze(0))
    if piece.rescale is not None:
        wave = wave * piece.rescale
    return np.asarray(wave.squeeze().cpu().numpy(), np.float32).ravel()


# --------------------------------------------------------------------------- backend


class F5Backend(_common.BatchedCloner):
    """`TTSBackend` for F5-TTS zero-shot cloning; the model is shared by all instances."""

    name = ENGINE

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()

    def version(self) -> str:
        """f5-tts release, model, checkpoint, vocab, vocoder and precision (without loading)."""
        torch = _import_f5()["torch"]
        try:
            engine = package_version("f5-tts")
        except PackageNotFoundError:
            engine = "?"
        config = self.settings.config_path()
        model = self.settings.model if not self.settings.model.endswith((".yaml", ".yml")) else _identity(str(config), "model config")
        device = _common.pick_device(self.settings.device, torch)
        return (f"f5-tts {engine}; model {model}; checkpoint {_identity(self.settings.checkpoint_ref(), 'checkpoint')}; "
                f"vocab {_identity(self.settings.vocab, 'vocab')}; vocoder {_identity(self.settings.vocoder, 'vocoder')}; "
                f"{_precision(device, torch)}")

    def synthesize_batch(self, requests: list[tuple[str, dict]]) -> list[tuple[np.ndarray, int] | Exception]:
        """Clone several clips with one flow-matching pass per chunk position.

        Each clip is cut into chunks as F5-TTS does (infer_process) and chunk k of every clip
        is seeded with seed + k, so the chunks that share a seed and sampling settings go
        through the model together. The model pads them to the longest and masks the padding
        (attention included), so a clip comes out as it would alone."""
        results = precheck_requests(ENGINE, requests, check_params)
        if all(results):
            return results
        modules = _import_f5()
        engine = _load(self.settings)
        pieces: list[_Piece] = []
        for index, (text, params) in enumerate(requests):
            if results[index] is None:
                try:
                    pieces += self._pieces(index, text, params, engine, modules)
                except Exception as err:  # noqa: BLE001 - one bad clip must not fail the batch
                    results[index] = err
        waves = self._generate(pieces, engine, modules["torch"], results)
        for index, (text, params) in enumerate(requests):
            if results[index] is None:
                results[index] = self._assemble(waves, index, text, params, engine)
        return results

    def _pieces(self, index: int, text: str, params: dict, engine: _Engine, modules) -> list[_Piece]:
        """The chunks of one clip, each with its reference mel, tokens, length and seed:
        infer_process's chunking and infer_batch_process's preparation. (infer_process is
        not called: it reads the reference with torchaudio.load, which needs ffmpeg through
        torchcodec in torchaudio >= 2.9.)"""
        torch, utils_infer, model_utils = modules["torch"], modules["utils_infer"], modules["model_utils"]
        self._check_speakable(text, engine, model_utils)
        ref_audio, ref_rate, ref_text = _reference(params, utils_infer)
        settings = {**DEFAULTS, **{k: params[k] for k in DEFAULTS if k in params}}
        ref_seconds = len(ref_audio) / ref_rate
        max_chars = int(len(ref_text.encode("utf-8")) / ref_seconds * (22 - ref_seconds) * settings["speed"])
        chunks = utils_infer.chunk_text(text, max_chars=max(max_chars, 1))
        if not chunks:
            raise BiasbenchError(f"{ENGINE} found nothing to say in text {_common.excerpt(text)}")
        audio = torch.from_numpy(np.ascontiguousarray(ref_audio, dtype=np.float32)).unsqueeze(0)
        rms = float(torch.sqrt(torch.mean(torch.square(audio))))
        quiet = rms < utils_infer.target_rms
        if quiet:  # F5 hears the reference at its training loudness, and scales the clone back
            audio = audio * utils_infer.target_rms / rms
        if ref_rate != engine.sample_rate:
            audio = modules["torchaudio"].transforms.Resample(ref_rate, engine.sample_rate)(audio)
        with torch.inference_mode():
            cond = engine.model.mel_spec(audio.to(engine.device)).permute(0, 2, 1)[0]
        ref_frames = audio.shape[-1] // engine.hop_length
        if len(ref_text[-1].encode("utf-8")) == 1:
            ref_text = ref_text + " "
        sampling = (int(settings["nfe_step"]), float(settings["cfg_strength"]), float(settings["sway_sampling_coef"]))
        pieces = []
        for chunk_index, chunk in enumerate(chunks):
            # Very short text gets F5's slow-speech rule (infer_batch_process: speed 0.3 below 10 bytes).
            speed = settings["speed"] if len(chunk.encode("utf-8")) >= 10 else 0.3
            tokens = model_utils.convert_char_to_pinyin([ref_text + chunk])[0]
            frames = ref_frames + int(ref_frames / len(ref_text.encode("utf-8")) * len(chunk.encode("utf-8")) / speed)
            pieces.append(_Piece(index, chunk_index, cond, ref_frames, tokens, frames,
                                 rms / utils_infer.target_rms if quiet else None,
                                 int(settings["seed"]) + chunk_index, sampling))
        return pieces

    @staticmethod
    def _generate(pieces: list[_Piece], engine: _Engine, torch, results: list) -> dict[tuple[int, int], np.ndarray]:
        """Waveforms of the pieces, by (clip, chunk); a failed pass records its clips' error."""
        groups: dict[tuple, list[_Piece]] = {}
        for piece in pieces:
            groups.setdefault((piece.seed, piece.sampling), []).append(piece)
        waves: dict[tuple[int, int], np.ndarray] = {}
        from torch.nn.utils.rnn import pad_sequence

        with _infer_lock:
            for (seed, (nfe_step, cfg_strength, sway)), group in groups.items():
                try:
                    with torch.inference_mode():
                        generated, _ = engine.model.sample(
                            cond=pad_sequence([piece.cond for piece in group], batch_first=True),
                            lens=torch.tensor([piece.cond.shape[0] for piece in group], device=engine.device),
                            text=[piece.tokens for piece in group],
                            duration=torch.tensor([piece.frames for piece in group], device=engine.device),
                            steps=nfe_step, cfg_strength=cfg_strength, sway_sampling_coef=sway, seed=seed)
                        generated = generated.to(torch.float32)
                        for piece, mel in zip(group, generated):
                            waves[(piece.clip, piece.chunk)] = _vocode(piece, mel, engine)
                except Exception as err:  # noqa: BLE001 - e.g. out of memory: fail these clips only
                    hint = (f" (a batch of {len(group)}; a smaller BIASBENCH_TTS_BATCH_SIZE may fit)"
                            if len(group) > 1 else "")
                    failure = BiasbenchError(f"{ENGINE} inference failed{hint}: {type(err).__name__}: {str(err)[:300]}")
                    for piece in group:
                        results[piece.clip] = results[piece.clip] or failure
        return waves

    @staticmethod
    def _assemble(waves, index: int, text: str, params: dict, engine: _Engine):
        """One clip from its chunk waves, or the error that stops it."""
        voice = Path(params["reference_audio"]).name
        # Every chunk of a clip that got here was made: a failed pass already recorded its error.
        chunks = [wave for (clip, _), wave in sorted(waves.items(), key=lambda item: item[0]) if clip == index]
        if any(wave.size == 0 for wave in chunks):
            return BiasbenchError(f"{ENGINE} produced no audio for voice {voice!r}, text {_common.excerpt(text)}")
        try:
            audio = to_harness_audio(_cross_fade(chunks, engine.sample_rate), engine.sample_rate)
            _common.check_not_silent(ENGINE, audio, voice, text)
        except BiasbenchError as err:
            return err
        return audio, SAMPLE_RATE

    @staticmethod
    def _check_speakable(text: str, engine: _Engine, model_utils) -> None:
        """Refuse text with letters or digits the checkpoint's vocabulary lacks (F5 would
        silently map them to a space) or with nothing speakable at all."""
        vocab = engine.model.vocab_char_map
        tokens = model_utils.convert_char_to_pinyin([text])[0]
        wordy = [t for t in tokens if any(ch.isalnum() for ch in t)]
        unknown = sorted({t for t in wordy if t not in vocab})
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:10])
            raise BiasbenchError(f"{ENGINE} cannot speak text {_common.excerpt(text)}: {shown} "
                                 "not in the checkpoint's vocabulary")
        if not wordy:
            raise BiasbenchError(f"{ENGINE} found nothing to say in text {_common.excerpt(text)}")
