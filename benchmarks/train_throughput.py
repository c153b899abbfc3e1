"""Training throughput of the task-1 models, measured interleaved in one process.

    python benchmarks/train_throughput.py [--image-size 32] [--batch-size 128] [--rounds 5]

Each round runs a few training steps of every model in turn, so background load hits all
models alike; the medians over rounds and their ratio to the course design go to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, write_section  # noqa: E402  (before torch: it sets oneDNN's cache)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from runtime.channels import ChannelConfig  # noqa: E402
from train.engine import sample_config, to_channels_last  # noqa: E402
from train.models import create_model  # noqa: E402

#: The course design in each exact dynamic-convolution form: the fastest one is its baseline.
MODELS = {"anychannel": {}, "course": {"form": "sum"}, "course-unfold": {"form": "unfold"},
          "naive": {"channels": "RGB"}}


def steps_per_second(model, optimizer, batch_size: int, size: int, steps: int, generator) -> float:
    model.train()
    multi = getattr(model, "multi_config", False)
    t0 = time.perf_counter()
    for _ in range(steps):
        config = sample_config(generator) if multi else ChannelConfig("RGB")
        x = torch.randn(batch_size, config.num_channels, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 50, (batch_size,))
        loss = F.cross_entropy(model(x, config), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    # Channels-last weights and inputs, as training runs them (TrainConfig.channels_last).
    models = {n: to_channels_last(create_model(n.split("-")[0], num_classes=50, **kw)) for n, kw in MODELS.items()}
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=1e-3) for n, m in models.items()}
    rates: dict[str, list[float]] = {n: [] for n in models}
    for name, model in models.items():  # warm-up
        steps_per_second(model, optimizers[name], args.batch_size, args.image_size, 1, generator)
    for _ in range(args.rounds):
        for name, model in models.items():
            rates[name].append(steps_per_second(model, optimizers[name], args.batch_size, args.image_size,
                                                args.steps, generator))
    median = {n: statistics.median(r) for n, r in rates.items()}
    course = max(median["course"], median["course-unfold"])
    rows = ["| model | params | train images/s (median) | vs course (its faster form) |", "|---|---|---|---|"]
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        rows.append(f"| {name} | {params / 1e6:.2f}M | {median[name]:.0f} | {median[name] / course:.2f}× |")
    body = "\n".join([
        "## Task 1 training throughput (interleaved, same process)",
        "",
        f"Command: `python benchmarks/train_throughput.py --image-size {args.image_size} "
        f"--batch-size {args.batch_size} --rounds {args.rounds}`  ",
        f"Machine: {machine()}",
        "",
        *rows,
        "",
        "Every model runs channels-last weights and inputs, as training does. "
        "anychannel, our model, runs one randomly drawn channel configuration per batch, which measures the "
        "network's own speed (the default joint strategy's cost per view is in the task-1 real-photo section, "
        "`--step-time`); "
        "naive is its RGB model; "
        "`course` and `course-unfold` are the course design with its dynamic convolutions in the sum and "
        "im2col forms (both exact). Target: anychannel ≥ 2× the course design at the same input size.",
    ])
    write_section("task1-throughput", body)
    print(body)


if __name__ == "__main__":
    main()
