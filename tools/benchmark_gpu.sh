#!/usr/bin/env bash
# One command for the GPU table of docs/benchmark.md: bf16 training throughput, MFU and
# peak memory of VisionLLaMA-B / Pyramid-B / DiT-LLaMA-XL/2 beside ViT-B / SVT-B /
# DiT-XL/2, eager and compiled, in about 8 minutes on one CUDA GPU.
#
#   tools/benchmark_gpu.sh                       # on a GPU machine: writes docs/benchmark.md
#   tools/benchmark_gpu.sh --peak-tflops 989     # a GPU whose bf16 peak is not in the table
#   tools/benchmark_gpu.sh --tiny --out-dir /tmp/x   # CPU smoke test (CI), tiny archs
#
# Extra arguments go to tools/benchmark_gpu.py (see its --help); PYTHON picks the interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$ROOT/docs"
for arg in "$@"; do
  [[ "$arg" == --out-dir || "$arg" == --out-dir=* ]] && OUT_DIR=""
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 540 "${PYTHON:-python}" "$ROOT/tools/benchmark_gpu.py" ${OUT_DIR:+--out-dir "$OUT_DIR"} "$@"
