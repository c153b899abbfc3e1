"""Task 1 on real photos: our model against seven per-configuration CNNs, the course design and ablations.

    python benchmarks/task1_real.py [--epochs 8] [--image-size 32] [--seeds 0,1] [--rows all]
                                    [--train-per-class N] [--lr LR] [--mix mixup|cutmix]
    python benchmarks/task1_real.py --budgets 8,16,32,64 [--train-per-class 50] [--seeds 0,1]

--budgets trains ours and the naive set at each epoch budget in turn (each budget a full run of
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
benchmark continues where it stopped (--resume) and --report-only rebuilds the BENCHMARKS.md
section of that budget from whatever rows have finished. `naive` and `ours` run once per seed; the other rows once.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (add_variation_options, budget_name, budget_section,  # noqa: E402
                               is_main_budget, keep_results_text, machine, parse_seeds_and_rows,
                               real_photo_parser, spread, train_in_processes, train_subset,
                               write_section)
from runtime.channels import CONFIG_NAMES, ChannelConfig, configs_with  # noqa: E402
from train.checkpoint import saved_recipe  # noqa: E402
from train.engine import TrainConfig  # noqa: E402
from train.data.mixing import MIX_TRANSFORMS, check_mix  # noqa: E402
from train.task1 import Task1Options  # noqa: E402

#: The one-channel configurations: R, G, B.
PLANES = tuple(c.name for c in configs_with(1))


def plane_control_key(plane: str) -> str:
    """The row of our network trained on ``plane`` alone, at ours' FLOPs."""
    return f"{plane.lower()}-only-same-flops"


PUBLISHED = {
    "naive": dict(zip(CONFIG_NAMES, (.400, .347, .367, .420, .382, .351, .353))),
    "course": dict(zip(CONFIG_NAMES, (.453, .398, .416, .420, .369, .371, .376))),
}


@dataclass(frozen=True)
class Row:
    """One benchmark row: a model, and for ours the training options it isolates."""

    key: str
    label: str
    model: str = "adaptive"
    options: Task1Options = field(default_factory=Task1Options)
    every_seed: bool = False
    #: Epochs as a multiple of --epochs: the RGB-only control at the same FLOPs as ours needs 7x.
    epoch_factor: int = 1


#: In table order, from the previous design up to ours, then variants and controls. The
#: rows run for every seed (the headline) train first, so a stopped benchmark has them.
ROWS: tuple[Row, ...] = (
    Row("naive", "naive: one CNN per configuration (7 models)", "naive", every_seed=True),
    Row("previous", "previous design: residual body, one sampled configuration per batch",
        options=Task1Options(strategy="sampled", body="residual")),
    Row("plain-sampled", "+ the naive CNN's stages as body", options=Task1Options(strategy="sampled")),
    Row("joint-shared", "+ all seven configurations every step, on the same images",
        options=Task1Options(share_images=True)),
    Row("ours", "+ each configuration its own images: ours, the default", every_seed=True),
    Row("joint-distill", "variant: joint on the same images + in-place distillation from RGB",
        options=Task1Options(share_images=True, distill=True)),
    Row("sandwich", "variant: sandwich (RGB, one 1-channel, one other per step), same images, distilled",
        options=Task1Options(configs_per_step=3, share_images=True, distill=True)),
    Row("sandwich-own", "variant: sandwich (RGB, one 1-channel, one other per step), each its own images",
        options=Task1Options(configs_per_step=3), every_seed=True),
    Row("ours-width-0.7", "variant: ours at 0.7× width (under half the naive set's FLOPs, all seven per step)",
        options=Task1Options(width=0.7), every_seed=True),
    # The share/RGB trade: the same compute, more of each step's views for fewer channels.
    Row("ours-inverse-channels", "variant: ours, a step's views in proportion to 1/channels "
        "(RGB 9, two channels 13, one channel 26 each)",
        options=Task1Options(allocation="inverse-channels"), every_seed=True),
    Row("ours-inverse-sqrt-channels", "variant: ours, a step's views in proportion to 1/√channels "
        "(RGB 13, two channels 15–16, one channel 22 each)",
        options=Task1Options(allocation="inverse-sqrt-channels"), every_seed=True),
    Row("rgb-only", "control: our network trained on RGB alone", options=Task1Options(configs=(ChannelConfig("RGB"),))),
    Row("rgb-only-same-flops", "control: our network on RGB alone, 7× the epochs (ours' FLOPs)",
        options=Task1Options(configs=(ChannelConfig("RGB"),)), epoch_factor=7, every_seed=True),
    # What one plane alone allows: the ceiling for each one-channel share of RGB.
    *(Row(plane_control_key(plane), f"control: our network on {plane} alone, 7× the epochs (ours' FLOPs)",
          options=Task1Options(configs=(ChannelConfig(plane),)), epoch_factor=7, every_seed=True)
      for plane in PLANES),
    # Capacity probe: both sides at half width (about a quarter of the FLOPs), where one shared
    # network has less room for seven configurations than seven networks have for one each.
    Row("naive-half-width", "capacity probe: naive CNNs at half width (7 models)", "naive",
        options=Task1Options(naive_width=0.5), every_seed=True),
    Row("ours-half-width", "capacity probe: ours at half width", options=Task1Options(width=0.5), every_seed=True),
    Row("course", "course design (published recipe: one sampled configuration per batch)", "course"),
)
ROW_BY_KEY = {r.key: r for r in ROWS}


#: Each finished row's results.json is copied here (small, no weights) and committed, so the
#: report can be rebuilt on any clone (--report-only) without retraining; one folder per budget.
RESULTS = Path(__file__).resolve().parent / "results" / "task1-real"


def results_dir(args) -> Path:
    return RESULTS / budget_name(args)


#: (epochs, image size) of the main BENCHMARKS.md section; other budgets get a section of their own.
MAIN_BUDGET = (8, 32)


def run_dir(args, row: Row, seed: int) -> Path:
    """A row's run folder for one seed, under its budget (resuming never mixes two budgets)."""
    return args.out / budget_name(args) / f"{row.key}-seed{seed}"


def kept_results(args, row: Row, seed: int) -> Path:
    return results_dir(args) / f"{row.key}-seed{seed}.json"


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
    cfg = TrainConfig(epochs=args.epochs * row.epoch_factor, seed=seed, **recipe(args))
    t0 = time.perf_counter()
    run_task1(dataset, [row.model], run_dir(args, row, seed), cfg, resume=True, options=row.options,
              log=lambda line: print(line, flush=True))
    print(f"== {row.key} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    results = json.loads((run_dir(args, row, seed) / "results.json").read_text())
    keep_results_text(json.dumps({**results, "machine": machine()}, indent=1), kept_results(args, row, seed))


def step_time_file(args) -> Path:
    return results_dir(args) / "step-time.json"


def measure_step_time(args, steps: int = 10, rounds: int = 5, warmup: int = 5) -> dict:
    """Seconds per training view (image x configuration) of ours and of each naive model, in this
    one process (one thread). The models take turns, ``steps`` training steps each per round, and
    each model's figure is its median round: the cores are shared, so a slow minute then touches
    every model alike instead of whichever one happened to run in it."""
    import torch

    from runtime.channels import ALL_CONFIGS
    from train.data import SplitTensors, load_dataset
    from train.engine import RunSpec, StepModule, TrainConfig, to_channels_last
    from train.models import create_model

    torch.set_num_threads(1)
    split = SplitTensors(load_dataset(training_data(args), args.image_size).splits["train"])
    cfg = TrainConfig()

    def stepper(spec: RunSpec) -> Callable[[int], float]:
        """Runs ``n`` real training steps of ``spec``'s model; returns seconds per view."""
        torch.manual_seed(0)
        model = to_channels_last(create_model(spec.model, num_classes=50, **spec.model_kwargs)).train()
        strategy = spec.build_strategy()
        step = StepModule(model, strategy)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batches = strategy.steps(split, cfg.batch_size, torch.Generator().manual_seed(0))

        def run(n: int) -> float:
            views, seconds = 0, 0.0
            for _ in range(n):
                groups = [replace(g, inputs=g.inputs.contiguous(memory_format=torch.channels_last))
                          for g in next(batches)]
                t0 = time.perf_counter()
                loss, _ = step(groups, cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                seconds += time.perf_counter() - t0
                views += sum(len(g.labels) for g in groups)
            return seconds / views
        return run

    from train.task1 import run_specs

    models = {f"naive-{spec.configs[0].name}": stepper(spec) for spec in run_specs("naive")}
    ours_spec = run_specs("adaptive")[0]
    models["ours"] = stepper(ours_spec)
    # The ablation: the shared body once per configuration group instead of once per step.
    models["ours-per-group"] = stepper(replace(ours_spec, strategy_options={**ours_spec.strategy_options,
                                                                            "grouped": False}))
    for run in models.values():
        run(warmup)
    per_round: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, run in models.items():
            per_round[name].append(run(steps))
    median = {name: statistics.median(times) for name, times in per_round.items()}
    ours, per_group = median.pop("ours"), median.pop("ours-per-group")
    naive = {name.removeprefix("naive-"): t for name, t in median.items()}
    result = {"ours_seconds_per_view": ours, "ours_per_group_seconds_per_view": per_group,
              "naive_seconds_per_view": naive,
              "ratio": ours / (sum(naive.values()) / len(ALL_CONFIGS)), "threads": 1, "steps": steps,
              "rounds": rounds, "machine": machine()}
    keep_results_text(json.dumps(result, indent=1), step_time_file(args))
    return result


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
                if ((results["dataset"], results["epochs"], results["image_size"], *(trained[k] for k in recipe(args)))
                        != (dataset_name(args), args.epochs * row.epoch_factor, args.image_size,
                            *recipe(args).values())):
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
    configuration, beside what a network trained on that plane alone at ours' FLOPs reaches."""
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


def report(rows: dict[str, list[dict]], args, wall: float | None) -> str:
    seeds = sorted({e["seed"] for e in rows.get("ours", [])})
    naive_seeds = sorted({e["seed"] for e in rows.get("naive", [])})
    per_class, lr, mix = getattr(args, "train_per_class", None), getattr(args, "lr", None), getattr(args, "mix", None)
    title = (f"{args.image_size} px" if is_main_budget(args, MAIN_BUDGET)
             else f"{args.epochs} epochs, {args.image_size} px"
             + (f", {per_class} training images per class" if per_class else "")
             + (f", peak learning rate {lr:g}" if lr is not None else "")
             + (f", {mixing(args)} for every row" if mix else ""))
    flags = ((f" --rows {args.rows}" if args.rows != "all" else "")
             + (f" --train-per-class {per_class}" if per_class else "") + (f" --lr {lr:g}" if lr is not None else "")
             + (f" --mix {mix}" if mix else "")
             + (f" --mix-alpha {args.mix_alpha:g}" if mix and args.mix_alpha != 1.0 else ""))
    # A naive model trains each image once per epoch in each of the seven configurations.
    naive_views = [e["train_views"] for e in rows.get("naive", [])]
    images = f"{naive_views[0] // (len(CONFIG_NAMES) * args.epochs):,}" if naive_views else "set of"
    lines = [
        f"## Task 1 on real photos (tiny-imagenet-50, test split, 2,500 images, {title})",
        "",
        f"Command: `python benchmarks/task1_real.py --epochs {args.epochs} --image-size {args.image_size} "
        f"--seeds {','.join(map(str, args.seeds))}{flags} --workers {args.workers}`  ",
        f"Machine: {machine()}  ",
        f"Budget: {args.epochs} epochs over the same {images} training images"
        + (f", the first {per_class} of each class in train.txt," if per_class else "")
        + f" for every row (AdamW, one-cycle to a peak learning rate of {learning_rate(args):g}, label smoothing "
        f"0.1, crop+flip{', ' + mixing(args) if mix else ''}), {args.image_size} px, batches of 128 "
        "views (image × configuration)."
        + (f" Wall time of this invocation: {wall / 60:.0f} min." if wall else ""),
        "",
    ]
    if {"ours", "naive"} <= rows.keys():
        ours, naive = rows["ours"], rows["naive"]
        course = rows.get("course")
        lines += [
            f"### Headline: ours against the seven naive CNNs (mean ± standard error over seeds {seeds}"
            + (f"; naive: seeds {naive_seeds}" if naive_seeds != seeds else "") + ")",
            "",
            "| channels | ours | naive, per config | ours − naive (points) | course design | published naive | "
            "published course |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in CONFIG_NAMES:
            lines.append(f"| {c} | {acc_spread(ours, c)} | {acc_spread(naive, c)} | "
                         f"{100 * (acc(ours, c) - acc(naive, c)):+.1f} | "
                         f"{f'{acc(course, c):.3f}' if course else 'not run'} | {PUBLISHED['naive'][c]:.3f} | "
                         f"{PUBLISHED['course'][c]:.3f} |")
        lines.append(f"| mean | {mean_acc(ours):.3f} | {mean_acc(naive):.3f} | "
                     f"{100 * (mean_acc(ours) - mean_acc(naive)):+.1f} | "
                     f"{f'{mean_acc(course):.3f}' if course else 'not run'} | | |")
        lines += ["", *targets(rows, args), ""]
    lines += [
        "### Ablation (seed " + str(args.seeds[0]) + "): what each part contributes",
        "",
        "| row | " + " | ".join(CONFIG_NAMES) + " | mean | train views | train TFLOPs | vs naive | train s | params |",
        "|---|" + "---|" * (len(CONFIG_NAMES) + 6),
    ]
    naive_flops = rows["naive"][0]["train_flops"] if "naive" in rows else None
    for row in (r for r in ROWS if r.key in rows):  # rows not run at this budget are left out
        e = rows[row.key][0]
        cells = [f"{e['configs'][c]['test_acc']:.3f}" if c in e["configs"] else "–" for c in CONFIG_NAMES]
        ratio = f"{e['train_flops'] / naive_flops:.2f}×" if naive_flops else "–"
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {mean_acc([e]):.3f} | {e['train_views']:,} | "
                     f"{e['train_flops'] / 1e12:.1f} | {ratio} | {e['train_seconds']:.0f} | {e['params'] / 1e6:.2f}M |")
    lines += [
        "",
        "Train FLOPs count every forward and backward pass as torch's FLOP counter measures them on the "
        "training graph (per image and configuration, times the views trained), plus precise-BN forwards; "
        "the naive figure is its seven models summed. Wall seconds are training only, on this machine; "
        "rows ran one after another, while other work occasionally shared the cores.",
    ]
    return "\n".join(lines)


def targets(rows: dict[str, list[dict]], args) -> list[str]:
    ours, naive = rows["ours"], rows["naive"]
    wins = [c for c in CONFIG_NAMES if acc(ours, c) >= acc(naive, c)]
    lines = [
        f"- Configurations where ours ≥ naive: {len(wins)}/7 (target 7/7)"
        + (f"; not on {', '.join(c for c in CONFIG_NAMES if c not in wins)}" if len(wins) < 7 else "") + ".",
        f"- Mean over the seven, ours − naive: {100 * (mean_acc(ours) - mean_acc(naive)):+.1f} points (target ≥ +2).",
        f"- One-channel accuracy as a share of our RGB: {plane_shares(ours)} (target ≥ 90%); the naive "
        f"set's dedicated one-channel CNNs keep {plane_shares(naive)} of its RGB CNN's.",
    ]
    alone = {c: rows[plane_control_key(c)] for c in PLANES if plane_control_key(c) in rows}
    if alone and "rgb-only-same-flops" in rows:
        alone_rgb = acc(rows["rgb-only-same-flops"], "RGB")
        control_seeds = ",".join(sorted({str(e["seed"]) for entries in alone.values() for e in entries}))
        lines.append(f"- The ceiling of that share (seeds {control_seeds}): our network trained on one plane alone "
                     "at ours' FLOPs keeps "
                     + ", ".join(f"{c} {acc(e, c) / alone_rgb:.0%} ({acc_spread(e, c)})" for c, e in alone.items())
                     + " of the same network trained on RGB alone at ours' FLOPs "
                     f"({acc_spread(rows['rgb-only-same-flops'], 'RGB')}); ours keeps "
                     + plane_shares(ours, tuple(alone)) + " of its own RGB. Against those dedicated networks, "
                     "ours reaches " + ", ".join(f"{c} {acc(same_seeds(ours, e), c) / acc(e, c):.0%}"
                                                 for c, e in alone.items())
                     + " of their accuracy, and its RGB "
                     f"{acc(same_seeds(ours, rows['rgb-only-same-flops']), 'RGB') / alone_rgb:.0%} of the RGB one's. "
                     + joint_share_floor(alone_rgb, {c: acc(e, c) for c, e in alone.items()}))
    for key, how in (("sandwich-own", "`--configs-per-step 3`: RGB, one 1-channel and one other configuration "
                                      "per step, each its own images"),
                     ("ours-width-0.7", "`--width 0.7`: every layer at 0.7× width, all seven configurations "
                                        "every step")):
        if key in rows:
            half = rows[key]
            lines.append(f"- At under half the compute ({how}; seeds {seeds_of(half)}): "
                         f"{against(half, naive, 'naive')}, {flops_ratio(half, naive):.2f}× the naive set's FLOPs "
                         f"(stretch ≤ 0.5×); RGB {acc(half, 'RGB'):.3f}, one channel "
                         + ", ".join(f"{c} {acc(half, c):.3f}" for c in PLANES) + ".")
    for allocation, rule in (("inverse-channels", "1/channels"), ("inverse-sqrt-channels", "1/√channels")):
        key = f"ours-{allocation}"
        if key not in rows:
            continue
        traded = rows[key]
        paired = same_seeds(ours, traded)
        rgb_alone = ""
        if "rgb-only-same-flops" in rows:
            control = same_seeds(rows["rgb-only-same-flops"], traded)
            rgb_alone = (f", {100 * (acc(traded, 'RGB') - acc(control, 'RGB')):+.1f} points against our network "
                         "on RGB alone at ours' FLOPs (target ≥ −1)")
        lines.append(f"- Trading RGB for one channel at the same compute (`--allocation {allocation}`: a step's "
                     f"views in proportion to {rule}; seeds {seeds_of(traded)}): one channel keeps "
                     f"{plane_shares(traded)} of its RGB (ours, same seeds: {plane_shares(paired)}); RGB "
                     f"{acc(traded, 'RGB'):.3f} against ours' {acc(paired, 'RGB'):.3f}{rgb_alone}; one channel "
                     + ", ".join(f"{c} {acc(traded, c):.3f} ({acc(paired, c):.3f})" for c in PLANES)
                     + f"; {against(traded, naive, 'naive')}, {flops_ratio(traded, naive):.2f}× its FLOPs.")
    if {"ours-half-width", "naive-half-width"} <= rows.keys():
        small, small_naive = rows["ours-half-width"], rows["naive-half-width"]
        lines.append(f"- Capacity probe, every layer of both at half width (seeds {seeds_of(small)}; "
                     f"{small[0]['params'] / 1e6:.2f}M parameters against 7 × {small_naive[0]['params'] / 7e6:.2f}M, "
                     f"{flops_ratio(small, small_naive):.2f}× their FLOPs, {flops_ratio(small, naive):.2f}× the "
                     f"full-width naive set's): {against(small, small_naive, 'naive')}; "
                     f"one channel keeps {plane_shares(small)} of its RGB (naive: {plane_shares(small_naive)}).")
    for key, budget in (("rgb-only", "the same epochs"), ("rgb-only-same-flops", "7× the epochs, ours' FLOPs")):
        if key in rows:
            entries = rows[key]
            # Paired by seed where the control ran for several seeds, so seed-to-seed noise cancels.
            paired = same_seeds(ours, entries)
            ours_rgb = acc(paired, "RGB")
            control = acc(entries, "RGB")
            seeds_used = ",".join(str(e["seed"]) for e in entries)
            lines.append(f"- Our RGB against our network trained on RGB alone, {budget} (seeds {seeds_used}): "
                         f"{ours_rgb:.3f} vs {acc_spread(entries, 'RGB')}, {100 * (ours_rgb - control):+.1f} points "
                         "(target ≥ −1).")
    if "course" in rows:
        course = rows["course"]
        beats = [c for c in CONFIG_NAMES if acc(ours, c) > acc(course, c)]
        lines.append(f"- Configurations where ours > the course design: {len(beats)}/7 (target 7/7).")
    ratio = flops_ratio(ours, naive)
    seconds = statistics.mean(e["train_seconds"] for e in ours) / statistics.mean(e["train_seconds"] for e in naive)
    over = (f", {100 * (ratio - 1):.3f}% above it: the dynamic stem mixes its kernels per image, which the "
            "naive CNNs' fixed first convolution does not" if ratio > 1 else "")
    lines.append(f"- Training compute, ours / naive: {ratio:.4f}× in FLOPs (target ≤ 1.0×{over}); {seconds:.2f}× in "
                 "the rows' wall seconds, which ran at different times beside other work on 2 shared cores.")
    if step_time_file(args).exists():
        step = json.loads(step_time_file(args).read_text())
        lines.append(f"- Wall time under equal conditions (`--step-time`: the 8 models take turns in one process, "
                     f"{step['threads']} thread, {step['rounds']} rounds of {step['steps']} training steps each; "
                     f"median round): ours {1e6 * step['ours_seconds_per_view']:.0f} µs "
                     f"per view, the naive models {1e6 * statistics.mean(step['naive_seconds_per_view'].values()):.0f} µs "
                     f"on average: {step['ratio']:.2f}×"
                     + (f"; with the shared body run once per configuration group instead of once per step, "
                        f"{1e6 * step['ours_per_group_seconds_per_view']:.0f} µs, "
                        f"{step['ours_per_group_seconds_per_view'] / step['ours_seconds_per_view']:.2f}× ours"
                        if "ours_per_group_seconds_per_view" in step else "")
                     + f" ({step['machine']}).")
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


def convergence_report(args, budgets: list[int]) -> str:
    """The lead of ours over the naive set against the epoch budget, from the kept rows of each budget."""
    per_budget = {}
    for epochs in budgets:
        rows = load_rows(replace_epochs(args, epochs), args.seeds)
        if "ours" in rows and "naive" in rows:
            seeds = sorted({e["seed"] for e in rows["ours"]} & {e["seed"] for e in rows["naive"]})
            per_budget[epochs] = {k: [e for e in rows[k] if e["seed"] in seeds] for k in ("ours", "naive")}
    if not per_budget:
        return "No budget has both ours and the naive set finished yet."
    naive_val = {b: mean_val(r["naive"]) for b, r in per_budget.items()}
    done = converged_budget(naive_val)
    data = f"{args.train_per_class} training images per class" if args.train_per_class else "all training images"
    lines = [
        f"## Task 1 towards convergence (tiny-imagenet-50, {args.image_size} px, {data})",
        "",
        f"Command: `python benchmarks/task1_real.py --budgets {','.join(map(str, budgets))} --image-size "
        f"{args.image_size} --seeds {','.join(map(str, args.seeds))}"
        + (f" --train-per-class {args.train_per_class}" if args.train_per_class else "") + " --workers 2`  ",
        "Machine: " + "; ".join(sorted({e["machine"] or "not recorded (rows kept before the field)"
                                        for r in per_budget.values() for e in r["ours"] + r["naive"]})) + "  ",
        f"Data: tiny-imagenet-50 at {args.image_size} px, {data}; validation and test splits unchanged. Each "
        "budget is its own full run (one-cycle over that many epochs); both sides get the same data, epochs and recipe.",
        "",
        "| epochs | seeds | naive, mean val | naive, mean test | ours, mean test | ours − naive (points) "
        "| configurations ours ≥ naive | smallest lead | train acc ours / naive | FLOPs ours / naive |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for epochs, r in per_budget.items():
        ours, naive = r["ours"], r["naive"]
        leads = {c: acc(ours, c) - acc(naive, c) for c in CONFIG_NAMES}
        worst = min(leads, key=leads.get)
        mark = " (naive converged)" if epochs == done else ""
        lines.append(f"| {epochs}{mark} | {seeds_of(ours)} | {naive_val[epochs]:.3f} | {mean_acc(naive):.3f} | "
                     f"{mean_acc(ours):.3f} | {100 * (mean_acc(ours) - mean_acc(naive)):+.1f} | "
                     f"{sum(v >= 0 for v in leads.values())}/7 | {worst} {100 * leads[worst]:+.1f} | "
                     f"{mean_train(ours):.3f} / {mean_train(naive):.3f} | {flops_ratio(ours, naive):.4f}× |")
    lines.append("")
    if done is None:
        lines.append(f"- The naive set has not converged by {max(per_budget)} epochs (each doubling still lifts its "
                     f"validation accuracy by {100 * CONVERGED_GAIN:.1f} points or more), or a budget is missing.")
    else:
        lead = mean_acc(per_budget[done]["ours"]) - mean_acc(per_budget[done]["naive"])
        lines.append(f"- The naive set converges at {done} epochs (the next budget lifts its mean validation "
                     f"accuracy by less than {100 * CONVERGED_GAIN:.1f} points). There ours − naive is "
                     f"{100 * lead:+.1f} points.")
    return "\n".join(lines)


def replace_epochs(args, epochs: int) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "epochs": epochs})


def main() -> None:
    parser = real_photo_parser(__doc__, "artifacts/bench/task1-real")
    add_variation_options(parser)
    parser.add_argument("--seeds", default="0,1", help="Comma list; naive and ours run for each.")
    parser.add_argument("--rows", default="all", help=f"Comma list of {', '.join(ROW_BY_KEY)}, or all.")
    parser.add_argument("--workers", type=int, default=1,
                        help="Rows trained at once, in processes of one thread each. On 2 shared cores, 2 "
                             "single-thread processes keep a steady pace where one 2-thread process stalls "
                             "whenever anything else runs (OpenMP threads wait on each other).")
    parser.add_argument("--report-only", action="store_true",
                        help="Rewrite the BENCHMARKS.md section from the finished rows without training.")
    parser.add_argument("--budgets", default=None, metavar="E1,E2,...",
                        help="Train naive and ours at each epoch budget in turn, then report the lead against "
                             "epochs up to where the naive set converges (a section of its own).")
    parser.add_argument("--step-time", action="store_true",
                        help="Only measure seconds per training view of ours and of each naive model, taking "
                             "turns in one process (median of rounds), then rewrite the section.")
    args = parser.parse_args()
    keys = parse_seeds_and_rows(parser, args, list(ROW_BY_KEY))
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if args.lr == TrainConfig().lr:
        args.lr = None  # the default: the main budget's folders and section
    try:
        check_mix(args.mix or "none", args.mix_alpha)
    except ValueError as exc:
        parser.error(str(exc))
    if args.train_per_class is not None and (args.step_time or not args.report_only):
        try:
            train_subset(Path(args.data), args.train_per_class, Path(training_data(args)))
        except ValueError as exc:
            parser.error(str(exc))

    if args.budgets:
        budgets = [int(b) for b in args.budgets.split(",")]
        if not args.report_only:
            from train.data import load_dataset

            dataset = load_dataset(training_data(args), args.image_size) if args.workers == 1 else None
            for epochs in budgets:
                at = replace_epochs(args, epochs)
                jobs = [(ROW_BY_KEY[k], s, at) for s in args.seeds for k in ("naive", "ours")
                        if not kept_results(at, ROW_BY_KEY[k], s).exists()]  # finished rows are kept
                if args.workers == 1:
                    for row, seed, a in jobs:
                        train_row(row, seed, a, dataset)
                else:
                    train_in_processes(train_row, jobs, args.workers)
        body = convergence_report(args, budgets)
        write_section(f"task1-real-convergence-{args.image_size}px" + (f"-{args.train_per_class}pc"
                                                                       if args.train_per_class else ""), body)
        print(body)
        return
    t0 = time.perf_counter()
    if args.step_time:
        print(json.dumps(measure_step_time(args), indent=1))
        args.report_only = True
    if not args.report_only:
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
    wall = None if args.report_only else time.perf_counter() - t0
    body = report(load_rows(args, args.seeds), args, wall)
    write_section(budget_section("task1-real", args, MAIN_BUDGET), body)
    print(body)


if __name__ == "__main__":
    main()
