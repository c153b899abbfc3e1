"""What export buys at inference, and what the dynamic stem costs, on this machine's CPU.

    python benchmarks/export_latency.py [--checkpoint artifacts/task1/anychannel/best.pt] [--runs 300]

For the task-1 model (``anychannel``, on its compact backbone; a freshly initialised one at 32 px with 10
classes when no checkpoint is given, since weights do not change latency), in one run:

- onnxruntime (CPU) latency of the exported graph against PyTorch eager, at batch 1 and 32;
- the anychannel graph against the ``static`` model (the same body behind a plain conv stem)
  exported the same way: the cost of the dynamic, channel-adaptive part.

Both graphs go through :func:`export.export_onnx`, with its checks and parity gate. Calls
are interleaved round-robin and summarised by medians, so a background load that comes and
goes affects every contender alike. Writes the ``export-latency`` section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import machine, write_section  # noqa: E402
from export import ModelInfo, export_onnx  # noqa: E402
from export.images import parity_images  # noqa: E402
from export.precision import QUANTIZED_OPS, quantize_qdq  # noqa: E402
from runtime.bench import percentile  # noqa: E402
from runtime.channels import ChannelConfig  # noqa: E402
from runtime.contract import INPUT_NAME  # noqa: E402
from train.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from train.models import create_model  # noqa: E402

TARGET_SPEEDUP = 1.5   # ONNX at least this much faster than eager
TARGET_OVERHEAD = 0.30  # the dynamic stem adds at most this over the static backbone
BATCH_SIZES = (1, 32)
#: AnyChannelNet arguments that the static baseline shares (its stem has no kernels to mix).
SHARED_KWARGS = ("stem_width", "widths", "strides", "dropout", "body", "width")


def build_models(checkpoint: Path | None, image_size: int, num_classes: int,
                 config: ChannelConfig) -> tuple[torch.nn.Module, torch.nn.Module, ModelInfo]:
    """The anychannel model (trained or fresh) and a fresh static model with the same body."""
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint, "task1")
        anychannel, kwargs = model_from_checkpoint(ckpt), dict(ckpt["model_kwargs"])
        info = ModelInfo.from_checkpoint(ckpt)
    else:
        torch.manual_seed(0)
        anychannel, kwargs = create_model("anychannel", num_classes=num_classes).eval(), {}
        info = ModelInfo("task1", "anychannel", tuple(f"class{i}" for i in range(num_classes)), image_size, "none")
    static_kwargs = {k: v for k, v in kwargs.items() if k in SHARED_KWARGS}
    static = create_model("static", num_classes=len(info.class_names), channels=config.name, **static_kwargs).eval()
    return anychannel, static, info


def ort_runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {INPUT_NAME: x})[0]


def eager_runner(module: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def interleaved_medians(runners: dict[str, Callable[[np.ndarray], np.ndarray]], x: np.ndarray, runs: int,
                        warmup: int, block: int = 10) -> dict[str, tuple[float, float]]:
    """``{name: (p50 ms, p90 ms)}`` over ``runs`` calls each, taken in alternating blocks.

    Blocks rather than single calls: each runtime's worker threads keep spinning briefly after
    a call, which would slow whichever runs next; the first call of a block absorbs that and
    is not timed.
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    while min(len(t) for t in times.values()) < runs:
        for name, run in runners.items():
            run(x)
            for _ in range(block):
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
    return {name: (1e3 * percentile(t, 50), 1e3 * percentile(t, 90)) for name, t in times.items()}


def model_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter: 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(x)
    return counter.get_total_flops()


def sgemm_gflops(threads: int, n: int = 1024, runs: int = 20) -> float:
    """A float32 matrix product's rate with ``threads``: near what these cores can do at all."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="task-1 anychannel checkpoint (optional)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--channels", default="RGB")
    parser.add_argument("--runs", type=int, default=300, help="timed rounds at batch 1 (a quarter of it at 32)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", default=f"1,{len(os.sched_getaffinity(0))}",
                        help="comma list of thread counts, each given to both runtimes alike")
    args = parser.parse_args()

    thread_counts = sorted({int(n) for n in args.threads.split(",")})
    load_before = os.getloadavg()[0]
    config = ChannelConfig.parse(args.channels)
    anychannel, static, info = build_models(args.checkpoint, args.image_size, args.num_classes, config)
    resolved = anychannel.resolve(config).eval()
    with tempfile.TemporaryDirectory() as tmp:
        records = {
            "anychannel": export_onnx(resolved, config, Path(tmp) / "anychannel.onnx", info,
                                      reference=lambda x: anychannel(x, config)),
            "static": export_onnx(static.resolve(config).eval(), config, Path(tmp) / "static.onnx",
                                  ModelInfo(info.task, "static", info.class_names, info.image_size, "none")),
            "lowered": export_onnx(resolved, config, Path(tmp) / "lowered.onnx", info,
                                   reference=lambda x: anychannel(x, config), lower=True),
        }
        # Latency only: calibrated on the parity images; accuracy is checked by `cli.py export --int8`.
        calibration = parity_images(info.image_size)
        quantize_qdq(Path(tmp) / "anychannel.onnx", Path(tmp) / "anychannel.int8.onnx", calibration.images, config)
        rng = np.random.default_rng(0)
        results = {}
        for threads in thread_counts:
            torch.set_num_threads(threads)
            runners = {"eager": eager_runner(resolved), "onnx": ort_runner(Path(tmp) / "anychannel.onnx", threads),
                       "lowered": ort_runner(Path(tmp) / "lowered.onnx", threads),
                       "static": ort_runner(Path(tmp) / "static.onnx", threads),
                       "int8": ort_runner(Path(tmp) / "anychannel.int8.onnx", threads)}
            for batch in BATCH_SIZES:
                x = rng.standard_normal((batch, config.num_channels, info.image_size, info.image_size),
                                        dtype=np.float32)
                runs = args.runs if batch == 1 else max(20, args.runs // 4)
                results[threads, batch] = (runs, interleaved_medians(runners, x, runs, args.warmup))

    load_after = os.getloadavg()[0]
    peak = {threads: sgemm_gflops(threads) for threads in thread_counts}
    flops = model_flops(resolved, torch.zeros(1, config.num_channels, info.image_size, info.image_size))
    params = sum(p.numel() for p in resolved.parameters())
    static_params = sum(p.numel() for p in static.parameters())
    source = (f"checkpoint `{args.checkpoint}`" if args.checkpoint
              else "freshly initialised (weights do not affect latency)")
    rows = ["| threads | batch | timed calls each | PyTorch eager p50 ms | ONNX fp32 p50 ms | speed-up | "
            "ONNX fp32 `--lower` p50 ms | speed-up | static-stem ONNX fp32 p50 ms | dynamic part adds | "
            "ONNX int8 p50 ms | int8 speed-up | GFLOP/s eager / ONNX / `--lower` / sgemm |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    checks = []
    for (threads, batch), (runs, m) in results.items():
        def rate(ms: float, batch: int = batch) -> str:
            return f"{flops * batch / ms / 1e6:.0f}"

        speedup, lowered_speedup = m["eager"][0] / m["onnx"][0], m["eager"][0] / m["lowered"][0]
        int8_speedup = m["eager"][0] / m["int8"][0]
        overhead = m["onnx"][0] / m["static"][0] - 1
        rows.append(f"| {threads} | {batch} | {runs} | {m['eager'][0]:.3f} | {m['onnx'][0]:.3f} | {speedup:.2f}× | "
                    f"{m['lowered'][0]:.3f} | {lowered_speedup:.2f}× | {m['static'][0]:.3f} | {overhead:+.1%} | "
                    f"{m['int8'][0]:.3f} | {int8_speedup:.2f}× | {rate(m['eager'][0])} / {rate(m['onnx'][0])} / "
                    f"{rate(m['lowered'][0])} / {peak[threads]:.0f} |")
        checks.append(
            f"- {threads} thread(s), batch {batch}: ONNX fp32 {speedup:.2f}× faster than eager, "
            f"{lowered_speedup:.2f}× with `--lower` (target ≥ {TARGET_SPEEDUP}×: "
            f"{_verdict(speedup >= TARGET_SPEEDUP)} / {_verdict(lowered_speedup >= TARGET_SPEEDUP)}; int8 "
            f"{int8_speedup:.2f}×); dynamic part {overhead:+.1%} over the static backbone (target ≤ "
            f"+{TARGET_OVERHEAD:.0%}: {_verdict(overhead <= TARGET_OVERHEAD)}).")
    command = "python benchmarks/export_latency.py" + "".join(
        f" {flag} {value}" for flag, value in (("--checkpoint", args.checkpoint), ("--runs", args.runs),
                                               ("--threads", args.threads))
        if value is not None)
    body = "\n".join([
        f"## Export: ONNX latency vs PyTorch eager, and the cost of the dynamic stem ({config.name}, "
        f"{info.image_size} px)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}; onnxruntime {ort.__version__} CPUExecutionProvider; each thread count "
        f"is given to both runtimes (torch.set_num_threads, ORT intra_op_num_threads).  ",
        f"Model: task-1 `anychannel` ({params / 1e6:.2f}M parameters once resolved for {config.name}), {source}; "
        f"static baseline: the `static` model, same body behind a plain 3×3 conv stem "
        f"({static_params / 1e6:.2f}M). Both exported by `export.export_onnx` (opset "
        f"{records['anychannel'].opset}, simplified: {records['anychannel'].simplified}/"
        f"{records['static'].simplified}, "
        f"parity max diff {records['anychannel'].parity['max_abs_diff']:.1e}).",
        "",
        *rows,
        "",
        *checks,
        "",
        "Calls alternate in blocks of 10 (eager, ONNX fp32, ONNX fp32 `--lower`, static ONNX, ONNX int8; the "
        "first call of each "
        f"block untimed) and are summarised by medians. Load average {load_before:.1f} before, "
        f"{load_after:.1f} after" + (" (other work competed for the cores: absolute times are inflated, "
                                     "the side-by-side ratios are the numbers to read)" if load_before > 1.0
                                     else "") + ". "
        f"The model costs {flops / 1e6:.0f} MFLOPs per image; the last column sets each runtime's "
        "arithmetic rate beside a float32 matrix product's (torch, 1024³, same threads, same run), "
        "which is about as fast as these cores go. The int8 graph is the `--int8` export "
        f"(static QDQ on {'/'.join(QUANTIZED_OPS)}), here calibrated on the parity images and timed only; "
        "its accuracy change is measured and recorded by `python cli.py export --int8`. The `--lower` "
        "graph writes the two 3×3 convolutions on the last stage's 2×2 maps as a gather and one matmul "
        "(`export/lowering.py`); the other graphs are the default export.",
    ])
    write_section("export-latency", body)
    print(body)


if __name__ == "__main__":
    main()
