"""The training strategies: which configurations each step trains, on which images, with which targets."""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from runtime.channels import ALL_CONFIGS, ChannelConfig
from train import strategies
from train.data import SplitTensors
from train.data.cache import Dataset, Split
from train.engine import RunSpec, TrainConfig, fit
from train.models import create_model
from train.strategies import (DistillStrategy, FixedConfig, JointStrategy, SampledConfig, SandwichStrategy,
                               SharedStrategy, build_strategy, sandwich_configs)
from train.task1 import Task1Options

from conftest import TINY_ANYCHANNEL

RGB = ChannelConfig("RGB")


def _id_split(n: int = 70, size: int = 16) -> SplitTensors:
    """Labels 0..n-1, so each label names its image."""
    rng = np.random.default_rng(0)
    return SplitTensors(Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n)))


def test_joint_epoch_shows_every_image_once_to_every_configuration():
    split = _id_split()
    strategy = JointStrategy()
    steps = list(strategy.steps(split, 70, torch.Generator().manual_seed(0)))
    assert len(steps) == strategy.steps_per_epoch(len(split), 70) == 7
    seen = {c.name: [] for c in ALL_CONFIGS}
    for groups in steps:
        assert [g.config for g in groups] == list(ALL_CONFIGS)  # every configuration, every step
        assert all(len(g.labels) == 10 and g.inputs.shape[1] == g.config.num_channels for g in groups)
        for g in groups:
            seen[g.config.name] += g.labels.tolist()
    for name, labels in seen.items():
        assert sorted(labels) == list(range(70)), name
    # Split images: the groups of a step are drawn from their own permutations.
    assert len({tuple(g.labels.tolist()) for g in steps[0]}) > 1


def test_shared_images_give_every_configuration_the_same_crop():
    split = _id_split()
    groups = next(SharedStrategy().steps(split, 70, torch.Generator().manual_seed(1)))
    rgb = groups[0]
    assert rgb.config == RGB
    std = torch.tensor(RGB.std).view(1, 3, 1, 1)
    mean = torch.tensor(RGB.mean).view(1, 3, 1, 1)
    pixels = rgb.inputs * std + mean  # back to [0, 1], same crop and flip for all groups
    for g in groups[1:]:
        assert torch.equal(g.labels, rgb.labels)
        c_std = torch.tensor(g.config.std).view(1, -1, 1, 1)
        c_mean = torch.tensor(g.config.mean).view(1, -1, 1, 1)
        torch.testing.assert_close(g.inputs * c_std + c_mean, pixels[:, list(g.config.indices)])


def test_distillation_target_is_the_detached_rgb_output_of_the_same_images(monkeypatch):
    split = _id_split()
    strategy = DistillStrategy()
    groups = next(strategy.steps(split, 70, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=70, **TINY_ANYCHANNEL).train()
    calls = []
    real = strategies.distillation_loss

    def spy(student, teacher, labels, *args):
        calls.append((student, teacher, labels))
        return real(student, teacher, labels, *args)

    monkeypatch.setattr(strategies, "distillation_loss", spy)
    result = strategy.loss(model, groups, label_smoothing=0.1)
    rgb_logits = result.logits[0]
    assert len(calls) == 6  # the six subsets; RGB learns from the labels
    for (student, teacher, labels), g, logits in zip(calls, groups[1:], result.logits[1:]):
        assert student is logits
        assert not teacher.requires_grad and torch.equal(teacher, rgb_logits.detach())
        assert torch.equal(labels, groups[0].labels)  # the same images as the teacher's
    # No gradient reaches the RGB logits through the subsets' targets: only its own CE term (1/7).
    rgb_logits.retain_grad()
    result.loss.backward()
    ce_only = rgb_logits.detach().clone().requires_grad_()
    (torch.nn.functional.cross_entropy(ce_only, groups[0].labels, label_smoothing=0.1) / 7).backward()
    torch.testing.assert_close(rgb_logits.grad, ce_only.grad)


def _config_norm_grads(model) -> dict[str, bool]:
    from train.models.layers import ConfigBatchNorm2d

    norms = [m for m in model.modules() if isinstance(m, ConfigBatchNorm2d)]
    return {c.name: all(n.select(c).weight.grad is not None for n in norms) for c in ALL_CONFIGS}


@pytest.mark.parametrize("strategy,expected", [
    (JointStrategy(), {c.name for c in ALL_CONFIGS}),
    (FixedConfig((ChannelConfig("GB"),)), {"GB"}),
])
def test_each_step_updates_the_configurations_it_trains(strategy, expected):
    split = _id_split()
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=70, **TINY_ANYCHANNEL).train()
    groups = next(strategy.steps(split, 70, torch.Generator().manual_seed(0)))
    strategy.loss(model, groups, 0.1).loss.backward()
    trained = _config_norm_grads(model)
    assert {name for name, has in trained.items() if has} == expected


def test_sandwich_keeps_the_widest_and_a_narrowest_configuration():
    g = torch.Generator().manual_seed(0)
    draws = [sandwich_configs(3, g) for _ in range(200)]
    assert all(len(d) == 3 and d[0] == RGB and any(c.num_channels == 1 for c in d) for d in draws)
    assert len({tuple(d) for d in draws}) > 5  # the third one varies
    split = _id_split()
    strategy = DistillStrategy(configs_per_step=3)
    assert strategy.precise_bn  # some configurations skip steps
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=70, **TINY_ANYCHANNEL).train()
    groups = next(strategy.steps(split, 69, torch.Generator().manual_seed(0)))
    strategy.loss(model, groups, 0.1).loss.backward()
    trained = {name for name, has in _config_norm_grads(model).items() if has}
    assert trained == {g.config.name for g in groups} and len(trained) == 3


def test_sandwich_on_own_images_shows_each_image_three_times_per_epoch():
    """``--configs-per-step 3`` alone: three configurations per step, each on its own images (3/7 of the views)."""
    split = _id_split(n=72)
    strategy = SandwichStrategy(configs_per_step=3)
    steps = list(strategy.steps(split, 72, torch.Generator().manual_seed(0)))
    assert len(steps) == strategy.steps_per_epoch(len(split), 72) == 3
    streams: list[list[int]] = [[], [], []]
    for groups in steps:
        assert len(groups) == 3 and groups[0].config == RGB and any(g.config.num_channels == 1 for g in groups)
        assert len({tuple(g.labels.tolist()) for g in groups}) == 3  # not the same images
        for stream, g in zip(streams, groups):
            stream += g.labels.tolist()
    assert all(sorted(s) == list(range(72)) for s in streams)  # each group slot: one pass over the images


def test_inverse_channels_allocation_gives_fewer_channels_more_of_each_step():
    """``--allocation inverse-channels``: views in proportion to 1/channels, the same views per epoch."""
    split = _id_split(n=126)
    uniform, traded = JointStrategy(), JointStrategy(allocation="inverse-channels")
    assert uniform.group_sizes(126) == [18] * 7
    assert traded.group_sizes(126) == [9, 13, 13, 13, 26, 26, 26]  # RGB, RG, GB, RB, R, G, B
    assert strategies.allocate(10, [1, 1, 1]) == [4, 3, 3] and strategies.allocate(7, [0.5, 0.5]) == [4, 3]
    # Half way (1/sqrt(channels)): RGB 12.8, two channels 15.6, one channel 22.1 of 126, rounded to sum 126.
    assert JointStrategy(allocation="inverse-sqrt-channels").group_sizes(126) == [13, 16, 16, 15, 22, 22, 22]
    steps = list(traded.steps(split, 126, torch.Generator().manual_seed(0)))
    assert len(steps) == uniform.steps_per_epoch(126, 126) == 7
    seen = {c.name: [] for c in ALL_CONFIGS}
    for groups in steps:
        assert [g.config for g in groups] == list(ALL_CONFIGS)
        assert [len(g.labels) for g in groups] == [9, 13, 13, 13, 26, 26, 26]
        for g in groups:
            seen[g.config.name] += g.labels.tolist()
    assert sum(len(v) for v in seen.values()) == 7 * 126  # as many views as the uniform epoch
    counts = {name: np.bincount(labels, minlength=126) for name, labels in seen.items()}
    assert counts["RGB"].max() == 1 and len(seen["RGB"]) == 63  # half a pass, no repeats
    assert counts["R"].min() == 1 and counts["R"].max() == 2 and len(seen["R"]) == 182  # 1.44 passes
    # The loss is the mean over views: each group's loss weighs by its number of views.
    model = create_model("anychannel", num_classes=126, **TINY_ANYCHANNEL).train()
    by_channels = lambda logits, y, x, c: torch.tensor(float(c.num_channels))  # noqa: E731
    loss = traded.loss(model, steps[0], 0.1, by_channels).loss
    assert loss.item() == pytest.approx((9 * 3 + 39 * 2 + 78 * 1) / 126)


def test_allocated_steps_split_across_ranks_into_the_one_process_batch():
    from train.distributed import Shard

    split, strategy = _id_split(n=126), JointStrategy(allocation="inverse-channels")
    whole = next(strategy.steps(split, 126, torch.Generator().manual_seed(0)))
    shares = [next(strategy.steps(split, 126, torch.Generator().manual_seed(0), Shard(r, 2))) for r in range(2)]
    for i, g in enumerate(whole):
        parts = [share[i] for share in shares]
        assert sorted(torch.cat([p.labels for p in parts]).tolist()) == sorted(g.labels.tolist())
        # DDP averages 2 ranks' means over 7 groups; weighted so, each view counts 1/126, as in one process.
        assert g.weight == pytest.approx(7 * len(g.labels) / 126)
        assert all(p.weight == pytest.approx(2 * 7 * len(p.labels) / 126) for p in parts)


@pytest.mark.parametrize("strategy", [
    FixedConfig((ChannelConfig("RG"),)), SampledConfig(), JointStrategy(), SharedStrategy(),
    SandwichStrategy(configs_per_step=3), JointStrategy(allocation="inverse-sqrt-channels"),
    DistillStrategy(configs_per_step=3)],
    ids=["fixed", "sampled", "joint", "shared", "sandwich", "allocated", "distilled-sandwich"])
def test_every_rank_trains_its_share_of_the_one_process_batch(strategy):
    """What data parallelism promises on any CPU, exactly: at every step, the ranks' groups are
    the one-process groups' strided shares, same images, configurations, crops and flips."""
    from train.distributed import Shard

    split = _id_split(n=64)
    whole = list(strategy.steps(split, 28, torch.Generator().manual_seed(3)))
    shares = [list(strategy.steps(split, 28, torch.Generator().manual_seed(3), Shard(r, 3))) for r in range(3)]
    assert all(len(s) == len(whole) for s in shares)
    for step, groups in enumerate(whole):
        for i, g in enumerate(groups):
            parts = [s[step][i] for s in shares]
            assert all(p.config == g.config and p.global_views == len(g.labels) for p in parts)
            for r, p in enumerate(parts):
                assert torch.equal(p.labels, g.labels[r::3])
                assert torch.equal(p.inputs, g.inputs[r::3])  # the same crop and flip, bit for bit
            # DDP averages the ranks' mean losses: weighted so, each view counts as in one process.
            assert all(p.weight / (3 * len(p.labels)) == pytest.approx(g.weight / len(g.labels)) for p in parts)


def test_strategy_options_are_checked():
    """Each strategy checks its own options' values; the flags that go together only in some
    combinations are refused where they are mapped to a strategy (Task1Options)."""
    with pytest.raises(ValueError, match="--distill needs --share-images: .* share their images"):
        Task1Options(distill=True)
    for strategy in (SandwichStrategy, SharedStrategy, DistillStrategy):
        with pytest.raises(ValueError, match="1 to 7"):
            strategy(configs_per_step=0)
    with pytest.raises(ValueError, match="distillation needs RGB"):
        DistillStrategy(ALL_CONFIGS[1:])
    with pytest.raises(ValueError, match="fewer than 2 images"):
        JointStrategy().group_size(13)
    with pytest.raises(ValueError, match="unknown training strategy"):
        build_strategy("nope", ALL_CONFIGS)
    assert isinstance(build_strategy("joint", (RGB,)), FixedConfig)  # one configuration: nothing to mix
    assert isinstance(Task1Options(strategy="sampled").anychannel_spec().build_strategy(), SampledConfig)
    assert not JointStrategy().precise_bn and SampledConfig().precise_bn
    with pytest.raises(ValueError, match="unknown allocation 'nope'; choose from uniform, inverse-channels, inverse-sqrt-channels"):
        JointStrategy(allocation="nope")
    for bad in ({"share_images": True}, {"configs_per_step": 3}):
        with pytest.raises(ValueError, match="own images"):
            Task1Options(allocation="inverse-channels", **bad)
    with pytest.raises(ValueError, match="fewer than 2 images"):
        JointStrategy(allocation="inverse-channels").group_sizes(14)  # RGB would get 1 of 14
    with pytest.raises(ValueError, match="--configs-per-step, --share-images: options of --strategy joint; not with --strategy sampled"):
        Task1Options(strategy="sampled", configs_per_step=3, share_images=True)
    with pytest.raises(ValueError, match="not with --strategy sampled"):
        Task1Options(strategy="sampled", allocation="inverse-channels")
    assert SampledConfig().group_sizes(128) == [128]
    # The default's description is what checkpoints written before the option hold: they resume.
    assert "allocation" not in JointStrategy().describe()
    assert JointStrategy(allocation="inverse-channels").describe()["allocation"] == "inverse-channels"


def test_width_narrows_ours_alone_and_leaves_default_checkpoints_alone():
    from train.task1 import run_specs

    narrow = Task1Options(width=0.7)
    assert narrow.anychannel_spec().model_kwargs == {"body": "plain", "width": 0.7}
    assert all("width" not in spec.model_kwargs for spec in run_specs("naive", narrow))  # the reference stays
    probe = Task1Options(width=0.5, naive_width=0.5)  # the benchmark's capacity probe narrows both
    assert all(spec.model_kwargs["width"] == 0.5 for spec in run_specs("naive", probe))
    assert Task1Options().anychannel_spec().model_kwargs == {"body": "plain"}  # resumable as before
    assert "width" not in run_specs("course", probe)[0].model_kwargs  # the published design keeps its size
    with pytest.raises(ValueError, match="positive number"):
        Task1Options(naive_width=float("inf"))


def test_fit_counts_views_and_flops(synthetic_dataset, tmp_path):
    s = synthetic_dataset.splits
    cut = lambda sp, n: Split(sp.images[:n], sp.labels[:n])  # noqa: E731
    data = Dataset("tiny", synthetic_dataset.class_names, 16,
                   {"train": cut(s["train"], 140), "val": cut(s["val"], 32), "test": cut(s["test"], 32)}, "fp")
    spec = RunSpec("anychannel", "anychannel", dict(TINY_ANYCHANNEL))
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=data.num_classes, **TINY_ANYCHANNEL)
    summary = fit(model, spec, data, tmp_path, TrainConfig(epochs=1, batch_size=70), "task1", log=lambda _: None)
    assert summary["views"] == 7 * 140  # every image once per configuration
    expected = sum(140 * f["train"] for f in summary["flops_per_image"].values())
    assert summary["train_flops"] == pytest.approx(expected)
    rgb = summary["flops_per_image"]["RGB"]
    assert 2 * rgb["forward"] < rgb["train"] < 4 * rgb["forward"]  # backward costs about twice the forward


@pytest.mark.parametrize("args,message", [
    (["--distill"], "share their images"),
    (["--configs-per-step", "9"], "1 to 7"),
    (["--body", "nope"], "unknown body 'nope'; choose from plain, residual"),
    (["--batch-size", "8"], "fewer than 2 images"),
    (["--width", "0"], "--width must be a positive number"),
    (["--width", "inf"], "--width must be a positive number"),
    (["--width", "2", "--backbone", "resnet18"], "--width scales the compact network"),
    (["--allocation", "nope"], "unknown allocation 'nope'"),
    (["--models", ""], "--models: no model given; choose from anychannel, naive, course"),
    (["--nproc", "2", "--strategy", "bogus"], "unknown training strategy 'bogus'"),  # before torchrun starts
    (["--nproc", "2", "--models", "naive", "--width", "2"], "--width: options of our model"),
    (["--nproc", "10", "--allocation", "inverse-channels"], "9 images per step, fewer than the 10 processes"),
    (["--models", "naive", "--width", "0.5", "--distill"], "--width, --distill: options of our model; add anychannel"),
    (["--strategy", "sampled", "--share-images"], "--share-images: options of --strategy joint"),
    (["--image-size", "8"], "--image-size 8 is too small for anychannel"),
    (["--image-size", "8", "--models", "naive"], "--image-size 8 is too small for naive"),
    (["--epochs", "0"], "'--epochs'"),
    (["--train-eval-samples", "0"], "'--train-eval-samples'"),
    (["--batch-size", "1"], "'--batch-size'"),
    (["--allocation", "inverse-channels", "--share-images"], "own images"),
    (["--mix", "blend"], "unknown --mix 'blend'; choose from none, mixup, cutmix"),
    (["--mix", "cutmix", "--share-images", "--distill"], "--mix cutmix with --distill"),
    (["--nproc", "2", "--mix", "mixup", "--mix-alpha", "-1"], "--mix-alpha must be positive"),
    (["--mix-alpha", "0.2"], "--mix-alpha 0.2 needs --mix mixup or cutmix"),
    (["--compile", "fast"], "unknown --compile mode 'fast'; choose from none, default, reduce-overhead"),
    (["--nproc", "2", "--compile", "default"], "--compile default with 2 processes is not supported yet"),
])
def test_train_refuses_bad_strategy_options_before_loading_data(args, message, tmp_path):
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, ["train", "task1", "--data", str(tmp_path / "missing"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_summary_prints_each_model_and_refuses_an_image_too_small_for_one():
    from typer.testing import CliRunner

    import cli

    ok = CliRunner().invoke(cli.app, ["summary", "task2", "--image-size", "16"])
    assert ok.exit_code == 0 and "== shallow ==" in ok.output and "MFLOPs at 16px" in ok.output, ok.output
    small = CliRunner().invoke(cli.app, ["summary", "task1", "--image-size", "16"])
    assert small.exit_code == 2 and "--image-size 16 is too small for course" in small.output, small.output


@pytest.mark.parametrize("recipe", [
    ["--strategy", "sampled"],  # the earlier recipe
    ["--configs-per-step", "3", "--width", "1.33"],  # levers docs/training.md measured at long budgets
    ["--configs-per-step", "3", "--width", "1.33", "--share-images", "--distill"],
    ["--configs-per-step", "4", "--width", "1.18", "--share-images", "--distill"],  # the long-budget recipes
    ["--share-images", "--distill"],
])
def test_documented_recipes_pass_the_cli_checks(recipe, tmp_path):
    """Each recipe the docs give a user reaches the data: its options go together."""
    from typer.testing import CliRunner

    import cli

    missing = tmp_path / "missing"
    result = CliRunner().invoke(cli.app, ["train", "task1", *recipe, "--data", str(missing)])
    assert result.exit_code == 2 and f"dataset folder {missing} does not exist" in result.output, result.output


def test_width_0_7_trains_in_under_half_the_naive_sets_flops():
    """The documented half-compute option: per view, ours at 0.7x width costs under half a naive CNN."""
    from train.engine import step_flops

    def train_flops(model, configs) -> float:
        return sum(f["train"] for f in step_flops(model, configs, 32).values())

    naive = sum(train_flops(create_model("naive", num_classes=50, channels=c.name), (c,)) for c in ALL_CONFIGS)
    narrow = train_flops(create_model("anychannel", num_classes=50, width=0.7), ALL_CONFIGS)
    full = train_flops(create_model("anychannel", num_classes=50), ALL_CONFIGS)
    assert 0.45 < narrow / naive <= 0.5
    assert full / naive == pytest.approx(1.0, abs=1e-3)  # the default spends the naive set's compute


def test_every_strategy_is_built_by_name_from_the_same_arguments():
    """build_strategy(name, configs, **options) is STRATEGIES[name](configs, **options) for each name."""
    rgb = (ChannelConfig("RGB"),)
    for name, strategy_type in strategies.STRATEGIES.items():
        configs = rgb if name == "fixed" else ALL_CONFIGS
        built = build_strategy(name, configs)
        assert type(built) is strategy_type and built.name == name and tuple(built.configs) == configs
    assert build_strategy("fixed", rgb).describe() == {"strategy": "fixed", "config": "RGB"}
    assert not isinstance(SampledConfig(), FixedConfig)  # a sibling, not a fixed strategy without its config
    with pytest.raises(ValueError, match="fixed strategy trains one configuration, got 7"):
        build_strategy("fixed", ALL_CONFIGS)
    with pytest.raises(ValueError, match="sampled strategy draws from all seven"):
        build_strategy("sampled", ALL_CONFIGS[:3])


class _ProbeModel(torch.nn.Module):
    """Logits from each channel's mean, for any configuration: numbers that only the strategy decides
    (not the network, whose speed work may reorder float sums). Its grouped pass doubles them, so a
    trace tells which pass the strategy asked for. In float64: a CPU's vector width changes the order
    of a sum, so float32 losses differ in their last bits between an AMD EPYC and an Intel Xeon; float64
    ones, rounded to float32 for the digest, do not."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 3 * classes, dtype=torch.float64).view(3, classes))

    def forward(self, x: torch.Tensor, config: ChannelConfig) -> torch.Tensor:
        return x.double().mean((2, 3)) @ self.weight[list(config.indices)]

    def forward_groups(self, xs: list[torch.Tensor], configs: list[ChannelConfig]) -> list[torch.Tensor]:
        return [2 * self(x, c) for x, c in zip(xs, configs)]


def _trace(strategy: strategies.TrainingStrategy, split: SplitTensors) -> str:
    """A digest of three epochs of ``strategy`` from one generator (batches of 28 and 24 in one
    process, then 28 as rank 1 of 2): each step's groups (configurations, image indices, pixels,
    weights) and loss, bit for bit, the step counts and sizes, and the generator's state after each epoch."""
    from train.distributed import Shard

    digest, generator = hashlib.sha256(), torch.Generator().manual_seed(5)
    model = _ProbeModel(len(split))
    for batch_size, shard in ((28, Shard()), (24, Shard()), (28, Shard(1, 2))):
        digest.update(f"{strategy.group_sizes(batch_size)} {strategy.steps_per_epoch(len(split), batch_size)} "
                      f"{strategy.precise_bn}".encode())
        for groups in strategy.steps(split, batch_size, generator, shard):
            for g in groups:
                digest.update(f"{g.config.name} {float(g.weight).hex()} {g.global_count}".encode())
                digest.update(g.labels.numpy().tobytes() + g.inputs.numpy().tobytes())
            loss = strategy.loss(model, groups, 0.1).loss.detach()
            digest.update(loss.float().numpy().tobytes())
        digest.update(generator.get_state().numpy().tobytes())
    return digest.hexdigest()


#: What every ``--strategy joint`` checkpoint held as its strategy at the flags' defaults.
_EARLIER_JOINT = {"strategy": "joint", "configs_per_step": 7, "share_images": False, "distill": False,
                  "distill_weight": 0.5, "temperature": 1.0, "configs": [c.name for c in ALL_CONFIGS]}

#: Each flag combination the repo trained when one joint strategy took them all (the rows of
#: benchmarks/task1_real.py; its step-time probe's per-group pass): Task1Options fields, extra
#: strategy options, the named strategy they now build, and the :func:`_trace` of the old strategy,
#: recorded from it (main at b501aae; re-recorded there on an AMD EPYC with the float64 probe, as the
#: float32 digests taken on an Intel Xeon failed on it). Its checkpoints held ``_EARLIER_JOINT`` with these options.
EARLIER_RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any], str, str]] = {
    "joint": ({}, {}, "joint",
        "e1226eff328e416c207866541aee3514050c49810305b00929cb23a1686c89a3"),
    "joint-per-group": ({}, {"grouped": False}, "joint",
        "58e69b5aa4f1f05369cc40a9150acb4166392338623a7785d7e7c4137aca1aa7"),
    "joint-shared": ({"share_images": True}, {}, "shared",
        "cebd3c6c19fe62f8feb1e852e3fea94de31b2da9755aaf21cf68dec4e5b7f657"),
    "joint-distill": ({"share_images": True, "distill": True}, {}, "distill",
        "81712237e10a895e4aa34b50e09810f153089350255e7c86cdc1975c519a9d7f"),
    "sandwich-own": ({"configs_per_step": 3}, {}, "sandwich",
        "e6aa793831cd9de946ae068a4fa52aa3bd1902d499f068f0eb7b04a9cc1f7752"),
    "sandwich-shared": ({"configs_per_step": 3, "share_images": True}, {}, "shared",
        "57184d814930eb76659cfaeacd8b4a48206ec5339c5b3ff0165f0ef3c1e43247"),
    "sandwich": ({"configs_per_step": 3, "share_images": True, "distill": True}, {}, "distill",
        "28f3e224eae92988f8313a48daf1a0222a1d0d37158e9db05a3637363b494b3b"),
    "inverse-channels": ({"allocation": "inverse-channels"}, {}, "joint",
        "8844280e81782d8393e8aae49b43ffcb6ee43056dfea0986136c692c3c902891"),
    "inverse-sqrt-channels": ({"allocation": "inverse-sqrt-channels"}, {}, "joint",
        "e1aaabbfb585653ee0dee2c3e4cd6f3daf673c5d209239c5d7e2958a9a37a4c6"),
}


def _earlier_recipe(key: str) -> strategies.TrainingStrategy:
    flags, extra, _, _ = EARLIER_RECIPES[key]
    spec = Task1Options(**flags).anychannel_spec()
    return replace(spec, strategy_options={**spec.strategy_options, **extra}).build_strategy()


@pytest.mark.parametrize("key", EARLIER_RECIPES)
def test_each_earlier_flag_combination_trains_bit_for_bit_as_before(key):
    """The named strategy the flags build draws the same images, crops, configurations and weights
    in the same order from the generator, and scores each step with the same loss, as the one joint
    strategy did; and describes itself as its checkpoints did."""
    flags, extra, name, digest = EARLIER_RECIPES[key]
    strategy = _earlier_recipe(key)
    assert strategy.name == name
    assert _trace(strategy, _id_split(n=65)) == digest
    assert strategy.describe() == {**_EARLIER_JOINT, **flags, **extra}


def test_earlier_checkpoints_resume_under_their_flags_alone():
    """--resume compares the checkpoint's strategy with the run's: each earlier checkpoint resumes
    under the flags it was trained with, and under no other combination."""
    from train.checkpoint import CheckpointError, check_resumable
    from train.engine import checkpoint_meta

    cfg, dataset = TrainConfig(), Dataset("d", ["a", "b"], 16, {}, "fp")
    meta = lambda strategy: {**checkpoint_meta(RunSpec("anychannel", "anychannel"), dataset, "task1"),  # noqa: E731
                             "strategy": strategy}
    for key, (flags, extra, _, _) in EARLIER_RECIPES.items():
        earlier = {**meta({**_EARLIER_JOINT, **flags, **extra}), "train_config": asdict(cfg)}
        for other in EARLIER_RECIPES:
            run = meta(_earlier_recipe(other).describe())
            if other == key:
                check_resumable(earlier, Path("last.pt"), cfg, run, dataset)
            else:
                with pytest.raises(CheckpointError, match="different settings"):
                    check_resumable(earlier, Path("last.pt"), cfg, run, dataset)


@pytest.mark.parametrize("strategy_type, options", [
    (JointStrategy, {"allocation": list(strategies.ALLOCATIONS)}),
    (SandwichStrategy, {"configs_per_step": [1, 3, 7]}),
    (SharedStrategy, {"configs_per_step": [None, 1, 3, 7]}),
    (DistillStrategy, {"configs_per_step": [None, 1, 3, 7], "temperature": [1.0, 4.0]}),
])
def test_any_value_of_a_strategys_option_goes_with_any_of_another(strategy_type, options):
    """No strategy checks one option against another: every combination of its options builds and trains."""
    split, model = _id_split(n=65), _ProbeModel(65)
    values = {**options, "grouped": [True, False]}
    for combination in itertools.product(*values.values()):
        strategy = build_strategy(strategy_type.name, ALL_CONFIGS, **dict(zip(values, combination)))
        groups = next(strategy.steps(split, 28, torch.Generator().manual_seed(0)))
        assert len(groups) == len(strategy.group_sizes(28)) and all(len(g.labels) >= 2 for g in groups)
        assert torch.isfinite(strategy.loss(model, groups, 0.1).loss)
