"""Task 2: a four-weight-layer network against torchvision's ResNet34, same data and budget."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import Dataset
from .distill import distillation_loss_fn
from .distributed import DistContext
from .engine import RunSpec, TrainConfig, resolve_device
from .report import write_reports
from .task1 import run_task

TASK = "task2"
#: ResNet34 first: it is the shallow net's distillation teacher.
MODELS: tuple[str, ...] = ("resnet34", "shallow")
PRIMARY_MODEL = "shallow"


def run_specs(model: str) -> list[RunSpec]:
    from runtime.channels import ChannelConfig

    return [RunSpec(model, model, {}, (ChannelConfig("RGB"),))]


def cpu_latency_ms(model: torch.nn.Module, image_size: int, runs: int = 50) -> float:
    """Median PyTorch eager latency at batch 1 on the CPU, in milliseconds."""
    from runtime.channels import ChannelConfig

    module = model.cpu().eval().resolve(ChannelConfig("RGB")).eval()
    x = torch.randn(1, 3, image_size, image_size)
    times = []
    with torch.no_grad():
        for i in range(runs + 5):
            t0 = time.perf_counter()
            module(x)
            if i >= 5:
                times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2] * 1e3


def run_task2(dataset: Dataset, models: list[str], out: Path, cfg: TrainConfig, resume: bool = False,
              train_eval_samples: int = 2500, log: Callable[[str], None] = print,
              distill: bool = True, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train ResNet34 then the shallow net (distilled from it when its checkpoint exists)."""
    models = sorted(models, key=MODELS.index)
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    if not ctx.is_main:
        log = lambda _: None  # noqa: E731

    def fit_kwargs(spec: RunSpec) -> dict[str, Any]:
        teacher_path = out / "resnet34" / "best.pt"
        if spec.model != "shallow" or not distill:
            return {}
        if not teacher_path.exists():
            log("[shallow] no ResNet34 checkpoint to distil from: training on labels only")
            return {}
        log(f"[shallow] distilling from {teacher_path}")
        teacher = model_from_checkpoint(load_checkpoint(teacher_path, TASK)).to(device)
        return {"loss_fn": distillation_loss_fn(teacher, label_smoothing=cfg.label_smoothing)}

    results = run_task(TASK, dataset, models, out, cfg, resume, run_specs, train_eval_samples, log, fit_kwargs, ctx)
    if not ctx.is_main:  # the rest measures CPU latency and rewrites the reports: rank 0's work
        ctx.barrier()
        return results
    for name in models:
        model = model_from_checkpoint(load_checkpoint(out / name / "best.pt", TASK))
        results["models"][name]["cpu_latency_ms_batch1"] = cpu_latency_ms(model, dataset.image_size)
        if hasattr(model, "weight_layer_count"):
            results["models"][name]["weight_layers"] = model.weight_layer_count()
    if {"resnet34", "shallow"} <= set(models):
        ours, ref = (results["models"][m]["configs"]["RGB"]["test_acc"] for m in ("shallow", "resnet34"))
        results["shallow_to_resnet34_test_acc"] = ours / ref if ref else float("nan")
    write_reports(results, {}, out)  # rewrite with the latency and ratio; curves were written by run_task
    ctx.barrier()
    return results
