"""The anychannel model on each backbone, on real photos: our compact one against torchvision CNNs.

    python benchmarks/backbones.py [--epochs 8] [--image-size 64] [--train-images N]
                                   [--backbones compact,mobilenet_v3_small,resnet18]

Each backbone is trained from scratch as task 1's model (``cli.py train task1 --backbone
NAME``: all seven configurations every step, same recipe, epochs and images for every row)
on ../shared/data/tiny-imagenet-50, and reported with its test accuracy per configuration,
parameters (the whole any-channel model, and the RGB graph), FLOPs of the RGB graph,
training images/s (views: image x configuration) and onnxruntime CPU latency of the exported
RGB and R graphs at batch 1 and 32 (``export_task``'s verified graphs, timed with
``runtime.bench.latency``, as ``cli.py bench`` does).

Each backbone is its own run folder under --out: a stopped benchmark continues where it
stopped (finished rows are kept, an interrupted one resumes from its last epoch), and
--report-only rebuilds the BENCHMARKS.md section from the finished rows. On this project's
2-core CPU a full-size run is long (resnet18 at 64 px: about 0.45 GFLOPs per training view,
7 views per image); --train-images takes a fixed random subset of the training split for a
short run that is still honest (the test split stays whole).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.common import machine, real_photo_parser, write_section  # noqa: E402
from runtime.channels import CONFIG_NAMES  # noqa: E402

DEFAULT_BACKBONES = ("compact", "mobilenet_v3_small", "resnet18")
LATENCY_CONFIGS = ("RGB", "R")
BATCH_SIZES = (1, 32)


def limit_training_images(dataset, limit: int | None, seed: int):
    """``dataset`` with a fixed random subset of ``limit`` training images (all of them if None)."""
    from train.data.cache import Dataset, Split, fingerprint

    train = dataset.splits["train"]
    if limit is None or limit >= len(train.labels):
        return dataset
    # Sorted, so the subset reads the memory-mapped cache in order; random, so every class is in it.
    keep = np.sort(np.random.default_rng(seed).permutation(len(train.labels))[:limit])
    subset = Split(np.ascontiguousarray(train.images[keep]), np.asarray(train.labels[keep]))
    return Dataset(dataset.name, dataset.class_names, dataset.image_size, {**dataset.splits, "train": subset},
                   fingerprint(subset.images, subset.labels))


def run_dir(backbone: str, args) -> Path:
    """One folder per backbone, size and training subset: resuming never mixes two budgets."""
    return args.out / f"{backbone}-{args.epochs}ep-{args.image_size}px-{args.train_images or 'all'}-seed{args.seed}"


def train_row(backbone: str, dataset, args) -> dict:
    """Train (or resume) one backbone's run and return its results.json model entry."""
    from train.engine import TrainConfig
    from train.task1 import Task1Options, run_task1

    run = run_dir(backbone, args)
    results = run / "results.json"
    if results.exists() and json.loads(results.read_text())["epochs"] == args.epochs:
        return json.loads(results.read_text())["models"]["anychannel"]
    t0 = time.perf_counter()
    run_task1(dataset, ["anychannel"], run, TrainConfig(epochs=args.epochs, seed=args.seed), resume=True,
              options=Task1Options(backbone=backbone), log=lambda line: print(line, flush=True))
    print(f"== {backbone}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(results.read_text())["models"]["anychannel"]


def latency_row(backbone: str, args) -> dict[str, dict[int, float]]:
    """p50 ms of the exported graphs per configuration and batch size (exported once, then reused)."""
    from export import export_task
    from runtime import Classifier
    from runtime.bench import latency

    run = run_dir(backbone, args)
    cached = run / "latency.json"
    if cached.exists():
        return {c: {int(b): ms for b, ms in row.items()} for c, row in json.loads(cached.read_text()).items()}
    onnx_dir = run / "onnx"
    export_task("task1", ",".join(LATENCY_CONFIGS), checkpoint=run / "anychannel" / "best.pt", out=onnx_dir)
    clf = Classifier(onnx_dir, device="cpu")
    rng = np.random.default_rng(0)
    out: dict[str, dict[int, float]] = {}
    for config in LATENCY_CONFIGS:
        out[config] = {}
        for batch in BATCH_SIZES:
            images = rng.integers(0, 256, (batch, args.image_size, args.image_size, 3), dtype=np.uint8)
            x, cfg = clf.preprocess(images, config)
            runs = args.runs if batch == 1 else max(10, args.runs // 4)
            out[config][batch] = latency(lambda: clf.run(x, cfg), batch, runs, warmup=5).p50_ms
    cached.write_text(json.dumps(out))
    return out


def report(rows: dict[str, dict], latencies: dict[str, dict], args, dataset, wall: float | None) -> str:
    command = (f"python benchmarks/backbones.py --epochs {args.epochs} --image-size {args.image_size}"
               + (f" --train-images {args.train_images}" if args.train_images else "")
               + f" --backbones {','.join(args.backbones)}")
    lines = [
        f"## Backbones: our compact network against torchvision CNNs made any-channel ({dataset.name})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Budget: every row from scratch, {args.epochs} epochs over the same "
        f"{len(dataset.splits['train'].labels):,} training images (seed {args.seed}), {args.image_size} px, all "
        "seven configurations every step (the default joint strategy, batches of 128 views), AdamW one-cycle; "
        f"test split {len(dataset.splits['test'].labels):,} images."
        + (f" Wall time of this invocation: {wall / 60:.0f} min." if wall else ""),
        "",
        "| backbone | " + " | ".join(CONFIG_NAMES) + " | mean | params (model / RGB graph) | RGB GFLOPs | "
        "train views/s | ORT ms RGB b1 / b32 | ORT ms R b1 / b32 |",
        "|---|" + "---|" * (len(CONFIG_NAMES) + 6),
    ]
    for backbone in args.backbones:
        if backbone not in rows:
            lines.append(f"| {backbone} | " + " | ".join("–" for _ in CONFIG_NAMES) + " | not run | | | | | |")
            continue
        e, lat = rows[backbone], latencies.get(backbone, {})
        accs = [e["configs"][c]["test_acc"] for c in CONFIG_NAMES]
        timing = [f"{lat[c][1]:.2f} / {lat[c][32]:.1f}" if c in lat else "–" for c in LATENCY_CONFIGS]
        lines.append(f"| {backbone} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {np.mean(accs):.3f} | "
                     f"{e['params'] / 1e6:.2f}M / {e['configs']['RGB']['params'] / 1e6:.2f}M | "
                     f"{e['configs']['RGB']['flops'] / 1e9:.3f} | {e['images_per_second']:.0f} | "
                     + " | ".join(timing) + " |")
    lines += [
        "",
        "Params: the whole any-channel model (all per-configuration norms and the stem's K kernels), and the "
        "exported RGB graph. FLOPs: one forward pass of the RGB graph at batch 1 (torch's counter, 2 per "
        "multiply-add). Train views/s: image × configuration pairs per second of training on this machine. "
        "Latency: p50 of onnxruntime's CPU provider on the verified exported graphs (`export_task`), all cores, "
        "random images through the runtime's own preprocessing.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = real_photo_parser(__doc__, "artifacts/bench/backbones",
                               report_only="Rewrite the BENCHMARKS.md section from the finished rows without training.")
    parser.set_defaults(image_size=64)
    parser.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES),
                        help="Comma list: compact and/or torchvision classification CNNs.")
    parser.add_argument("--train-images", type=int, default=None,
                        help="Train on a fixed random subset of this many training images (default: all).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=100, help="Timed calls at batch 1 (a quarter at 32).")
    args = parser.parse_args()
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    from train.models.backbone import BackboneError, check_backbone

    try:
        for backbone in args.backbones:
            check_backbone(backbone, args.image_size)
    except BackboneError as exc:
        parser.error(str(exc))

    t0 = time.perf_counter()
    from train.data import load_dataset

    dataset = limit_training_images(load_dataset(args.data, args.image_size), args.train_images, args.seed)
    rows, latencies = {}, {}
    for backbone in args.backbones:
        finished = (run_dir(backbone, args) / "results.json").exists()
        if args.report_only and not (finished and (run_dir(backbone, args) / "latency.json").exists()):
            continue  # --report-only never trains or exports
        rows[backbone] = train_row(backbone, dataset, args)
        latencies[backbone] = latency_row(backbone, args)
    wall = None if args.report_only else time.perf_counter() - t0
    body = report(rows, latencies, args, dataset, wall)
    write_section("backbones", body)
    print(body)


if __name__ == "__main__":
    main()
