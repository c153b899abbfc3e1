"""Task 1 on real photos: anychannel against seven per-configuration CNNs, the course design and ablations.

    python benchmarks/task1_real.py [--epochs 8] [--image-size 32] [--seeds 0,1] [--rows all]
                                    [--train-per-class N] [--lr LR] [--mix mixup|cutmix]
    python benchmarks/task1_real.py --budgets 8,16,32,64 [--train-per-class 50] [--seeds 0,1]

--budgets trains anychannel and the naive set at each epoch budget in turn (each budget a full run of
the one-cycle schedule, kept and resumable as above) and reports the lead against epochs, up to
the budget where the naive set has converged: the first whose next budget lifts the naive set's
mean validation accuracy by less than CONVERGED_GAIN.

Every row trains on ../shared/data/tiny-imagenet-50 with the same epochs, recipe and
augmentation, and reports test accuracy per configuration beside its training compute
(FLOPs of every forward and backward pass, from torch's counter, and wall seconds).
--train-per-class (the first N training images of each class), --lr (every row's peak
learning rate) and --mix (every row mixes its images) check that a result holds with less data
or another recipe. Each row is its
own run folder under --out/<epochs>ep-<size>px[-<N>pc][-lr<LR>][-<mix>]/, resumable, so an interrupted
benchmark continues where it stopped (--resume). `naive` and `anychannel` run once per seed; the other rows once.

Every run, and --report-only without training, rewrites the whole task-1 part of BENCHMARKS.md
from the finished rows of every budget (the copies kept in benchmarks/results/task1-real/, and
this run's folders): the headline and ablation at 8 epochs and 32 px, one table of the lead under
the other settings, one of the lead against epochs, one of anychannel's variants at other settings. Each
row names the seeds and the machine its kept rows were measured on.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (add_row_options, add_variation_options, budget_name,  # noqa: E402
                               drop_sections, is_main_budget, keep_results_text, machine, mix_name,
                               parse_seeds_and_rows, real_photo_parser, spread, train_in_processes,
                               train_subset, write_section)
from runtime.channels import CONFIG_NAMES, ChannelConfig, configs_with  # noqa: E402
from train.checkpoint import saved_recipe  # noqa: E402
from train.engine import TrainConfig  # noqa: E402
from train.data.mixing import MIX_TRANSFORMS, check_mix  # noqa: E402
from train.task1 import Task1Options  # noqa: E402

#: The one-channel configurations: R, G, B.
PLANES = tuple(c.name for c in configs_with(1))


def plane_control_key(plane: str) -> str:
    """The row of our network trained on ``plane`` alone, at anychannel's FLOPs."""
    return f"{plane.lower()}-only-same-flops"


PUBLISHED = {
    "naive": dict(zip(CONFIG_NAMES, (.400, .347, .367, .420, .382, .351, .353))),
    "course": dict(zip(CONFIG_NAMES, (.453, .398, .416, .420, .369, .371, .376))),
}


@dataclass(frozen=True)
class Row:
    """One benchmark row: a model, and for anychannel the training options it isolates."""

    key: str
    label: str
    model: str = "anychannel"
    options: Task1Options = field(default_factory=Task1Options)
    every_seed: bool = False
    #: Epochs as a multiple of --epochs: the RGB-only control at the same FLOPs as anychannel needs 7x.
    epoch_factor: int = 1
    #: Views per step as a multiple of the recipe's batch: 7 gives anychannel's groups a naive CNN's 128
    #: images, so each epoch has a naive CNN's number of optimizer steps.
    batch_factor: int = 1


def sandwich_rule(per_step: int) -> str:
    """How a sandwich row's label begins: the rule at ``per_step`` configurations; then what the row changes."""
    others = {3: "one other", 4: "two others", 5: "three others"}[per_step]
    return f"variant: sandwich (RGB, one 1-channel, {others} per step)"


SANDWICH = sandwich_rule(3)

#: In table order, from the previous design up to anychannel, then variants and controls. The
#: rows run for every seed (the headline) train first, so a stopped benchmark has them.
ROWS: tuple[Row, ...] = (
    Row("naive", "naive: one CNN per configuration (7 models)", "naive", every_seed=True),
    Row("previous", "previous design: residual body, one sampled configuration per batch",
        options=Task1Options(strategy="sampled", body="residual")),
    Row("plain-sampled", "+ the naive CNN's stages as body", options=Task1Options(strategy="sampled")),
    Row("joint-shared", "+ all seven configurations every step, on the same images",
        options=Task1Options(share_images=True)),
    Row("anychannel", "+ each configuration its own images: anychannel, the default", every_seed=True),
    Row("joint-distill", "variant: joint on the same images + in-place distillation from RGB",
        options=Task1Options(share_images=True, distill=True), every_seed=True),
    Row("sandwich", f"{SANDWICH}, same images, distilled",
        options=Task1Options(configs_per_step=3, share_images=True, distill=True)),
    Row("sandwich-own", f"{SANDWICH}, each its own images",
        options=Task1Options(configs_per_step=3), every_seed=True),
    # Fewer passes over each image, and the compute they save spent on width: capacity where the
    # configurations compete, at about the naive set's FLOPs (64 epochs on 50 images per class: 1.00x).
    Row("sandwich-own-width-1.33", f"{SANDWICH}, each its own images, at 1.33× width (the compute it saves "
        "spent on capacity)",
        options=Task1Options(configs_per_step=3, width=1.33), every_seed=True),
    # The wide sandwich on shared images, so the one- and two-channel groups also learn from RGB's
    # prediction of the same pixels (in-place distillation): the same FLOPs as the row above.
    Row("sandwich-width-1.33", f"{SANDWICH}, same images, distilled from RGB, at 1.33× width",
        options=Task1Options(configs_per_step=3, width=1.33, share_images=True, distill=True), every_seed=True),
    # Its control: shared images without the distillation target, to split the distilled row's gain.
    Row("sandwich-shared-width-1.33", f"{SANDWICH}, same images, at 1.33× width (not distilled)",
        options=Task1Options(configs_per_step=3, width=1.33, share_images=True), every_seed=True),
    # The other point of the same trade (views per step against width, at the naive set's FLOPs): four
    # configurations per step at 1.18x width, so each configuration trains more often on a narrower body.
    Row("sandwich-4-width-1.18", f"{sandwich_rule(4)}, same images, distilled from RGB, at 1.18× width",
        options=Task1Options(configs_per_step=4, width=1.18, share_images=True, distill=True), every_seed=True),
    # The two capacity levers together: the wide sandwich, each configuration its own last convolution
    # (more parameters than the naive set's 2.81M, the same FLOPs).
    Row("sandwich-own-width-1.33-config-layers-1", f"{SANDWICH}, each its own images, at 1.33× width, the "
        "body's last convolution kept per configuration (3.84M parameters)",
        options=Task1Options(configs_per_step=3, width=1.33, config_layers=1), every_seed=True),
    # Capacity where the configurations compete, at the same FLOPs: each configuration its own last
    # convolution (128 -> 256 channels, the body's largest), 2.18M parameters against the naive set's 2.81M.
    Row("anychannel-config-layers-1", "variant: anychannel, the body's last convolution kept per configuration "
        "(2.18M parameters, the same FLOPs)", options=Task1Options(config_layers=1), every_seed=True),
    # The update count: anychannel takes 7x a naive CNN's optimizer steps per epoch (groups of 18 images
    # against batches of 128). With groups of 128 (batch 896) it takes the same steps, of the same
    # size per configuration, at the same learning rate; views and FLOPs are unchanged.
    Row("anychannel-naive-updates", "variant: anychannel with each naive CNN's updates (groups of 128 images, "
        "batch 896: a naive CNN's steps per epoch)", batch_factor=7, every_seed=True),
    Row("anychannel-width-0.7",
        "variant: anychannel at 0.7× width (under half the naive set's FLOPs, all seven per step)",
        options=Task1Options(width=0.7), every_seed=True),
    # The share/RGB trade: the same compute, more of each step's views for fewer channels.
    Row("anychannel-inverse-channels", "variant: anychannel, a step's views in proportion to 1/channels "
        "(RGB 9, two channels 13, one channel 26 each)",
        options=Task1Options(allocation="inverse-channels"), every_seed=True),
    Row("anychannel-inverse-sqrt-channels", "variant: anychannel, a step's views in proportion to 1/√channels "
        "(RGB 13, two channels 15–16, one channel 22 each)",
        options=Task1Options(allocation="inverse-sqrt-channels"), every_seed=True),
    Row("rgb-only", "control: our network trained on RGB alone", options=Task1Options(configs=(ChannelConfig("RGB"),))),
    Row("rgb-only-same-flops", "control: our network on RGB alone, 7× the epochs (anychannel's FLOPs)",
        options=Task1Options(configs=(ChannelConfig("RGB"),)), epoch_factor=7, every_seed=True),
    # What one plane alone allows: the ceiling for each one-channel share of RGB.
    *(Row(plane_control_key(plane), f"control: our network on {plane} alone, 7× the epochs (anychannel's FLOPs)",
          options=Task1Options(configs=(ChannelConfig(plane),)), epoch_factor=7, every_seed=True)
      for plane in PLANES),
    # Capacity probe: both sides at half width (about a quarter of the FLOPs), where one shared
    # network has less room for seven configurations than seven networks have for one each.
    Row("naive-half-width", "capacity probe: naive CNNs at half width (7 models)", "naive",
        options=Task1Options(naive_width=0.5), every_seed=True),
    Row("anychannel-half-width", "capacity probe: anychannel at half width", options=Task1Options(width=0.5),
        every_seed=True),
    Row("course", "course design (published recipe: one sampled configuration per batch)", "course"),
)
ROW_BY_KEY = {r.key: r for r in ROWS}


#: Each finished row's results.json is copied here (small, no weights) and committed, so the
#: report can be rebuilt on any clone (--report-only) without retraining; one folder per budget.
RESULTS = Path(__file__).resolve().parent / "results" / "task1-real"


def results_dir(args) -> Path:
    return RESULTS / budget_name(args)


#: (epochs, image size) of the headline; other budgets are rows of the tables after it.
MAIN_BUDGET = (8, 32)


def run_dir(args, row: Row, seed: int) -> Path:
    """A row's run folder for one seed, under its budget (resuming never mixes two budgets)."""
    return args.out / budget_name(args) / f"{row.key}-seed{seed}"


def kept_results(args, row: Row, seed: int) -> Path:
    return results_dir(args) / f"{row.key}-seed{seed}.json"


def batch_size(row: Row) -> int:
    """The views per step ``row`` trains with: the recipe's batch times its ``batch_factor``."""
    return TrainConfig().batch_size * row.batch_factor


def learning_rate(args: argparse.Namespace) -> float:
    """Every row's peak learning rate: ``--lr``, or the training default."""
    return TrainConfig().lr if getattr(args, "lr", None) is None else args.lr


def recipe(args: argparse.Namespace) -> dict[str, str | float]:
    """The recipe options every row trains with (``TrainConfig`` fields): ``--lr`` and ``--mix``."""
    return {"lr": learning_rate(args), "mix": getattr(args, "mix", None) or "none",
            "mix_alpha": getattr(args, "mix_alpha", 1.0)}


def mixing(args: argparse.Namespace) -> str:
    """``--mix`` in words: "CutMix (α 1)"."""
    return f"{MIX_TRANSFORMS[args.mix]} (α {args.mix_alpha:g})"


def dataset_name(args: argparse.Namespace) -> str:
    """The name results.json records for the rows' data: ``--data``'s folder, ``-<N>pc`` for a subset."""
    per_class = getattr(args, "train_per_class", None)
    return Path(args.data).name + (f"-{per_class}pc" if per_class else "")


def training_data(args: argparse.Namespace) -> str:
    """The folder the rows train on: ``--data``, or its ``--train-per-class`` subset (see :func:`train_subset`)."""
    if getattr(args, "train_per_class", None) is None:
        return args.data
    return str(args.out / "data" / dataset_name(args))


def train_row(row: Row, seed: int, args, dataset=None) -> None:
    from train.data import load_dataset
    from train.task1 import run_task1

    dataset = dataset or load_dataset(training_data(args), args.image_size)  # the decoded cache, in a worker
    cfg = TrainConfig(epochs=args.epochs * row.epoch_factor, batch_size=batch_size(row), seed=seed, **recipe(args))
    t0 = time.perf_counter()
    run_task1(dataset, [row.model], run_dir(args, row, seed), cfg, resume=True, options=row.options,
              log=lambda line: print(line, flush=True))
    print(f"== {row.key} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = json.loads((run_dir(args, row, seed) / "results.json").read_text())
    keep_results_text(json.dumps({**results, "machine": machine()}, indent=1), kept_results(args, row, seed))


def step_time_file(args) -> Path:
    return results_dir(args) / "step-time.json"


def take_turns(runs: dict[str, Callable[[int], float]], steps: int, rounds: int, warmup: int) -> dict[str, float]:
    """Each run's median over ``rounds`` of ``steps`` steps (seconds per view), the runs taking turns."""
    for run in runs.values():
        run(warmup)
    per_round: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            per_round[name].append(run(steps))
    return {name: statistics.median(times) for name, times in per_round.items()}


def step_parts(split, cfg: TrainConfig, anychannel_spec) -> dict[str, Callable[[int], float]]:
    """Where a step's time goes: forward and backward of the two parts the models differ in, on one real
    step's images. ``stem``: anychannel's dynamic stem over the step's groups (as a grouped step runs it,
    :meth:`~train.models.layers.ChannelAdaptiveStem.forward_groups`) and each group's pool, against the
    naive RGB CNN's first conv-BN-ReLU and pool; ``body``: the rest on the pooled maps, anychannel's shared body over the
    grouped batch as a grouped step runs it (each configuration's norms, and the plain body's ReLUs and pools
    after them, on its own slice) or as one configuration (no slices)."""
    import torch

    from train.models import create_model
    from train.models.layers import activate_config, activate_groups
    from train.engine import to_channels_last
    from train.task1 import run_specs

    torch.manual_seed(0)
    ours = to_channels_last(create_model("anychannel", num_classes=50, **anychannel_spec.model_kwargs)).train()
    naive_spec = run_specs("naive")[0]
    naive = to_channels_last(create_model(naive_spec.model, num_classes=50, **naive_spec.model_kwargs)).train()
    generator = torch.Generator().manual_seed(0)
    groups = [g.inputs.contiguous(memory_format=torch.channels_last) for g in
              next(anychannel_spec.build_strategy().steps(split, cfg.batch_size, generator))]
    configs = anychannel_spec.configs
    images = next(naive_spec.build_strategy().steps(split, cfg.batch_size, generator))[0].inputs
    images = images.contiguous(memory_format=torch.channels_last)
    first, rest = naive.features[:2], torch.nn.Sequential(*naive.features[2:], naive.head)
    def stems() -> torch.Tensor:
        return torch.cat([ours.body.pool(y) for y in ours.stem.forward_groups(groups, configs)])

    with torch.no_grad():
        pooled = stems().requires_grad_()
        naive_pooled = first(images).requires_grad_()
    sizes = [(c, len(x)) for x, c in zip(groups, configs)]

    def grouped_body() -> torch.Tensor:
        activate_groups(ours.body, sizes)
        return ours.body.after_pool_groups(pooled)

    def one_config_body() -> torch.Tensor:
        activate_config(ours.body, configs[0])
        return ours.body.after_pool(pooled)

    def timed(forward: Callable[[], torch.Tensor], views: int) -> Callable[[int], float]:
        def run(n: int) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                forward().sum().backward()
            return (time.perf_counter() - t0) / (n * views)
        return run

    return {"anychannel stem": timed(stems, len(pooled)),
            "naive first layer": timed(lambda: first(images), len(images)),
            "anychannel body, grouped": timed(grouped_body, len(pooled)),
            "anychannel body, one configuration": timed(one_config_body, len(pooled)),
            "naive body": timed(lambda: rest(naive_pooled), len(images))}


def measure_step_time(args, processes: int = 5, steps: int = 10, rounds: int = 5, warmup: int = 5) -> dict:
    """:func:`step_time_in_one_process` in ``processes`` fresh interpreters, one after another; each
    figure is its median over the processes, and ``ratios`` lists each process's ratio.

    Fresh interpreters because a process's memory layout moves its speed: on the 2-core AMD EPYC the
    same grouped body's forward took 34 ms in one process and 48 ms in the next, and in one process
    of three every naive model ran 1.4x slower than in the other two while anychannel did not.
    Within a process the models take turns, so its ratio is fair to that process; across processes
    it scattered from 0.80x to 1.10x, which one process cannot show.
    """
    if processes < 1:
        raise ValueError(f"--step-time-processes must be at least 1, got {processes}")
    if processes == 1:
        each = [step_time_in_one_process(args, steps, rounds, warmup)]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        each = []
        for _ in range(processes):
            # A spawned interpreter per measurement: a new address space each time (a fork would inherit this one's).
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                each.append(pool.submit(step_time_in_one_process, args, steps, rounds, warmup).result())
    result = combine_step_times(each)
    keep_results_text(json.dumps(result, indent=1), step_time_file(args))
    return result


def combine_step_times(each: list[dict]) -> dict:
    """One figure from the processes of :func:`step_time_in_one_process`: each time its median over
    them, each ratio the median of the processes' own ratios (a process's models share its layout, so
    its ratio is the fair one), and every process's ratio beside it."""
    def median_of(key: str) -> float:
        return statistics.median(e[key] for e in each)

    def medians(key: str) -> dict[str, float]:
        return {name: statistics.median(e[key][name] for e in each) for name in each[0][key]}

    per_group = [e["anychannel_per_group_seconds_per_view"] / e["anychannel_seconds_per_view"] for e in each]
    return {"anychannel_seconds_per_view": median_of("anychannel_seconds_per_view"),
            "anychannel_per_group_seconds_per_view": median_of("anychannel_per_group_seconds_per_view"),
            "naive_seconds_per_view": medians("naive_seconds_per_view"),
            "ratio": median_of("ratio"), "ratios": [e["ratio"] for e in each],
            "per_group_ratio": statistics.median(per_group), "processes": len(each),
            **{key: each[0][key] for key in ("threads", "steps", "rounds")},
            "parts_seconds_per_view": medians("parts_seconds_per_view"),
            **({"operators_per_step": each[0]["operators_per_step"]} if "operators_per_step" in each[0] else {}),
            "machine": each[0]["machine"]}


def step_time_in_one_process(args, steps: int = 10, rounds: int = 5, warmup: int = 5) -> dict:
    """Seconds per training view (image x configuration) of anychannel and of each naive model, in this
    one process (one thread). The models take turns, ``steps`` training steps each per round, and
    each model's figure is its median round: the cores are shared, so a slow minute then touches
    every model alike instead of whichever one happened to run in it."""
    import torch

    from runtime.channels import ALL_CONFIGS
    from train.data import SplitTensors, load_dataset
    from train.engine import RunSpec, StepModule, TrainConfig, make_optimizer, to_channels_last
    from train.models import create_model

    torch.set_num_threads(1)
    split = SplitTensors(load_dataset(training_data(args), args.image_size).splits["train"])
    cfg = TrainConfig()

    def stepper(spec: RunSpec) -> tuple[Callable[[int], float], Callable[[], int]]:
        """Runs ``n`` real training steps of ``spec``'s model and returns seconds per view; and counts
        the operator calls of one step (:func:`operators_per_step`), the data's preparation left out."""
        torch.manual_seed(0)
        model = to_channels_last(create_model(spec.model, num_classes=50, **spec.model_kwargs)).train()
        strategy = spec.build_strategy()
        step = StepModule(model, strategy)
        optimizer = make_optimizer(model, cfg, torch.device("cpu"))
        batches = strategy.steps(split, cfg.batch_size, torch.Generator().manual_seed(0))

        def next_groups() -> list:
            return [replace(g, inputs=g.inputs.contiguous(memory_format=torch.channels_last)) for g in next(batches)]

        def train_step(groups: list) -> None:
            loss, _ = step(groups, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def run(n: int) -> float:
            views, seconds = 0, 0.0
            for _ in range(n):
                groups = next_groups()
                t0 = time.perf_counter()
                train_step(groups)
                seconds += time.perf_counter() - t0
                views += sum(len(g.labels) for g in groups)
            return seconds / views

        def count() -> int:
            groups = next_groups()
            return operators_per_step(lambda: train_step(groups))
        return run, count

    from train.task1 import run_specs

    steppers = {f"naive-{spec.configs[0].name}": stepper(spec) for spec in run_specs("naive")}
    anychannel_spec = run_specs("anychannel")[0]
    steppers["anychannel"] = stepper(anychannel_spec)
    # The ablation: the shared body once per configuration group instead of once per step.
    steppers["anychannel-per-group"] = stepper(replace(
        anychannel_spec, strategy_options={**anychannel_spec.strategy_options, "grouped": False}))
    models = {name: run for name, (run, _) in steppers.items()}
    median = take_turns(models, steps, rounds, warmup)
    # Counted after the turns: a warm step, without any first call's one-time work.
    operators = {name: steppers[name][1]() for name in ("anychannel", "naive-RGB")}
    anychannel, per_group = median.pop("anychannel"), median.pop("anychannel-per-group")
    naive = {name.removeprefix("naive-"): t for name, t in median.items()}
    parts = take_turns(step_parts(split, cfg, anychannel_spec), steps, rounds, warmup)
    return {"anychannel_seconds_per_view": anychannel, "anychannel_per_group_seconds_per_view": per_group,
            "naive_seconds_per_view": naive,
            "ratio": anychannel / (sum(naive.values()) / len(ALL_CONFIGS)), "threads": 1, "steps": steps,
            "rounds": rounds, "parts_seconds_per_view": parts, "operators_per_step": operators, "machine": machine()}


def operators_per_step(train_step: Callable[[], object]) -> int:
    """The operator calls of ``train_step()`` (one step's forward, backward and update): the top-level
    events of torch's profiler. A proxy for the step's fixed cost per operation (dispatch on a CPU, a
    launch or a few on a GPU; views launch nothing), which does not grow with the images."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_step()
    return sum(1 for event in prof.events() if event.cpu_parent is None)


def load_rows(args, seeds: list[int]) -> dict[str, list[dict]]:
    """Finished rows: key -> one model entry (results.json's) per seed that has finished.

    A run folder under ``out`` wins; otherwise the copy kept in :data:`RESULTS`.
    """
    found: dict[str, list[dict]] = {}
    for row in ROWS:
        for seed in (seeds if row.every_seed else seeds[:1]):
            path = run_dir(args, row, seed) / "results.json"
            if not path.exists():
                path = kept_results(args, row, seed)
            if path.exists():
                results = json.loads(path.read_text())
                trained = saved_recipe(results["train_config"])
                if ((results["dataset"], results["epochs"], results["image_size"], trained["batch_size"],
                     *(trained[k] for k in recipe(args)))
                        != (dataset_name(args), args.epochs * row.epoch_factor, args.image_size,
                            batch_size(row), *recipe(args).values())):
                    continue  # a run folder of another budget
                entry = results["models"][row.model]
                kept = kept_results(args, row, seed)
                # The machine is recorded in the kept copy (train_row), not in the run folder's results.json.
                where = results.get("machine") or (json.loads(kept.read_text()).get("machine") if kept.exists() else None)
                found.setdefault(row.key, []).append({**entry, "seed": seed, "machine": where})
    return found


def acc(entries: list[dict], config: str) -> float:
    return statistics.mean(e["configs"][config]["test_acc"] for e in entries)


def acc_spread(entries: list[dict], config: str) -> str:
    return spread([e["configs"][config]["test_acc"] for e in entries])


def flops_ratio(entries: list[dict], baseline: list[dict]) -> float:
    """Mean training FLOPs of ``entries`` over the ``baseline``'s, each averaged over its seeds."""
    return statistics.mean(e["train_flops"] for e in entries) / statistics.mean(e["train_flops"] for e in baseline)


def seeds_of(entries: list[dict]) -> str:
    return ",".join(str(e["seed"]) for e in entries)


def joint_share_floor(alone_rgb: float, alone_planes: dict[str, float]) -> str:
    """What the share target and the RGB target, met together, ask of each one-channel
    configuration, beside what a network trained on that plane alone at anychannel's FLOPs reaches."""
    floor = 0.9 * (alone_rgb - 0.01)
    short = [f"{c} ({a:.3f})" for c, a in alone_planes.items() if a < floor]
    enough = [f"{c} ({a:.3f})" for c, a in alone_planes.items() if a >= floor]
    parts = []
    if short:
        parts.append(f"more than the network given the whole budget for that plane reaches for {', '.join(short)}")
    if enough:
        parts.append(f"about what that network reaches for {', '.join(enough)}")
    return (f"So ≥ 90% of our RGB with our RGB ≥ the RGB-alone network − 1 point asks each one-channel "
            f"configuration for at least {floor:.3f} (90% of {alone_rgb - 0.01:.3f}): " + "; ".join(parts) + ".")


def same_seeds(entries: list[dict], others: list[dict]) -> list[dict]:
    """``entries`` of the seeds ``others`` ran, so that seed-to-seed noise cancels (all when none match)."""
    return [e for e in entries if e["seed"] in {o["seed"] for o in others}] or entries


def against(entries: list[dict], baseline: list[dict], name: str) -> str:
    """``mean X against <name>'s Y, +Z points, ≥ <name> on n/7 (lo to hi points)``."""
    margins = [100 * (acc(entries, c) - acc(baseline, c)) for c in CONFIG_NAMES]
    return (f"mean {mean_acc(entries):.3f} against {name}'s {mean_acc(baseline):.3f}, "
            f"{100 * (mean_acc(entries) - mean_acc(baseline)):+.1f} points, ≥ {name} on "
            f"{sum(m >= 0 for m in margins)}/7 ({min(margins):+.1f} to {max(margins):+.1f} points)")


def plane_shares(entries: list[dict], planes: tuple[str, ...] = PLANES) -> str:
    """``R 84%, G 84%, B 82%``: each plane's accuracy as a share of the same entries' RGB."""
    rgb = acc(entries, "RGB")
    return ", ".join(f"{c} {acc(entries, c) / rgb:.0%}" for c in planes)


def mean_acc(entries: list[dict]) -> float:
    configs = list(entries[0]["configs"])
    return statistics.mean(acc(entries, c) for c in configs)


def targets(rows: dict[str, list[dict]], args) -> list[str]:
    anychannel, naive = rows["anychannel"], rows["naive"]
    wins = [c for c in CONFIG_NAMES if acc(anychannel, c) >= acc(naive, c)]
    lines = [
        f"- Configurations where anychannel ≥ naive: {len(wins)}/7 (target 7/7)"
        + (f"; not on {', '.join(c for c in CONFIG_NAMES if c not in wins)}" if len(wins) < 7 else "") + ".",
        f"- Mean over the seven, anychannel − naive: {100 * (mean_acc(anychannel) - mean_acc(naive)):+.1f} points "
        "(target ≥ +2).",
        f"- One-channel accuracy as a share of our RGB: {plane_shares(anychannel)} (target ≥ 90%); the naive "
        f"set's dedicated one-channel CNNs keep {plane_shares(naive)} of its RGB CNN's.",
    ]
    alone = {c: rows[plane_control_key(c)] for c in PLANES if plane_control_key(c) in rows}
    if alone and "rgb-only-same-flops" in rows:
        alone_rgb = acc(rows["rgb-only-same-flops"], "RGB")
        control_seeds = ",".join(sorted({str(e["seed"]) for entries in alone.values() for e in entries}))
        lines.append(f"- The ceiling of that share (seeds {control_seeds}): our network trained on one plane alone "
                     "at anychannel's FLOPs keeps "
                     + ", ".join(f"{c} {acc(e, c) / alone_rgb:.0%} ({acc_spread(e, c)})" for c, e in alone.items())
                     + " of the same network trained on RGB alone at anychannel's FLOPs "
                     f"({acc_spread(rows['rgb-only-same-flops'], 'RGB')}); anychannel keeps "
                     + plane_shares(anychannel, tuple(alone)) + " of its own RGB. Against those dedicated networks, "
                     "anychannel reaches " + ", ".join(f"{c} {acc(same_seeds(anychannel, e), c) / acc(e, c):.0%}"
                                                 for c, e in alone.items())
                     + " of their accuracy, and its RGB "
                     f"{acc(same_seeds(anychannel, rows['rgb-only-same-flops']), 'RGB') / alone_rgb:.0%} of the "
                     "RGB one's. "
                     + joint_share_floor(alone_rgb, {c: acc(e, c) for c, e in alone.items()}))
    for key, how in (("sandwich-own", "`--configs-per-step 3`: RGB, one 1-channel and one other configuration "
                                      "per step, each its own images"),
                     ("anychannel-width-0.7", "`--width 0.7`: every layer at 0.7× width, all seven configurations "
                                        "every step")):
        if key in rows:
            half = rows[key]
            lines.append(f"- At under half the compute ({how}; seeds {seeds_of(half)}): "
                         f"{against(half, naive, 'naive')}, {flops_ratio(half, naive):.2f}× the naive set's FLOPs "
                         f"(stretch ≤ 0.5×); RGB {acc(half, 'RGB'):.3f}, one channel "
                         + ", ".join(f"{c} {acc(half, c):.3f}" for c in PLANES) + ".")
    for allocation, rule in (("inverse-channels", "1/channels"), ("inverse-sqrt-channels", "1/√channels")):
        key = f"anychannel-{allocation}"
        if key not in rows:
            continue
        traded = rows[key]
        paired = same_seeds(anychannel, traded)
        rgb_alone = ""
        if "rgb-only-same-flops" in rows:
            control = same_seeds(rows["rgb-only-same-flops"], traded)
            rgb_alone = (f", {100 * (acc(traded, 'RGB') - acc(control, 'RGB')):+.1f} points against our network "
                         "on RGB alone at anychannel's FLOPs (target ≥ −1)")
        lines.append(f"- Trading RGB for one channel at the same compute (`--allocation {allocation}`: a step's "
                     f"views in proportion to {rule}; seeds {seeds_of(traded)}): one channel keeps "
                     f"{plane_shares(traded)} of its RGB (anychannel, same seeds: {plane_shares(paired)}); RGB "
                     f"{acc(traded, 'RGB'):.3f} against anychannel's {acc(paired, 'RGB'):.3f}{rgb_alone}; one channel "
                     + ", ".join(f"{c} {acc(traded, c):.3f} ({acc(paired, c):.3f})" for c in PLANES)
                     + f"; {against(traded, naive, 'naive')}, {flops_ratio(traded, naive):.2f}× its FLOPs.")
    if {"anychannel-half-width", "naive-half-width"} <= rows.keys():
        small, small_naive = rows["anychannel-half-width"], rows["naive-half-width"]
        lines.append(f"- Capacity probe, every layer of both at half width (seeds {seeds_of(small)}; "
                     f"{small[0]['params'] / 1e6:.2f}M parameters against 7 × {small_naive[0]['params'] / 7e6:.2f}M, "
                     f"{flops_ratio(small, small_naive):.2f}× their FLOPs, {flops_ratio(small, naive):.2f}× the "
                     f"full-width naive set's): {against(small, small_naive, 'naive')}; "
                     f"one channel keeps {plane_shares(small)} of its RGB (naive: {plane_shares(small_naive)}).")
    for key, budget in (("rgb-only", "the same epochs"), ("rgb-only-same-flops", "7× the epochs, anychannel's FLOPs")):
        if key in rows:
            entries = rows[key]
            # Paired by seed where the control ran for several seeds, so seed-to-seed noise cancels.
            paired = same_seeds(anychannel, entries)
            anychannel_rgb = acc(paired, "RGB")
            control = acc(entries, "RGB")
            seeds_used = ",".join(str(e["seed"]) for e in entries)
            lines.append(f"- Our RGB against our network trained on RGB alone, {budget} (seeds {seeds_used}): "
                         f"{anychannel_rgb:.3f} vs {acc_spread(entries, 'RGB')}, "
                         f"{100 * (anychannel_rgb - control):+.1f} points (target ≥ −1).")
    if "course" in rows:
        course = rows["course"]
        beats = [c for c in CONFIG_NAMES if acc(anychannel, c) > acc(course, c)]
        lines.append(f"- Configurations where anychannel > the course design: {len(beats)}/7 (target 7/7).")
    ratio = flops_ratio(anychannel, naive)
    seconds = (statistics.mean(e["train_seconds"] for e in anychannel)
               / statistics.mean(e["train_seconds"] for e in naive))
    over = (f", {100 * (ratio - 1):.3f}% above it: the dynamic stem mixes its kernels per image, which the "
            "naive CNNs' fixed first convolution does not" if ratio > 1 else "")
    lines.append(f"- Training compute, anychannel / naive: {ratio:.4f}× in FLOPs (target ≤ 1.0×{over}); "
                 f"{seconds:.2f}× in the rows' wall seconds, which ran at different times beside other work on 2 "
                 "shared cores.")
    if step_time_file(args).exists():
        step = json.loads(step_time_file(args).read_text())
        processes = step.get("processes", 1)
        repeats = "" if processes == 1 else f"; that in {processes} fresh processes, median over them"
        spread_text = ("" if processes == 1 else
                       f", the median of the processes' ratios (each process: "
                       f"{', '.join(f'{r:.2f}×' for r in step['ratios'])})")
        per_group = step.get("per_group_ratio") or (step["anychannel_per_group_seconds_per_view"]
                                                    / step["anychannel_seconds_per_view"]
                                                    if "anychannel_per_group_seconds_per_view" in step else None)
        lines.append(f"- Wall time under equal conditions (`--step-time`: the 8 models take turns in one process, "
                     f"{step['threads']} thread, {step['rounds']} rounds of {step['steps']} training steps each; "
                     f"median round{repeats}): anychannel {1e6 * step['anychannel_seconds_per_view']:.0f} µs "
                     f"per view, the naive models {1e6 * statistics.mean(step['naive_seconds_per_view'].values()):.0f} µs "
                     f"on average: {step['ratio']:.2f}×{spread_text}"
                     + (f"; with the shared body run once per configuration group instead of once per step, "
                        f"{1e6 * step['anychannel_per_group_seconds_per_view']:.0f} µs, "
                        f"{per_group:.2f}× anychannel"
                        if "anychannel_per_group_seconds_per_view" in step else "")
                     + f" ({step['machine']}).")
        if "parts_seconds_per_view" in step:
            part = {name: f"{1e6 * t:.0f}" for name, t in step["parts_seconds_per_view"].items()}
            lines.append(f"- Where the step's time goes (same command, µs per view, forward and backward): "
                         f"anychannel's stem {part['anychannel stem']} against the naive CNN's first layer "
                         f"{part['naive first layer']}; the shared body over the grouped batch "
                         f"{part['anychannel body, grouped']} (as one configuration, without the slices: "
                         f"{part['anychannel body, one configuration']}) against the naive body {part['naive body']}"
                         + (f"; operator calls per step (forward, backward and update: top-level events in "
                            f"torch's profiler, a proxy for the fixed cost per operation): anychannel {step['operators_per_step']['anychannel']}, the naive RGB CNN "
                            f"{step['operators_per_step']['naive-RGB']}" if "operators_per_step" in step else "")
                         + ".")
    return lines


#: The naive set has converged at a budget when doubling it lifts its mean validation accuracy by less than this.
CONVERGED_GAIN = 0.005


def converged_budget(naive_val: dict[int, float]) -> int | None:
    """The first budget whose next one gains less than :data:`CONVERGED_GAIN` (validation), or None."""
    budgets = sorted(naive_val)
    return next((b for b, nxt in zip(budgets, budgets[1:]) if naive_val[nxt] - naive_val[b] < CONVERGED_GAIN), None)


def mean_val(entries: list[dict]) -> float:
    return statistics.mean(statistics.mean(e["configs"][c]["val_acc"] for c in CONFIG_NAMES) for e in entries)


def mean_train(entries: list[dict]) -> float:
    """Mean over the seven and the seeds of the training accuracy (eval mode, clean images)."""
    return statistics.mean(statistics.mean(e["configs"][c]["train_acc"] for c in CONFIG_NAMES) for e in entries)


# --- BENCHMARKS.md: every budget's kept rows, one table per question ---------------------------------
#
# One marker section holds the whole task-1 part, rebuilt from the kept rows of every budget on every
# run (and by --report-only), so a rerun at any budget updates the folded tables in place:
#   the headline at the main budget (anychannel against the seven naive CNNs, the targets, the ablation),
#   the lead under other settings at the main epochs (one row per budget),
#   the lead against epochs (one row per budget of each series of epoch budgets),
#   variants of anychannel at other settings (a variant row or a recipe run at another budget).

#: The marker of the task-1 part of BENCHMARKS.md.
SECTION = "task1-real"
#: Sections that earlier versions wrote per budget (``task1-real-<budget>``, ``task1-real-convergence-...``):
#: removed when the folded part is written.
STALE_SECTIONS = r"task1-real-[\w.-]+"

#: A kept row without its machine: rows were kept before train_row recorded it.
NOT_RECORDED = "not recorded (rows kept before they carried their machine)"

BUDGET_NAME = re.compile(r"(?P<epochs>\d+)ep-(?P<size>\d+)px(?:-(?P<pc>\d+)pc)?(?:-lr(?P<lr>\d[\d.e+-]*?))?"
                         rf"(?:-(?P<mix>{'|'.join(MIX_TRANSFORMS)})(?P<alpha>\d[\d.]*)?)?")


def budget_args(name: str, args: argparse.Namespace) -> argparse.Namespace | None:
    """``args`` set to the budget a results folder is named after (:func:`budget_name`), or None for a
    name that is not a budget's."""
    match = BUDGET_NAME.fullmatch(name)
    if match is None:
        return None
    at = argparse.Namespace(**{
        **vars(args), "epochs": int(match["epochs"]), "image_size": int(match["size"]),
        "train_per_class": int(match["pc"]) if match["pc"] else None,
        "lr": float(match["lr"]) if match["lr"] else None, "mix": match["mix"],
        "mix_alpha": float(match["alpha"]) if match["alpha"] else 1.0})
    return at if budget_name(at) == name else None


def kept_seeds(name: str) -> list[int]:
    """The seeds any row of budget ``name`` has kept results for."""
    return sorted({int(m[1]) for p in (RESULTS / name).glob("*-seed*.json")
                   if (m := re.search(r"-seed(\d+)\.json$", p.name))})


@dataclass
class Budget:
    """One budget's finished rows (results.json model entries, one per seed) and the options naming it."""

    name: str
    args: argparse.Namespace
    rows: dict[str, list[dict]]

    @property
    def is_main(self) -> bool:
        return is_main_budget(self.args, MAIN_BUDGET)

    @property
    def per_class(self) -> int | None:
        return getattr(self.args, "train_per_class", None)

    @property
    def mix(self) -> str:
        return mix_name(self.args)

    def base(self) -> tuple:
        """What a mixing budget shares with the budget it varies: all but the mixing."""
        a = self.args
        return a.epochs, a.image_size, self.per_class, getattr(a, "lr", None)

    def series(self) -> tuple:
        """What the budgets of one series of epoch budgets share: all but the epochs."""
        return self.base()[1:] + (self.mix,)

    def order(self) -> tuple:
        """Table order: the main budget, then other image sizes, less data, other learning rates, mixing."""
        a = self.args
        return (not self.is_main, a.image_size == MAIN_BUDGET[1], self.per_class is None, bool(self.mix),
                getattr(a, "lr", None) is not None, a.image_size, -(self.per_class or 0), learning_rate(a),
                self.mix, a.epochs)


def all_budgets(args: argparse.Namespace) -> list[Budget]:
    """Every budget with kept rows in :data:`RESULTS`, and the invocation's own budget (whose run folders
    may hold rows not kept yet), each with every seed that has finished, in table order."""
    names = sorted(p.name for p in RESULTS.iterdir() if p.is_dir()) if RESULTS.is_dir() else []
    own = budget_name(args)
    budgets = []
    for name in names + ([own] if own not in names else []):
        at = args if name == own else budget_args(name, args)
        if at is None:
            continue  # not a budget's folder
        seeds = sorted(set(kept_seeds(name)) | (set(args.seeds) if name == own else set()))
        rows = load_rows(at, seeds) if seeds else {}
        if rows:
            budgets.append(Budget(name, at, rows))
    return sorted(budgets, key=Budget.order)


def variation_flags(at: argparse.Namespace) -> str:
    """The options that set ``at``'s budget apart from the main one, as typed."""
    flags = [f"--epochs {at.epochs}" if at.epochs != MAIN_BUDGET[0] else "",
             f"--image-size {at.image_size}" if at.image_size != MAIN_BUDGET[1] else "",
             f"--train-per-class {at.train_per_class}" if getattr(at, "train_per_class", None) else "",
             f"--lr {at.lr:g}" if getattr(at, "lr", None) is not None else "",
             f"--mix {at.mix}" if getattr(at, "mix", None) else "",
             f"--mix-alpha {at.mix_alpha:g}" if getattr(at, "mix", None) and at.mix_alpha != 1.0 else ""]
    return " ".join(f for f in flags if f)


def setting_words(at: argparse.Namespace, full: bool = False) -> list[str]:
    """What ``at``'s budget changes from the main one (every part of it with ``full``), in words."""
    per_class, lr = getattr(at, "train_per_class", None), getattr(at, "lr", None)
    parts = [f"{at.epochs} epochs" if full or at.epochs != MAIN_BUDGET[0] else "",
             f"{at.image_size} px" if full or at.image_size != MAIN_BUDGET[1] else "",
             f"{per_class} training images per class" if per_class else ("all training images" if full else ""),
             f"peak lr {lr:g}" if lr is not None else "",
             mixing(at) if getattr(at, "mix", None) else ""]
    return [p for p in parts if p]


def setting_label(budget: Budget) -> str:
    """``64 px``, ``50 training images per class, peak lr 0.004``: what differs from the main budget."""
    return ", ".join(setting_words(budget.args)) or (
        f"the headline ({MAIN_BUDGET[1]} px, all training images, peak lr {learning_rate(budget.args):g})")


def series_label(budget: Budget) -> str:
    """``32 px, 50 training images per class``: what a series of epoch budgets shares."""
    return ", ".join(setting_words(budget.args, full=True)[1:])


def seeds_list(entries: list[dict]) -> list[int]:
    return sorted({e["seed"] for e in entries})


def paired(anychannel: list[dict], naive: list[dict]) -> tuple[list[dict], list[dict]]:
    """Both sides on the seeds both have finished (all of each where they share none)."""
    common = set(seeds_list(anychannel)) & set(seeds_list(naive))
    return (([e for e in anychannel if e["seed"] in common] or anychannel),
            ([e for e in naive if e["seed"] in common] or naive))


def sides(budget: Budget) -> dict[str, list[dict]]:
    """The two sides of the lead at ``budget``, by row key: anychannel and the naive set."""
    return {key: budget.rows[key] for key in ("anychannel", "naive")}


def seeds_cell(entries: list[dict], widest: set[int], others: dict[str, list[dict]] | None = None) -> str:
    """``0,1``; ``0 only`` where other rows of the same table have more seeds; ``anychannel also 1`` where a
    side has seeds the comparison leaves out (it pairs seeds)."""
    seeds = seeds_list(entries)
    text = ",".join(map(str, seeds)) + (" only" if set(seeds) < widest else "")
    for name, side in (others or {}).items():
        extra = sorted(set(seeds_list(side)) - set(seeds))
        if extra:
            text += f"; {name} also {','.join(map(str, extra))}"
    return text


class Machines:
    """Short keys (A, B, ...) for the machines kept rows were measured on, and the legend of a table."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}

    @staticmethod
    def names(entries: list[dict]) -> list[str]:
        return sorted({e.get("machine") or NOT_RECORDED for e in entries})

    def key(self, entries: list[dict]) -> str:
        """The keys of every machine ``entries`` ran on: ``A``, ``A, B``; ``–`` for rows that do not say."""
        return ", ".join("–" if name == NOT_RECORDED else self.keys.setdefault(name, chr(ord("A") + len(self.keys)))
                         for name in self.names(entries))

    def legend(self, cells: list[str]) -> str:
        used = {k for cell in cells for k in cell.split(", ")}
        parts = [f"{k}: {name}" for name, k in self.keys.items() if k in used]
        return "Machines: " + "; ".join(parts + ([f"–: {NOT_RECORDED}"] if "–" in used else [])) + "."


def machine_text(entries: list[dict]) -> str:
    """Every machine ``entries`` ran on, in words."""
    return "; ".join(Machines.names(entries))


def lead_cells(anychannel: list[dict], naive: list[dict]) -> list[str]:
    """naive | anychannel | lead | configurations anychannel ≥ naive | lead range | validation | train acc |
    one channel / RGB naive | anychannel | FLOPs: anychannel against the naive set, means over the seven and
    the entries' seeds."""
    leads = {c: acc(anychannel, c) - acc(naive, c) for c in CONFIG_NAMES}
    low, high = min(leads, key=leads.get), max(leads, key=leads.get)
    behind = [c for c in CONFIG_NAMES if leads[c] < 0]
    return [f"{mean_acc(naive):.3f}", f"{mean_acc(anychannel):.3f}",
            f"{100 * (mean_acc(anychannel) - mean_acc(naive)):+.1f}",
            f"{7 - len(behind)}/7" + (f" (not {', '.join(behind)})" if behind else ""),
            f"{low} {100 * leads[low]:+.1f} to {high} {100 * leads[high]:+.1f}",
            f"{mean_val(naive):.3f} / {mean_val(anychannel):.3f}",
            f"{mean_train(naive):.3f} / {mean_train(anychannel):.3f}",
            plane_shares(naive), plane_shares(anychannel), f"{flops_ratio(anychannel, naive):.4f}×"]


LEAD_COLUMNS = ("seeds | naive, mean of 7 | anychannel, mean of 7 | anychannel − naive (points) "
                "| configurations anychannel ≥ naive | lead, smallest to largest | validation, naive / anychannel "
                "| train acc, naive / anychannel | one channel / RGB, naive | one channel / RGB, anychannel "
                "| FLOPs anychannel / naive | machine")


def table_head(first: str) -> list[str]:
    head = f"| {first} | {LEAD_COLUMNS} |"
    return [head, "|" + "---|" * head.count(" | ") + "---|"]


def compared(budget: Budget) -> bool:
    return {"anychannel", "naive"} <= budget.rows.keys()


#: Rows trained against the naive set along an epoch series, each a lever on the lead at long budgets:
#: they get a row of the lead against epochs at each budget they ran.
LEVERS: tuple[str, ...] = ("anychannel-naive-updates", "sandwich-own", "sandwich-own-width-1.33",
                           "anychannel-inverse-channels", "anychannel-config-layers-1", "sandwich-width-1.33",
                           "sandwich-shared-width-1.33", "sandwich-own-width-1.33-config-layers-1",
                           "sandwich-4-width-1.18", "joint-distill")


def epoch_series(budgets: list[Budget]) -> dict[tuple, list[Budget]]:
    """Budgets that differ only in epochs, where two or more have anychannel and the naive set: the lead against
    epochs. Keyed by what they share, in epoch order. A budget where only the naive set ran belongs too: it
    tells whether the naive set has converged."""
    groups: dict[tuple, list[Budget]] = {}
    for b in budgets:
        if "naive" in b.rows:
            groups.setdefault(b.series(), []).append(b)
    return {k: sorted(g, key=lambda b: b.args.epochs) for k, g in groups.items() if sum(map(compared, g)) > 1}


def best_budget(budgets: list[Budget], key: str) -> Budget:
    """Of ``budgets`` where row ``key`` ran, the one with its highest mean validation accuracy."""
    return max((b for b in budgets if key in b.rows), key=lambda b: mean_val(b.rows[key]))


def best_against_best(group: list[Budget]) -> str:
    """Each side at its own best budget of a series (by validation accuracy, the model selection a user
    makes), anychannel against the naive set on test: ``at anychannel's best budget (16 epochs) ...``."""
    ours, theirs = best_budget(group, "anychannel"), best_budget(group, "naive")
    anychannel, naive = paired(ours.rows["anychannel"], theirs.rows["naive"])
    leads = [100 * (acc(anychannel, c) - acc(naive, c)) for c in CONFIG_NAMES]
    return (f"each side at its best budget by mean validation accuracy (anychannel {ours.args.epochs} epochs, the "
            f"naive set {theirs.args.epochs}, of those run), anychannel − naive is "
            f"{100 * (mean_acc(anychannel) - mean_acc(naive)):+.1f} points on test, ≥ naive on "
            f"{sum(lead >= 0 for lead in leads)}/7 ({min(leads):+.1f} to {max(leads):+.1f}), at "
            f"{flops_ratio(anychannel, naive):.2f}× the naive set's training FLOPs")


def series_command(first: Budget, flags: str, seeds: list[int]) -> str:
    """The benchmark command for a series' setting, with ``flags`` (``--budgets ...`` or ``--epochs ...``)."""
    return (f"`python benchmarks/task1_real.py {flags} --image-size {first.args.image_size} "
            f"--seeds {','.join(map(str, seeds))}"
            + (f" --train-per-class {first.per_class}" if first.per_class else "")
            + (f" --lr {first.args.lr:g}" if getattr(first.args, "lr", None) is not None else "")
            + (f" --mix {first.args.mix} --mix-alpha {first.args.mix_alpha:g}" if first.mix else "")
            + " --workers 2`")


def settings_section(budgets: list[Budget], machines: Machines) -> list[str]:
    """One row per budget at the main epochs (and any budget of no series), anychannel against the naive set."""
    in_series = {id(b) for g in epoch_series(budgets).values() for b in g if b.args.epochs != MAIN_BUDGET[0]}
    chosen = [b for b in budgets if compared(b) and id(b) not in in_series]
    lines = [
        "## Task 1: the lead under other settings",
        "",
        f"Command: `python benchmarks/task1_real.py --epochs {MAIN_BUDGET[0]} --image-size {MAIN_BUDGET[1]} "
        "--seeds SEEDS --rows naive,anychannel --workers 2`, with the row's options added (they replace "
        f"`--epochs {MAIN_BUDGET[0]}` where they give one; its kept rows: "
        "`benchmarks/results/task1-real/<budget>/`).  ",
        "Each row: anychannel and the seven naive CNNs trained at that setting, all else as in the headline; means "
        "over the seven configurations and the seeds given, both sides on the same seeds. N training images per "
        "class (`--train-per-class N`) are the first N of each class in train.txt; validation and test splits are "
        "unchanged. Validation and train accuracy are means over the seven too (train: eval mode on 2,500 "
        "unaugmented training images).",
        "",
    ]
    if not chosen:
        return lines + ["No budget has both anychannel and the naive set finished yet."]
    widest = set().union(*(seeds_list(b.rows["anychannel"]) for b in chosen))
    lines += table_head("setting | options")
    keys = []
    for b in chosen:
        anychannel, naive = paired(b.rows["anychannel"], b.rows["naive"])
        keys.append(machines.key(anychannel + naive))
        flags = variation_flags(b.args)
        lines.append(f"| {setting_label(b)} | {f'`{flags}`' if flags else '–'} | "
                     f"{seeds_cell(anychannel, widest, sides(b))} | "
                     + " | ".join(lead_cells(anychannel, naive)) + f" | {keys[-1]} |")
    return lines + ["", machines.legend(keys)]


def epochs_section(budgets: list[Budget], machines: Machines) -> list[str]:
    """The lead against epochs, one row per budget of each series, with where the naive set converges."""
    series = epoch_series(budgets)
    lines = [
        "## Task 1: the lead against epochs, towards convergence",
        "",
    ]
    if not series:
        return lines + ["No two epoch budgets of one setting have both anychannel and the naive set finished yet."]
    commands, rows, keys, notes = [], [], [], []
    for group in series.values():
        first, both = group[0], [b for b in group if compared(b)]
        anychannel_seeds = sorted(set().union(*(seeds_list(b.rows["anychannel"]) for b in both)))
        label = series_label(first)
        commands.append(f"{label}: " + series_command(first, f"--budgets {','.join(str(b.args.epochs) for b in both)}",
                                                      anychannel_seeds))
        naive_val = {b.args.epochs: mean_val(paired(b.rows["anychannel"], b.rows["naive"])[1] if compared(b)
                                             else b.rows["naive"]) for b in group}
        done = converged_budget(naive_val)
        for b in group:
            mark = " (naive converged)" if b.args.epochs == done else ""
            naive_only = b.rows["naive"]
            images = naive_only[0]["train_views"] // (len(CONFIG_NAMES) * b.args.epochs)
            if not compared(b):  # the naive set alone, for its convergence
                commands.append(f"{label}, the naive set alone at {b.args.epochs} epochs: "
                                + series_command(first, f"--epochs {b.args.epochs} --rows naive",
                                                 seeds_list(naive_only)))
                keys.append(machines.key(naive_only))
                rows.append(f"| {label} ({images:,} images), the naive set alone | {b.args.epochs}{mark} | "
                            f"{seeds_cell(naive_only, set(anychannel_seeds))} | {mean_acc(naive_only):.3f} | not run "
                            f"| – | – | – | {mean_val(naive_only):.3f} / – | {mean_train(naive_only):.3f} / – "
                            f"| {plane_shares(naive_only)} | – | – | {keys[-1]} |")
                continue
            anychannel, naive = paired(b.rows["anychannel"], b.rows["naive"])
            keys.append(machines.key(anychannel + naive))
            rows.append(f"| {label} ({images:,} images) | {b.args.epochs}{mark} | "
                        f"{seeds_cell(anychannel, set(anychannel_seeds), sides(b))} | "
                        + " | ".join(lead_cells(anychannel, naive)) + f" | {keys[-1]} |")
            for key in (k for k in LEVERS if k in b.rows):
                lever, lever_naive = paired(b.rows[key], b.rows["naive"])
                commands.append(f"{label}, lever `{key}` at {b.args.epochs} epochs: "
                                + series_command(first, f"--epochs {b.args.epochs} --rows {key}", seeds_list(lever)))
                keys.append(machines.key(lever + lever_naive))
                rows.append(f"| {label} ({images:,} images), lever: "
                            f"{ROW_BY_KEY[key].label.removeprefix('variant: ')} | {b.args.epochs}{mark} | "
                            f"{seeds_cell(lever, set(anychannel_seeds), {'naive': b.rows['naive']})} | "
                            + " | ".join(lead_cells(lever, lever_naive)) + f" | {keys[-1]} |")
        last = max(naive_val)
        if done is None:
            notes.append(f"- {label}: the naive set has not converged by {last} epochs "
                         f"(each doubling still lifts its mean validation accuracy by {100 * CONVERGED_GAIN:.1f} "
                         f"points or more, or a budget is missing); {best_against_best(group)}.")
        else:
            at = next(b for b in group if b.args.epochs == done)
            leads = [f"{name} − naive is {100 * (mean_acc(ours) - mean_acc(naive)):+.1f} points"
                     for name, (ours, naive) in
                     ((k, paired(at.rows[k], at.rows["naive"])) for k in ("anychannel", *LEVERS) if k in at.rows)]
            notes.append(f"- {label}: the naive set converges at {done} epochs (the next "
                         f"budget lifts its mean validation accuracy by less than {100 * CONVERGED_GAIN:.1f} points)"
                         + (f"; there {', '.join(leads)}" if leads else "") + f"; {best_against_best(group)}.")
    lines += ["Commands (each budget its own full one-cycle run, kept and resumable; both sides get the same data, "
              "epochs and recipe, all else as in the headline):", "",
              *(f"- {c}" for c in commands), "", *table_head("setting | epochs"), *rows, "",
              machines.legend(keys), "", *notes]
    return lines


def variants_section(budgets: list[Budget], machines: Machines) -> list[str]:
    """anychannel's variants (rows other than naive and anychannel, and recipes only anychannel ran) at settings
    other than the headline's, beside anychannel at the same setting and seeds, with the same variant's headline row."""
    by_base = {b.base(): b for b in budgets if not b.mix}
    found = []  # (variant key, mixing, budget)
    for b in budgets:
        for key in b.rows:
            if key == "naive" or (key == "anychannel" and not b.mix):
                continue
            found.append((key, b.mix, b))
    moved = {(key, mix) for key, mix, b in found if not b.is_main or mix}
    chosen = sorted(((k, m, b) for k, m, b in found if (k, m) in moved),
                    key=lambda t: (ROWS.index(ROW_BY_KEY[t[0]]), t[1], t[2].order()))
    lines = [
        "## Task 1: variants of anychannel at other settings",
        "",
        f"Command: `python benchmarks/task1_real.py --epochs {MAIN_BUDGET[0]} --image-size {MAIN_BUDGET[1]} "
        "--seeds SEEDS --workers 2` with the row's options. A row of anychannel's ablation that also ran at "
        "another setting, or a recipe that only anychannel ran (the naive set was not rerun with it), beside "
        "anychannel at the same setting and seeds; means over the seven configurations.",
        "",
    ]
    if not chosen:
        return lines + ["No variant has run at another setting yet."]
    head = ("| setting | variant | options | seeds | test, mean of 7 | RGB | R, G, B | validation, mean of 7 "
            "| train acc, mean of 7 | anychannel at that setting: test / validation | variant − anychannel (points) "
            "| variant − naive (points) | FLOPs vs naive | machine |")
    lines += [head, "|" + "---|" * (head.count(" | ") + 1)]
    widest = set().union(*(seeds_list(b.rows[k]) for k, _, b in chosen))
    keys = []
    for key, mix, b in chosen:
        entries = b.rows[key]
        base = by_base.get(b.base())
        anychannel = same_seeds(base.rows["anychannel"], entries) if base and "anychannel" in base.rows else None
        naive = (same_seeds(base.rows["naive"], entries) if base and "naive" in base.rows and not mix else None)
        label = ROW_BY_KEY[key].label if key != "anychannel" else f"anychannel, {mixing(b.args)}"
        flags = " ".join(f for f in (f"--rows {key}", variation_flags(b.args)) if f)
        keys.append(machines.key(entries))
        setting = ", ".join(w for w in setting_words(replace_mix(b).args, full=True) if w != "all training images")
        lines.append(
            f"| {setting} | {label} | `{flags}` | {seeds_cell(entries, widest)} | {mean_acc(entries):.3f} | "
            f"{acc(entries, 'RGB'):.3f} | " + " ".join(f"{acc(entries, c):.3f}" for c in PLANES)
            + f" | {mean_val(entries):.3f} | {mean_train(entries):.3f} | "
            + (f"{mean_acc(anychannel):.3f} / {mean_val(anychannel):.3f} | "
               f"{100 * (mean_acc(entries) - mean_acc(anychannel)):+.1f}" if anychannel else "not run | –")
            + (f" | {100 * (mean_acc(entries) - mean_acc(naive)):+.1f}" if naive else " | –")
            + (f" | {flops_ratio(entries, base.rows['naive']):.2f}×" if base and "naive" in base.rows else " | –")
            + f" | {keys[-1]} |")
    return lines + ["", machines.legend(keys)]


def replace_mix(budget: Budget) -> Budget:
    return Budget(budget.name, argparse.Namespace(**{**vars(budget.args), "mix": None, "mix_alpha": 1.0}),
                  budget.rows)


def headline_section(budget: Budget | None, machines: Machines) -> list[str]:
    """The main budget: anychannel against the seven naive CNNs per configuration, its compute, the targets
    and the ablation."""
    title = ("## Task 1 on real photos: one model against seven naive CNNs "
             f"({MAIN_BUDGET[0]} epochs, {MAIN_BUDGET[1]} px)")
    if budget is None:
        return [title, "", "No row of the main budget has finished yet."]
    rows, args = budget.rows, budget.args
    anychannel_seeds = seeds_list(rows.get("anychannel", []))
    naive_seeds = seeds_list(rows.get("naive", []))
    # A naive model trains each image once per epoch in each of the seven configurations.
    naive_views = [e["train_views"] for e in rows.get("naive", [])]
    images = f"{naive_views[0] // (len(CONFIG_NAMES) * args.epochs):,}" if naive_views else "set of"
    lines = [
        title,
        "",
        "tiny-imagenet-50, test split (2,500 images).  ",
        f"Command: `python benchmarks/task1_real.py --epochs {args.epochs} --image-size {args.image_size} "
        f"--seeds {','.join(map(str, anychannel_seeds or args.seeds))} --workers 2`  ",
        f"Machine (anychannel and the naive set): {machine_text(rows.get('anychannel', []) + rows.get('naive', []))}  ",
        f"Budget: {args.epochs} epochs over the same {images} training images for every row (AdamW, one-cycle "
        f"to a peak learning rate of {learning_rate(args):g}, label smoothing 0.1, crop+flip), {args.image_size} px, "
        "batches of 128 views (image × configuration).",
        "",
    ]
    if {"anychannel", "naive"} <= rows.keys():
        anychannel, naive = rows["anychannel"], rows["naive"]
        course = rows.get("course")
        lines += [
            "### Headline: anychannel against the seven naive CNNs (mean ± standard error over seeds "
            f"{anychannel_seeds}"
            + (f"; naive: seeds {naive_seeds}" if naive_seeds != anychannel_seeds else "") + ")",
            "",
            "| channels | anychannel | naive, per config | anychannel − naive (points) | course design "
            "| published naive | published course |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in CONFIG_NAMES:
            lines.append(f"| {c} | {acc_spread(anychannel, c)} | {acc_spread(naive, c)} | "
                         f"{100 * (acc(anychannel, c) - acc(naive, c)):+.1f} | "
                         f"{f'{acc(course, c):.3f}' if course else 'not run'} | {PUBLISHED['naive'][c]:.3f} | "
                         f"{PUBLISHED['course'][c]:.3f} |")
        lines.append(f"| mean | {mean_acc(anychannel):.3f} | {mean_acc(naive):.3f} | "
                     f"{100 * (mean_acc(anychannel) - mean_acc(naive)):+.1f} | "
                     f"{f'{mean_acc(course):.3f}' if course else 'not run'} | | |")

        def per_seed(entries: list[dict], field: str) -> float:
            return statistics.mean(e[field] for e in entries)

        lines += [
            "",
            "Training compute beside it (means over the seeds):",
            "",
            "| | anychannel | naive set (7 models) | anychannel / naive |",
            "|---|---|---|---|",
            f"| train views | {per_seed(anychannel, 'train_views'):,.0f} | {per_seed(naive, 'train_views'):,.0f} | "
            f"{per_seed(anychannel, 'train_views') / per_seed(naive, 'train_views'):.2f}× |",
            f"| train TFLOPs | {per_seed(anychannel, 'train_flops') / 1e12:.1f} | "
            f"{per_seed(naive, 'train_flops') / 1e12:.1f} | "
            f"{flops_ratio(anychannel, naive):.4f}× |",
            f"| train s | {per_seed(anychannel, 'train_seconds'):.0f} | {per_seed(naive, 'train_seconds'):.0f} | "
            f"{per_seed(anychannel, 'train_seconds') / per_seed(naive, 'train_seconds'):.2f}× |",
            f"| parameters | {anychannel[0]['params'] / 1e6:.2f}M | {naive[0]['params'] / 1e6:.2f}M | |",
            "",
            *targets(rows, args),
            "",
        ]
    lines += [
        "### Ablation (seed " + str(min(e["seed"] for entries in rows.values() for e in entries))
        + "): what each part contributes",
        "",
        "| row | " + " | ".join(CONFIG_NAMES) + " | mean | train views | train TFLOPs | vs naive | train s | params "
        "| machine |",
        "|---|" + "---|" * (len(CONFIG_NAMES) + 7),
    ]
    naive_flops = rows["naive"][0]["train_flops"] if "naive" in rows else None
    keys = []
    for row in (r for r in ROWS if r.key in rows):  # rows not run at this budget are left out
        e = rows[row.key][0]
        cells = [f"{e['configs'][c]['test_acc']:.3f}" if c in e["configs"] else "–" for c in CONFIG_NAMES]
        ratio = f"{e['train_flops'] / naive_flops:.2f}×" if naive_flops else "–"
        keys.append(machines.key([e]))
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {mean_acc([e]):.3f} | {e['train_views']:,} | "
                     f"{e['train_flops'] / 1e12:.1f} | {ratio} | {e['train_seconds']:.0f} | {e['params'] / 1e6:.2f}M "
                     f"| {keys[-1]} |")
    lines += [
        "",
        machines.legend(keys),
        "",
        "Train FLOPs count every forward and backward pass as torch's FLOP counter measures them on the "
        "training graph (per image and configuration, times the views trained), plus precise-BN forwards; "
        "the naive figure is its seven models summed. Wall seconds are training only, on the row's machine; "
        "rows ran one after another, while other work occasionally shared the cores.",
    ]
    return lines


def report(budgets: list[Budget]) -> str:
    """The task-1 part of BENCHMARKS.md, from every budget's finished rows."""
    machines = Machines()
    main = next((b for b in budgets if b.is_main), None)
    return "\n".join([*headline_section(main, machines), "", *settings_section(budgets, machines), "",
                      *epochs_section(budgets, machines), "", *variants_section(budgets, machines)])


def write_report(args: argparse.Namespace) -> str:
    """Rebuild the task-1 part of BENCHMARKS.md from every budget's kept rows (and this run's folders)."""
    body = report(all_budgets(args))
    drop_sections(STALE_SECTIONS)
    write_section(SECTION, body)
    return body


def replace_epochs(args, epochs: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "epochs": epochs})


def main() -> None:
    parser = real_photo_parser(__doc__, "artifacts/bench/task1-real",
                               report_only="Rewrite the task-1 part of BENCHMARKS.md from every budget's finished "
                                           "rows without training.")
    add_variation_options(parser)
    add_row_options(parser, list(ROW_BY_KEY), seeds="Comma list; naive and anychannel run for each.", workers=1,
                    workers_help="Rows trained at once, in processes of one thread each. On 2 shared cores, 2 "
                                 "single-thread processes keep a steady pace where one 2-thread process stalls "
                                 "whenever anything else runs (OpenMP threads wait on each other).")
    parser.add_argument("--budgets", default=None, metavar="E1,E2,...",
                        help="Train naive and anychannel at each epoch budget in turn; the report gives the lead "
                             "against epochs up to where the naive set converges.")
    parser.add_argument("--step-time", action="store_true",
                        help="Only measure seconds per training view of anychannel and of each naive model, taking "
                             "turns in one process (median of rounds), in --step-time-processes fresh processes "
                             "(median over them), then rewrite the report.")
    parser.add_argument("--step-time-processes", type=int, default=5, metavar="K",
                        help="Fresh processes --step-time measures in, one after another (default 5): a process's "
                             "memory layout moves its speed by several percent.")
    args = parser.parse_args()
    keys = parse_seeds_and_rows(parser, args, list(ROW_BY_KEY))
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.lr == TrainConfig().lr:
        args.lr = None  # the default: the main budget's folders
    try:
        check_mix(args.mix or "none", args.mix_alpha)
    except ValueError as exc:
        parser.error(str(exc))
    if args.step_time_processes < 1:
        parser.error(f"--step-time-processes must be at least 1, got {args.step_time_processes}")
    if args.train_per_class is not None and (args.step_time or not args.report_only):
        try:
            train_subset(Path(args.data), args.train_per_class, Path(training_data(args)))
        except ValueError as exc:
            parser.error(str(exc))

    if args.budgets and not args.report_only:
        from train.data import load_dataset

        dataset = load_dataset(training_data(args), args.image_size) if args.workers == 1 else None
        for epochs in (int(b) for b in args.budgets.split(",")):
            at = replace_epochs(args, epochs)
            jobs = [(ROW_BY_KEY[k], s, at) for s in args.seeds for k in ("naive", "anychannel")
                    if not kept_results(at, ROW_BY_KEY[k], s).exists()]  # finished rows are kept
            if args.workers == 1:
                for row, seed, a in jobs:
                    train_row(row, seed, a, dataset)
            else:
                train_in_processes(train_row, jobs, args.workers)
    elif args.step_time:
        print(json.dumps(measure_step_time(args, args.step_time_processes), indent=1))
    elif not args.report_only:
        from train.data import load_dataset

        dataset = load_dataset(training_data(args), args.image_size)
        # The headline (every seed) first, so a stopped benchmark has it before the ablation.
        plan = [(ROW_BY_KEY[k], s) for s in args.seeds for k in keys if ROW_BY_KEY[k].every_seed]
        plan += [(ROW_BY_KEY[k], args.seeds[0]) for k in keys if not ROW_BY_KEY[k].every_seed]
        if args.workers == 1:
            for row, seed in plan:
                train_row(row, seed, args, dataset)
        else:
            train_in_processes(train_row, [(row, seed, args) for row, seed in plan], args.workers)
    print(write_report(args))


if __name__ == "__main__":
    main()
