#!/usr/bin/env bash
# The training checks that need a CUDA GPU, as one short run (about 5 minutes on an H200):
#   bash benchmarks/gpu_train_checks.sh [OUT_DIR]
# 1. tests/test_cuda.py: float32 training on CUDA against the CPU, bf16 autocast against float32,
#    the streamed (pinned-memory) split against the resident one, drawing a step without a host-GPU
#    synchronisation (and the count in one model step, printed); and augmentation on the GPU.
# 2. benchmarks/train_scale.py gpu at 64 px: images/s, float32 and bf16, data on the GPU or streamed,
#    the step-with-data / model-step ratio, peak GPU memory.
# 3. `cli.py train task1 --device cuda` (embedded data, anychannel, 10 epochs), killed once its first
#    checkpoint is written, then --resume; and --nproc 2 on a one-GPU machine, which must stop with a
#    named error.
# 4. benchmarks/train_scale.py gpu at 64 px, batch 126, with --compile default and reduce-overhead
#    (CUDA graphs): the launch-bound step, compiled.
# 5. benchmarks/train_scale.py gpu at 224 px.
# Each step runs even if an earlier one failed; the exit status is the number of failed steps.
# Writes OUT_DIR/{machine.txt,pytest.txt,scale-64.json,scale-64-compiled.json,scale-224.json,
# task1-results.json,task1-resume.log,nproc2.txt}.
# PYTHON overrides the interpreter.
set -uo pipefail
out=${1:-artifacts/gpu-train}
python=${PYTHON:-python}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # resolved from the caller's folder, before moving to the repository root
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null; rm -rf "$work"' EXIT
failed=0
step() { echo "== $1"; shift; "$@" || { echo "!! failed: $*"; failed=$((failed + 1)); }; }

step "machine" bash -c 'set -o pipefail; "$1" -c "import torch; print(\"torch\", torch.__version__, \"CUDA\", \
torch.version.cuda, torch.cuda.get_device_name(0), \"cuDNN\", torch.backends.cudnn.version())" | tee "$2/machine.txt"' \
    _ "$python" "$out"
step "CUDA tests" bash -c 'set -o pipefail; "$1" -m pytest -q -s -p no:cacheprovider tests/test_cuda.py \
tests/test_scale_data.py::test_augmentation_runs_on_the_batch_device_and_slices_per_rank 2>&1 | tee "$2/pytest.txt"' \
    _ "$python" "$out"
step "throughput at 64 px" "$python" benchmarks/train_scale.py gpu --sizes 64 --gpu-batches 126,504 --steps 30 \
    --cache-dir "$work/cache" --json-out "$out/scale-64.json"
echo "== train task1 on CUDA (embedded data, anychannel, 10 epochs): killed after its first checkpoint, resumed"
"$python" cli.py train task1 --device cuda --models anychannel --epochs 10 --out "$work/task1" > "$work/first.log" 2>&1 &
pid=$!
while [ ! -f "$work/task1/anychannel/last.pt" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
if kill -9 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    echo "killed after $(grep -c 'epoch' "$work/first.log") epoch line(s)"
else
    echo "!! the first run ended before it could be killed:"; tail -5 "$work/first.log"; failed=$((failed + 1))
fi
step "resume (must say 'resuming after epoch')" bash -c 'set -o pipefail; "$1" cli.py train task1 --device cuda \
--models anychannel --epochs 10 --resume --out "$2" 2>&1 | tee "$3/task1-resume.log" | grep -E "epoch 10/10|test acc" ; \
grep "resuming after epoch" "$3/task1-resume.log"' _ "$python" "$work/task1" "$out"
step "keep results.json" cp "$work/task1/results.json" "$out/task1-results.json"
echo "== --nproc 2 with one GPU: a named error, not a hang"
timeout 120 "$python" cli.py train task1 --device cuda --models anychannel --epochs 1 --nproc 2 \
    --out "$work/nproc2" >"$out/nproc2.txt" 2>&1
rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || ! grep -m1 "but only 1 CUDA device" "$out/nproc2.txt"; then
    echo "!! --nproc 2 on one GPU: exit $rc without the named error"; failed=$((failed + 1))
fi
step "throughput at 64 px, compiled" "$python" benchmarks/train_scale.py gpu --sizes 64 --gpu-batches 126 \
    --steps 30 --warmup 10 --compile default,reduce-overhead --cache-dir "$work/cache" \
    --json-out "$out/scale-64-compiled.json"
step "throughput at 224 px" "$python" benchmarks/train_scale.py gpu --sizes 224 --gpu-batches 126,504 --steps 30 \
    --cache-dir "$work/cache" --json-out "$out/scale-224.json"
echo "== failed steps: $failed"
exit "$failed"
