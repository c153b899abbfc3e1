#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one short run:
#   bash benchmarks/gpu_checks.sh [CHECKPOINT] [OUT_DIR]
# 1. `cli.py doctor`: onnxruntime package, providers, CUDA/cuDNN libraries.
# 2. Export every configuration with --fp16: each fp16 graph is validated on the CUDA provider
#    (its top-1 change on the validation split; the manifest records `validated_on`).
# 3. benchmarks/runtime_gpu.py --tensorrt: CUDA vs CPU parity (TF32 off) and latency at batch 1 and 32,
#    for the fp32 graphs and their fp16 variants; TensorRT (fp32 and fp16 mode) against CUDA and CPU:
#    parity, latency at batch 1 and 32, engine build time (empty cache) and cached load time (new
#    process), and TensorRT fp16's top-1 validation against fp32.
# 4. `cli.py doctor --artifacts`: the provider each --device value ran on; `cli.py bench --device
#    tensorrt` twice on one engine cache: the first inference builds the engine, the second loads it.
# Writes OUT_DIR/onnx/ (graphs, manifest.json), OUT_DIR/runtime_gpu.md and OUT_DIR/bench-tensorrt-{1,2}.json.
# PYTHON overrides the interpreter.
set -euo pipefail
checkpoint=${1:-artifacts/task1/anychannel/best.pt}
out=${2:-artifacts/gpu}
python=${PYTHON:-python}
cd "$(dirname "$0")/.."

echo "== doctor"
"$python" cli.py doctor
echo "== export --fp16"
"$python" cli.py export --channels all --fp16 --checkpoint "$checkpoint" --out "$out/onnx"
echo "== runtime on CUDA and TensorRT"
rm -rf "$out/trt"
"$python" benchmarks/runtime_gpu.py --artifacts "$out/onnx" --out "$out/runtime_gpu.md" --tensorrt \
    --trt-cache-dir "$out/trt"
echo "== doctor: the provider each device ran on"
"$python" cli.py doctor --artifacts "$out/onnx"
echo "== bench --device tensorrt: first run builds the engine, the second loads it"
rm -rf "$out/trt-bench"
for run in 1 2; do
    "$python" cli.py bench --artifacts "$out/onnx" --device tensorrt --trt-cache-dir "$out/trt-bench" \
        --batch-sizes 1,32 --json > "$out/bench-tensorrt-$run.json"
    "$python" -c "import json, sys; r = json.load(open(sys.argv[1])); t = r['tensorrt'] or {}; \
print(sys.argv[2], r['provider'], 'engine cached' if t.get('engine_was_cached') else 'engine built', \
'first inference %.0f ms' % r['first_inference_ms'])" "$out/bench-tensorrt-$run.json" "run $run:"
done
