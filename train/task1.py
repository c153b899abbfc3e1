"""Task 1: our model, anychannel, against the naive per-configuration CNN and the course design."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from runtime.channels import ALL_CONFIGS, ChannelConfig

from .checkpoint import check_renamed_run, load_checkpoint, model_from_checkpoint
from .data import Dataset, SplitTensors
from .distributed import DistContext
from .engine import RunSpec, TrainConfig, evaluate, fit, resolve_device
from .models import create_model
from .models.backbone import COMPACT, check_backbone
from .models.blocks import check_width
from .report import count_flops, count_parameters, write_reports

TASK = "task1"
MODELS: tuple[str, ...] = ("anychannel", "naive", "course")
#: Our model, the one export uses by default.
PRIMARY_MODEL = "anychannel"
#: Model families our model's run (``anychannel/``) may hold: its backbone is our compact
#: network (``anychannel``) or a torchvision CNN (``backbone``).
PRIMARY_FAMILIES: tuple[str, ...] = ("anychannel", "backbone")


@dataclass
class Task1Options:
    """How our model is trained and shaped; each default is the measured winner (BENCHMARKS.md)."""

    strategy: str = "joint"
    configs_per_step: int = 7
    share_images: bool = False
    distill: bool = False
    body: str = "plain"
    #: The configurations our model trains on (one alone gives the RGB-only control of the benchmark).
    configs: tuple[ChannelConfig, ...] = ALL_CONFIGS
    #: ``compact`` (our own network, with ``body``) or a torchvision classification model (``resnet18``, ...).
    backbone: str = COMPACT
    #: A torchvision state dict to start a torchvision backbone from (``--init``, ``--pretrained``).
    init: str | None = None
    #: Multiplies the width of every layer of our compact network (``--width``): more capacity for
    #: a dataset it underfits, or less compute (0.7: under half the naive set's training FLOPs).
    width: float = 1.0
    #: The same for the naive CNNs, which otherwise keep their published shape: the benchmark's
    #: capacity probe narrows both sides.
    naive_width: float = 1.0
    #: How a joint step's views are split between the configurations (``--allocation``, a key of
    #: ``train.strategies.ALLOCATIONS``): ``uniform``, or ``inverse-channels`` (more for fewer channels).
    allocation: str = "uniform"
    #: How many of the compact network's last convolutions each configuration keeps for itself.
    config_layers: int = 0

    def __post_init__(self) -> None:
        check_width(self.width, "--width")
        check_width(self.naive_width, "the naive CNNs' width")
        if self.width != 1.0 and self.backbone != COMPACT:
            raise ValueError("--width scales the compact network; a torchvision --backbone keeps its own widths")
        if self.config_layers and self.backbone != COMPACT:
            raise ValueError("config_layers keeps the compact network's last convolutions per configuration; "
                             "a torchvision --backbone shares all of its own")
        joint_only = {"--configs-per-step": self.configs_per_step != 7, "--share-images": self.share_images,
                      "--distill": self.distill, "--allocation": self.allocation != "uniform"}
        if self.strategy != "joint" and any(joint_only.values()):
            raise ValueError(f"{', '.join(k for k, v in joint_only.items() if v)}: options of --strategy joint; "
                             f"not with --strategy {self.strategy}")
        # Flags that go together only in some combinations are refused here alone: each strategy
        # they name (strategy_spec) takes any value of each of its options.
        if self.distill and not self.share_images:
            raise ValueError("--distill needs --share-images: in-place distillation needs the groups to share "
                             "their images")
        if self.allocation != "uniform" and (self.share_images or self.configs_per_step != len(self.configs)):
            raise ValueError(f"allocation {self.allocation} splits the views of a step that trains every "
                             "configuration on its own images: not with --share-images or --configs-per-step "
                             f"other than {len(self.configs)}")

    def strategy_spec(self) -> tuple[str, dict[str, Any]]:
        """The strategy our model trains with and its options (``train.strategies``): ``--strategy
        joint``'s flags name one of the strategies that train several configurations per step."""
        if self.strategy != "joint":
            return self.strategy, {}
        if self.share_images:
            return ("distill" if self.distill else "shared"), {"configs_per_step": self.configs_per_step}
        if self.configs_per_step != len(self.configs):
            return "sandwich", {"configs_per_step": self.configs_per_step}
        return "joint", {"allocation": self.allocation}

    def anychannel_spec(self) -> RunSpec:
        """Our model's run: the anychannel model on its compact backbone or a torchvision one."""
        strategy, options = self.strategy_spec()
        compact = {"body": self.body, **width_kwargs(self.width),
                   **({"config_layers": self.config_layers} if self.config_layers else {})}
        model, kwargs = ((PRIMARY_MODEL, compact) if self.backbone == COMPACT
                         else ("backbone", {"backbone": self.backbone}))
        return RunSpec(PRIMARY_MODEL, model, kwargs, self.configs, strategy, options, init=self.init)


def width_kwargs(width: float) -> dict[str, float]:
    """The model keyword for a width multiplier; none at 1, so default checkpoints stay as they were."""
    return {} if width == 1.0 else {"width": width}


def run_specs(model: str, options: Task1Options | None = None) -> list[RunSpec]:
    """The naive baseline is one run per configuration; the others are one run for all seven.

    The naive CNNs take ``options.naive_width``, not ``options.width``: by default they stay the
    reference that anychannel is compared with. The course design keeps its published training (one
    sampled configuration per batch).
    """
    options = options or Task1Options()
    if model == "naive":
        return [RunSpec(f"naive-{c}", "naive", {"channels": c.name, **width_kwargs(options.naive_width)}, (c,))
                for c in ALL_CONFIGS]
    if model == PRIMARY_MODEL:
        return [options.anychannel_spec()]
    return [RunSpec(model, model, strategy="sampled")]


def initialise(model: torch.nn.Module, path: str) -> str:
    """Load a pretrained state dict into ``model`` (``--init``); returns the report to log."""
    if not hasattr(model, "initialise_from"):
        raise ValueError(f"{type(model).__name__} cannot start from a state dict file; --init needs a "
                         "torchvision --backbone")
    return model.initialise_from(path).summary()


def final_metrics(run_dir: Path, dataset: Dataset, device: torch.device, train_eval_samples: int,
                  task: str, ctx: DistContext | None = None) -> dict[str, dict[str, float]]:
    """Train/val/test loss and accuracy, params and FLOPs per configuration, from ``best.pt``.

    With several ranks (``ctx``) each evaluates a share of the batches and the sums are reduced.
    """
    ckpt = load_checkpoint(run_dir / "best.pt", task)
    model = model_from_checkpoint(ckpt).to(device)
    splits = {name: SplitTensors(dataset.splits[name], device) for name in ("train", "val", "test")}
    out: dict[str, dict[str, float]] = {}
    for name in ckpt["configs"]:
        config = next(c for c in ALL_CONFIGS if c.name == name)
        row: dict[str, float] = {}
        for split_name, split in splits.items():
            limit = train_eval_samples if split_name == "train" else None
            row[f"{split_name}_loss"], row[f"{split_name}_acc"] = evaluate(model, split, config, device=device,
                                                                          limit=limit, ctx=ctx)
        resolved = model.cpu().resolve(config)
        row["params"] = count_parameters(resolved)
        row["flops"] = count_flops(resolved, config, dataset.image_size)
        model.to(device)
        out[name] = row
    return out


def run_task(task: str, dataset: Dataset, models: list[str], out: Path, cfg: TrainConfig, resume: bool,
             specs_for: Callable[[str], list[RunSpec]], train_eval_samples: int = 2500,
             log: Callable[[str], None] = print, fit_kwargs: Callable[[RunSpec], dict] | None = None,
             ctx: DistContext | None = None) -> dict[str, Any]:
    """Train each model's runs, measure them from their best checkpoints and write the reports.

    ``ctx``: this process's rank in a data-parallel job; rank 0 alone logs and writes reports.
    """
    if resume:  # a run kept under its model's old name must not start afresh under the new one
        for spec in (spec for model_name in models for spec in specs_for(model_name)):
            check_renamed_run(out / spec.run_name / "last.pt", "to resume it, or use a fresh --out")
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    if not ctx.is_main:
        log = lambda _: None  # noqa: E731
    results: dict[str, Any] = {
        "task": task, "dataset": dataset.name, "image_size": dataset.image_size, "epochs": cfg.epochs,
        "device": str(device), "data_fingerprint": dataset.fingerprint, "train_eval_samples": train_eval_samples,
        "train_config": cfg.__dict__, "world_size": ctx.world, "global_batch_size": cfg.batch_size,
        "models": {},
    }
    histories: dict[str, dict[str, list]] = {}
    for model_name in models:
        entry: dict[str, Any] = {"configs": {}, "train_seconds": 0.0, "params": 0, "images_per_second": 0.0,
                                 "train_flops": 0.0, "train_views": 0, "runs": {}}
        histories[model_name] = {}
        images_seen = 0
        for spec in specs_for(model_name):
            torch.manual_seed(cfg.seed)
            model = create_model(spec.model, num_classes=dataset.num_classes, **spec.model_kwargs)
            if spec.init is not None and not (resume and (out / spec.run_name / "last.pt").exists()):
                log(f"[{spec.run_name}] " + initialise(model, spec.init))  # a resume loads last.pt's weights instead
            extra = fit_kwargs(spec) if fit_kwargs else {}
            t0 = time.perf_counter()
            summary = fit(model, spec, dataset, out / spec.run_name, cfg, task, resume=resume, log=log, ctx=ctx,
                          **extra)
            log(f"[{spec.run_name}] trained in {time.perf_counter() - t0:.0f} s")
            histories[model_name][spec.run_name] = summary["history"]
            entry["train_seconds"] += summary["train_seconds"]
            entry["train_flops"] += summary["train_flops"]
            entry["train_views"] += summary["views"]
            entry["runs"][spec.run_name] = {"strategy": summary["strategy"], "model": spec.model,
                                            "model_kwargs": dict(spec.model_kwargs), "init": spec.init}
            entry["params"] += count_parameters(model)
            images_seen += summary["views"]
            entry["configs"].update(final_metrics(out / spec.run_name, dataset, device, train_eval_samples, task,
                                                  ctx if ctx.distributed else None))
        entry["images_per_second"] = images_seen / max(entry["train_seconds"], 1e-9)
        results["models"][model_name] = entry
    if ctx.is_main:
        write_reports(results, histories, out)
    ctx.barrier()
    return results


def run_task1(dataset: Dataset, models: list[str], out: Path, cfg: TrainConfig, resume: bool = False,
              train_eval_samples: int = 2500, log: Callable[[str], None] = print,
              options: Task1Options | None = None, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train and compare the task-1 models; reports go to ``out``."""
    options = options or Task1Options()
    if PRIMARY_MODEL in models:
        check_backbone(options.backbone, dataset.image_size)  # a network too deep for these images fails here
    return run_task(TASK, dataset, models, out, cfg, resume, lambda m: run_specs(m, options), train_eval_samples,
                    log, ctx=ctx)
