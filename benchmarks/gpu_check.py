"""Throughput of the HF Qwen2-Audio backend at full 7B size on a lent GPU. Prints a table.

    python3 benchmarks/gpu_check.py [--json OUT.json]        # on a CUDA GPU (H100/H200)
    python3 benchmarks/gpu_check.py --dry-run                # anywhere: tiny model, CPU

No hub, no weights on disk: the model is Qwen2-Audio-7B's ARCHITECTURE (dimensions written
out below from Qwen/Qwen2-Audio-7B-Instruct's config.json: 32-layer 1280-wide Whisper-style
encoder, 32-layer 4096-wide Qwen LM, 156032-token vocabulary; about 8.4B parameters) with
random bf16 weights, built directly on the GPU. The text side (tokenizer, chat template,
Whisper feature extractor) is the tiny local Qwen2-Audio's, whose audio front end is the real
one (128 mel bins, 30 s window), so prompt shapes match production: a 10 s clip is 250 audio
tokens. Random weights rarely emit the stop token, so `generate` runs its full
--new-tokens: tokens/s are comparable across batch sizes.

Measured through the real backend code (`HFQwen2AudioBackend.score_choices` / `generate`),
for batch sizes 1/8/32 of synthetic 10 s clips: multiple-choice scoring (one forward pass)
and greedy generation. vLLM is measured too when it is importable (dummy weights, same
config); otherwise the table says it was skipped. A time budget (--budget-s) stops the
measurements early rather than overrun the lease: the whole check is sized for < 8 min.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a bare checkout

from biasbench.models.base import GenerationSettings, Request  # noqa: E402
from biasbench.models.hf_qwen2audio import HFQwen2AudioBackend  # noqa: E402

SR = 16000
PROMPT = "Listen to the speaker. Which option fits best? Answer with A, B, C or D."

# Qwen/Qwen2-Audio-7B-Instruct, config.json (dimensions only; audio_token_id is set to the tiny
# tokenizer's <|AUDIO|> id at build time, since the text side is the tiny model's).
QWEN2_AUDIO_7B = {
    "audio_config": dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                         num_mel_bins=128, max_source_positions=1500, activation_function="gelu",
                         scale_embedding=False),
    "text_config": dict(model_type="qwen2", vocab_size=156032, hidden_size=4096, intermediate_size=11008,
                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=10000.0,
                        tie_word_embeddings=False),
}


def full_size_config(tokenizer):
    from transformers import Qwen2AudioConfig

    return Qwen2AudioConfig(audio_config=QWEN2_AUDIO_7B["audio_config"], text_config=QWEN2_AUDIO_7B["text_config"],
                            audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))


def meta_param_count(tokenizer) -> int:
    """Parameters of the full-size model, counted on the meta device (allocates nothing)."""
    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2AudioForConditionalGeneration(full_size_config(tokenizer))
    return sum(p.numel() for p in model.parameters())


class RandomQwen2Audio7B(HFQwen2AudioBackend):
    """The real backend, its model hook replaced: full-size architecture, random weights,
    built on the device in the backend's dtype (no checkpoint is read or written)."""

    def _load_model(self, common, bnb):
        import torch
        from transformers import GenerationConfig, Qwen2AudioForConditionalGeneration

        config = full_size_config(self.processor.tokenizer)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(self.torch_dtype)
        try:
            with torch.device(self.device):
                torch.manual_seed(0)
                model = Qwen2AudioForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
        tok = self.processor.tokenizer
        model.generation_config = GenerationConfig(
            eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>")], pad_token_id=tok.pad_token_id)
        return model.eval()


def clips(n: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return [(0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.05 * rng.standard_normal(t.size))
            .astype(np.float32) for _ in range(n)]


def timed(call, requests, repeats: int) -> float:
    """Seconds per call: one warm-up call, then the mean of `repeats` calls. The backends
    return Python lists (.tolist()), which waits for the GPU: no explicit synchronize needed."""
    call(requests)
    start = time.perf_counter()
    for _ in range(repeats):
        call(requests)
    return (time.perf_counter() - start) / repeats


def measure_hf(backend, batches, seconds, new_tokens, deadline, sync, quick=False) -> list[dict]:
    rows = []
    for b in batches:
        if time.monotonic() > deadline:
            rows.append({"engine": "hf", "batch": b, "skipped": "time budget"})
            continue
        audio = clips(b, seconds, seed=b)
        score_reqs = [Request(f"s{i}", PROMPT, audio=a, choices=["A", "B", "C", "D"]) for i, a in enumerate(audio)]
        settings = GenerationSettings(max_new_tokens=new_tokens)
        gen_reqs = [Request(f"g{i}", PROMPT, audio=a, settings=settings) for i, a in enumerate(audio)]
        repeats = 1 if quick else max(2, 16 // b)
        sync(reset=True)
        score_s = timed(backend.score_choices, score_reqs, repeats)
        gen_s = timed(backend.generate, gen_reqs, max(1, repeats // 2))
        out = backend.generate(gen_reqs[:1])[0]
        rows.append({"engine": "hf", "batch": b, "score_req_s": b / score_s, "score_ms_per_req": 1000 * score_s / b,
                     "gen_req_s": b / gen_s, "gen_tok_s": b * new_tokens / gen_s,
                     "input_tokens": out.n_input_tokens, "peak_gib": sync(reset=False)})
        print(f"  hf batch {b}: score {b / score_s:.2f} req/s, generate {b * new_tokens / gen_s:.1f} tok/s", flush=True)
    return rows


def measure_vllm(tiny_dir: Path, batches, seconds, new_tokens, deadline) -> list[dict]:
    """vLLM with dummy weights of the same full-size config, if vLLM is importable."""
    try:
        from vllm import LLM, SamplingParams
    except Exception as exc:  # not installed (the usual case on the lent machine), or broken
        return [{"engine": "vllm", "skipped": f"not importable ({type(exc).__name__})"}]
    if time.monotonic() > deadline - 150:
        return [{"engine": "vllm", "skipped": "time budget"}]
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_dir)
    folder = Path(tempfile.mkdtemp(prefix="qwen2audio-7b-dummy-"))
    rows = []
    try:
        for f in tiny_dir.iterdir():
            if f.suffix != ".safetensors":
                shutil.copy(f, folder / f.name)
        config = full_size_config(processor.tokenizer)
        config.architectures = ["Qwen2AudioForConditionalGeneration"]
        config.save_pretrained(folder)
        llm = LLM(model=str(folder), load_format="dummy", dtype="bfloat16", max_model_len=2048,
                  gpu_memory_utilization=0.8, enforce_eager=True, limit_mm_per_prompt={"audio": 1})
        messages = [{"role": "user", "content": [{"type": "audio", "audio": "<waveform>"},
                                                 {"type": "text", "text": PROMPT}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        for b in batches:
            if time.monotonic() > deadline:
                rows.append({"engine": "vllm", "batch": b, "skipped": "time budget"})
                continue
            prompts = [{"prompt": text, "multi_modal_data": {"audio": (a, SR)}} for a in clips(b, seconds, seed=b)]
            score = SamplingParams(max_tokens=1, temperature=0.0, logprobs=20)
            gen = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
            repeats = max(2, 16 // b)
            score_s = timed(lambda p: llm.generate(p, score, use_tqdm=False), prompts, repeats)
            gen_s = timed(lambda p: llm.generate(p, gen, use_tqdm=False), prompts, max(1, repeats // 2))
            rows.append({"engine": "vllm", "batch": b, "score_req_s": b / score_s,
                         "score_ms_per_req": 1000 * score_s / b, "gen_req_s": b / gen_s,
                         "gen_tok_s": b * new_tokens / gen_s})
            print(f"  vllm batch {b}: score {b / score_s:.2f} req/s, generate {b * new_tokens / gen_s:.1f} tok/s",
                  flush=True)
    except Exception as exc:  # report, never fail the whole check on the optional engine
        rows.append({"engine": "vllm", "skipped": f"failed: {type(exc).__name__}: {str(exc)[:300]}"})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'engine':<6} {'batch':>5} {'score req/s':>12} {'score ms/req':>13} {'gen req/s':>10} " \
           f"{'gen tok/s':>10} {'in tok':>7} {'peak GiB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['engine']:<6} {r.get('batch', '-'):>5} skipped: {r['skipped']}")
            continue
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") is not None else "-"
        lines.append(f"{r['engine']:<6} {r['batch']:>5} {r['score_req_s']:>12.2f} {r['score_ms_per_req']:>13.1f} "
                     f"{r['gen_req_s']:>10.2f} {r['gen_tok_s']:>10.1f} {r.get('input_tokens') or '-':>7} {peak:>9}")
    return "\n".join(lines)


def planned_vs_measured(rows: list[dict], seconds: float, device_name: str | None) -> str:
    """`biasbench plan`'s FLOP count for these requests, and the share of the GPU's bf16 peak each
    measured scoring row reached: the figure to compare with plan's assumed utilisation."""
    from biasbench.gpu_estimate import GPUS, SPECS, UTILISATION, request_flops

    flops = request_flops(SPECS["Qwen/Qwen2-Audio-7B-Instruct"], seconds, len(PROMPT.split()))
    lines = [f"biasbench plan counts {flops / 1e12:.2f} TFLOP per scored request ({seconds:g} s clip); "
             f"it assumes {UTILISATION:.0%} of the bf16 peak"]
    gpu = next((name for name in GPUS if device_name and name in device_name), None)
    for r in rows:
        if gpu and "score_req_s" in r:
            reached = flops * r["score_req_s"] / (GPUS[gpu][0] * 1e12)
            lines.append(f"  {r['engine']} batch {r['batch']}: measured {reached:.1%} of the {gpu} peak")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny Qwen2-Audio on CPU: checks the script, measures nothing")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 1 8 32; dry run 1 2)")
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--new-tokens", type=int, default=None, help="generated tokens (default 32; dry run 4)")
    parser.add_argument("--budget-s", type=float, default=300.0, help="stop starting new measurements after this")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    start = time.monotonic()
    deadline = start + args.budget_s
    batches = args.batches or ([1, 2] if args.dry_run else [1, 8, 32])
    new_tokens = args.new_tokens or (4 if args.dry_run else 32)
    seconds = min(args.clip_seconds, 3.0) if args.dry_run else args.clip_seconds
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --dry-run, or on the lent GPU machine", file=sys.stderr)
        return 2
    tiny_dir = tiny_qwen2audio_path()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)

    def sync(reset: bool):
        if not torch.cuda.is_available() or args.dry_run:
            return None
        torch.cuda.synchronize()
        if reset:
            torch.cuda.reset_peak_memory_stats()
            return None
        return torch.cuda.max_memory_allocated() / 2**30

    if args.dry_run:
        backend = HFQwen2AudioBackend(str(tiny_dir), device="cpu", local_files_only=True)
        what = f"DRY RUN: tiny Qwen2-Audio ({tiny_dir}) on CPU; numbers mean nothing"
        print(f"full-size architecture (meta device, no memory): {meta_param_count(backend.tokenizer) / 1e9:.2f}B "
              "parameters", flush=True)
    else:
        t0 = time.monotonic()
        backend = RandomQwen2Audio7B(str(tiny_dir), device="cuda", dtype="bfloat16", local_files_only=True)
        n_params = sum(p.numel() for p in backend.model.parameters())
        what = (f"Qwen2-Audio-7B architecture, random bf16 weights ({n_params / 1e9:.2f}B params, built in "
                f"{time.monotonic() - t0:.0f} s) on {torch.cuda.get_device_name()}")
    print(what, flush=True)
    print(f"{seconds:g} s clips, {new_tokens} new tokens per generate, batches {batches}", flush=True)

    rows = measure_hf(backend, batches, seconds, new_tokens, deadline, sync, quick=args.dry_run)
    if args.dry_run:
        rows.append({"engine": "vllm", "skipped": "dry run"})
    else:
        del backend
        torch.cuda.empty_cache()
        rows += measure_vllm(tiny_dir, batches, seconds, new_tokens, deadline)

    print("\n" + what)
    print(table(rows))
    print("\n" + planned_vs_measured(rows, seconds, None if args.dry_run else torch.cuda.get_device_name()))
    print(f"\ntotal {time.monotonic() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"what": what, "clip_seconds": seconds, "new_tokens": new_tokens,
                                         "torch": torch.__version__, "transformers": transformers.__version__,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
