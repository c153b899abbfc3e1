"""Data-parallel training set-up: torchrun's environment, the process group, and rank-0 duties.

Everything that depends on the rank lives here, as in torchvision's reference scripts
(``utils.init_distributed_mode``): the loop asks a :class:`DistContext` which device it
runs on, which share of a batch is its own, whether it is the one that writes, and
reduces its sums through it. One process (``world == 1``) needs no process group, so
plain ``python cli.py train`` never touches ``torch.distributed``.

Launch: ``torchrun --nproc-per-node N cli.py train ...`` (or ``cli.py train --nproc N``,
which runs the same thing). gloo on CPU, nccl on CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn

from runtime.errors import AnyChannelError


class DistributedError(AnyChannelError, RuntimeError):
    """Distributed training could not start, or one rank failed (the message names it)."""


@dataclass(frozen=True)
class Shard:
    """This rank's share of every global batch: items ``rank, rank + world, ...``.

    Strided, so shares differ by at most one image, and the global batch (the union over
    ranks) is exactly what one process trains: same seed, same batches, whatever ``world``.
    """

    rank: int = 0
    world: int = 1

    def take(self, items: torch.Tensor) -> torch.Tensor:
        return items if self.world == 1 else items[self.rank :: self.world]

    def weight(self, global_count: int) -> float:
        """Scale of this rank's mean loss so that DDP's average over ranks is the global batch's mean.

        A rank's loss is a mean over its own share; shares of an odd batch differ by one
        image, and the plain average of unequal means would weight those images differently.
        """
        own = len(range(self.rank, global_count, self.world))
        return own * self.world / global_count


@dataclass
class DistContext:
    """Where this process stands: its rank, the world size and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, reports and curves, and prints."""
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Sum plain numbers over ranks (float64, so counts and losses add exactly)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def broadcast_object(self, obj):
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._comm_device())
        return box[0]

    def all_gather_object(self, obj) -> list:
        """``obj`` of every rank, in rank order (picklable objects)."""
        if not self.distributed:
            return [obj]
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    @contextmanager
    def node_first(self) -> Iterator[None]:
        """Each machine's first process (local rank 0) runs the block first (it builds the data
        cache on that machine's disk), then the others (they read it)."""
        if self.local_rank != 0:
            self.barrier()
        yield
        if self.local_rank == 0:
            self.barrier()

    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def check_same_data_on_every_rank(ctx: DistContext, fingerprint: str) -> None:
    """Refuse to train when some rank decoded other data than rank 0 (each machine builds its own cache).

    Every rank raises the same error: one rank failing alone would leave the others waiting
    in their next collective until the timeout.
    """
    prints = ctx.all_gather_object(fingerprint)
    others = [rank for rank, fp in enumerate(prints) if fp != prints[0]]
    if others:
        raise DistributedError(
            f"rank(s) {others} decoded other training data than rank 0 (fingerprints "
            f"{sorted({prints[r] for r in others})} against {prints[0]}); give every machine the same data "
            "folder and the same numpy and pillow versions, so that each builds the same cache")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: str = "cpu") -> DistContext:
    """Read torchrun's environment and join the process group (nccl on CUDA, gloo on CPU).

    ``device``: ``cpu``, ``cuda`` or ``auto`` (CUDA when torch sees one). Each rank on CUDA
    takes GPU ``LOCAL_RANK``. Without torchrun's variables this is one process, no group.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=torch.device(device))
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedError(f"rank {rank}: LOCAL_RANK {local} but only {torch.cuda.device_count()} "
                                   "CUDA device(s); use --nproc-per-node <= the GPU count")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        try:
            # torchrun's agent keeps one store across restarts; a prefix per attempt keeps a
            # restarted group from reading the dead attempt's addresses (and hanging on them).
            store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                    store=dist.PrefixStore(f"anychannel/attempt_{attempt}", store),
                                    device_id=dev if dev.type == "cuda" else None)
        except Exception as exc:  # torch raises several types (timeouts, store errors)
            raise DistributedError(f"rank {rank}: cannot join the process group: {exc}") from exc
    return DistContext(rank, world, local, dev)


def restarted() -> bool:
    """Whether torchrun restarted this worker (``--max-restarts``): training then resumes."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def set_single_thread_count() -> None:
    """Give each rank an equal part of the cores, unless OMP_NUM_THREADS says otherwise.

    torch would otherwise start as many threads per rank as there are cores, and N ranks
    would fight over them (torchrun sets OMP_NUM_THREADS=1 itself only for N > 1).
    """
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))


# --- batch norm over the global batch --------------------------------------------------------


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of each rank's input is the sum of all ranks' output gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the global batch, summed over ranks.

    ``torch.nn.SyncBatchNorm`` does this only on GPUs; this one works with gloo on CPU too,
    through a differentiable all-reduce. With one process, or in
    eval mode, it is the plain ``BatchNorm2d`` (same parameters and buffers, so the same
    state dict): a checkpoint does not know how many processes trained it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        count = torch.full((1,), x.numel() // c, dtype=torch.float32, device=x.device)
        # Sum and sum of squares in one collective; it carries gradients back to every rank.
        stats = _AllReduceSum.apply(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorms(module: nn.Module) -> nn.Module:
    """Turn every ``BatchNorm2d`` inside ``module`` (per-configuration ones included) into a
    :class:`GlobalBatchNorm2d` sharing its parameters and buffers. In place; returns ``module``."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            child.__class__ = GlobalBatchNorm2d  # same fields: parameters and buffers stay shared
        else:
            convert_batchnorms(child)
    return module


# --- the --nproc launcher -------------------------------------------------------------------


def torchrun_command(nproc: int, argv: Sequence[str], max_restarts: int = 0) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``) for ``argv``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", *argv]


def launch(nproc: int, argv: Sequence[str], max_restarts: int = 0) -> int:
    """Run ``argv`` (a script and its arguments) in ``nproc`` processes on this machine, through torchrun."""
    return subprocess.call(torchrun_command(nproc, argv, max_restarts))


def strip_option(argv: Sequence[str], option: str, takes_value: bool = True) -> list[str]:
    """``argv`` without ``option`` (``--opt V`` or ``--opt=V``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = takes_value
            continue
        if takes_value and arg.startswith(option + "="):
            continue
        out.append(arg)
    return out


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model

