"""The aliases `--model` accepts (`biasbench models` lists them): name, hub id, backend, needs.

One table, kept apart from how a spec is resolved and loaded (registry.py), so adding a
model is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelAlias:
    name: str
    model: str  # hub id, or "builtin:<name>" for models biasbench builds itself
    backend: str
    needs_gpu: bool
    description: str
    needs: str = ""  # what else it needs to run, e.g. an API key's environment variable
    pipeline_note: str = ""  # for builtin:* models, what the manifest says they are


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in [
        ModelAlias("qwen2audio", "Qwen/Qwen2-Audio-7B-Instruct", "hf", True,
                   "Qwen2-Audio-7B-Instruct through transformers (bf16 on a CUDA GPU)"),
        ModelAlias("tiny-qwen2audio", "builtin:tiny-qwen2audio", "hf", False,
                   "a tiny randomly initialised Qwen2-Audio of the real classes, built locally: "
                   "for pipeline checks and tests, its answers mean nothing"),
        # Other speech-LM families through transformers (biasbench/models/families/): the
        # `hf` backend picks the family from the checkpoint's config model_type.
        ModelAlias("qwen2.5-omni", "Qwen/Qwen2.5-Omni-7B", "hf", True,
                   "Qwen2.5-Omni-7B's thinker (audio in, text out; no talker) through transformers"),
        ModelAlias("qwen3-omni", "Qwen/Qwen3-Omni-30B-A3B-Instruct", "hf", True,
                   "Qwen3-Omni-30B-A3B-Instruct's thinker (MoE, 3B active; no talker) through transformers"),
        ModelAlias("voxtral-mini", "mistralai/Voxtral-Mini-3B-2507", "hf", True,
                   "Voxtral Mini 3B through transformers (its tokenizer needs mistral-common)"),
        ModelAlias("audio-flamingo-3", "nvidia/audio-flamingo-3-hf", "hf", True,
                   "NVIDIA Audio Flamingo 3 (transformers format) through transformers"),
        ModelAlias("music-flamingo", "nvidia/music-flamingo-2601-hf", "hf", True,
                   "NVIDIA Music Flamingo (Audio Flamingo 3 tuned for music) through transformers"),
        ModelAlias("glm-asr", "zai-org/GLM-ASR-Nano-2512", "hf", True,
                   "Zhipu GLM-ASR Nano (a speech recogniser that follows prompts) through transformers"),
        ModelAlias("phi-4-mm", "microsoft/Phi-4-multimodal-instruct", "hf", True,
                   "Microsoft Phi-4-multimodal (transformers format) with its speech LoRA, through transformers"),
        # These two need an optional extra (torchaudio; timm + torchvision) whose wheels must match the
        # torch build: verified on tiny random models with torch 2.9.1 + torchaudio/torchvision 2.9.1/0.24.1.
        ModelAlias("granite-speech-2b", "ibm-granite/granite-speech-3.3-2b", "hf", True,
                   "IBM Granite Speech 3.3 2B (with its speech LoRA) through transformers", needs="the granite extra"),
        ModelAlias("granite-speech-8b", "ibm-granite/granite-speech-3.3-8b", "hf", True,
                   "IBM Granite Speech 3.3 8B (with its speech LoRA) through transformers", needs="the granite extra"),
        ModelAlias("gemma-3n-e2b", "google/gemma-3n-E2B-it", "hf", True,
                   "Google Gemma 3n E2B instruct (audio in, text out) through transformers", needs="the gemma3n extra"),
        ModelAlias("gemma-3n-e4b", "google/gemma-3n-E4B-it", "hf", True,
                   "Google Gemma 3n E4B instruct (audio in, text out) through transformers", needs="the gemma3n extra"),
        ModelAlias("tiny-qwen2.5-omni", "builtin:tiny-qwen2_5_omni", "hf", False,
                   "a tiny randomly initialised Qwen2.5-Omni thinker of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-qwen3-omni", "builtin:tiny-qwen3_omni_moe", "hf", False,
                   "a tiny randomly initialised Qwen3-Omni (MoE) thinker of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-voxtral", "builtin:tiny-voxtral", "hf", False,
                   "a tiny randomly initialised Voxtral of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-audio-flamingo-3", "builtin:tiny-audioflamingo3", "hf", False,
                   "a tiny randomly initialised Audio Flamingo 3 of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-glm-asr", "builtin:tiny-glmasr", "hf", False,
                   "a tiny randomly initialised GLM-ASR of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-music-flamingo", "builtin:tiny-musicflamingo", "hf", False,
                   "a tiny randomly initialised Music Flamingo of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-phi-4-mm", "builtin:tiny-phi4_multimodal", "hf", False,
                   "a tiny randomly initialised Phi-4-multimodal (with a speech LoRA) of the real classes, built "
                   "locally: a pipeline check, its answers mean nothing"),
        ModelAlias("tiny-granite-speech", "builtin:tiny-granite_speech", "hf", False,
                   "a tiny randomly initialised Granite Speech (with a speech LoRA) of the real classes, built "
                   "locally: a pipeline check, its answers mean nothing", needs="the granite extra"),
        ModelAlias("tiny-gemma-3n", "builtin:tiny-gemma3n", "hf", False,
                   "a tiny randomly initialised Gemma 3n of the real classes, built locally: "
                   "a pipeline check, its answers mean nothing", needs="the gemma3n extra"),
        ModelAlias("gpt-4o-audio", "gpt-4o-audio-preview", "openai", False,
                   "GPT-4o audio through the OpenAI API (paid per token)", needs="OPENAI_API_KEY"),
        ModelAlias("gpt-4o-mini-audio", "gpt-4o-mini-audio-preview", "openai", False,
                   "GPT-4o mini audio through the OpenAI API (paid per token)", needs="OPENAI_API_KEY"),
        # Simulations, not models: a seeded random listener whose answers lean with the voice's
        # pitch (biasbench/models/simulated.py), for planted-effect tests and calibration.
        ModelAlias("simulated-pitch-bias", "builtin:simulated-pitch-bias", "simulated", False,
                   "SIMULATION: a random listener with a planted dependence on voice pitch (strength 1)",
                   pipeline_note="simulated listener with a planted pitch effect: a calibration check, "
                                 "not a measurement of any model"),
        ModelAlias("simulated-no-bias", "builtin:simulated-no-bias", "simulated", False,
                   "SIMULATION: the same random listener with no voice dependence (strength 0)",
                   pipeline_note="simulated listener with no voice dependence: a calibration check, "
                                 "not a measurement of any model"),
        # Speech recognisers, for transcribe tasks (ASR fairness) and voice QC. faster-whisper runs
        # offline from pinned, checksummed PyPI weight packages (biasbench/models/asr_faster_whisper.py).
        ModelAlias("whisper-tiny-en", "tiny.en", "faster-whisper", False,
                   "Whisper tiny.en through faster-whisper (int8, CPU, offline): transcribe tasks and voice QC",
                   needs="the asr extra"),
        ModelAlias("whisper-base", "base", "faster-whisper", False,
                   "Whisper base through faster-whisper (int8, CPU, offline): transcribe tasks and voice QC",
                   needs="the asr extra"),
        ModelAlias("whisper-large-v3", "openai/whisper-large-v3", "hf", True,
                   "Whisper large-v3 through transformers (transcribe tasks; batched on a CUDA GPU)"),
        ModelAlias("tiny-whisper", "builtin:tiny-whisper", "hf", False,
                   "a tiny randomly initialised Whisper of the real classes, built locally: "
                   "a pipeline check of the transformers ASR path, its transcripts mean nothing"),
    ]
}
