#!/usr/bin/env bash
# One prepared check for a lent GPU machine (H100/H200; no hub, no network, no install).
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine: < 8 minutes in all
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: tiny model on CPU, GPU tests skip
#
# 1. benchmarks/gpu_check.py: HF scoring + generation throughput of the Qwen2-Audio-7B
#    architecture (random bf16 weights, built on the GPU) at batch 1/8/32 with 10 s clips,
#    and vLLM when importable. Stops starting measurements after 300 s; killed at 330 s.
# 2. pytest -m gpu on the speech-LM backend tests (tiny models on CUDA, bf16, 8/4-bit when
#    bitsandbytes is there). Killed at 150 s.
# Logs and a JSON of the rows go to $OUT when set (the lent machine's return folder), else /tmp.
# Uses the machine's python3 (PYTHON=... to override) and this checkout via PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUTDIR=${OUT:-/tmp}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [[ -z "${BIASBENCH_CACHE:-}" ]]; then  # tiny models built for this check only, removed after
  BIASBENCH_CACHE="$(mktemp -d /tmp/biasbench-cache.XXXXXX)"
  trap 'rm -rf "$BIASBENCH_CACHE"' EXIT
fi
export BIASBENCH_CACHE

dry=()
[[ "${1:-}" == "--dry-run" ]] && dry=(--dry-run)

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'

timeout 330 "$PY" benchmarks/gpu_check.py "${dry[@]}" --json "$OUTDIR/gpu_check.json" 2>&1 | tee "$OUTDIR/gpu_check.log"
bench=$?

timeout 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_hf_families.py tests/test_qwen2audio_backend.py \
  2>&1 | tee "$OUTDIR/pytest_gpu.log"
tests=$?

echo "gpu_check.py exit $bench, pytest -m gpu exit $tests"
exit $(( bench != 0 ? bench : tests ))
