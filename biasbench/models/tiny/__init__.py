"""Tiny, randomly initialised models of the real classes, built offline on first use.

They load through the same code paths as the hub checkpoints they stand for, so tests,
benchmarks and `--offline-fallback` runs exercise the real pipeline; their answers are
noise and measure nothing (runs that use them are labelled pipeline checks).

- `qwen2audio`: Qwen2-Audio (`tiny-qwen2audio`), the shared tokenizer and corpus helpers.
- `families`: the other speech-LM families (`tiny-voxtral`, `tiny-qwen2.5-omni`, ...).
- `controls`: the halves of the controls (`tiny-whisper`, `tiny-qwen2-text`) and a wider
  Qwen2-Audio for vLLM.

Nothing is imported here, so naming the package loads no transformers.
"""
