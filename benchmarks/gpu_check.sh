#!/usr/bin/env bash
# The GPU part of docs/benchmarks.md, as one prepared script for a CUDA machine (not run in the session that
# wrote it: no GPU was lent). Writes everything under ${OUT:-logs/gpu}; takes ~5-10 minutes on one GPU.
#   - batch-1 latency with CUDA graphs (compile = torch.compile mode="reduce-overhead"), fp32/bf16/fp16
#   - images/s at large batch in bf16 (batch 128); the original Ascend report's 4.98 ms at batch 1 is the
#     figure to beat.
# ONNX Runtime on CUDA needs onnxruntime-gpu instead of onnxruntime; without it its rows say "unsupported".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/gpu}
mkdir -p "$OUT"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" || true
python -m accelport run --device cuda --runtime eager --dtype fp32 --batch-size 1 --out-dir "$OUT/run_eager_fp32"
python -m accelport run --device cuda --runtime eager --dtype fp32 --fp32-math fast --batch-size 1 --out-dir "$OUT/run_eager_fp32_fast" || echo "run --fp32-math fast: exit $?" >> "$OUT/exit_codes.txt"  # TF32 vs fp32-fast criteria, structural proof: docs/verdict.md
python benchmarks/bench_runtimes.py --device cuda --runtimes eager,compile,onnxruntime \
    --dtypes fp32,bf16,fp16 --batch-sizes 1,8,32,128 --rounds 2 --iters 50 --max-time 5 \
    --out-dir "$OUT" "$@"
echo "results: $OUT/bench_runtimes.md, $OUT/bench.json, $OUT/bench.png"
