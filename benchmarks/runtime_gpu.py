"""CUDA provider check for a machine with a GPU: parity with the CPU (TF32 off) and latency.

    python benchmarks/runtime_gpu.py --artifacts DIR [--out FILE.md]

Needs only the runtime's packages (numpy, pillow, onnxruntime-gpu), so it runs in the base
install. For every graph in DIR: the largest logit difference and top-1 agreement between
``device="cuda"`` (strict: it fails if CUDA is not really used) and ``device="cpu"`` on the same
random images, then median and p90 latency of one session call at batch 1 and 32 on each
device. Where the folder also holds fp16 variants (``export --fp16``), the same for them on CUDA,
against the fp32 graph on the CPU. Prints a markdown section; ``--out`` also writes it to a file
(for BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from runtime import Classifier  # noqa: E402
from runtime.bench import latency  # noqa: E402


def gpu_name() -> str:
    try:
        import subprocess

        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown GPU"
    except (OSError, subprocess.SubprocessError):
        return "unknown GPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--images", type=int, default=256, help="Random images for the parity check.")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia pip packages, where that is how they are installed
    gpu = Classifier(args.artifacts, device="cuda", strict_device=True, preload=True)
    cpu = Classifier(args.artifacts, device="cpu", preload=True)
    size = cpu.artifacts.image_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)

    lines = [f"## Runtime on CUDA ({gpu_name()}; onnxruntime-gpu {ort.__version__}, Python "
             f"{platform.python_version()})", "",
             f"`python benchmarks/runtime_gpu.py --artifacts {args.artifacts}`; providers {', '.join(gpu.providers)}, "
             "TF32 off. Parity on "
             f"{args.images} random {size} px images; latency of one session call, {args.runs} runs.", "",
             "| channels | max abs logit diff CUDA vs CPU | top-1 agreement | CUDA b1 p50 | CUDA b32 p50 | "
             "CPU b1 p50 | CPU b32 p50 |",
             "|---|---|---|---|---|---|---|"]
    for config in cpu.configs:
        x, _ = cpu.preprocess(images, config)
        on_gpu, on_cpu = gpu.run(x, config), cpu.run(x, config)
        diff = float(np.abs(on_gpu - on_cpu).max())
        agree = float((on_gpu.argmax(1) == on_cpu.argmax(1)).mean())
        stats = {(name, n): latency(lambda: clf.run(x[:n], config), n, args.runs, warmup=10)
                 for name, clf in (("cuda", gpu), ("cpu", cpu)) for n in (1, 32)}
        lines.append(f"| {config.name} | {diff:.2e} | {agree:.4f} | " + " | ".join(
            f"{stats[key].p50_ms:.3f} ms" for key in (("cuda", 1), ("cuda", 32), ("cpu", 1), ("cpu", 32))) + " |")
    has_fp16 = any("fp16" in entry for entry in cpu.artifacts.manifest["graphs"].values())
    if has_fp16:
        half = Classifier(args.artifacts, device="cuda", strict_device=True, preload=True, precision="fp16")
        lines += ["", "fp16 variants on CUDA against the fp32 graph on the CPU (same images):", "",
                  "| channels | max abs logit diff | top-1 agreement | fp16 CUDA b1 p50 | fp16 CUDA b32 p50 | "
                  "fp32 CUDA b32 p50 |", "|---|---|---|---|---|---|"]
        for config in half.configs:
            x, _ = cpu.preprocess(images, config)
            on_half, on_cpu = half.run(x, config), cpu.run(x, config)
            diff = float(np.abs(on_half - on_cpu).max())
            agree = float((on_half.argmax(1) == on_cpu.argmax(1)).mean())
            stats = [latency(lambda: clf.run(x[:n], config), n, args.runs, warmup=10).p50_ms
                     for clf, n in ((half, 1), (half, 32), (gpu, 32))]
            lines.append(f"| {config.name} | {diff:.2e} | {agree:.4f} | " +
                         " | ".join(f"{v:.3f} ms" for v in stats) + " |")
    body = "\n".join(lines)
    print(body)
    if args.out:
        args.out.write_text(body + "\n")


if __name__ == "__main__":
    main()
