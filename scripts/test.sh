#!/usr/bin/env bash
# Set up (if needed), run the test suite, then prove the runtime works from a virtual
# environment holding only its base install (numpy, pillow, onnxruntime-gpu; no torch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "runtime-only check: training a 1-epoch model and exporting its seven graphs"
.venv/bin/python cli.py train task1 --models anychannel --epochs 1 --out "$scratch/task1" \
    --train-eval-samples 256 > "$scratch/train.log"
.venv/bin/python cli.py export --checkpoint "$scratch/task1/anychannel/best.pt" --out "$scratch/onnx" \
    > "$scratch/export.log"
DEVICE=auto bash scripts/runtime_venv_check.sh "$scratch/onnx"
