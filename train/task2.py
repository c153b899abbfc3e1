"""Task 2: a four-weight-layer network against torchvision's ResNet34, same data and budget."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import Dataset, SplitTensors
from .distill import distillation_loss_fn
from .distributed import DistContext
from .checkpoint import check_same_data
from .engine import RunSpec, TrainConfig, evaluate, resolve_device
from .models.shallow import count_weight_layers
from .report import write_reports
from .task1 import run_task

TASK = "task2"
#: Teachers first: the shallow net distils from one of them. ``naive`` is task 1's plain CNN on RGB.
MODELS: tuple[str, ...] = ("naive", "resnet34", "shallow")
PRIMARY_MODEL = "shallow"
#: Models the shallow net may distil from (why the naive CNN is the default: docs/task2.md).
TEACHERS: tuple[str, ...] = ("naive", "resnet34")
DEFAULT_TEACHER = "naive"
#: The shallow net's layout, written into every checkpoint in full, so that a later change of
#: the class defaults cannot rebuild an old checkpoint with another shape.
SHALLOW_KWARGS: dict[str, Any] = {"downsample": "maxpool", "widths": [64, 128, 256]}


def run_specs(model: str, model_kwargs: dict[str, Any] | None = None) -> list[RunSpec]:
    """One RGB run of ``model``; the shallow net's layout defaults filled in from :data:`SHALLOW_KWARGS`."""
    from runtime.channels import ChannelConfig

    kwargs = {**SHALLOW_KWARGS, **(model_kwargs or {})} if model == "shallow" else dict(model_kwargs or {})
    return [RunSpec(model, model, kwargs, (ChannelConfig("RGB"),))]


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


def check_teacher(teacher: str | None) -> None:
    """Raise ``ValueError`` for a teacher name outside :data:`TEACHERS` (``None``: labels only)."""
    if teacher is not None and teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r}: choose one of {', '.join(TEACHERS)}, or none")


def run_task2(dataset: Dataset, models: list[str], out: Path, cfg: TrainConfig, resume: bool = False,
              train_eval_samples: int = 2500, log: Callable[[str], None] = print,
              teacher: str | None = DEFAULT_TEACHER, teacher_dir: Path | None = None,
              model_kwargs: dict[str, dict[str, Any]] | None = None, students: tuple[str, ...] = ("shallow",),
              ctx: DistContext | None = None) -> dict[str, Any]:
    """Train the teachers, ResNet34 and the shallow net, which distils from ``teacher``.

    ``teacher``: a model in :data:`TEACHERS`, trained earlier in this run or found in
    ``teacher_dir`` (default ``out``); ``None`` trains the shallow net on labels only.
    ``model_kwargs``: per model name, arguments for its constructor (recorded in its checkpoint).
    ``students``: the models that distil (a fairness control distils ResNet34 from the same teacher).
    """
    check_teacher(teacher)
    models = sorted(models, key=lambda m: (m != teacher, MODELS.index(m)))  # the teacher before its students
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    if not ctx.is_main:
        log = lambda _: None  # noqa: E731
    # A teacher trained in this run is read from ``out``, never from ``teacher_dir``.
    teacher_path = (out if teacher in models else teacher_dir or out) / str(teacher) / "best.pt"
    if teacher in students:
        raise ValueError(f"{teacher} cannot distil from itself")
    if set(students) & set(models) and teacher is not None and teacher not in models and not teacher_path.exists():
        raise ValueError(f"{', '.join(students)} distil from {teacher}, but {teacher_path} does not exist: "
                         f"add {teacher} to the models, or choose another teacher")

    def fit_kwargs(spec: RunSpec) -> dict[str, Any]:
        if spec.model not in students or teacher is None:
            return {}
        log(f"[{spec.run_name}] distilling from {teacher_path}")
        teacher_ckpt = load_checkpoint(teacher_path, TASK)
        check_same_data(teacher_ckpt, dataset, f"teacher {teacher_path}")
        teacher_model = model_from_checkpoint(teacher_ckpt).to(device)
        return {"loss_fn": distillation_loss_fn(teacher_model, label_smoothing=cfg.label_smoothing)}

    def specs_for(model: str) -> list[RunSpec]:
        return run_specs(model, (model_kwargs or {}).get(model))

    results = run_task(TASK, dataset, models, out, cfg, resume, specs_for, train_eval_samples, log, fit_kwargs, ctx)
    results["teacher"] = teacher
    if not ctx.is_main:  # the rest measures CPU latency and rewrites the reports: rank 0's work
        ctx.barrier()
        return results
    from runtime.channels import ChannelConfig

    test = SplitTensors(dataset.splits["test"])
    for name in models:
        model = model_from_checkpoint(load_checkpoint(out / name / "best.pt", TASK)).to(device)
        # Reported beside the plain accuracy, never as the headline: it doubles inference cost.
        _, results["models"][name]["configs"]["RGB"]["test_acc_flip"] = evaluate(
            model, test, ChannelConfig("RGB"), device=device, flip=True)
        results["models"][name]["cpu_latency_ms_batch1"] = cpu_latency_ms(model, dataset.image_size)
        # On the inference form: the shallow net's RepVGG branches folded.
        results["models"][name]["weight_layers"] = count_weight_layers(model.resolve(ChannelConfig("RGB")))
    if {"resnet34", "shallow"} <= set(models):
        ours, ref = (results["models"][m]["configs"]["RGB"]["test_acc"] for m in ("shallow", "resnet34"))
        results["shallow_to_resnet34_test_acc"] = ours / ref if ref else float("nan")
    write_reports(results, {}, out)  # rewrite with the latency and ratio; curves were written by run_task
    ctx.barrier()
    return results
