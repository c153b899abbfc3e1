"""Training at scale: throughput for 1 and N processes, GPU mixed precision, memory against dataset size.

    python benchmarks/train_scale.py throughput --nproc 1,2 --image-size 32 --steps 40
    python benchmarks/train_scale.py gpu --sizes 64,224 --gpu-batches 126,504 --steps 40   # on a CUDA machine
    python benchmarks/train_scale.py throughput --nproc 1 --compile none,default --steps 20
    python benchmarks/train_scale.py memory --counts 5000,20000 --image-size 128 --steps 20

throughput: the task-1 model's joint training step (global batch ``--batch-size``), run by
torchrun with 1, 2, ... processes (gloo on CPU); images per second are global views per
second after ``--warmup`` steps. It also times the model step alone (the first batch reused)
against the step with data, the data pipeline's share.
gpu: the same on CUDA at each ``--sizes`` and ``--gpu-batches``: float32 and bf16 autocast with
the split resident on the GPU, and bf16 with the split streamed (read per batch from the
memory-mapped cache into pinned memory, as a split over 2 GiB is), with peak GPU memory.
``--compile``: each mode of ``TrainConfig.compile`` gets its own rows (the warm-up steps compile,
so they are not timed); with ``gpu``, compiled modes run bf16 with the split on the GPU only.
memory: writes a folder of ``--counts`` JPEG images (ImageFolder), decodes it into a fresh
memory-mapped cache, trains ``--steps`` steps over the whole set, and reports the training
process's peak resident memory (decoding workers are separate processes, reported apart).
Results print as Markdown rows and JSON; nothing is written to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _child_throughput(args: argparse.Namespace) -> None:
    import torch

    from train import distributed
    from train.data import SplitTensors, load_dataset, loader
    from train.engine import RunSpec, TrainConfig, _wrap_for_ranks, compile_step, make_optimizer, to_channels_last
    from train.models import create_model

    ctx = distributed.setup(args.device)
    distributed.set_single_thread_count()
    try:
        with ctx.node_first():
            dataset = load_dataset(None, args.image_size, cache_dir=args.cache_dir, show_progress=False)
        spec = RunSpec("anychannel", "anychannel", {})
        strategy = spec.build_strategy()
        torch.manual_seed(0)
        model = create_model("anychannel", num_classes=dataset.num_classes).to(ctx.device)
        to_channels_last(model)
        if ctx.distributed:
            distributed.convert_batchnorms(model)
        step = compile_step(_wrap_for_ranks(model, spec, strategy, ctx), args.compile)
        optimizer = make_optimizer(model, TrainConfig(), ctx.device)
        if args.streamed:
            loader.GPU_RESIDENT_BYTES = 0  # read per batch, as a split larger than the GPU's share would be
        split = SplitTensors(dataset.splits["train"], ctx.device)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        autocast = torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=args.amp and ctx.device.type == "cuda")

        def batches():
            epoch = 0
            while True:
                yield from strategy.steps(split, args.batch_size, torch.Generator().manual_seed(epoch), ctx.shard)
                epoch += 1

        def run(source, steps: int) -> tuple[float, int]:
            views = 0
            sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
            sync()
            t0 = time.perf_counter()
            for _, groups in zip(range(steps), source):
                for g in groups:
                    g.inputs = g.inputs.contiguous(memory_format=torch.channels_last)
                with autocast:
                    loss, _ = step(groups, 0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                views += sum(len(g.labels) for g in groups)
            sync()
            return time.perf_counter() - t0, views

        source = batches()
        run(source, args.warmup)
        with_data, views = run(source, args.steps)
        first = next(source)
        model_only, _ = run(iter(lambda: first, None), args.steps)  # the same batch again: no data work
        views_all = int(ctx.all_sum([views])[0])
        if ctx.is_main:
            row = {"processes": ctx.world, "device": str(ctx.device), "image_size": args.image_size,
                   "amp": bool(args.amp and ctx.device.type == "cuda"), "global_batch": args.batch_size,
                   "images_per_second": views_all / with_data, "step_with_data_s": with_data / args.steps,
                   "model_step_s": model_only / args.steps, "data_ratio": with_data / model_only,
                   "data": _data_path(split, ctx.device), "compile": args.compile}
            if ctx.device.type == "cuda":
                row["gpu"] = torch.cuda.get_device_name(ctx.device)
                row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 1e9
            Path(args.result).write_text(json.dumps(row))
    finally:
        distributed.teardown()


def _data_path(split, device) -> str:
    if not split.on_disk:
        return "on the GPU" if device.type == "cuda" else "in memory"
    return "pinned stream" if device.type == "cuda" else "page cache"


def _throughput_row(nproc: int, args: argparse.Namespace, image_size: int, device: str, amp: bool,
                    batch_size: int | None = None, streamed: bool = False, compile_mode: str = "none") -> dict:
    from train.distributed import torchrun_command

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "row.json"
        child = [str(Path(__file__).resolve()), "_throughput", "--image-size", str(image_size), "--device", device,
                 "--batch-size", str(batch_size or args.batch_size), "--steps", str(args.steps),
                 "--warmup", str(args.warmup), "--cache-dir", str(args.cache_dir), "--result", str(result),
                 "--compile", compile_mode]
        child += ([] if amp else ["--no-amp"]) + (["--streamed"] if streamed else [])
        cmd = torchrun_command(nproc, child) if nproc > 1 else [sys.executable, *child]
        subprocess.run(cmd, check=True)
        return json.loads(result.read_text())


def _print_rows(rows: list[dict]) -> None:
    print("| processes | device | px | bf16 | compile | global batch | data | images/s | step with data (ms) | "
          "model step (ms) | ratio | peak GPU memory (GB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        memory = f"{r['peak_gpu_memory_gb']:.1f}" if "peak_gpu_memory_gb" in r else "-"
        print(f"| {r['processes']} | {r['device']} | {r['image_size']} | {'yes' if r['amp'] else 'no'} | "
              f"{r.get('compile', 'none')} | {r['global_batch']} | {r['data']} | {r['images_per_second']:.0f} | {1e3 * r['step_with_data_s']:.1f} | "
              f"{1e3 * r['model_step_s']:.1f} | {r['data_ratio']:.2f} | {memory} |")
    print(json.dumps(rows))


def _write_images(root: Path, count: int, size: int, classes: int = 10) -> None:
    """``count`` training images (plus a few for val and test) as JPEG files in ImageFolder layout."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (classes, size, size, 3), dtype=np.uint8)
    for split, n in (("train", count), ("val", 2 * classes), ("test", 2 * classes)):
        for c in range(classes):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise = rng.integers(0, 32, (size, size, 3), dtype=np.uint8)
            Image.fromarray(base[i % classes] // 2 + noise).save(root / split / f"c{i % classes}" / f"{i}.jpg",
                                                                quality=85)


def _child_memory(args: argparse.Namespace) -> None:
    import torch

    from train.data import SplitTensors, load_dataset
    from train.engine import RunSpec, StepModule
    from train.models import create_model

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    dataset = load_dataset(args.data, args.image_size, cache_dir=args.cache_dir, show_progress=False)
    decode_s = time.perf_counter() - t0
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    spec = RunSpec("naive", "naive", {"channels": "RGB"}, strategy="fixed",
                   configs=(__import__("runtime.channels", fromlist=["ChannelConfig"]).ChannelConfig("RGB"),))
    strategy = spec.build_strategy()
    model = create_model("naive", num_classes=dataset.num_classes, channels="RGB")
    step = StepModule(model, strategy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    split = SplitTensors(dataset.splits["train"])
    t1 = time.perf_counter()
    # The whole epoch's order is drawn: indices span all N images, so every read is a fresh one.
    for _, groups in zip(range(args.steps), strategy.steps(split, args.batch_size, torch.Generator().manual_seed(0))):
        loss, _ = step(groups, 0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    row = {"images": len(split), "image_size": args.image_size, "cache_bytes": int(
               sum(f.stat().st_size for f in Path(args.cache_dir).rglob("*.npy"))),
           "decode_s": decode_s, "train_s": time.perf_counter() - t1,
           "peak_rss_after_load_mb": after_load / 1024,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "decode_workers_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    Path(args.result).write_text(json.dumps(row))


def _memory(args: argparse.Namespace) -> None:
    rows = []
    for count in (int(c) for c in args.counts.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            data, result = Path(tmp) / "images", Path(tmp) / "row.json"
            t0 = time.perf_counter()
            _write_images(data, count, args.image_size)
            print(f"wrote {count} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "_memory", "--data", str(data),
                            "--image-size", str(args.image_size), "--steps", str(args.steps),
                            "--batch-size", str(args.batch_size), "--cache-dir", str(Path(tmp) / "cache"),
                            "--result", str(result)], check=True)
            rows.append(json.loads(result.read_text()))
    print("| training images | px | cache (MB) | decode (s) | peak RSS after load (MB) | peak RSS training (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['image_size']} | {r['cache_bytes'] / 1e6:.0f} | {r['decode_s']:.1f} | "
              f"{r['peak_rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    print(json.dumps(rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["throughput", "gpu", "memory", "_throughput", "_memory"])
    parser.add_argument("--nproc", default="1,2", help="throughput: process counts")
    parser.add_argument("--sizes", default="64,224", help="gpu: image sizes")
    parser.add_argument("--gpu-batches", default="126,504", help="gpu: global batch sizes")
    parser.add_argument("--counts", default="5000,20000", help="memory: training image counts")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=126)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--streamed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help="also write the rows here")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--result", type=Path)
    parser.add_argument("--compile", default="none", help="comma list of --compile modes (train/config.py "
                                                          "COMPILE_MODES); each gets its own rows")
    args = parser.parse_args(argv)
    from train.config import check_compile_mode
    if args.mode == "_throughput":
        return _child_throughput(args)
    if args.mode == "_memory":
        return _child_memory(args)
    if args.mode == "memory":
        return _memory(args)
    with tempfile.TemporaryDirectory() as cache:
        args.cache_dir = args.cache_dir or Path(cache)
        modes = args.compile.split(",")
        for mode in modes:
            check_compile_mode(mode)
        if args.mode == "throughput":
            rows = [_throughput_row(int(n), args, args.image_size, args.device, args.amp, compile_mode=mode)
                    for mode in modes for n in args.nproc.split(",")]
        else:
            variants = [(False, False, "none"), (True, False, "none"), (True, True, "none")]
            variants = [v for v in variants if "none" in modes] + [(True, False, m) for m in modes if m != "none"]
            rows = [_throughput_row(1, args, int(size), "cuda", amp, int(batch), streamed, mode)
                    for size in args.sizes.split(",") for batch in args.gpu_batches.split(",")
                    for amp, streamed, mode in variants]
        _print_rows(rows)
        if args.json_out:
            args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
