"""The training loop: plain, resumable and deterministic per epoch."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from runtime.channels import ALL_CONFIGS, ChannelConfig

from .checkpoint import CHECKPOINT_FORMAT, check_resumable, data_meta, load_checkpoint, save_atomic
from .config import TrainConfig, check_compile_world
from .data import Dataset, SplitTensors
from .data.mixing import BatchMix
from .distributed import DistContext, Shard, check_same_data_on_every_rank, convert_batchnorms, restarted
from .models.layers import ConfigNorm, PerConfig
from .progress import progress_bar
from .strategies import FixedConfig, LossFn, TrainingStrategy, build_strategy, sample_config  # noqa: F401 (re-exported)


@dataclass
class RunSpec:
    """One model to train: what to build, and which configurations it sees."""

    run_name: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    configs: tuple[ChannelConfig, ...] = ALL_CONFIGS
    #: Training strategy name and options (see ``train.strategies``); one configuration means ``fixed``.
    strategy: str = "joint"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    #: A torchvision state dict to start from (``--init``/``--pretrained``); not part of the model's
    #: arguments, so export rebuilds the model without the file.
    init: str | None = None

    def build_strategy(self) -> TrainingStrategy:
        return build_strategy(self.strategy, self.configs, **self.strategy_options)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


@torch.no_grad()
def evaluate(model: nn.Module, split: SplitTensors, config: ChannelConfig, batch_size: int = 256,
             device: torch.device = torch.device("cpu"), limit: int | None = None,
             ctx: DistContext | None = None, flip: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``split`` seen through ``config``.

    With several ranks (``ctx``), each evaluates every ``world``-th batch and the sums are reduced.
    ``flip``: test-time augmentation, the mean of the logits of each image and its mirror image.
    """
    model.eval()
    rank, world = (ctx.rank, ctx.world) if ctx is not None else (0, 1)
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y, cfg) in enumerate(split.batches(batch_size, config)):
        if limit is not None and i * batch_size >= limit:
            break
        if i % world != rank:
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x, cfg)
        if flip:
            logits = (logits + model(x.flip(3), cfg)) / 2
        total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    if ctx is not None:
        total_loss, correct, seen = ctx.all_sum([total_loss, correct, seen])
    return total_loss / seen, correct / seen


@torch.no_grad()
def recalibrate_config_norms(model: nn.Module, split: SplitTensors, configs: tuple[ChannelConfig, ...],
                             generator: torch.Generator, images: int = 1024, batch_size: int = 256,
                             device: torch.device = torch.device("cpu"), shard: Shard | None = None
                             ) -> dict[str, int]:
    """Recompute each configuration's own batch-norm statistics with the current weights ("precise BN").

    Rare configurations see few batches per epoch, so their running averages lag behind the
    weights; exact averages over ``images`` training images fix that. Shared layers are untouched.
    Under data parallelism each rank forwards its ``shard`` of the same batches, and the
    batch norms (``GlobalBatchNorm2d``) sum their statistics over ranks: every rank ends
    with the averages one process would compute, not its own view.
    Returns how many images each configuration's forward passes used (all ranks together).
    """
    # Only batch norms keep running statistics; per-configuration layer norms have none to recompute.
    norms = [m for m in model.modules()
             if isinstance(m, ConfigNorm) and getattr(m.norms[0], "track_running_stats", False)]
    if not norms:
        return {}
    model.eval()
    used: dict[str, int] = {}
    for config in configs:
        own = [n.select(config) for n in norms]
        saved = [bn.momentum for bn in own]
        for bn in own:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
            bn.train()
        seen = 0
        for start, (group,) in enumerate(FixedConfig((config,)).steps(split, batch_size, generator, shard or Shard())):
            model(group.inputs.to(device), config)
            seen = min(len(split), (start + 1) * batch_size)  # global images, whatever this rank's share
            if seen >= images:
                break
        for bn, momentum in zip(own, saved):
            bn.momentum = momentum
            bn.eval()
        used[config.name] = seen
    return used


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def checkpoint_meta(spec: RunSpec, dataset: Dataset, task: str) -> dict[str, Any]:
    """What export and evaluation need to rebuild and describe the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "task": task,
        "model": spec.model,
        "model_kwargs": dict(spec.model_kwargs),
        "configs": [c.name for c in spec.configs],
        "class_names": list(dataset.class_names),
        **data_meta(dataset),
        "init": spec.init,
    }


def to_channels_last(model: nn.Module) -> nn.Module:
    """Keep the model's 4-D weights in NHWC, as oneDNN's fastest CPU convolutions want them."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return model


def step_flops(model: nn.Module, configs: tuple[ChannelConfig, ...], image_size: int,
               device: torch.device = torch.device("cpu")) -> dict[str, dict[str, float]]:
    """Per image and configuration: FLOPs of a training step (forward and backward) and of a forward.

    Measured with torch's FLOP counter on a copy of the model in training mode, as ``fit`` runs it
    (batch of 2, halved), so the figures are what training executes, not the exported graph.
    """
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(model).to(device).train()
    out: dict[str, dict[str, float]] = {}
    for config in configs:
        x = torch.zeros(2, config.num_channels, image_size, image_size, device=device)
        with FlopCounterMode(display=False) as fwd:
            logits = probe(x, config)
        with FlopCounterMode(display=False) as bwd:
            logits.float().sum().backward()
        forward = fwd.get_total_flops() / 2
        out[config.name] = {"forward": forward, "train": forward + bwd.get_total_flops() / 2}
    return out


def check_input_size(specs: list[RunSpec], image_size: int) -> None:
    """Raise ``ValueError`` naming the model unless every run of ``specs`` takes ``image_size`` px
    inputs (each pooling stage halves the map); before any data work, so no run fails after
    training. A torchvision ``--backbone`` is probed by ``check_backbone`` instead."""
    from .models import create_model

    for spec in specs:
        if spec.model == "backbone":
            continue
        model = create_model(spec.model, num_classes=2, **spec.model_kwargs).eval()
        config = spec.configs[0]
        try:
            with torch.no_grad():
                model(torch.zeros(1, config.num_channels, image_size, image_size), config)
        except RuntimeError as exc:
            raise ValueError(f"--image-size {image_size} is too small for {spec.model} "
                             f"({str(exc).splitlines()[0]}); use a larger one") from None


class StepModule(nn.Module):
    """One optimizer step's forward passes as one module call.

    A strategy forwards the model once per configuration group; DistributedDataParallel
    expects one forward per backward, so it wraps this module, not the model.
    """

    def __init__(self, model: nn.Module, strategy: TrainingStrategy) -> None:
        super().__init__()
        self.model = model
        self.strategy = strategy

    def forward(self, groups: list, label_smoothing: float, loss_fn: LossFn | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        result = self.strategy.loss(self.model, groups, label_smoothing, loss_fn)
        return result.loss, result.logits


def _wrap_for_ranks(model: nn.Module, spec: RunSpec, strategy: TrainingStrategy, ctx: DistContext) -> nn.Module:
    step = StepModule(model, strategy)
    if not ctx.distributed:
        return step
    from torch.nn.parallel import DistributedDataParallel

    # A step that skips some configurations leaves their per-configuration norms without gradients.
    per_config = any(isinstance(m, PerConfig) for m in model.modules())
    unused = strategy.precise_bn or (per_config and len(spec.configs) < len(ALL_CONFIGS))
    return DistributedDataParallel(
        step, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
        find_unused_parameters=unused,
        # Running statistics are already the global batch's on every rank (GlobalBatchNorm2d).
        **_no_buffer_sync())


#: Graphs one compiled step may hold: each drawn combination of configurations and group sizes is one.
RECOMPILE_LIMIT = 64


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The recipe's AdamW, as one fused kernel where torch has it (CPU and CUDA).

    The same update as torch's default implementations, up to rounding, at a fraction of their cost:
    the CPU's per-parameter loop launches about ten operations per parameter tensor (CUDA's foreach
    form a few per group of tensors), and the any-channel model holds five times the naive CNN's
    tensors (a set of batch-norm parameters per configuration).
    """
    fused = True if device.type in ("cpu", "cuda") else None  # None: torch's default elsewhere
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def compile_step(step_module: nn.Module, mode: str) -> nn.Module:
    """``step_module`` under ``torch.compile(mode=mode)``, or as it is for ``none``.

    The whole step compiles (the strategy's groups, the model, the losses), so on a GPU the body's
    small kernels fuse and ``reduce-overhead`` replays them as CUDA graphs. Each set of configurations
    and group sizes a strategy draws (an epoch's last, smaller step; ``sandwich``'s combinations) is a
    graph of its own, with static shapes. The weights stay the model's own, so checkpoints are eager ones.
    """
    if mode == "none":
        return step_module
    import torch._dynamo
    import torch._inductor.config

    # Graphs are cached per code object, shared by every model a process trains: start afresh, and
    # allow a graph per drawn combination (sandwich at 3 per step: 15) rather than falling back to eager at 8.
    torch._dynamo.reset()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    # Dropout's masks from torch's own generator, as eager draws them: the same training, seeded and
    # resumable across --compile modes, rather than inductor's own random stream.
    torch._inductor.config.fallback_random = True
    return torch.compile(step_module, mode=None if mode == "default" else mode, dynamic=False)


def _no_buffer_sync() -> dict[str, bool]:
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    name = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else "broadcast_buffers")  # renamed in recent torch
    return {name: False}


@dataclass
class EpochTotals:
    """What one rank trained in an epoch, summed over its steps (reduced over ranks by ``fit``)."""

    #: Sum over steps of the global batch's mean loss times its views, this rank's share of it.
    loss_sum: float
    correct: int
    seen: int
    views: dict[str, int]


def train_one_epoch(step_module: nn.Module, strategy: TrainingStrategy, split: SplitTensors, cfg: TrainConfig,
                    generator: torch.Generator, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, ctx: DistContext, mix: BatchMix,
                    loss_fn: LossFn | None = None, advance: Callable[[], None] = lambda: None) -> EpochTotals:
    """One pass of ``strategy``'s steps over ``split``: forward, backward, optimizer and schedule steps."""
    device = ctx.device
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    # Sums stay on the device: reading them every step would stall a GPU.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    views: dict[str, int] = {}
    for groups in strategy.steps(split, cfg.batch_size, generator, ctx.shard):
        for g in groups:
            g.inputs = g.inputs.to(device, non_blocking=True)
            g.labels = g.labels.to(device, non_blocking=True)
            views[g.config.name] = views.get(g.config.name, 0) + len(g.labels)
        groups = mix(groups)  # on the device; draws from the global generator, as dropout does
        for g in groups:
            g.inputs = g.inputs.contiguous(memory_format=memory_format)
        with autocast:
            loss, logits = step_module(groups, cfg.label_smoothing, loss_fn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        # Each rank's loss is scaled so that the mean over ranks is the global batch's mean
        # (Shard.weight): its share of the sum is that mean's world-th part of the step's views.
        loss_sum += loss.detach().double() * (sum(g.global_views for g in groups) / ctx.world)
        for lg, g in zip(logits, groups):
            correct += (lg.argmax(1) == g.labels).sum()
        seen += sum(len(g.labels) for g in groups)
        advance()
    return EpochTotals(float(loss_sum), int(correct), seen, views)


def _resume(state_path: Path, task: str, cfg: TrainConfig, meta: dict[str, Any], dataset: Dataset,
            model: nn.Module, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """Load ``state_path`` into the model, optimizer and schedule, after checking it is this run's."""
    state = load_checkpoint(state_path, task)
    check_resumable(state, state_path, cfg, meta, dataset)
    model.load_state_dict(state["state_dict"])
    # load_state_dict takes each group's settings from the file, implementation flags included: a
    # state saved before AdamW ran fused would turn it off for the rest of the run. Set before loading,
    # so the step counters go where the fused kernel wants them.
    for group in state["optimizer"]["param_groups"]:
        group.update({k: optimizer.defaults[k] for k in ("fused", "foreach") if k in optimizer.defaults})
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state


def fit(model: nn.Module, spec: RunSpec, dataset: Dataset, run_dir: Path, cfg: TrainConfig, task: str,
        resume: bool = False, loss_fn: LossFn | None = None,
        log: Callable[[str], None] = print, ctx: DistContext | None = None) -> dict[str, Any]:
    """Train ``model`` and keep ``best.pt`` (best mean validation accuracy) and ``last.pt``.

    What one step trains comes from the run's strategy (``spec.build_strategy()``); this loop
    only runs it. Each epoch draws all its randomness from a generator seeded by (seed, epoch),
    and a checkpoint is written atomically after every epoch; so ``resume`` after a crash or
    Ctrl-C restarts the interrupted epoch and ends exactly where an uninterrupted run would.
    ``loss_fn(logits, labels, inputs, config)`` replaces cross-entropy (distillation uses it).
    The summary counts the training compute: views (image x configuration) and FLOPs.

    ``ctx`` (``train.distributed.setup()``) runs this as one rank of a data-parallel job: each
    rank trains its share of every global batch of ``cfg.batch_size``, rank 0 alone logs and
    writes, and the others wait for it. A restart by ``torchrun --max-restarts`` resumes.
    """
    ctx = ctx or DistContext(device=resolve_device(cfg.device))
    device = ctx.device
    say = log if ctx.is_main else (lambda _: None)
    check_compile_world(cfg.compile, ctx.world)
    resume = resume or restarted()
    run_dir.mkdir(parents=True, exist_ok=True)
    strategy = spec.build_strategy()
    mix = BatchMix(cfg.mix, cfg.mix_alpha, dataset.num_classes, distill=getattr(strategy, "distill", False))
    meta = {**checkpoint_meta(spec, dataset, task), "strategy": strategy.describe(),
            "world_size": ctx.world, "global_batch_size": cfg.batch_size}
    train_split = SplitTensors(dataset.splits["train"], device)
    val_split = SplitTensors(dataset.splits["val"], device)
    model.to(device)
    flops = step_flops(model, spec.configs, dataset.image_size, device)
    if cfg.channels_last:
        to_channels_last(model)
    if ctx.distributed:
        check_same_data_on_every_rank(ctx, dataset.fingerprint)
        convert_batchnorms(model)
    optimizer = make_optimizer(model, cfg, device)
    steps = strategy.steps_per_epoch(len(train_split), cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * steps,
                                                    pct_start=0.15)
    history: list[dict[str, float]] = []
    best_val, start_epoch, elapsed = -1.0, 0, 0.0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume and last_path.exists():
        state = _resume(last_path, task, cfg, meta, dataset, model, optimizer, scheduler)
        history, best_val, start_epoch = state["history"], state["best_val"], state["epoch"]
        elapsed = state["train_seconds"]
        say(f"[{spec.run_name}] resuming after epoch {start_epoch}/{cfg.epochs}")

    # After loading: DDP starts from these weights.
    step_module = compile_step(_wrap_for_ranks(model, spec, strategy, ctx), cfg.compile)
    names = [c.name for c in spec.configs]
    for epoch in range(start_epoch, cfg.epochs):
        seed = _epoch_seed(cfg.seed, epoch)
        # Dropout: each rank its own stream (equal streams would drop the same units on every rank).
        torch.manual_seed(seed + 7_919 * ctx.rank)
        generator = torch.Generator().manual_seed(seed)  # order, augmentation, channel sampling
        model.train()
        t0 = time.perf_counter()
        with progress_bar(f"{spec.run_name} epoch {epoch + 1}/{cfg.epochs}", steps, enabled=ctx.is_main) as advance:
            totals = train_one_epoch(step_module, strategy, train_split, cfg, generator, optimizer, scheduler, ctx,
                                     mix, loss_fn, advance)
        summed = ctx.all_sum([totals.loss_sum, totals.correct, totals.seen, *(totals.views.get(n, 0) for n in names)])
        loss_total, correct_total, seen = summed[0], int(summed[1]), int(summed[2])
        views = {n: int(v) for n, v in zip(names, summed[3:]) if v}
        epoch_flops = sum(n * flops[name]["train"] for name, n in views.items())
        if len(spec.configs) > 1 and strategy.precise_bn:
            recalibrated = recalibrate_config_norms(model, train_split, spec.configs, generator, device=device,
                                                    shard=ctx.shard)
            epoch_flops += sum(n * flops[name]["forward"] for name, n in recalibrated.items())
        epoch_seconds = time.perf_counter() - t0
        elapsed += epoch_seconds
        val = [evaluate(model, val_split, c, device=device, ctx=ctx if ctx.distributed else None)
               for c in spec.configs]
        val_loss = sum(v[0] for v in val) / len(val)
        val_acc = sum(v[1] for v in val) / len(val)
        history.append({"epoch": epoch + 1, "train_loss": loss_total / seen, "train_acc": correct_total / seen,
                        "val_loss": val_loss, "val_acc": val_acc, "seconds": epoch_seconds,
                        "images_per_second": seen / epoch_seconds, "views": seen, "train_flops": epoch_flops})
        say(f"[{spec.run_name}] epoch {epoch + 1}/{cfg.epochs} train loss {loss_total / seen:.3f} "
            f"acc {correct_total / seen:.3f} | val loss {val_loss:.3f} acc {val_acc:.3f} | "
            f"{seen / epoch_seconds:.0f} img/s")
        improved = val_acc > best_val
        best_val = max(best_val, val_acc)
        if ctx.is_main:
            state_dict = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
            if improved:
                save_atomic({**meta, "state_dict": state_dict, "epoch": epoch + 1, "val_acc": val_acc}, best_path)
            save_atomic({**meta, "state_dict": state_dict, "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "epoch": epoch + 1, "history": history,
                         "best_val": best_val, "train_seconds": elapsed, "train_config": asdict(cfg)}, last_path)
        ctx.barrier()  # nobody reads a checkpoint, or starts the next run, before rank 0 has written it
    return {"history": history, "best_val": best_val, "train_seconds": elapsed,
            "train_flops": sum(h.get("train_flops", 0.0) for h in history),
            "views": sum(h.get("views", 0) for h in history), "strategy": strategy.describe(),
            "flops_per_image": flops, "world_size": ctx.world, "global_batch_size": cfg.batch_size}
