#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short run:
#   bash benchmarks/gpu_checks.sh [CHECKPOINT] [OUT_DIR]
# 1. `cli.py doctor`: onnxruntime package, providers, CUDA/cuDNN libraries.
# 2. Export every configuration with --fp16: each fp16 graph is validated on the CUDA provider
#    (its top-1 change on the validation split; the manifest records `validated_on`).
# 3. benchmarks/runtime_gpu.py: CUDA vs CPU parity (TF32 off) and latency at batch 1 and 32,
#    for the fp32 graphs and their fp16 variants.
# Writes OUT_DIR/onnx/ (graphs, manifest.json) and OUT_DIR/runtime_gpu.md. PYTHON overrides the interpreter.
set -euo pipefail
checkpoint=${1:-artifacts/task1/adaptive/best.pt}
out=${2:-artifacts/gpu}
python=${PYTHON:-python}
cd "$(dirname "$0")/.."

echo "== doctor"
"$python" cli.py doctor
echo "== export --fp16"
"$python" cli.py export --channels all --fp16 --checkpoint "$checkpoint" --out "$out/onnx"
echo "== runtime on CUDA"
"$python" benchmarks/runtime_gpu.py --artifacts "$out/onnx" --out "$out/runtime_gpu.md"
