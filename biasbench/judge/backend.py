"""A judge from a model spec: any configured backend, or a simulated judge for tests.

Specs: `openai:<model>` (an OpenAI-compatible server: --base-url or $OPENAI_BASE_URL),
`vllm:<model>`, `hf-text:<hub id or folder>` (a chat text LLM through transformers),
any `biasbench models` alias or `hf:` speech LM (asked in text only), and the simulated
judges below, which read the answers back out of the prompt and follow a planted rule.
Every request is text only: a judge never receives audio.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field

from biasbench.errors import BiasbenchError
from biasbench.models.base import GenerationSettings, Request, Response

HF_TEXT = "hf-text:"

#: The simulated judges: planted rules, for tests and calibration; they measure no model.
SIMULATED = {
    "simulated-judge-length": "prefers the answer with more words (a planted verbosity preference); tie when equal",
    "simulated-judge-random": "no preference: A, B or a tie drawn from a hash of the prompt (45/45/10 %)",
    "simulated-judge-first": "always prefers the first answer shown (pure position bias)",
    "simulated-judge-flaky": "as simulated-judge-length, but 1 prompt in 5 gets a reply without a verdict and "
                             "1 in 10 an error (by a hash of the prompt)",
}
_ANSWER = re.compile(r"\[Answer ([AB])\]\n(.*?)\n\[End of answer \1\]", re.DOTALL)


@dataclass
class Judge:
    """A loaded judge: `identity` keys the cache (name + a hash of the fingerprint)."""

    name: str
    backend: object
    fingerprint: dict
    pipeline_check: bool = False
    note: str = ""
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.name}@{digest[:12]}"

    def ask(self, prompts: list[str]) -> list[Response]:
        """One Response per prompt, in order; a backend exception fails the whole batch visibly."""
        requests = [Request(request_id=str(i), prompt=p, settings=self.settings) for i, p in enumerate(prompts)]
        try:
            return list(self.backend.generate(requests))
        except BiasbenchError:
            raise
        except Exception as exc:  # the batch failed: every judgement in it is a counted failure
            return [Response(r.request_id, text="", error=f"{type(exc).__name__}: {exc}") for r in requests]


def load_judge(spec: str, *, base_url: str | None = None, device: str = "auto", dtype: str = "auto",
               max_new_tokens: int = 256) -> Judge:
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0)
    if spec in SIMULATED:
        backend = SimulatedJudge(spec)
        return Judge(spec, backend, backend.fingerprint(), pipeline_check=True,
                     note=f"SIMULATED JUDGE ({SIMULATED[spec]}): a check of the pipeline, not a measurement",
                     settings=settings)
    if spec.startswith("simulated-judge"):
        raise BiasbenchError(f"unknown simulated judge {spec!r}; known: {', '.join(SIMULATED)}")
    if spec.startswith(HF_TEXT):
        backend = HFTextJudge(spec[len(HF_TEXT):].strip(), device=device, dtype=dtype)
        return Judge(spec, backend, backend.fingerprint(), pipeline_check=backend.pipeline_check,
                     note="tiny random text LLM: a pipeline check" if backend.pipeline_check else "",
                     settings=settings)
    from biasbench.models.registry import load_backend, resolve_model

    choice = resolve_model(spec)
    backend = load_backend(choice, dtype=dtype, device=device, base_url=base_url)
    return Judge(choice.name, backend, backend.fingerprint(), pipeline_check=choice.pipeline_check,
                 note=choice.note, settings=settings)


class SimulatedJudge:
    """A judge that follows a planted rule (SIMULATED), reading the answers back from the prompt."""

    def __init__(self, name: str):
        self.name = name
        self.max_audio_seconds = None

    def fingerprint(self) -> dict:
        return {"backend": "simulated-judge", "model": self.name}

    def generate(self, requests: list[Request]) -> list[Response]:
        start = time.perf_counter()
        out = [self._one(r) for r in requests]
        for r in out:
            r.latency_s = (time.perf_counter() - start) / max(len(requests), 1)
        return out

    def _one(self, request: Request) -> Response:
        u = int(hashlib.sha256(request.prompt.encode("utf-8")).hexdigest()[:8], 16) / 16 ** 8
        if self.name == "simulated-judge-flaky":
            if u < 0.1:
                return Response(request.request_id, text="", error="SimulatedError: the judge server timed out")
            if u < 0.3:
                return Response(request.request_id, text="Both answers have merits.")
        if self.name == "simulated-judge-first":
            return Response(request.request_id, text="Answer A is better. [[A]]")
        if self.name == "simulated-judge-random":
            letter = "A" if u < 0.45 else "B" if u < 0.9 else "C"
            return Response(request.request_id, text=f"Hard to say. [[{letter}]]")
        answers = dict(_ANSWER.findall(request.prompt))
        a, b = (len(re.findall(r"\w+", answers.get(k, ""))) for k in ("A", "B"))
        letter = "A" if a > b else "B" if b > a else "C"
        return Response(request.request_id, text=f"Answer A has {a} words, answer B {b}. [[{letter}]]")


class HFTextJudge:
    """A chat text LLM through transformers (biasbench.models.cascade.TextLLM), greedy."""

    def __init__(self, model: str, *, device: str = "auto", dtype: str = "auto"):
        from biasbench.models.cascade import TextLLM
        from biasbench.models.registry import CASCADE_PARTS, _cascade_part_path

        if not model:
            raise BiasbenchError("give the model after 'hf-text:', e.g. hf-text:Qwen/Qwen2.5-7B-Instruct")
        part = CASCADE_PARTS.get(model)
        if part is not None and part.backend == "text-llm":
            model = part.model
        self.pipeline_check = model.startswith("builtin:")
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.path.isdir(model)
        self.llm = TextLLM(_cascade_part_path(model), device=device, dtype=dtype, local_files_only=offline)
        self.max_audio_seconds = None

    def fingerprint(self) -> dict:
        return self.llm.fingerprint()

    def generate(self, requests: list[Request]) -> list[Response]:
        import torch

        if not requests:
            return []
        inputs = self.llm.encode([r.prompt for r in requests])
        with torch.inference_mode():
            out = self.llm.model.generate(**inputs, **self.llm.decoding_kwargs(requests[0].settings))
        texts = self.llm.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:].tolist(),
                                                skip_special_tokens=True)
        return [Response(r.request_id, text=t.strip()) for r, t in zip(requests, texts)]
