"""The training strategies: which configurations each step trains, on which images, with which targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.channels import ALL_CONFIGS, ChannelConfig
from train import strategies
from train.data import SplitTensors
from train.data.cache import Dataset, Split
from train.engine import RunSpec, TrainConfig, fit
from train.models import create_model
from train.strategies import FixedConfig, JointConfigs, SampledConfig, build_strategy, sandwich_configs
from train.task1 import Task1Options

from conftest import TINY_ADAPTIVE

RGB = ChannelConfig("RGB")


def _id_split(n: int = 70, size: int = 16) -> SplitTensors:
    """Labels 0..n-1, so each label names its image."""
    rng = np.random.default_rng(0)
    return SplitTensors(Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n)))


def test_joint_epoch_shows_every_image_once_to_every_configuration():
    split = _id_split()
    strategy = JointConfigs()
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
    groups = next(JointConfigs(share_images=True).steps(split, 70, torch.Generator().manual_seed(1)))
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
    strategy = JointConfigs(share_images=True, distill=True)
    groups = next(strategy.steps(split, 70, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    model = create_model("adaptive", num_classes=70, **TINY_ADAPTIVE).train()
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
    (JointConfigs(), {c.name for c in ALL_CONFIGS}),
    (FixedConfig(ChannelConfig("GB")), {"GB"}),
])
def test_each_step_updates_the_configurations_it_trains(strategy, expected):
    split = _id_split()
    torch.manual_seed(0)
    model = create_model("adaptive", num_classes=70, **TINY_ADAPTIVE).train()
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
    strategy = JointConfigs(configs_per_step=3, share_images=True, distill=True)
    assert strategy.precise_bn  # some configurations skip steps
    torch.manual_seed(0)
    model = create_model("adaptive", num_classes=70, **TINY_ADAPTIVE).train()
    groups = next(strategy.steps(split, 69, torch.Generator().manual_seed(0)))
    strategy.loss(model, groups, 0.1).loss.backward()
    trained = {name for name, has in _config_norm_grads(model).items() if has}
    assert trained == {g.config.name for g in groups} and len(trained) == 3


def test_sandwich_on_own_images_shows_each_image_three_times_per_epoch():
    """``--configs-per-step 3`` alone: three configurations per step, each on its own images (3/7 of the views)."""
    split = _id_split(n=72)
    strategy = JointConfigs(configs_per_step=3)
    steps = list(strategy.steps(split, 72, torch.Generator().manual_seed(0)))
    assert len(steps) == strategy.steps_per_epoch(len(split), 72) == 3
    streams: list[list[int]] = [[], [], []]
    for groups in steps:
        assert len(groups) == 3 and groups[0].config == RGB and any(g.config.num_channels == 1 for g in groups)
        assert len({tuple(g.labels.tolist()) for g in groups}) == 3  # not the same images
        for stream, g in zip(streams, groups):
            stream += g.labels.tolist()
    assert all(sorted(s) == list(range(72)) for s in streams)  # each group slot: one pass over the images


def test_strategy_options_are_checked():
    with pytest.raises(ValueError, match="share their images"):
        JointConfigs(distill=True)
    with pytest.raises(ValueError, match="1 to 7"):
        JointConfigs(configs_per_step=0)
    with pytest.raises(ValueError, match="fewer than 2 images"):
        JointConfigs().group_size(13)
    with pytest.raises(ValueError, match="unknown training strategy"):
        build_strategy("nope", ALL_CONFIGS)
    assert isinstance(build_strategy("joint", (RGB,)), FixedConfig)  # one configuration: nothing to mix
    assert isinstance(Task1Options(strategy="sampled").adaptive_spec().build_strategy(), SampledConfig)
    assert not JointConfigs().precise_bn and SampledConfig().precise_bn


def test_width_narrows_ours_alone_and_leaves_default_checkpoints_alone():
    from train.task1 import run_specs

    narrow = Task1Options(width=0.7)
    assert narrow.adaptive_spec().model_kwargs == {"body": "plain", "width": 0.7}
    assert all("width" not in spec.model_kwargs for spec in run_specs("naive", narrow))  # the reference stays
    probe = Task1Options(width=0.5, naive_width=0.5)  # the benchmark's capacity probe narrows both
    assert all(spec.model_kwargs["width"] == 0.5 for spec in run_specs("naive", probe))
    assert Task1Options().adaptive_spec().model_kwargs == {"body": "plain"}  # resumable as before
    assert "width" not in run_specs("course", probe)[0].model_kwargs  # the published design keeps its size
    with pytest.raises(ValueError, match="positive number"):
        Task1Options(naive_width=float("inf"))


def test_fit_counts_views_and_flops(synthetic_dataset, tmp_path):
    s = synthetic_dataset.splits
    cut = lambda sp, n: Split(sp.images[:n], sp.labels[:n])  # noqa: E731
    data = Dataset("tiny", synthetic_dataset.class_names, 16,
                   {"train": cut(s["train"], 140), "val": cut(s["val"], 32), "test": cut(s["test"], 32)}, "fp")
    spec = RunSpec("adaptive", "adaptive", dict(TINY_ADAPTIVE))
    torch.manual_seed(0)
    model = create_model("adaptive", num_classes=data.num_classes, **TINY_ADAPTIVE)
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
])
def test_train_refuses_bad_strategy_options_before_loading_data(args, message, tmp_path):
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, ["train", "task1", "--data", str(tmp_path / "missing"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_width_0_7_trains_in_under_half_the_naive_sets_flops():
    """The documented half-compute option: per view, ours at 0.7x width costs under half a naive CNN."""
    from train.engine import step_flops

    def train_flops(model, configs) -> float:
        return sum(f["train"] for f in step_flops(model, configs, 32).values())

    naive = sum(train_flops(create_model("naive", num_classes=50, channels=c.name), (c,)) for c in ALL_CONFIGS)
    narrow = train_flops(create_model("adaptive", num_classes=50, width=0.7), ALL_CONFIGS)
    full = train_flops(create_model("adaptive", num_classes=50), ALL_CONFIGS)
    assert 0.45 < narrow / naive <= 0.5
    assert full / naive == pytest.approx(1.0, abs=1e-3)  # the default spends the naive set's compute
