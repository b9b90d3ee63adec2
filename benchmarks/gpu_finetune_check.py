"""A few LoRA SFT and DPO steps at full Qwen2-Audio-7B size on a lent GPU: peak memory, step time.

    python3 benchmarks/gpu_finetune_check.py [--json OUT.json]   # on a CUDA GPU (H100/H200), < 8 min
    python3 benchmarks/gpu_finetune_check.py --dry-run           # anywhere: the tiny model on CPU

No hub, no weights on disk: the model is Qwen2-Audio-7B's ARCHITECTURE (dimensions from
Qwen/Qwen2-Audio-7B-Instruct's config.json, as in benchmarks/gpu_check.py: 32-layer 1280-wide
Whisper-style encoder, 32-layer 4096-wide Qwen2 LM, 156032-token vocabulary, ~8.4B
parameters) with random bf16 weights built on the GPU. The text side (tokenizer, chat template,
Whisper front end with the real 30 s window) is the tiny local Qwen2-Audio's, so sequence
shapes match production. Voices are synthetic tones from a small TTS engine registered here
(no espeak-ng needed), 18 training and 18 evaluation voices, 2 x 3 x 3.

Runs the real code: `biasbench.finetune.sft.run_sft` (HF Trainer, counterfactual batches of 6
voices, JS consistency loss, LoRA rank 8 on the language model, bf16 autocast) and
`biasbench.finetune.dpo.run_dpo` (trl DPOTrainer with the audio collator; skipped with a clear
message when trl or datasets is not importable: the lent machine's image has peft but not trl,
so carry their wheels, see /work/.library/device/README.md). Prints a table of seconds per
optimizer step (median after the first), peak GPU memory, first and last loss.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a bare checkout
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SR = 16000
PROMPT = "Answer the spoken question briefly."

# The full-size architecture's dimensions, kept once, in the inference check beside this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import QWEN2_AUDIO_7B  # noqa: E402


class ToneTTS:
    """A voice = a pitched harmonic tone; the text sets the clip's length (1.5-4 s) and a content tone."""

    name = "bench-tone"

    def version(self) -> str:
        return "1"

    def synthesize(self, text: str, params: dict):
        seconds = 1.5 + (len(text) % 25) / 10
        t = np.arange(int(seconds * SR)) / SR
        f0 = float(params["f0"])
        voice = sum(0.5 ** k * np.sin(2 * np.pi * f0 * (k + 1) * t) for k in range(3))
        content = 2000.0 + 40.0 * (sum(map(ord, text)) % 50)
        return (0.12 * voice + 0.1 * np.sin(2 * np.pi * content * t)).astype(np.float32), SR


def pool(name: str, prefix: str, f0s: list[float]) -> dict:
    voices, n = [], 0
    for gender in ("female", "male"):
        for ethnicity in ("black", "white", "east_asian"):
            for k in range(3):
                f0 = f0s[n] * (1.0 if gender == "female" else 0.5)
                voices.append({"id": f"{prefix}-{gender[0]}-{ethnicity}-{k}", "gender": gender, "ethnicity": ethnicity,
                               "accent": "tone", "label_source": "proxy", "tts": {"backend": "bench-tone", "f0": f0}})
                n += 1
    return {"pool": name, "voices": voices}


def write_inputs(root: Path, n_items: int) -> dict:
    import yaml

    (root / "train.yaml").write_text(yaml.safe_dump(pool("bench-train", "tr", [200 + 4 * i for i in range(18)])))
    (root / "eval.yaml").write_text(yaml.safe_dump(pool("bench-eval", "ev", [202 + 4 * i for i in range(18)])))
    with (root / "sft.jsonl").open("w") as f:
        for k in range(n_items):
            f.write(json.dumps({"id": f"i{k}", "instruction": f"Question number {k}: what is {k} plus {k}?",
                                "response": f"The answer is {2 * k}."}) + "\n")
    with (root / "pairs.jsonl").open("w") as f:
        for k in range(n_items):
            f.write(json.dumps({"pair_id": f"p{k}", "item_id": f"i{k}", "spoken_text": f"Question {k}: pick A or B.",
                                "text_prompt": "Reply with A or B.", "chosen": "A", "rejected": "B"}) + "\n")
    return {"train_pool": str(root / "train.yaml"), "eval_pool": str(root / "eval.yaml")}


def build_model(dry_run: bool):
    """(BaseModelRef, processor, model, device): the tiny model on CPU, or the random 7B on the GPU."""
    import torch
    from transformers import AutoProcessor, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from biasbench.finetune.adapter import BaseModelRef
    from biasbench.models.tiny.qwen2audio import tiny_qwen2audio_path

    tiny = tiny_qwen2audio_path()
    processor = AutoProcessor.from_pretrained(tiny)
    if dry_run:
        model = Qwen2AudioForConditionalGeneration.from_pretrained(tiny).requires_grad_(False)
        return BaseModelRef("tiny-qwen2audio", "tiny-qwen2audio", str(tiny), True), processor, model, "cpu"
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here; use --dry-run")
    config = Qwen2AudioConfig(audio_config=QWEN2_AUDIO_7B["audio_config"], text_config=QWEN2_AUDIO_7B["text_config"],
                              audio_token_id=processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            torch.manual_seed(0)
            model = Qwen2AudioForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    ref = BaseModelRef("random:qwen2-audio-7b", "random Qwen2-Audio-7B architecture", "random:qwen2-audio-7b", True,
                       "random weights: timing and memory only")
    return ref, processor, model, "cuda"


class StepTimer:
    """Wall time per optimizer step (GPU synchronised) and peak memory."""

    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._sync()
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer._sync()
                timer.seconds.append(time.perf_counter() - timer._start)

        self.callback = Callback()
        self.seconds: list[float] = []

    @staticmethod
    def _sync():
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def peak_gib(reset: bool = False) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def run_phase(kind: str, fn, config, loaded, out_root: Path) -> dict:
    from rich.console import Console

    timer = StepTimer()
    peak_gib(reset=True)
    start = time.perf_counter()
    result = fn(config, output_dir=out_root, progress=False, console=Console(stderr=True), callbacks=[timer.callback],
                loaded=loaded)
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    steady = timer.seconds[1:] or timer.seconds
    row = {"phase": kind, "steps": len(timer.seconds), "s_per_step_median": round(statistics.median(steady), 3),
           "s_first_step": round(timer.seconds[0], 3), "peak_gib": peak_gib(), "loss_first": round(losses[0], 4),
           "loss_last": round(losses[-1], 4), "wall_s": round(time.perf_counter() - start, 1),
           "examples_per_step": config.training.batch_size * config.training.gradient_accumulation_steps}
    print(f"  {kind}: {row}", flush=True)
    return row, result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU (checks the script, times nothing)")
    parser.add_argument("--sft-steps", type=int, default=None)
    parser.add_argument("--dpo-steps", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sft_steps = args.sft_steps or (2 if args.dry_run else 6)
    dpo_steps = args.dpo_steps or (2 if args.dry_run else 6)

    tmp = Path(tempfile.mkdtemp(prefix="biasbench-ft-check-"))
    os.environ.setdefault("BIASBENCH_CACHE", str(tmp / "cache"))
    try:
        return check(args, tmp, sft_steps, dpo_steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(args, tmp: Path, sft_steps: int, dpo_steps: int) -> int:
    import torch

    from biasbench.finetune.config import FinetuneConfig
    from biasbench.finetune.sft import run_sft
    from biasbench.tts import registry

    registry.BACKENDS["bench-tone"] = ToneTTS
    pools = write_inputs(tmp, n_items=12)
    t0 = time.perf_counter()
    ref, processor, model, device = build_model(args.dry_run)
    n_params = sum(p.numel() for p in model.parameters())
    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" else ""
    print(f"model: {ref.name}, {n_params / 1e9:.2f}B parameters, {device}{gpu}, built in "
          f"{time.perf_counter() - t0:.1f} s; torch {torch.__version__}", flush=True)
    rows = []
    common = dict(model=ref.model, output_dir=str(tmp / "runs"), text_prompt=PROMPT, **pools,
                  lora={"rank": 8, "alpha": 32, "dropout": 0.05},
                  counterfactual={"voices_per_instruction": 6, "consistency_weight": 0.5})
    training = {"learning_rate": 1e-4, "batch_size": 6, "gradient_accumulation_steps": 2, "save_steps": 10_000,
                "logging_steps": 1, "mixed_precision": "auto", "seed": 0}
    sft_config = FinetuneConfig.model_validate({
        **common, "name": "sft", "data": {"id_field": "id", "local": {"path": str(tmp / "sft.jsonl")}},
        "training": {**training, "max_steps": sft_steps}})
    row, result = run_phase("sft", run_sft, sft_config, (ref, processor, model, device), tmp / "runs")
    rows.append(row)
    base = result.model.unload()  # LoRA layers out again: the bare base model for DPO
    del result
    try:
        import datasets  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        rows.append({"phase": "dpo", "skipped": f"{exc.name} is not importable: carry trl + datasets wheels"})
        print(f"  dpo: skipped ({exc.name} not importable)", flush=True)
    else:
        from biasbench.finetune.dpo import run_dpo

        dpo_config = FinetuneConfig.model_validate({
            **common, "name": "dpo", "dpo": {"pairs": str(tmp / "pairs.jsonl"), "beta": 0.1},
            "training": {**training, "max_steps": dpo_steps, "batch_size": 6, "gradient_accumulation_steps": 1}})
        row, _ = run_phase("dpo", run_dpo, dpo_config, (ref, processor, base, device), tmp / "runs")
        rows.append(row)
    print("\n| phase | steps | s/step (median) | first step s | peak GiB | loss first -> last | examples/step |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['phase']} | skipped: {r['skipped']} | | | | | |")
        else:
            print(f"| {r['phase']} | {r['steps']} | {r['s_per_step_median']} | {r['s_first_step']} | {r['peak_gib']} | "
                  f"{r['loss_first']} -> {r['loss_last']} | {r['examples_per_step']} |")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "n_params": n_params, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
