"""The training recipe, shared by the loop (``engine``) and the checkpoints that record it."""
from __future__ import annotations

from dataclasses import dataclass

#: ``--backbone``'s name for the anychannel model's own small backbone (train/models/anychannel.py)
#: rather than a torchvision one. Here, not in train/models/backbone.py, so that a request (the CLI's
#: defaults) can name it without importing torch.
COMPACT = "compact"

#: ``--compile``'s choices: ``none`` runs eagerly; the others are ``torch.compile`` modes for the
#: training step (``reduce-overhead`` adds CUDA graphs on a GPU, where a small network's step is
#: launch-bound). None changes what is trained, only how it runs: measured in docs/training-at-scale.md.
COMPILE_MODES: tuple[str, ...] = ("none", "default", "reduce-overhead", "max-autotune")
#: Recipe fields that change how a step runs, not what it computes: a run may resume with another value.
EXECUTION_ONLY: tuple[str, ...] = ("compile",)


@dataclass
class TrainConfig:
    """The recipe: AdamW, one-cycle schedule, label smoothing, crop-and-flip augmentation."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "cpu"
    #: Convolutions in NHWC layout: 1.1-1.8x faster training on this project's 2-core CPU (oneDNN), quick check.
    channels_last: bool = True
    #: bfloat16 autocast on CUDA (ignored on the CPU): tensor cores, half the activation memory.
    amp: bool = True
    #: Batch mixing for every model (``train.data.mixing``): none, mixup or cutmix, ratios from Beta(alpha, alpha).
    mix: str = "none"
    mix_alpha: float = 1.0
    #: ``torch.compile`` mode for the training step, or ``none`` (one of :data:`COMPILE_MODES`).
    compile: str = "none"

    def __post_init__(self) -> None:
        check_compile_mode(self.compile)


def check_compile_mode(mode: str) -> None:
    """Refuse a ``--compile`` mode that is not one of :data:`COMPILE_MODES`, naming the choices."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown --compile mode {mode!r}; choose from {', '.join(COMPILE_MODES)}")


def check_compile_world(mode: str, world: int) -> None:
    """Refuse ``--compile`` under data parallelism, which no test or benchmark has run yet."""
    if mode != "none" and world > 1:
        raise ValueError(f"--compile {mode} with {world} processes is not supported yet (a compiled "
                         "DistributedDataParallel step has not been tested); use --compile none with --nproc")
