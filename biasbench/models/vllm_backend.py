"""Speech LMs through vLLM's offline engine (`vllm.LLM`), for throughput on GPUs.

The same contract as the transformers backend, so the two are interchangeable per run:

- the prompt is the model's own chat template (from its HF processor), rendered exactly as the
  transformers backend renders it: one audio part then the text part; audio goes in as
  `multi_modal_data={"audio": [(waveform, sampling_rate)]}` and vLLM expands the placeholder;
- multiple choice is one decoding step (`max_tokens=1`, greedy): the option letters' raw
  log-probabilities at that position ("A" and " A" variants merged by logsumexp), renormalised
  over the options — the numbers the transformers backend computes from its logits;
- generation is greedy when `temperature == 0`, else seeded sampling with `top_p`; nothing from
  the checkpoint's generation_config leaks in (`generation_config="vllm"`, explicit params):
  only `GenerationSettings` decide decoding, since only they are in the cache key;
- LoRA adapters go through `LoRARequest` (for model classes vLLM supports LoRA on).

vLLM is optional (`pip install 'biasbench[vllm]'`) and imported only when this backend is built.
The helpers at the top (prompt inputs, letter ids, log-prob renormalisation, sampling kwargs) are
pure so they are tested without vLLM.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Request, Response, require_choices, user_turns
from biasbench.paths import install_extra

INSTALL_HINT = install_extra("vllm")
# Top-k fallback for vLLM releases without `SamplingParams.logprob_token_ids`.
TOP_LOGPROBS = 20
# vLLM sizes LoRA buffers for a maximum rank from this list.
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def import_vllm():
    """The `vllm` module, or a BiasbenchError saying how to install it."""
    try:
        import vllm
    except ImportError as exc:
        raise BiasbenchError(
            f"the vLLM backend needs vLLM, which is not installed ({exc}). Install it with "
            f"{INSTALL_HINT} on a machine with a CUDA GPU, or use the transformers backend (hf:<model>)."
        ) from exc
    return vllm


# ---------------------------------------------------------------- pure helpers


def pick_dtype(dtype: str, cuda: bool) -> str:
    """The transformers backend's policy: auto = bfloat16 on a GPU, float32 on CPU."""
    if dtype == "auto":
        return "bfloat16" if cuda else "float32"
    if dtype not in _DTYPES:
        raise BiasbenchError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def chat_messages(request: Request) -> list[dict]:
    """The conversation, as the transformers backend builds it: each user turn with its audio part first,
    then its text; the model's earlier replies (multi-turn tasks) as assistant messages."""
    messages = []
    for prompt, audio, reply in user_turns(request):
        content = [{"type": "text", "text": prompt}]
        if audio is not None:
            content.insert(0, {"type": "audio", "audio": "<waveform>"})
        messages.append({"role": "user", "content": content})
        if reply is not None:
            messages.append({"role": "assistant", "content": reply})
    return messages


def engine_input(prompt: str, request: Request) -> dict:
    """One vLLM prompt: the rendered chat text, plus every clip of the conversation (in order) as
    multi-modal data."""
    clips = [(np.asarray(audio, dtype=np.float32), int(request.sampling_rate))
             for _, audio, _ in user_turns(request) if audio is not None]
    if not clips:
        return {"prompt": prompt}
    return {"prompt": prompt, "multi_modal_data": {"audio": clips}}


def letter_token_ids(tokenizer, letters: Sequence[str]) -> dict[str, list[int]]:
    """Single-token spellings of each option letter as a first answer token ("A" and " A")."""
    found = {}
    for letter in letters:
        ids = {tuple(tokenizer.encode(v, add_special_tokens=False)) for v in (letter, " " + letter)}
        singles = sorted(i[0] for i in ids if len(i) == 1)
        if not singles:
            raise ValueError(f"option {letter!r} is not a single token for this tokenizer")
        found[letter] = singles
    return found


def option_logprobs(token_logprobs: Mapping[int, float],
                    letter_ids: Mapping[str, Sequence[int]]) -> tuple[dict[str, float] | None, list[str]]:
    """Log-distribution over the options from per-token log-probabilities at one position.

    Each option's score is the logsumexp of its token variants' log-probabilities; the scores are
    then log-softmaxed over the options only. Variants absent from `token_logprobs` (outside a
    top-k) are left out; an option with no variant at all cannot be scored: the result is then
    `(None, [missing options])`, never a guess.
    """
    scores, missing = {}, []
    for letter, ids in letter_ids.items():
        values = [float(token_logprobs[i]) for i in ids if i in token_logprobs]
        values = [v for v in values if v != -math.inf and not math.isnan(v)]
        if not values:
            missing.append(letter)
            continue
        top = max(values)
        scores[letter] = top + math.log(sum(math.exp(v - top) for v in values))
    if missing:
        return None, missing
    top = max(scores.values())
    norm = top + math.log(sum(math.exp(s - top) for s in scores.values()))
    return {letter: s - norm for letter, s in scores.items()}, []


def scoring_params(letter_ids: Mapping[str, Sequence[int]], supports_token_ids: bool) -> dict:
    """SamplingParams kwargs for one scored step: greedy, one token, the letters' log-probs.
    With `logprob_token_ids` (newer vLLM) the letters' log-probs come back exactly, whatever
    their rank; otherwise the top TOP_LOGPROBS and `option_logprobs` reports missing letters."""
    params = dict(temperature=0.0, max_tokens=1, detokenize=False)
    if supports_token_ids:
        params["logprob_token_ids"] = sorted({i for ids in letter_ids.values() for i in ids})
    else:
        params["logprobs"] = TOP_LOGPROBS
    return params


def generation_params(settings: GenerationSettings, stop_token_ids: Sequence[int]) -> dict:
    """SamplingParams kwargs that spell out all of decoding (as the transformers backend does):
    greedy at temperature 0, else temperature + top_p with top-k off, seeded; no penalties."""
    params = dict(max_tokens=settings.max_new_tokens, stop_token_ids=list(stop_token_ids),
                  repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, skip_special_tokens=True)
    if settings.temperature == 0:
        return dict(params, temperature=0.0)
    return dict(params, temperature=settings.temperature, top_p=settings.top_p, top_k=-1, seed=settings.seed)


def count_output(tokens: Sequence[int], stop_ids: Sequence[int]) -> int:
    """Tokens generated before the first stop token (vLLM keeps the EOS in `token_ids`)."""
    for n, tok in enumerate(tokens):
        if tok in stop_ids:
            return n
    return len(tokens)


def lora_rank(adapter: str | Path) -> int:
    """The smallest vLLM `max_lora_rank` that fits the adapter's rank (PEFT's adapter_config.json)."""
    config_path = Path(adapter) / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BiasbenchError(f"LoRA adapter {adapter}: cannot read {config_path.name} ({exc})") from exc
    ranks = [int(config.get("r") or 8)] + [int(r) for r in (config.get("rank_pattern") or {}).values()]
    need = max(ranks)
    for allowed in _LORA_RANKS:
        if allowed >= need:
            return allowed
    raise BiasbenchError(f"LoRA adapter {adapter}: rank {need} is larger than vLLM supports ({_LORA_RANKS[-1]})")


def _hash_folder(folder: Path) -> str:
    from biasbench.tts.weights import sha256_of_files

    return sha256_of_files(folder, sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()))


# ---------------------------------------------------------------- engines


@dataclass
class _Output:
    """What the backend needs from one vLLM `RequestOutput` (plain data: crosses processes)."""

    text: str
    token_ids: list[int]
    first_logprobs: dict[int, float] | None
    n_prompt_tokens: int


def _plain_outputs(outputs) -> list[_Output]:
    plain = []
    for out in outputs:
        completion = out.outputs[0]
        first = None
        if completion.logprobs:
            first = {int(tok): float(lp.logprob) for tok, lp in completion.logprobs[0].items()}
        plain.append(_Output(completion.text, list(completion.token_ids), first, len(out.prompt_token_ids or [])))
    return plain


class _LocalEngine:
    """One `vllm.LLM` in this process (tensor parallel inside it)."""

    def __init__(self, engine_args: dict, lora: tuple | None):
        vllm = import_vllm()
        self.llm = vllm.LLM(**engine_args)
        self.lora_request = None
        if lora is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest(*lora)

    def run(self, inputs: list[dict], params: list[dict]) -> list[_Output]:
        from vllm import SamplingParams

        outputs = self.llm.generate(inputs, [SamplingParams(**p) for p in params], use_tqdm=False,
                                    lora_request=self.lora_request)
        return _plain_outputs(outputs)


def _dp_worker(connection, engine_args: dict, lora, env: dict) -> None:
    """A data-parallel rank: its own engine on its own devices, serving `run` calls until None."""
    os.environ.update(env)
    try:
        engine = _LocalEngine(engine_args, lora)
        connection.send(("ready", None))
    except BaseException as exc:  # noqa: BLE001 — reported to the parent, which raises
        connection.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while True:
        message = connection.recv()
        if message is None:
            return
        try:
            connection.send(("ok", engine.run(*message)))
        except BaseException as exc:  # noqa: BLE001
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class _DataParallelEngine:
    """`data_parallel_size` independent engines in worker processes, each on its own
    `tensor_parallel_size` GPUs; a batch is split into contiguous shards, one per rank, and the
    answers are put back in order. (vLLM's `LLM(data_parallel_size>1)` refuses single-process
    use, so biasbench runs the ranks itself.)"""

    def __init__(self, engine_args: dict, lora, data_parallel_size: int, tensor_parallel_size: int):
        devices = _visible_gpus()
        need = data_parallel_size * tensor_parallel_size
        if devices is not None and len(devices) < need:
            raise BiasbenchError(f"data_parallel_size {data_parallel_size} x tensor_parallel_size "
                                 f"{tensor_parallel_size} needs {need} GPUs; {len(devices)} are visible")
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        self.connections, self.processes = [], []
        for rank in range(data_parallel_size):
            env = {}
            if devices is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[rank * tensor_parallel_size:(rank + 1) * tensor_parallel_size])
            parent, child = context.Pipe()
            process = context.Process(target=_dp_worker, args=(child, engine_args, lora, env), daemon=True)
            process.start()
            self.connections.append(parent)
            self.processes.append(process)
        for rank, connection in enumerate(self.connections):
            status, detail = connection.recv()
            if status != "ready":
                self.close()
                raise BiasbenchError(f"vLLM data-parallel rank {rank} failed to start: {detail}")

    def run(self, inputs: list[dict], params: list[dict]) -> list[_Output]:
        shards = np.array_split(np.arange(len(inputs)), len(self.connections))
        busy = []
        for connection, shard in zip(self.connections, shards):
            if len(shard):
                connection.send(([inputs[i] for i in shard], [params[i] for i in shard]))
                busy.append(connection)
        outputs: list[_Output] = []
        for rank, connection in enumerate(busy):
            status, detail = connection.recv()
            if status != "ok":
                raise BiasbenchError(f"vLLM data-parallel rank {rank} failed: {detail}")
            outputs += detail
        return outputs

    def close(self) -> None:
        for connection in self.connections:
            try:
                connection.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def _visible_gpus() -> list[str] | None:
    """The GPU ids this process may use, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------- backend


class VLLMBackend:
    """ModelBackend for audio chat models vLLM serves (Qwen2-Audio, Qwen2.5-Omni, Ultravox, ...)."""

    takes_conversation = True  # chat_messages carries earlier turns; every clip goes in multi_modal_data

    def __init__(
        self,
        model: str,
        revision: str | None = None,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        max_model_len: int | None = None,
        lora: str | None = None,
        gpu_memory_utilization: float = 0.9,
        *,
        trust_remote_code: bool = False,
        seed: int = 0,
        enforce_eager: bool = False,
        max_num_seqs: int | None = None,
        local_files_only: bool = False,
        engine_kwargs: dict | None = None,
    ):
        import_vllm()  # fail early, with the install hint
        import torch

        from biasbench.models.hf_qwen2audio import _resolve_revision

        if tensor_parallel_size < 1 or data_parallel_size < 1:
            raise BiasbenchError("tensor_parallel_size and data_parallel_size must be at least 1")
        self.model_id = str(model)
        self.revision = _resolve_revision(self.model_id, revision, local_files_only)
        self.dtype = pick_dtype(dtype, torch.cuda.is_available())
        self.tensor_parallel_size = tensor_parallel_size
        self.data_parallel_size = data_parallel_size
        self.lora = str(Path(lora).resolve()) if lora else None
        self.processor = self._load_processor(trust_remote_code, local_files_only)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        feature_extractor = getattr(self.processor, "feature_extractor", None)
        self.sampling_rate = int(getattr(feature_extractor, "sampling_rate", 16000))
        chunk = getattr(feature_extractor, "chunk_length", None)
        # Audio past the feature extractor's window would be cut silently (Qwen2-Audio: 30 s).
        self.max_audio_seconds: float | None = float(chunk) if chunk else None
        self.stop_ids = self._stop_ids()
        self._letter_ids: dict[tuple[str, ...], dict[str, list[int]]] = {}
        self._fingerprint: dict | None = None

        engine_args = dict(
            model=self.model_id, revision=self.revision, tokenizer_revision=self.revision, dtype=self.dtype,
            tensor_parallel_size=tensor_parallel_size, enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code, seed=seed,
            enforce_eager=enforce_eager, generation_config="vllm", limit_mm_per_prompt={"audio": 1},
        )
        if max_model_len is not None:
            engine_args["max_model_len"] = int(max_model_len)
        if max_num_seqs is not None:
            engine_args["max_num_seqs"] = int(max_num_seqs)
        lora_spec = None
        if self.lora:
            engine_args.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank(self.lora))
            lora_spec = ("biasbench-adapter", 1, self.lora)
        engine_args.update(engine_kwargs or {})
        self.engine_args = engine_args
        self._supports_token_ids = _sampling_params_field("logprob_token_ids")
        try:
            if data_parallel_size == 1:
                self.engine = _LocalEngine(engine_args, lora_spec)
            else:
                self.engine = _DataParallelEngine(engine_args, lora_spec, data_parallel_size, tensor_parallel_size)
        except BiasbenchError:
            raise
        except Exception as exc:
            hint = ""
            if self.lora and "lora" in str(exc).lower():
                hint = (" — vLLM may not support LoRA for this model class (Qwen2-Audio has no LoRA support "
                        "in vLLM): merge the adapter into the base weights (PEFT merge_and_unload, then "
                        "save_pretrained) and pass the merged folder instead.")
            raise BiasbenchError(f"vLLM could not start {self.model_id!r}: {type(exc).__name__}: {exc}{hint}") from exc

    def _load_processor(self, trust_remote_code: bool, local_files_only: bool):
        from transformers import AutoProcessor

        try:
            return AutoProcessor.from_pretrained(self.model_id, revision=self.revision,
                                                 trust_remote_code=trust_remote_code,
                                                 local_files_only=local_files_only)
        except Exception as exc:
            raise BiasbenchError(f"cannot load the processor of {self.model_id!r}: {type(exc).__name__}: {exc}") from exc

    def _stop_ids(self) -> list[int]:
        from transformers import GenerationConfig

        try:
            eos = GenerationConfig.from_pretrained(self.model_id, revision=self.revision).eos_token_id
        except Exception:  # no generation_config.json: the tokenizer's EOS
            eos = None
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [eos] if isinstance(eos, int) else list(eos)

    def close(self) -> None:
        """Stops data-parallel workers (an in-process engine goes with the backend)."""
        if isinstance(getattr(self, "engine", None), _DataParallelEngine):
            self.engine.close()

    def fingerprint(self) -> dict:
        if self._fingerprint is None:
            import vllm

            local = Path(self.model_id)
            self._fingerprint = {
                "backend": "vllm",
                "model": self.model_id,
                "revision": self.revision,
                "dtype": self.dtype,
                "tensor_parallel_size": self.tensor_parallel_size,
                "lora": self.lora,
                "lora_sha256": _hash_folder(Path(self.lora)) if self.lora else None,
                "vllm": vllm.__version__,
                "mc_logprobs": "token_ids" if self._supports_token_ids else f"top{TOP_LOGPROBS}",
                "local_sha256": _hash_folder(local) if local.is_dir() else None,
            }
        return dict(self._fingerprint)

    # ----------------------------------------------------------------- inputs

    def _check_audio(self, request: Request) -> None:
        if request.audio is None:
            return
        audio = np.asarray(request.audio)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"request {request.request_id}: audio must be a non-empty mono waveform")
        if request.sampling_rate != self.sampling_rate:
            raise ValueError(f"request {request.request_id}: audio at {request.sampling_rate} Hz, "
                             f"{self.model_id} expects {self.sampling_rate} Hz")
        if self.max_audio_seconds and request.audio_seconds > self.max_audio_seconds:
            raise ValueError(f"request {request.request_id}: audio is {request.audio_seconds:.2f} s, longer than "
                             f"the {self.max_audio_seconds:.0f} s {self.model_id} hears; it would be truncated")

    def _inputs(self, requests: list[Request]) -> list[dict]:
        inputs = []
        for request in requests:
            self._check_audio(request)
            prompt = self.processor.apply_chat_template(chat_messages(request), add_generation_prompt=True,
                                                        tokenize=False)
            inputs.append(engine_input(prompt, request))
        return inputs

    def _letters(self, choices: Sequence[str]) -> dict[str, list[int]]:
        key = tuple(choices)
        if key not in self._letter_ids:
            self._letter_ids[key] = letter_token_ids(self.tokenizer, choices)
        return self._letter_ids[key]

    # ----------------------------------------------------------------- ModelBackend

    def score_choices(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        require_choices(requests)
        start = time.perf_counter()
        letters = [self._letters(r.choices) for r in requests]
        outputs = self.engine.run(self._inputs(requests),
                                  [scoring_params(ids, self._supports_token_ids) for ids in letters])
        latency = (time.perf_counter() - start) / len(requests)
        responses = []
        for r, ids, out in zip(requests, letters, outputs):
            lp, missing = option_logprobs(out.first_logprobs or {}, ids)
            if lp is None:
                responses.append(Response(
                    r.request_id, text="", latency_s=latency, n_input_tokens=out.n_prompt_tokens,
                    error=f"options {', '.join(missing)} are not among vLLM's top {TOP_LOGPROBS} tokens and "
                          f"this vLLM has no logprob_token_ids: upgrade vLLM to score them exactly"))
                continue
            responses.append(Response(r.request_id, text=max(lp, key=lp.get), option_logprobs=lp, latency_s=latency,
                                      n_input_tokens=out.n_prompt_tokens, n_output_tokens=0))
        return responses

    def generate(self, requests: list[Request]) -> list[Response]:
        if not requests:
            return []
        start = time.perf_counter()
        # vLLM takes per-request SamplingParams: one engine call for any mix of settings.
        outputs = self.engine.run(self._inputs(requests),
                                  [generation_params(r.settings, self.stop_ids) for r in requests])
        latency = (time.perf_counter() - start) / len(requests)
        return [Response(r.request_id, text=out.text.strip(), latency_s=latency, n_input_tokens=out.n_prompt_tokens,
                         n_output_tokens=count_output(out.token_ids, self.stop_ids))
                for r, out in zip(requests, outputs)]


def _sampling_params_field(name: str) -> bool:
    from vllm import SamplingParams

    fields = getattr(SamplingParams, "__struct_fields__", None) or getattr(SamplingParams, "__dataclass_fields__", {})
    return name in fields
