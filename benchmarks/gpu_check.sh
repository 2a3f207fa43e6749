#!/usr/bin/env bash
# The GPU part of docs/benchmarks.md, as one prepared script for a CUDA machine (not run in the session that
# wrote it: no GPU was lent). Writes everything under ${OUT:-logs/gpu}; takes ~5-10 minutes on one GPU.
#   - the same sweep as on the CPU (bench_runtimes.py: every runtime x dtype x batch size in one process, 3
#     interleaved rounds) WITH the peer rows (what a user writes by hand: timm eager under autocast,
#     torch.compile default, torch.compile with freezing + channels-last, an ONNX Runtime default session;
#     OpenVINO is CPU-only and says so), so the pick / best-peer paired ratios of issue 13 come out for the GPU;
#   - the compile runner's CUDA path (torch.compile mode="reduce-overhead": CUDA graphs), recorded as
#     compile_path in summary.json; batch-1 latency is the figure to compare with the Ascend report's 4.98 ms.
# ONNX Runtime on CUDA needs onnxruntime-gpu instead of onnxruntime; without it its rows say "unsupported".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-logs/gpu}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/nvidia-smi.csv" || true
"$PYTHON" -m accelport run --device cuda --runtime eager --dtype fp32 --batch-size 1 --out-dir "$OUT/run_eager_fp32"
"$PYTHON" -m accelport run --device cuda --runtime eager --dtype fp32 --fp32-math fast --batch-size 1 --out-dir "$OUT/run_eager_fp32_fast" || echo "run --fp32-math fast: exit $?" >> "$OUT/exit_codes.txt"  # TF32 vs fp32-fast criteria, structural proof: docs/verdict.md
"$PYTHON" -m accelport run --device cuda --runtime compile --dtype bf16 --batch-size 1 --out-dir "$OUT/run_compile_bf16"
"$PYTHON" -c "import json, sys; t = json.load(open(sys.argv[1]))['target']; print('compile_path:', t['compile_path'])" \
    "$OUT/run_compile_bf16/summary.json"
"$PYTHON" benchmarks/bench_runtimes.py --device cuda --runtimes eager,compile,onnxruntime \
    --dtypes fp32,bf16,fp16 --batch-sizes 1,32,128 --rounds 3 --iters 50 --max-time 5 \
    --out-dir "$OUT" "$@"
echo "results: $OUT/bench_runtimes.md (targets, peers, all rows), $OUT/bench.json, $OUT/bench.png"
