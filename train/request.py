"""``train``, as a library call: one request, checked as a whole before any data work, then run.

``python cli.py train`` parses its options into a :class:`TrainRequest` and calls :func:`run`;
an app or a notebook can do the same. :meth:`TrainRequest.check` refuses every bad option
combination with one ``ValueError`` naming it (``--distill`` without ``--share-images``, options of
our model without it in ``--models``, an image too small for a model, a batch too small for the
processes...), before a download, a dataset decode or torchrun's start.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from runtime.contract import renamed_model_note
from runtime.errors import AnyChannelError

# Nothing that imports torch at module level: the CLI reads TrainRequest's defaults when it starts.
from .config import COMPACT, TrainConfig, check_compile_mode, check_compile_world

if TYPE_CHECKING:
    from .distributed import DistContext
    from .task1 import Task1Options

TASKS = ("task1", "task2")
#: Epochs per model when the request gives none.
DEFAULT_EPOCHS = {"task1": 6, "task2": 12}


def split_models(text: str | None, known: tuple[str, ...]) -> list[str]:
    """``--models``, checked: a non-empty comma list of ``known`` names; all of them when not given."""
    models = list(known) if text is None else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in models if m not in known]
    if renamed := [note for m in unknown if (note := renamed_model_note(m))]:
        raise ValueError(f"--models: {'; '.join(renamed)}; choose from {', '.join(known)}")
    if unknown or not models:
        raise ValueError(f"--models: {'unknown model(s) ' + ', '.join(unknown) if unknown else 'no model given'}; "
                         f"choose from {', '.join(known)}")
    return models


@dataclass
class TrainRequest:
    """What ``python cli.py train`` is asked to do; the CLI's defaults are these fields' defaults."""

    task: str
    data: str | None = None
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int = 128
    lr: float = 2e-3
    models: str | None = None
    out: Path | None = None
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    train_eval_samples: int = 2500
    strategy: str = "joint"
    configs_per_step: int = 7
    share_images: bool = False
    distill: bool = False
    allocation: str = "uniform"
    body: str | None = None
    width: float = 1.0
    backbone: str = COMPACT
    init: Path | None = None
    pretrained: bool = False
    amp: bool = True
    mix: str = "none"
    mix_alpha: float = 1.0
    compile: str = "none"
    teacher: str | None = None

    @property
    def out_dir(self) -> Path:
        return self.out or Path("artifacts") / self.task

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=DEFAULT_EPOCHS[self.task] if self.epochs is None else self.epochs,
                           batch_size=self.batch_size, lr=self.lr, seed=self.seed, device=self.device, amp=self.amp,
                           mix=self.mix, mix_alpha=self.mix_alpha, compile=self.compile)

    def check(self, ctx: "DistContext | None" = None, world: int | None = None) -> "CheckedRequest":
        """Every option combination, checked; ``world``: the processes a launcher is about to start."""
        from .data.mixing import check_mix
        from .distributed import DistContext

        ctx = ctx or DistContext()
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        check_mix(self.mix, self.mix_alpha, self.distill)
        check_compile_mode(self.compile)
        check_compile_world(self.compile, world or ctx.world)
        if self.task == "task1":
            models, options = self._task1(ctx, world or ctx.world)
            if self.teacher is not None:
                raise ValueError("--teacher applies to task2 (task1's --distill is in-place distillation from RGB)")
            return CheckedRequest(self, models, options=options)
        if (self.backbone != COMPACT or self.init is not None or self.pretrained or self.body is not None
                or self.width != 1.0 or self.allocation != "uniform"):
            raise ValueError("--backbone, --init, --pretrained, --body, --width and --allocation apply to task1's model")
        from .task2 import DEFAULT_TEACHER, MODELS, check_teacher, run_specs

        models = split_models(self.models, MODELS)
        if self.image_size is not None:
            from .engine import check_input_size

            check_input_size([spec for m in models for spec in run_specs(m)], self.image_size)
        teacher = DEFAULT_TEACHER if self.teacher is None else self.teacher
        teacher = None if teacher == "none" else teacher  # from here on, None means labels only
        check_teacher(teacher)
        return CheckedRequest(self, models, teacher=teacher)

    def _task1(self, ctx: "DistContext", world: int) -> tuple[list[str], "Task1Options"]:
        from .engine import check_input_size
        from .task1 import MODELS, PRIMARY_MODEL, run_specs

        models = split_models(self.models, MODELS)
        ours = {"--backbone": self.backbone != COMPACT, "--body": self.body is not None, "--width": self.width != 1.0,
                "--strategy": self.strategy != "joint", "--configs-per-step": self.configs_per_step != 7,
                "--share-images": self.share_images, "--distill": self.distill,
                "--allocation": self.allocation != "uniform"}
        if PRIMARY_MODEL not in models and any(ours.values()):
            raise ValueError(f"{', '.join(k for k, v in ours.items() if v)}: options of our model; add {PRIMARY_MODEL} "
                             "to --models")
        # Only our model's groups must reach every process; the others train whole batches.
        options = self._task1_options(ctx, world if PRIMARY_MODEL in models else 1)
        if self.image_size is not None:
            check_input_size([spec for m in models for spec in run_specs(m, options)], self.image_size)
        return models, options

    def _task1_options(self, ctx: "DistContext", world: int) -> "Task1Options":
        """Our model's options: the backbone and its initialisation valid and at hand, and every
        configuration's group of a step reaching each of ``world`` processes."""
        from .models.anychannel import BODIES
        from .models.backbone import check_backbone, check_init_file, pretrained_file
        from .task1 import Task1Options

        check_backbone(self.backbone, self.image_size)
        if self.backbone == COMPACT and (self.init is not None or self.pretrained):
            raise ValueError("--init and --pretrained need a torchvision --backbone (resnet18, ...); compact has no "
                             "pretrained weights")
        if self.backbone != COMPACT and self.body is not None:
            raise ValueError("--body shapes the compact backbone only")
        if self.init is not None and self.pretrained:
            raise ValueError("give --init PATH or --pretrained, not both")
        body = self.body or "plain"
        if body not in BODIES:
            raise ValueError(f"unknown body {body!r}; choose from {', '.join(BODIES)}")
        options = Task1Options(self.strategy, self.configs_per_step, self.share_images, self.distill, body,
                               backbone=self.backbone, width=self.width, allocation=self.allocation)
        smallest = min(options.anychannel_spec().build_strategy().group_sizes(self.batch_size))  # before any download
        if smallest < world:  # a process with no image of a group would train on a NaN loss
            raise ValueError(f"--batch-size {self.batch_size} gives one of our model's configurations {smallest} "
                             f"images per step, fewer than the {world} processes; raise --batch-size")
        init = self.init
        if self.pretrained:
            with ctx.node_first():  # one download per machine; the other processes then read the cache
                init = pretrained_file(self.backbone)
        if init is not None:
            check_init_file(self.backbone, init)
        return replace(options, init=None if init is None else str(init))


@dataclass
class CheckedRequest:
    """A request that passed :meth:`TrainRequest.check`: its models, and task 1's options or task 2's teacher."""

    request: TrainRequest
    models: list[str]
    options: "Task1Options | None" = None
    teacher: str | None = None


def run(request: TrainRequest, ctx: "DistContext | None" = None,
        echo: Callable[[str], None] = print) -> dict:
    """Check ``request``, load its data and train its models (as one rank of ``ctx``); returns the results.

    Writes results.json, results.md and curves under ``request.out_dir``; ``echo`` gets the
    dataset line (on the main rank).
    """
    from .data import load_dataset
    from .distributed import DistContext

    ctx = ctx or DistContext()
    checked = request.check(ctx)
    with ctx.node_first():  # one process per machine decodes into the cache; the others then read it
        dataset = load_dataset(request.data, request.image_size, seed=request.seed, show_progress=ctx.is_main)
    if ctx.is_main:
        echo(f"dataset {dataset.name}: {dataset.num_classes} classes, "
             + ", ".join(f"{k} {len(v)}" for k, v in dataset.splits.items())
             + f", {dataset.image_size} px" + (f"; {ctx.world} processes" if ctx.distributed else ""))
    common = dict(resume=request.resume, train_eval_samples=request.train_eval_samples, ctx=ctx)
    if request.task == "task1":
        from .task1 import run_task1

        return run_task1(dataset, checked.models, request.out_dir, request.train_config(), options=checked.options,
                         **common)
    from .task2 import run_task2

    return run_task2(dataset, checked.models, request.out_dir, request.train_config(), teacher=checked.teacher,
                     **common)


class RankError(AnyChannelError):
    """One process under torchrun failed; the message starts with its rank."""


def launch(request: TrainRequest, nproc: int, max_restarts: int, command: Sequence[str]) -> int:
    """Run ``command`` (this program, then its arguments) once per process, ``nproc`` processes under
    torchrun, restarted up to ``max_restarts`` times after a failure; returns torchrun's exit code.

    ``request`` is checked for ``nproc`` processes first: a bad option is one ``ValueError`` here, not
    one per rank and torchrun's traceback. ``--nproc`` and ``--max-restarts`` are dropped from
    ``command``: each process then runs as one rank (:func:`run_process`).
    """
    from . import distributed

    request.check(world=nproc)
    argv = distributed.strip_option(distributed.strip_option(command[1:], "--nproc"), "--max-restarts")
    return distributed.launch(nproc, [command[0], *argv], max_restarts)


def run_process(request: TrainRequest, echo: Callable[[str], None] = print) -> bool:
    """:func:`run` as this process: alone, or as one rank when torchrun started it (the process group is
    joined and left here). Returns whether this is the main process, the one that reports.

    Under torchrun every failure is re-raised as :class:`RankError`, whose message says which process
    failed; alone, errors pass unchanged.
    """
    from . import distributed

    ctx = distributed.DistContext()
    try:
        ctx = distributed.setup(request.device)
        if ctx.distributed:
            distributed.set_single_thread_count()
        run(request, ctx, echo=echo)
    except (AnyChannelError, ValueError, RuntimeError) as exc:
        if not ctx.distributed:
            raise
        message = str(exc)
        raise RankError(message if message.startswith("rank ") else f"rank {ctx.rank}: {message}") from exc
    finally:
        distributed.teardown()
    return ctx.is_main


def reports_text(out_dir: Path) -> str:
    """What ``train`` prints when it is done: the results table and where the reports are."""
    return (f"\n{(out_dir / 'results.md').read_text()}\n"
            f"reports: {out_dir / 'results.json'}, {out_dir / 'results.md'}, {out_dir}/curves-*.png")
