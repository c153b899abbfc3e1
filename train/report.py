"""Per-model, per-configuration results: measured, then written as JSON, Markdown and PNG curves."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from runtime.channels import ChannelConfig


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, config: ChannelConfig, image_size: int) -> int:
    """FLOPs of one forward pass at batch 1 (torch's counter: 2 per multiply-add)."""
    module.eval()
    x = torch.zeros(1, config.num_channels, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


def write_atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def markdown_table(results: dict[str, Any]) -> str:
    """The course-style table: one row per model and configuration."""
    lines = [
        f"# {results['task']} results on {results['dataset']} ({results['image_size']} px, "
        f"{results['epochs']} epochs, {results['device']})",
        "",
        "| model | channels | train acc | val acc | test acc | train loss | val loss | test loss | params | MFLOPs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, entry in results["models"].items():
        for cfg, r in entry["configs"].items():
            lines.append(
                f"| {model} | {cfg} | {r['train_acc']:.3f} | {r['val_acc']:.3f} | {r['test_acc']:.3f} | "
                f"{r['train_loss']:.3f} | {r['val_loss']:.3f} | {r['test_loss']:.3f} | "
                f"{r['params'] / 1e6:.2f}M | {r['flops'] / 1e6:.1f} |"
            )
    naive_flops = results["models"].get("naive", {}).get("train_flops")
    lines += ["", "| model | trainable params | train time (s) | train views | train images/s | train TFLOPs "
              "(fwd+bwd) | vs naive | CPU latency, batch 1 (ms) | weight layers |",
              "|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results["models"].items():
        latency = entry.get("cpu_latency_ms_batch1")
        flops = entry.get("train_flops")
        ratio = f"{flops / naive_flops:.2f}×" if flops and naive_flops else "-"
        lines.append(f"| {model} | {entry['params'] / 1e6:.2f}M | {entry['train_seconds']:.0f} | "
                     f"{entry.get('train_views', '-')} | {entry['images_per_second']:.0f} | "
                     f"{'-' if flops is None else f'{flops / 1e12:.1f}'} | {ratio} | "
                     f"{'-' if latency is None else f'{latency:.2f}'} | {entry.get('weight_layers', '-')} |")
    lines.append("")
    if "shallow_to_resnet34_test_acc" in results:
        source = f"the {results['teacher']} teacher" if results.get("teacher") else "labels only"
        lines += [f"Shallow / ResNet34 test accuracy: {results['shallow_to_resnet34_test_acc']:.1%} "
                  f"(target ≥ 100%); the shallow net learnt from {source}.",
                  ""]
    per_config_naive = len(results["models"].get("naive", {}).get("runs", {})) > 1
    lines.append(("Naive params, views, time and FLOPs are summed over its seven separate models. "
                  if per_config_naive else "")
                 + "A view is one training image seen through one configuration; train FLOPs count every "
                 "forward and backward pass (and precise-BN forwards) as torch's FLOP counter measures them.")
    lines.append("Train accuracy and loss are measured in eval mode, without augmentation, on "
                 f"{results['train_eval_samples']} training images.")
    return "\n".join(lines) + "\n"


def plot_curves(history: dict[str, list[dict[str, float]]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch for one model (several runs, e.g. naive per configuration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for run, hist in history.items():
        epochs = [h["epoch"] for h in hist]
        ax_loss.plot(epochs, [h["train_loss"] for h in hist], "--", label=f"{run} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in hist], label=f"{run} val")
        ax_acc.plot(epochs, [h["train_acc"] for h in hist], "--", label=f"{run} train")
        ax_acc.plot(epochs, [h["val_acc"] for h in hist], label=f"{run} val")
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_reports(results: dict[str, Any], histories: dict[str, dict[str, list]], out: Path) -> None:
    write_atomic_text(out / "results.json", json.dumps(results, indent=2))
    write_atomic_text(out / "results.md", markdown_table(results))
    for model, runs in histories.items():
        plot_curves(runs, out / f"curves-{model}.png", f"{results['task']}: {model}")
