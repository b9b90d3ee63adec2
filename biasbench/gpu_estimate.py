"""GPU time of a run from first principles: FLOPs per request over the GPU's bf16 peak.

A forward pass costs about 2 FLOPs per parameter per token (Kaplan et al., 2020). For an
audio LM that splits into three parts, each counted on what it really processes:

- the audio encoder runs over the whole PADDED window whatever the clip's length
  (Qwen2-Audio: 30 s of mel frames -> 1500 encoder positions, pooled to 750 audio tokens);
- the language model runs over the clip's audio tokens (25 per second, at most 750 for a
  full window) plus the text prompt's tokens;
- the output head (vocabulary x hidden) runs on the scored position only (multiple choice by
  letter log-probabilities), or once per generated token.

Generated tokens are memory-bound, not compute-bound: each decoding step reads every weight
once for the whole batch, so they are timed at the GPU's memory bandwidth instead.
Prompt tokens are estimated without a tokenizer (the model is never loaded): 1.3 tokens per
word plus 20 for the chat template. Utilisation (the share of peak a real run reaches) is a
stated assumption; `benchmarks/gpu_check.py` measures the real figure on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

#: bf16 dense peak (TFLOP/s, no sparsity) and HBM bandwidth (TB/s), from the vendor data sheets
#: (A100 80GB SXM, H100 SXM, H200 SXM).
GPUS = {"A100": (312.0, 2.0), "H100": (989.0, 3.35), "H200": (989.0, 4.8)}
UTILISATION = 0.3  # share of the bf16 peak reached by batched inference (assumed; measure with gpu_check)
TOKENS_PER_WORD, TEMPLATE_TOKENS = 1.3, 20
BYTES_PER_PARAM = 2  # bf16 weights


@dataclass(frozen=True)
class ComputeSpec:
    name: str
    encoder_params: float  # audio encoder
    encoder_positions: int  # encoder positions per padded window
    window_s: float  # the padded audio window; longer clips are skipped (or cut) by the run
    lm_params: float  # language model without the embedding and output matrices
    head_params: float  # output head: vocabulary x hidden
    audio_tokens_per_s: float  # LM positions per second of audio

    @property
    def total_params(self) -> float:
        return self.encoder_params + self.lm_params + 2 * self.head_params  # + input embeddings


def _qwen2_audio_7b() -> ComputeSpec:
    """From Qwen/Qwen2-Audio-7B-Instruct's config.json: a 32-layer, 1280-wide Whisper-style encoder
    (FFN 5120, 1500 positions per 30 s) and a 32-layer, 4096-wide Qwen LM (FFN 11008, 32 KV heads,
    vocabulary 156032). Per layer: attention 4 d^2, MLP 2 d f (encoder, GELU) or 3 d f (LM, SwiGLU)."""
    enc_d, enc_f, lm_d, lm_f, layers = 1280, 5120, 4096, 11008, 32
    return ComputeSpec("Qwen2-Audio-7B", encoder_params=layers * (4 * enc_d**2 + 2 * enc_d * enc_f),
                       encoder_positions=1500, window_s=30.0,
                       lm_params=layers * (4 * lm_d**2 + 3 * lm_d * lm_f), head_params=156032 * lm_d,
                       audio_tokens_per_s=25.0)


#: Hub id -> compute spec, for the models whose architecture is written out here.
SPECS = {"Qwen/Qwen2-Audio-7B-Instruct": _qwen2_audio_7b(), "Qwen/Qwen2-Audio-7B": _qwen2_audio_7b()}


def prompt_tokens(words: int) -> float:
    return TOKENS_PER_WORD * words + TEMPLATE_TOKENS


def request_flops(spec: ComputeSpec, audio_s: float | None, prompt_words: int) -> float:
    """Prefill FLOPs of one request: the encoder (only with audio) over its padded window, the LM
    over audio and prompt tokens, the head on the last position (the scored letter or the first
    generated token; later generated tokens are decoding steps)."""
    flops = 2 * spec.lm_params * prompt_tokens(prompt_words)
    if audio_s is not None:
        heard = min(audio_s, spec.window_s)
        flops += 2 * spec.encoder_params * spec.encoder_positions
        flops += 2 * spec.lm_params * heard * spec.audio_tokens_per_s
    return flops + 2 * spec.head_params


def gpu_hours(total_flops: float, n_decode_steps: float, spec: ComputeSpec, batch_size: int,
              utilisation: float = UTILISATION) -> dict[str, float]:
    """GPU -> hours on one GPU: prefill FLOPs at `utilisation` of the bf16 peak, plus decoding
    steps (one weight read per step per batch) at the memory bandwidth."""
    hours = {}
    for gpu, (tflops, tbps) in GPUS.items():
        prefill_s = total_flops / (tflops * 1e12 * utilisation)
        decode_s = n_decode_steps / batch_size * spec.total_params * BYTES_PER_PARAM / (tbps * 1e12)
        hours[gpu] = (prefill_s + decode_s) / 3600
    return hours
