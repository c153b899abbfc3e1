"""CUDA and TensorRT provider checks for a machine with a GPU: parity with the CPU (TF32 off) and latency.

    python benchmarks/runtime_gpu.py --artifacts DIR [--out FILE.md] [--tensorrt] [--trt-cache-dir DIR]

Needs only the runtime's packages (numpy, pillow, onnxruntime-gpu), so it runs in the base
install. For every graph in DIR: the largest logit difference and top-1 agreement between
``device="cuda"`` (strict: it fails if CUDA is not really used) and ``device="cpu"`` on the same
random images, then median and p90 latency of one session call at batch 1 and 32 on each
device. Where the folder also holds fp16 variants (``export --fp16``), the same for them on CUDA,
against the fp32 graph on the CPU. Prints a markdown section; ``--out`` also writes it to a file
(for BENCHMARKS.md).

``--tensorrt`` adds ``device="tensorrt"`` (strict: it fails if TensorRT is not really used), fp32 and
fp16 mode: the engine build time per graph with an empty engine cache, then the load time with the
cache in a fresh process (what a second run of an app pays); parity against CUDA and against the
CPU (max abs logit diff, top-1 agreement); latency at batch 1 and 32 beside CUDA and the CPU; and
TensorRT fp16's top-1 validation against fp32 on the CPU (``runtime.validation``) on the embedded
synthetic test split when the graphs were trained on it.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
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


def engine_times(artifacts: Path, cache: Path, fp16: bool) -> dict[str, float]:
    """ms per configuration to create its TensorRT session and run one image (the engine build, or
    its load from ``cache``)."""
    times = {}
    clf = Classifier(artifacts, device="tensorrt", strict_device=True, trt_cache_dir=cache, trt_fp16=fp16)
    for config in clf.configs:
        start = time.perf_counter()
        clf.warm_up(config)
        times[config.name] = 1e3 * (time.perf_counter() - start)
    return times


def engine_times_in_a_new_process(artifacts: Path, cache: Path, fp16: bool) -> dict[str, float]:
    """:func:`engine_times` in a fresh interpreter: a second run of an app, nothing warm but the cache."""
    cmd = [sys.executable, __file__, "--artifacts", str(artifacts), "--engine-times", str(cache)]
    out = subprocess.run(cmd + (["--trt-fp16"] if fp16 else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tensorrt_section(args: argparse.Namespace, cpu: Classifier, gpu: Classifier, images: np.ndarray) -> list[str]:
    """Markdown: TensorRT engine build vs cached load, parity with CUDA and CPU, latency, fp16 validation."""
    cache_root = args.trt_cache_dir or Path(tempfile.mkdtemp(prefix="anychannel-trt-"))
    lines = ["", f"### TensorRT (`--tensorrt`; engine cache {cache_root}, one profile for batch 1..32)", ""]
    trt = {}
    for fp16 in (False, True):
        mode = "fp16" if fp16 else "fp32"
        cache = cache_root / mode
        first = engine_times(args.artifacts, cache, fp16)
        second = engine_times_in_a_new_process(args.artifacts, cache, fp16)
        trt[mode] = Classifier(args.artifacts, device="tensorrt", strict_device=True, preload=True,
                               trt_cache_dir=cache, trt_fp16=fp16)
        lines += [f"Engine build, TensorRT {mode}: session + first image per graph, ms (first run with an empty "
                  "cache; second run in a new process with the cache):", "",
                  "| channels | first run | second run (cached) |", "|---|---|---|"]
        lines += [f"| {name} | {first[name]:.0f} | {second[name]:.0f} |" for name in first]
        lines.append("")
    lines += ["| channels | mode | max abs diff vs CUDA | vs CPU | top-1 agreement vs CPU | TRT b1 p50 | TRT b32 p50 | "
              "CUDA b1 p50 | CUDA b32 p50 | CPU b1 p50 | CPU b32 p50 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for config in cpu.configs:
        x, _ = cpu.preprocess(images, config)
        on_cpu, on_cuda = cpu.run(x, config), gpu.run(x, config)
        base = {(name, n): latency(lambda: clf.run(x[:n], config), n, args.runs, warmup=10).p50_ms
                for name, clf in (("cuda", gpu), ("cpu", cpu)) for n in (1, 32)}
        for mode, clf in trt.items():
            out = clf.run(x, config)
            ms = [latency(lambda: clf.run(x[:n], config), n, args.runs, warmup=10).p50_ms for n in (1, 32)]
            lines.append(f"| {config.name} | {mode} | {np.abs(out - on_cuda).max():.2e} | {np.abs(out - on_cpu).max():.2e} | "
                         f"{(out.argmax(1) == on_cpu.argmax(1)).mean():.4f} | " + " | ".join(
                             f"{v:.3f} ms" for v in ms + [base[k] for k in (("cuda", 1), ("cuda", 32), ("cpu", 1),
                                                                             ("cpu", 32))]) + " |")
    lines += ["", *fp16_validation(trt["fp16"], cpu)]
    return lines


def fp16_validation(half: Classifier, cpu: Classifier) -> list[str]:
    """TensorRT fp16's top-1 against fp32 on the CPU, as `evaluate --trt-fp16` checks it (synthetic test split)."""
    from runtime.validation import validate_precision

    try:
        from train.data import load_dataset

        dataset = load_dataset(None, cpu.artifacts.image_size)
    except ImportError:
        return ["TensorRT fp16 validation skipped: the training extras (train.data) are not installed."]
    if dataset.fingerprint != cpu.artifacts.manifest["graphs"][cpu.configs[0].name].get("data_fingerprint"):
        return ["TensorRT fp16 validation skipped: the graphs were not trained on the embedded synthetic set "
                "(run `cli.py evaluate --device tensorrt --trt-fp16 --data ...` with their data)."]
    test = dataset.splits["test"]
    checks = validate_precision(half, cpu, test.images, test.labels, split=f"{dataset.name} test")
    lines = [f"TensorRT fp16 against fp32 on the CPU, {dataset.name} test split ({len(test)} images):", "",
             "| channels | fp32 top-1 | TRT fp16 top-1 | change | top-1 agreement | max abs logit diff |",
             "|---|---|---|---|---|---|"]
    return lines + [f"| {name} | {c.fp32_top1:.4f} | {c.top1:.4f} | {100 * c.change:+.2f} pt | {c.agreement:.4f} | "
                    f"{c.max_abs_logit_diff:.2e} |" for name, c in checks.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--images", type=int, default=256, help="Random images for the parity check.")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--tensorrt", action="store_true", help="Also check device='tensorrt' (fp32 and fp16 mode).")
    parser.add_argument("--trt-cache-dir", type=Path, help="Engine cache root (default: a new temporary folder, so "
                                                           "the first run builds).")
    parser.add_argument("--engine-times", type=Path, help=argparse.SUPPRESS)  # internal: one cached-load timing
    parser.add_argument("--trt-fp16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from the nvidia pip packages, where that is how they are installed
    if args.engine_times:
        print(json.dumps(engine_times(args.artifacts, args.engine_times, args.trt_fp16)))
        return
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
    if args.tensorrt:
        lines += tensorrt_section(args, cpu, gpu, images)
    body = "\n".join(lines)
    print(body)
    if args.out:
        args.out.write_text(body + "\n")


if __name__ == "__main__":
    main()
