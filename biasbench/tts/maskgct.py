"""MaskGCT (Amphion's zero-shot TTS: masked generative codec transformers) as a TTS backend.

Each voice is a reference recording of a real, consenting speaker and its transcript
(`reference_clip`, `reference_text` in the pool YAML: voices/cloning-template.yaml); the
pool loader hands them over as params (biasbench.tts.reference), including the sha256 of
the clip's bytes, so a re-recorded clip gets new cache keys.

Amphion (MIT) is not on PyPI. Clone it (git clone https://github.com/open-mmlab/Amphion),
install its MaskGCT requirements (pip install -r models/tts/maskgct/requirements.txt) and
set BIASBENCH_AMPHION_DIR to the checkout. The backend puts that directory on sys.path
(only when a pool uses this backend) and runs Amphion's own code, from
models/tts/maskgct/maskgct_utils.py: build_semantic_codec, build_acoustic_codec,
build_t2s_model, build_s2a_model and MaskGCT_Inference_Pipeline (text2semantic,
extract_acoustic_code, semantic2acoustic: the steps of its maskgct_inference). Two
things differ from Amphion's inference script, which hard-codes its downloads:
build_semantic_model's two lines (Wav2Vec2BertModel.from_pretrained and the feature
statistics) are done here with configurable locations, and the pipeline is handed the
SeamlessM4TFeatureExtractor from the same location. A CUDA GPU is advised (CPU works,
slowly). Amphion's MaskGCT README states no licence for the official weights (hub
amphion/MaskGCT); they are trained on Emilia (CC-BY-NC 4.0): treat them as non-commercial
research only and check the model card (voices/README.md).

Environment variables (all optional except the first):

  BIASBENCH_AMPHION_DIR               the Amphion checkout (required)
  BIASBENCH_MASKGCT_CONFIG            model config JSON (default: the checkout's
                                      models/tts/maskgct/config/maskgct.json)
  BIASBENCH_MASKGCT_CHECKPOINTS       `hf://amphion/MaskGCT` (default, downloaded once) or a
                                      local directory with the same layout
                                      (semantic_codec/model.safetensors, acoustic_codec/
                                      model.safetensors and model_1.safetensors, t2s_model/
                                      model.safetensors, s2a_model/s2a_model_1layer/ and
                                      s2a_model/s2a_model_full/model.safetensors)
  BIASBENCH_MASKGCT_SEMANTIC_MODEL    `hf://facebook/w2v-bert-2.0` (default) or a local
                                      directory holding a Wav2Vec2BertModel and its
                                      SeamlessM4TFeatureExtractor (save_pretrained of both)
  BIASBENCH_MASKGCT_SEMANTIC_STATS    mean/var of the semantic features (default: the
                                      checkout's models/tts/maskgct/ckpt/wav2vec2bert_stats.pt)
  BIASBENCH_MASKGCT_DEVICE            cuda, cuda:1, cpu ... (default cuda when available)

version() names the Amphion commit (read from the checkout's .git; a sha256 of its
MaskGCT and codec sources when there is no .git), the config, the checkpoints, the
semantic model and its statistics (hub ids, or the sha256 of local files), so changing
any of them re-synthesises.

Target duration: MaskGCT is told how long to speak. The backend leaves it to Amphion's
own rule (text2semantic with target_len=None, as its inference script does when no
duration is given): the reference's duration scaled by the ratio of the phone counts of
the text and of the reference transcript, i.e. the speaker's phone rate.

Batching (synthesize_batch; BIASBENCH_TTS_BATCH_SIZE, default 8 on a GPU, 1 on a CPU): a
batch's clips must come out as each would alone, since the audio cache key does not say how
a clip was made. Amphion's reverse_diffusion (T2S and S2A) cannot do that on a batch: it
draws its random numbers from the global generator for the whole batch, rescales guidance
by the std of the whole batch, and re-masks a number of tokens set by the padded length.
So its loop is re-run here (_unmask) with only the network passes batched: each clip's
tokens are packed behind its phones and reference codes, padded at the end and masked in
attention (Amphion's own estimators, position by position), while guidance, sampling and
re-masking run per clip with Amphion's top_k and log and the clip's own torch.Generator,
drawing in Amphion's order. The generator starts where maskgct_inference's seeding and
reference encoding leave the device's generator (w2v-bert draws from it), so a clip made
alone is the clip Amphion's pipeline makes under the same seed, and in a batch it is the
clip made alone (on a CPU, tiny models: both differences measured 0, bit for bit).
Reference encoding and the codec decoder run one clip at a time: they are cheap, and the
decoder's convolutions would see the padding. Clips are grouped by sampling settings
(t2s_steps, cfg, rescale_cfg, s2a_cfg, s2a_rescale_cfg).

Caveat: the tokens are chosen by argmax and top-k, so a float-rounding difference between
a batched and a lone network pass (a GPU may pick other kernels for another batch shape)
can, on a near tie, pick another token, and the rest of that clip then differs (another
sample from the same distribution, not a corrupted clip). On a CPU no clip differed; on a
GPU this is not yet measured (benchmarks should compare batched with lone clips there).

Params (besides the reference ones): `seed` (default 0: MaskGCT samples tokens, and the
same seed gives the same clip on the same machine), `language` (of both the text and the
reference transcript; en, zh, ja, fr, ko, de; default en), `t2s_steps` (text-to-semantic
steps, default 25), `cfg`, `rescale_cfg` (text-to-semantic guidance, defaults 2.5 and
0.75), `s2a_cfg`, `s2a_rescale_cfg` (semantic-to-acoustic guidance, same defaults). The
semantic-to-acoustic steps are Amphion's ([25, 10, 1, ...] over the 12 codec layers).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from biasbench.errors import BiasbenchError
from biasbench.tts import _common
from biasbench.tts._common import Param
from biasbench.tts.base import SAMPLE_RATE
from biasbench.tts.reference import precheck_requests, require_reference
from biasbench.tts.audio import to_harness_audio
from biasbench.tts.weights import files_identity

ENGINE = "maskgct"
AMPHION_URL = "https://github.com/open-mmlab/Amphion"
REQUIREMENTS = "models/tts/maskgct/requirements.txt"
INSTALL_HINT = (
    f"MaskGCT runs Amphion's code, which is not on PyPI: `git clone {AMPHION_URL}`, "
    f"`pip install -r {REQUIREMENTS}` from the checkout (keep your CUDA torch), and set "
    "BIASBENCH_AMPHION_DIR to the checkout (see voices/README.md)"
)

DEFAULT_CHECKPOINTS = "hf://amphion/MaskGCT"
DEFAULT_SEMANTIC_MODEL = "hf://facebook/w2v-bert-2.0"
DEFAULT_CONFIG = "models/tts/maskgct/config/maskgct.json"  # in the checkout
DEFAULT_STATS = "models/tts/maskgct/ckpt/wav2vec2bert_stats.pt"  # in the checkout
#: The checkpoint files, by the hub repo's layout (as maskgct_inference.py downloads them).
CHECKPOINT_FILES = {
    "semantic_codec": "semantic_codec/model.safetensors",
    "codec_encoder": "acoustic_codec/model.safetensors",
    "codec_decoder": "acoustic_codec/model_1.safetensors",
    "t2s_model": "t2s_model/model.safetensors",
    "s2a_1layer": "s2a_model/s2a_model_1layer/model.safetensors",
    "s2a_full": "s2a_model/s2a_model_full/model.safetensors",
}
#: Amphion's sources that make the clips, hashed for version() when there is no .git.
CODE_DIRS = ("models/tts/maskgct", "models/codec/amphion_codec", "models/codec/kmeans")
ENV = {
    "amphion_dir": "BIASBENCH_AMPHION_DIR",
    "config": "BIASBENCH_MASKGCT_CONFIG",
    "checkpoints": "BIASBENCH_MASKGCT_CHECKPOINTS",
    "semantic_model": "BIASBENCH_MASKGCT_SEMANTIC_MODEL",
    "semantic_stats": "BIASBENCH_MASKGCT_SEMANTIC_STATS",
    "device": "BIASBENCH_MASKGCT_DEVICE",
}
#: Amphion's hidden layer of w2v-bert-2.0 that MaskGCT's semantic codec quantises.
SEMANTIC_LAYER = 17
LANGUAGES = ("en", "zh", "ja", "fr", "ko", "de")

PARAMS: dict[str, Param] = {
    # Set by the pool loader from the voice's reference_clip / reference_text.
    "reference_audio": Param(str, help="absolute path of the reference clip"),
    "reference_text": Param(str, help="transcript of the reference clip"),
    "reference_sha256": Param(str, help="sha256 of the reference clip's bytes"),
    "reference_error": Param(str, help="why the reference cannot be used"),
    # Voice params a pool may set.
    "seed": Param(int, 0, 2**31 - 1, help="sampling seed (default 0)"),
    "language": Param(str, choices=LANGUAGES, help="language of text and transcript (default en)"),
    "t2s_steps": Param(int, 1, 200, help="text-to-semantic steps (default 25)"),
    "cfg": Param(float, 0.0, 10.0, help="text-to-semantic guidance (default 2.5)"),
    "rescale_cfg": Param(float, 0.0, 1.0, help="text-to-semantic guidance rescale (default 0.75)"),
    "s2a_cfg": Param(float, 0.0, 10.0, help="semantic-to-acoustic guidance (default 2.5)"),
    "s2a_rescale_cfg": Param(float, 0.0, 1.0, help="semantic-to-acoustic guidance rescale (default 0.75)"),
}
#: MaskGCT_Inference_Pipeline.maskgct_inference's defaults.
DEFAULTS = {"seed": 0, "language": "en", "t2s_steps": 25, "cfg": 2.5, "rescale_cfg": 0.75,
            "s2a_cfg": 2.5, "s2a_rescale_cfg": 0.75}
S2A_STEPS = [25, 10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
SEMANTIC_RATE = 16000  # w2v-bert's input
CODEC_RATE = 24000  # the acoustic codec's input and output

# One lock for everything: importing (it changes the working directory for a moment),
# loading, and synthesis (the models are shared, and seeding is process-global).
_lock = threading.RLock()
_modules: dict | None = None
_engines: dict[tuple, _Engine] = {}
_references: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def check_params(params: dict) -> None:
    """Raise BiasbenchError naming the first bad key."""
    _common.check_params(ENGINE, params, PARAMS)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Where Amphion and the weights are; from the BIASBENCH_* variables unless given."""

    amphion_dir: str = ""
    config: str = ""
    checkpoints: str = DEFAULT_CHECKPOINTS
    semantic_model: str = DEFAULT_SEMANTIC_MODEL
    semantic_stats: str = ""
    device: str = ""

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        return _common.settings_from_env(cls, ENV, overrides)

    def amphion(self) -> Path:
        """The checkout; BiasbenchError with the install steps when it is not one."""
        if not self.amphion_dir:
            raise BiasbenchError(f"the {ENGINE} engine is not set up: {ENV['amphion_dir']} is not set; {INSTALL_HINT}")
        path = Path(self.amphion_dir).expanduser().resolve()
        if not (path / "models" / "tts" / "maskgct" / "maskgct_utils.py").is_file():
            raise BiasbenchError(f"{ENV['amphion_dir']}={self.amphion_dir} is not an Amphion checkout "
                                 f"(no models/tts/maskgct/maskgct_utils.py there); {INSTALL_HINT}")
        return path

    def config_path(self) -> Path:
        path = Path(self.config).expanduser() if self.config else self.amphion() / DEFAULT_CONFIG
        if not path.is_file():
            raise BiasbenchError(f"{ENGINE} model config {path} ({ENV['config']}) not found")
        return path

    def stats_path(self) -> Path:
        path = Path(self.semantic_stats).expanduser() if self.semantic_stats else self.amphion() / DEFAULT_STATS
        if not path.is_file():
            raise BiasbenchError(f"{ENGINE} semantic feature statistics {path} ({ENV['semantic_stats']}) not found")
        return path

    def checkpoint_dir(self) -> Path | None:
        """The local checkpoint directory, or None for the hub."""
        if self.checkpoints.startswith("hf://"):
            return None
        path = Path(self.checkpoints).expanduser()
        missing = [name for name in CHECKPOINT_FILES.values() if not (path / name).is_file()]
        if missing:
            raise BiasbenchError(f"{ENGINE} checkpoint directory {path} ({ENV['checkpoints']}) lacks "
                                 f"{', '.join(missing)}; it must have the layout of the hub repo amphion/MaskGCT")
        return path

    def semantic_dir(self) -> Path | None:
        if self.semantic_model.startswith("hf://"):
            return None
        path = Path(self.semantic_model).expanduser()
        if not (path / "config.json").is_file() or not (path / "preprocessor_config.json").is_file():
            raise BiasbenchError(f"{ENGINE} semantic model {path} ({ENV['semantic_model']}) must be a directory "
                                 "with a Wav2Vec2BertModel and its SeamlessM4TFeatureExtractor "
                                 "(config.json, preprocessor_config.json and the weights)")
        return path


def _identity(ref: str, path: Path | None) -> str:
    """A hub reference as written; a local file or directory by the sha256 of its bytes."""
    if path is None:
        return ref.removeprefix("hf://")
    return files_identity(path)


def amphion_revision(root: Path) -> str:
    """`commit <sha>` of a git checkout, else `code sha256:...` of the MaskGCT sources."""
    git = root / ".git"
    with contextlib.suppress(OSError, ValueError):
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            git = (root / git.read_text().split(":", 1)[1].strip()).resolve()
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return f"commit {head[:12]}"
        ref = head.split(":", 1)[1].strip()
        if (git / ref).is_file():
            return f"commit {(git / ref).read_text().strip()[:12]}"
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return f"commit {line.split()[0][:12]}"
    files = sorted(p for d in CODE_DIRS for p in (root / d).rglob("*.py"))
    return "code " + files_identity(root, files)


# --------------------------------------------------------------------------- Amphion


def _import_amphion(settings: Settings) -> dict:
    """Amphion's MaskGCT modules, imported once; BiasbenchError with the install steps otherwise.

    Amphion is imported as top-level `models` and `utils` packages from its checkout, and
    its G2P modules open their data files relative to the working directory at import, so
    the import runs from the checkout (the working directory is restored after it)."""
    global _modules
    root = settings.amphion()
    with _lock:
        if _modules is not None:
            if _modules["root"] != root:
                raise BiasbenchError(f"Amphion was already imported from {_modules['root']} in this process; "
                                     f"{ENV['amphion_dir']}={root} needs a new process")
            return _modules
        for name in ("models", "utils"):
            module = sys.modules.get(name)
            origin = getattr(module, "__file__", None) or ""
            if module is not None and not origin.startswith(str(root)):
                raise BiasbenchError(f"cannot import Amphion from {root}: a different top-level module "
                                     f"{name!r} ({origin or 'built in'}) is already imported in this process")
        before = set(sys.modules)
        added_path = str(root) not in sys.path
        if added_path:
            sys.path.insert(0, str(root))
        cwd = os.getcwd()
        try:
            os.chdir(root)
            # Amphion prints file paths and warns (onnxruntime without CUDA) on import.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import librosa
                import safetensors.torch
                import torch
                from models.tts.maskgct import maskgct_utils
                from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel
                from utils.util import load_config
        except BaseException as err:
            for name in set(sys.modules) - before:
                if name.split(".")[0] in ("models", "utils"):
                    sys.modules.pop(name, None)
            if added_path:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(root))
            if isinstance(err, KeyboardInterrupt):
                raise
            raise BiasbenchError(_import_problem(err, root)) from None
        finally:
            os.chdir(cwd)
        _modules = {"root": root, "torch": torch, "librosa": librosa, "safetensors": safetensors.torch,
                    "maskgct_utils": maskgct_utils, "load_config": load_config,
                    "Wav2Vec2BertModel": Wav2Vec2BertModel, "FeatureExtractor": SeamlessM4TFeatureExtractor}
        return _modules


def _import_problem(err: BaseException, root: Path) -> str:
    requirements = f"pip install -r {root / REQUIREMENTS}"
    if isinstance(err, ImportError):
        what = f"missing module {err.name!r}" if getattr(err, "name", None) else str(err)[:300]
    elif isinstance(err, SystemExit):
        what = "its g2p data files are missing (Amphion exits when it cannot find them)"
    else:
        what = f"{type(err).__name__}: {str(err)[:300]}"
    message = (f"the {ENGINE} engine cannot import Amphion's MaskGCT code from {root} "
               f"({ENV['amphion_dir']}): {what}; install its requirements with `{requirements}`")
    text = str(err)
    if "setLangfilters" in text:
        message += (". LangSegment 0.2.0 (the only release on PyPI) cannot be imported: in its "
                    "LangSegment/__init__.py remove `setLangfilters,getLangfilters,` (Amphion issue #450)")
    elif "LlamaConfig" in text or "positional" in text:
        message += ". MaskGCT needs transformers 4.x (its requirements pin transformers==4.41.2)"
    return message + f"; see voices/README.md ({INSTALL_HINT})"


@dataclass
class _Engine:
    pipeline: object  # maskgct_utils.MaskGCT_Inference_Pipeline
    device: str


def _load(settings: Settings) -> _Engine:
    """The models for `settings`, loaded once per process."""
    modules = _import_amphion(settings)
    device = _common.pick_device(settings.device, modules["torch"])
    key = (settings, device)
    with _lock:
        if key not in _engines:
            _engines[key] = _load_engine(settings, device, modules)
        return _engines[key]


def _contiguous_buffers(module) -> None:
    """Give buffers that are views of a larger tensor (torch >= 2.1 returns hann_window as
    one) their own storage: safetensors refuses to load into them otherwise."""
    for sub in module.modules():
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.untyped_storage().nbytes() != buffer.numel() * buffer.element_size():
                sub._buffers[name] = buffer.clone()


def _load_engine(settings: Settings, device: str, modules: dict) -> _Engine:
    torch, mu = modules["torch"], modules["maskgct_utils"]
    config_path = settings.config_path()
    try:
        model = modules["load_config"](str(config_path)).model
        parts = {"semantic_codec": model.semantic_codec, "acoustic_codec": model.acoustic_codec,
                 "t2s_model": model.t2s_model, "s2a_1layer": model.s2a_model.s2a_1layer,
                 "s2a_full": model.s2a_model.s2a_full}
    except Exception as err:  # noqa: BLE001 - json5 and attribute errors alike
        raise BiasbenchError(f"{ENGINE} model config {config_path} is not a MaskGCT config (model.t2s_model, "
                             f"model.s2a_model, model.semantic_codec, model.acoustic_codec): {err}") from None
    files = _checkpoint_files(settings)
    semantic = settings.semantic_dir()
    semantic_ref = str(semantic) if semantic else settings.semantic_model[len("hf://"):]
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # weight_norm deprecation
            semantic_codec = mu.build_semantic_codec(parts["semantic_codec"], device)
            codec_encoder, codec_decoder = mu.build_acoustic_codec(parts["acoustic_codec"], device)
            t2s_model = mu.build_t2s_model(parts["t2s_model"], device)
            s2a_1layer = mu.build_s2a_model(parts["s2a_1layer"], device)
            s2a_full = mu.build_s2a_model(parts["s2a_full"], device)
            built = {"semantic_codec": semantic_codec, "codec_encoder": codec_encoder,
                     "codec_decoder": codec_decoder, "t2s_model": t2s_model,
                     "s2a_1layer": s2a_1layer, "s2a_full": s2a_full}
            for name, module in built.items():
                _contiguous_buffers(module)
                modules["safetensors"].load_model(module, str(files[name]), device=str(device))
            # build_semantic_model, with the model and statistics from the configured places.
            semantic_model = modules["Wav2Vec2BertModel"].from_pretrained(semantic_ref).eval().to(device)
            stats = torch.load(str(settings.stats_path()), map_location="cpu")
            semantic_mean = stats["mean"].to(device)
            semantic_std = torch.sqrt(stats["var"]).to(device)
            processor = modules["FeatureExtractor"].from_pretrained(semantic_ref)
            pipeline = _pipeline(mu, processor, semantic_model, semantic_codec, codec_encoder, codec_decoder,
                                 t2s_model, s2a_1layer, s2a_full, semantic_mean, semantic_std, device)
    except BiasbenchError:
        raise
    except Exception as err:  # noqa: BLE001 - hub, torch and state-dict errors alike
        raise BiasbenchError(
            f"{ENGINE} could not load its models (config {config_path}, checkpoints {settings.checkpoints}, "
            f"semantic model {settings.semantic_model}) on {device}: {type(err).__name__}: {str(err)[:400]}. "
            f"Without hub access, download them first and point {ENV['checkpoints']} / "
            f"{ENV['semantic_model']} at the local copies."
        ) from None
    layers = getattr(semantic_model.config, "num_hidden_layers", SEMANTIC_LAYER)
    if layers < SEMANTIC_LAYER:
        raise BiasbenchError(f"{ENGINE} semantic model {settings.semantic_model} has {layers} layers; MaskGCT "
                             f"reads hidden layer {SEMANTIC_LAYER} (w2v-bert-2.0)")
    return _Engine(pipeline, device)


def _pipeline(mu, processor, *models):
    """Amphion's MaskGCT_Inference_Pipeline, with `processor` as its feature extractor
    (its constructor loads facebook/w2v-bert-2.0's from the hub by name)."""

    class _Given:
        @staticmethod
        def from_pretrained(*_args, **_kwargs):
            return processor

    original = mu.SeamlessM4TFeatureExtractor
    mu.SeamlessM4TFeatureExtractor = _Given
    try:
        return mu.MaskGCT_Inference_Pipeline(*models)
    finally:
        mu.SeamlessM4TFeatureExtractor = original


def _checkpoint_files(settings: Settings) -> dict[str, Path]:
    local = settings.checkpoint_dir()
    if local is not None:
        return {name: local / rel for name, rel in CHECKPOINT_FILES.items()}
    repo = settings.checkpoints[len("hf://"):]
    try:
        from huggingface_hub import hf_hub_download

        return {name: Path(hf_hub_download(repo, filename=rel)) for name, rel in CHECKPOINT_FILES.items()}
    except Exception as err:  # noqa: BLE001 - network and hub errors
        raise BiasbenchError(
            f"{ENGINE} could not download the checkpoints from {settings.checkpoints}: {type(err).__name__}: "
            f"{str(err)[:300]}. Without hub access, copy the repo's files here and set {ENV['checkpoints']} "
            "to that directory."
        ) from None


# --------------------------------------------------------------------------- reference clips


def _reference(params: dict, librosa) -> tuple[np.ndarray, np.ndarray]:
    """The reference clip at 16 kHz (semantic model) and 24 kHz (codec), read once.

    Resampled as Amphion's maskgct_inference does (librosa.load(path, sr=...), whose
    resampler is librosa.resample's default), from the bytes whose sha256 the pool gave."""
    path = params["reference_audio"]
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise BiasbenchError(f"reference clip {path} cannot be read: {err.strerror or err}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != params["reference_sha256"]:
        raise BiasbenchError(f"reference clip {path} changed after the pool was loaded "
                             "(its sha256 differs); load the pool again")
    key = (path, digest)
    if key not in _references:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
        _references[key] = tuple(
            mono if rate == target else librosa.resample(mono, orig_sr=rate, target_sr=target).astype(np.float32)
            for target in (SEMANTIC_RATE, CODEC_RATE)
        )
    return _references[key]


# --------------------------------------------------------------------------- reverse diffusion, batched


def _phones(mu, what: str, words: str, language: str) -> list[int]:
    """Amphion's phone ids of `words`; refuse text its G2P cannot turn into phones (it raises
    on text with no letters of its languages, e.g. digits or punctuation alone, or another script)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            phones = mu.g2p_(words, language)[1]
    except Exception as err:  # noqa: BLE001 - Amphion raises a bare Exception
        raise BiasbenchError(f"{ENGINE} cannot speak {what} {_common.excerpt(words)} (language {language}): "
                             f"Amphion's G2P fails: {str(err)[:200]}") from None
    if not phones:
        raise BiasbenchError(f"{ENGINE} found nothing to say in {what} {_common.excerpt(words)} (language {language})")
    return list(phones)


def _encode_reference(params: dict, seed: int, engine: _Engine, modules: dict) -> tuple[int, object, object, object]:
    """The reference's length at 16 kHz, its semantic codes (1, S) and acoustic codes (1, P, 12),
    and the clip's random generator: text2semantic's and maskgct_inference's steps that read
    the reference, after maskgct_inference's seeding. Hugging Face's w2v-bert draws from the
    global generator as it runs (LayerDrop's dice, even in eval mode), so the clip's generator
    starts where those draws leave the device's, as Amphion's sampling does."""
    torch, pipeline = modules["torch"], engine.pipeline
    speech_16k, speech_24k = _reference(params, modules["librosa"])
    torch.manual_seed(seed)
    features, attention = pipeline.extract_features(speech_16k)
    semantic, _ = pipeline.extract_semantic_code(features.unsqueeze(0).to(engine.device),
                                                 attention.unsqueeze(0).to(engine.device))
    acoustic = pipeline.extract_acoustic_code(torch.from_numpy(speech_24k).unsqueeze(0).to(engine.device))
    generator = torch.Generator(device=engine.device)
    cuda = torch.device(engine.device).type == "cuda"
    generator.set_state(torch.cuda.get_rng_state(engine.device) if cuda else torch.get_rng_state())
    return len(speech_16k), semantic, acoustic, generator


@dataclass
class _Clip:
    """One request on its way through the models; tensors have a batch dimension of 1."""

    index: int  # in the request list
    phones: object  # reference transcript + text phone ids, (1, n)
    prompt_semantic: object  # the reference's semantic codes, (1, S)
    prompt_acoustic: object  # the reference's acoustic codes, (1, P, 12)
    target_len: int  # semantic frames to generate: Amphion's duration rule
    generator: object  # the clip's own torch.Generator (see _encode_reference): all its draws
    sampling: tuple  # (t2s_steps, cfg, rescale_cfg, s2a_cfg, s2a_rescale_cfg): shared by a batch
    semantic: object = None  # reference + generated semantic codes, after text-to-semantic
    acoustic: object = None  # generated acoustic codes (1, T, 12), after semantic-to-acoustic


def _pack(pieces: list, torch) -> tuple[object, object]:
    """(1, n_k, H) tensors -> one (B, max n, H) batch padded at the end, and its mask (1 real, 0 padding)."""
    width = max(piece.shape[1] for piece in pieces)
    x = torch.cat([torch.nn.functional.pad(piece, (0, 0, 0, width - piece.shape[1])) for piece in pieces])
    lengths = torch.tensor([piece.shape[1] for piece in pieces], device=x.device)
    mask = (torch.arange(width, device=x.device)[None, :] < lengths[:, None]).float()
    return x, mask


def _unmask(model, clips: list[_Clip], lengths: list[int], steps: int, temp: float, cfg: float,
            rescale_cfg: float, current, estimate, to_logits, torch) -> list:
    """The token loop of Amphion's reverse_diffusion (MaskGCT_T2S and, per codec layer,
    MaskGCT_S2A), for several clips at once; returns each clip's tokens, (1, n).

    Amphion's loop, run on a batch, would tie the clips together three ways: its random
    draws come from the global generator in batch order, its guidance rescale takes the
    std of the whole batch, and the number of tokens it re-masks follows the padded length.
    Here only the network pass (`estimate`, padding masked in attention) sees the batch;
    guidance, sampling and re-masking run per clip, with the clip's own generator and
    Amphion's own top_k and log, in Amphion's order of draws. So a clip draws what it would
    alone, and alone (B = 1) it draws what Amphion's reverse_diffusion draws in
    maskgct_inference under the same seed."""
    amphion = sys.modules[type(model).__module__]  # maskgct_t2s or maskgct_s2a: top_k, log

    def gumbel(t, generator):  # gumbel_noise, drawing from the clip's generator
        return -amphion.log(-amphion.log(torch.zeros_like(t).uniform_(0, 1, generator=generator)))

    device = clips[0].generator.device
    seqs = [torch.full((1, n), 0, device=device) for n in lengths]
    masks = [torch.full((1, n, 1), True, device=device) for n in lengths]
    h = 1.0 / steps
    t_list = [1.0 - i * h for i in range(steps)] + [0.0]  # as Amphion rounds them
    active = list(range(len(clips)))
    for i in range(steps):
        t = t_list[i] * torch.ones(len(active), device=device)
        curs = [current(k, masks[k], seqs[k]) for k in active]
        embeds, unguided = estimate(active, curs, t)
        done = []
        for j, k in enumerate(active):
            emb = embeds[j]
            if cfg > 0:  # classifier-free guidance and its rescale, with this clip's std
                std = emb.std()
                emb = emb + cfg * (emb - unguided[j])
                emb = rescale_cfg * (emb * std / emb.std()) + (1 - rescale_cfg) * emb
            logits = amphion.top_k(to_logits(emb), 0.98)  # filter_thres: the pipeline's and the default
            choice_temp, step_temp = t_list[i], temp * t_list[i]
            if i == steps - 1 and steps > 1:
                sampled = logits.argmax(dim=-1)  # greedy last step
            else:
                tau = max(0.2 if steps == 1 else step_temp, 1e-3)
                sampled = (logits / max(tau, 1e-10) + gumbel(logits, clips[k].generator)).argmax(dim=-1)
            seqs[k] = torch.where(masks[k].squeeze(-1), sampled, seqs[k])
            scores = logits.softmax(dim=-1).gather(2, sampled.unsqueeze(-1)).squeeze(-1)
            scores = 1 - (choice_temp * gumbel(scores, clips[k].generator) + scores)
            next_t = t_list[i + 1] * torch.ones(1, device=device)
            next_mask_num = (model.mask_prob(next_t) * lengths[k]).long()[0].item()
            if next_mask_num == 0:
                done.append(k)
                continue
            scores = scores.masked_fill(~masks[k].squeeze(-1), -torch.finfo(scores.dtype).max)
            chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, scores.topk(next_mask_num, dim=-1).indices, True)
            seqs[k] = seqs[k].masked_fill(chosen, 0)
            masks[k] = chosen.unsqueeze(-1)
        active = [k for k in active if k not in done]
        if not active:
            break
    return seqs


def _text2semantic(clips: list[_Clip], engine: _Engine, torch) -> None:
    """text2semantic's T2S reverse_diffusion (temp 0.9) for clips sharing their sampling settings."""
    model = engine.pipeline.t2s_model
    net = model.diff_estimator
    steps, cfg, rescale_cfg = clips[0].sampling[:3]
    # What precedes the tokens in the guided pass: the phones (through the estimator's
    # cond_mlp, as DiffLlamaPrefix does with a phone prefix) and the reference's codes.
    prefixes = [torch.cat([net.cond_mlp(model.phone_emb(c.phones)), model.cond_emb(c.prompt_semantic)], dim=1)
                for c in clips]
    lengths = [c.target_len for c in clips]
    mask_token = model.mask_emb(torch.LongTensor([0]).to(engine.device))

    def current(k, mask, seq):
        return torch.zeros(1, lengths[k], model.hidden_size, device=seq.device) \
            + mask * mask_token[:, None, :] + (~mask) * model.cond_emb(seq)

    def estimate(active, curs, t):
        x, x_mask = _pack([torch.cat([prefixes[k], cur], dim=1) for k, cur in zip(active, curs)], torch)
        out = net(x, t, x_mask)  # no phone_embedding: the phones are in the prefix
        embeds = [out[j:j + 1, prefixes[k].shape[1]:prefixes[k].shape[1] + lengths[k]] for j, k in enumerate(active)]
        if cfg <= 0:
            return embeds, None
        # The unguided pass sees the tokens alone (Amphion passes an empty phone prefix).
        x, x_mask = _pack(curs, torch)
        out = net(x, t, x_mask)
        return embeds, [out[j:j + 1, :lengths[k]] for j, k in enumerate(active)]

    seqs = _unmask(model, clips, lengths, steps, 0.9, cfg, rescale_cfg, current, estimate, model.to_logit, torch)
    for clip, seq in zip(clips, seqs):
        clip.semantic = torch.cat([clip.prompt_semantic, seq], dim=-1)


def _s2a(model, clips: list[_Clip], n_timesteps: list[int], gt_codes: list | None, torch) -> list:
    """MaskGCT_S2A.reverse_diffusion (temp 1.5) for clips sharing their sampling settings:
    the acoustic codes (1, T, layers) of each clip, layer by layer."""
    device = clips[0].generator.device
    max_layer = model.num_quantizer
    conds = [model.cond_emb(c.semantic) for c in clips]
    prompt_lens = [c.prompt_acoustic.shape[1] for c in clips]
    lengths = [cond.shape[1] - p for cond, p in zip(conds, prompt_lens)]
    prompts = []
    for c in clips:
        prompt = 0
        for idx, emb in enumerate(model.token_emb):
            prompt = prompt + emb(c.prompt_acoustic[:, :, idx])
        prompts.append(prompt)
    cums = [torch.zeros(1, n, model.hidden_size, device=device) for n in lengths]
    codes = [torch.zeros(1, n, max_layer, dtype=torch.long, device=device) for n in lengths]
    first = 0
    if gt_codes is not None:
        first = gt_codes[0].shape[-1]
        for k, gt in enumerate(gt_codes):
            codes[k][:, :, :first] = gt
            for i in range(first):
                cums[k] += model.token_emb[i](codes[k][:, :, i])
    for layer in range(first, max_layer):
        seqs = _s2a_layer(model, layer, n_timesteps[layer], clips, conds, prompts, cums, torch)
        for k, seq in enumerate(seqs):
            cums[k] = cums[k] + model.token_emb[layer](seq)
            codes[k][..., layer] = seq
    return codes


def _s2a_layer(model, layer: int, steps: int, clips: list[_Clip], conds: list, prompts: list, cums: list,
               torch) -> list:
    """The tokens of one codec layer for each clip (one pass of reverse_diffusion's layer loop)."""
    net = model.diff_estimator
    cfg, rescale_cfg = clips[0].sampling[3:]
    max_layer = model.num_quantizer
    prompt_lens = [prompt.shape[1] for prompt in prompts]
    lengths = [cum.shape[1] for cum in cums]
    token_emb = model.token_emb[layer]
    layer_t = torch.tensor(layer).to(cums[0].device).long().unsqueeze(0)
    temp_conds = [cond + model.layer_emb(layer_t).unsqueeze(1) for cond in conds]
    mask_token = model.mask_emb(torch.zeros_like(layer_t))

    def current(k, mask, seq):
        cur = cums[k] + mask * mask_token[:, None, :] + (~mask) * token_emb(seq)
        return cur + mask_token[:, None, :] * (max_layer - 1 - layer_t)

    def estimate(active, curs, t):
        x, x_mask = _pack([torch.cat([prompts[k], cur], dim=1) for k, cur in zip(active, curs)], torch)
        cond, _ = _pack([temp_conds[k] for k in active], torch)
        out = net(x, t, cond, x_mask)
        embeds = [out[j:j + 1, prompt_lens[k]:prompt_lens[k] + lengths[k]] for j, k in enumerate(active)]
        if cfg <= 0:
            return embeds, None
        x, x_mask = _pack(curs, torch)
        cond, _ = _pack([temp_conds[k][:, prompt_lens[k]:] for k in active], torch)
        out = net(x, t, cond, x_mask)
        return embeds, [out[j:j + 1, :lengths[k]] for j, k in enumerate(active)]

    return _unmask(model, clips, lengths, steps, 1.5, cfg, rescale_cfg, current, estimate, model.to_logits[layer], torch)


def _semantic2acoustic(clips: list[_Clip], engine: _Engine, torch) -> None:
    """semantic2acoustic's two S2A models: the first codec layer, then the rest."""
    pipeline = engine.pipeline
    first = _s2a(pipeline.s2a_model_1layer, clips, S2A_STEPS[:1], None, torch)
    for clip, codes in zip(clips, _s2a(pipeline.s2a_model_full, clips, list(S2A_STEPS), first, torch)):
        clip.acoustic = codes


# --------------------------------------------------------------------------- backend


class MaskGCTBackend(_common.BatchedCloner):
    """`TTSBackend` for Amphion's MaskGCT zero-shot cloning; the models are shared by all instances."""

    name = ENGINE

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()

    def version(self) -> str:
        """Amphion revision, config, checkpoints, semantic model and statistics (without loading).

        Imports Amphion, so a missing checkout or requirement is reported here (and each
        clip of the pool's voices on this backend fails with that message)."""
        s = self.settings
        modules = _import_amphion(s)
        return (f"maskgct (Amphion {amphion_revision(modules['root'])}); "
                f"config {_identity(str(s.config_path()), s.config_path())}; "
                f"checkpoints {_identity(s.checkpoints, s.checkpoint_dir())}; "
                f"semantic model {_identity(s.semantic_model, s.semantic_dir())}; "
                f"stats {_identity('', s.stats_path())}")

    def synthesize_batch(self, requests: list[tuple[str, dict]]) -> list[tuple[np.ndarray, int] | Exception]:
        """Clone several clips, the clips with the same sampling settings through each network
        pass of T2S and S2A together (see _unmask); the codec decodes each clip alone."""
        results = precheck_requests(ENGINE, requests, check_params)
        if all(results):
            return results
        modules = _import_amphion(self.settings)
        torch = modules["torch"]
        with _lock:
            engine = _load(self.settings)
            groups: dict[tuple, list[_Clip]] = {}
            with torch.no_grad():
                for index, (text, params) in enumerate(requests):
                    if results[index] is None:
                        try:
                            clip = self._clip(index, text, params, engine, modules)
                            groups.setdefault(clip.sampling, []).append(clip)
                        except Exception as err:  # noqa: BLE001 - one bad clip must not fail the batch
                            results[index] = err
                for group in groups.values():
                    try:
                        _text2semantic(group, engine, torch)
                        _semantic2acoustic(group, engine, torch)
                    except Exception as err:  # noqa: BLE001 - e.g. out of memory: fail these clips only
                        hint = (f" (a batch of {len(group)}; a smaller BIASBENCH_TTS_BATCH_SIZE may fit)"
                                if len(group) > 1 else "")
                        failure = BiasbenchError(f"{ENGINE} inference failed{hint}: {type(err).__name__}: "
                                                 f"{str(err)[:300]}")
                        for clip in group:
                            results[clip.index] = failure
                        continue
                    for clip in group:
                        try:
                            results[clip.index] = self._audio(clip, *requests[clip.index], engine)
                        except BiasbenchError as err:
                            results[clip.index] = err
                        except Exception as err:  # noqa: BLE001 - one clip's decoding must not fail the rest
                            results[clip.index] = BiasbenchError(f"{ENGINE} decoding failed: {type(err).__name__}: "
                                                                 f"{str(err)[:300]}")
        return results

    @staticmethod
    def _clip(index: int, text: str, params: dict, engine: _Engine, modules: dict) -> _Clip:
        torch, mu = modules["torch"], modules["maskgct_utils"]
        ref_text = require_reference(ENGINE, text, params)
        settings = {**DEFAULTS, **{k: params[k] for k in DEFAULTS if k in params}}
        language = settings["language"]
        target = _phones(mu, "text", text, language)
        prompt = _phones(mu, "reference_text", ref_text, language)
        samples, semantic, acoustic, generator = _encode_reference(params, int(settings["seed"]), engine, modules)
        # text2semantic's duration rule (target_len=None): the reference's phone rate.
        target_len = int((samples * len(target) / len(prompt)) / SEMANTIC_RATE * 50)
        if target_len < 1:
            raise BiasbenchError(f"{ENGINE} produced no audio for voice {Path(params['reference_audio']).name!r}, "
                                 f"text {_common.excerpt(text)}")
        phones = torch.tensor(prompt + target, dtype=torch.long).to(engine.device).unsqueeze(0)
        sampling = (int(settings["t2s_steps"]), float(settings["cfg"]), float(settings["rescale_cfg"]),
                    float(settings["s2a_cfg"]), float(settings["s2a_rescale_cfg"]))
        return _Clip(index, phones, semantic, acoustic, target_len, generator, sampling)

    @staticmethod
    def _audio(clip: _Clip, text: str, params: dict, engine: _Engine) -> tuple[np.ndarray, int]:
        """The clip's waveform: semantic2acoustic's codec decoding, one clip at a time (its
        convolutions would see a batch's padding)."""
        voice = Path(params["reference_audio"]).name
        decoder = engine.pipeline.codec_decoder
        audio = decoder(decoder.vq2emb(clip.acoustic.permute(2, 0, 1), n_quantizers=12))[0][0].cpu().numpy()
        audio = np.asarray(audio, np.float32).ravel()
        if audio.size == 0:
            raise BiasbenchError(f"{ENGINE} produced no audio for voice {voice!r}, text {_common.excerpt(text)}")
        audio = to_harness_audio(audio, CODEC_RATE)
        _common.check_not_silent(ENGINE, audio, voice, text)
        return audio, SAMPLE_RATE
