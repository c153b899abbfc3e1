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
    (FixedConfig((ChannelConfig("GB"),)), {"GB"}),
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


def test_inverse_channels_allocation_gives_fewer_channels_more_of_each_step():
    """``--allocation inverse-channels``: views in proportion to 1/channels, the same views per epoch."""
    split = _id_split(n=126)
    uniform, traded = JointConfigs(), JointConfigs(allocation="inverse-channels")
    assert uniform.group_sizes(126) == [18] * 7
    assert traded.group_sizes(126) == [9, 13, 13, 13, 26, 26, 26]  # RGB, RG, GB, RB, R, G, B
    assert strategies.allocate(10, [1, 1, 1]) == [4, 3, 3] and strategies.allocate(7, [0.5, 0.5]) == [4, 3]
    # Half way (1/sqrt(channels)): RGB 12.8, two channels 15.6, one channel 22.1 of 126, rounded to sum 126.
    assert JointConfigs(allocation="inverse-sqrt-channels").group_sizes(126) == [13, 16, 16, 15, 22, 22, 22]
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
    model = create_model("adaptive", num_classes=126, **TINY_ADAPTIVE).train()
    by_channels = lambda logits, y, x, c: torch.tensor(float(c.num_channels))  # noqa: E731
    loss = traded.loss(model, steps[0], 0.1, by_channels).loss
    assert loss.item() == pytest.approx((9 * 3 + 39 * 2 + 78 * 1) / 126)


def test_allocated_steps_split_across_ranks_into_the_one_process_batch():
    from train.distributed import Shard

    split, strategy = _id_split(n=126), JointConfigs(allocation="inverse-channels")
    whole = next(strategy.steps(split, 126, torch.Generator().manual_seed(0)))
    shares = [next(strategy.steps(split, 126, torch.Generator().manual_seed(0), Shard(r, 2))) for r in range(2)]
    for i, g in enumerate(whole):
        parts = [share[i] for share in shares]
        assert sorted(torch.cat([p.labels for p in parts]).tolist()) == sorted(g.labels.tolist())
        # DDP averages 2 ranks' means over 7 groups; weighted so, each view counts 1/126, as in one process.
        assert g.weight == pytest.approx(7 * len(g.labels) / 126)
        assert all(p.weight == pytest.approx(2 * 7 * len(p.labels) / 126) for p in parts)


@pytest.mark.parametrize("strategy", [
    FixedConfig((ChannelConfig("RG"),)), SampledConfig(), JointConfigs(), JointConfigs(share_images=True),
    JointConfigs(configs_per_step=3), JointConfigs(allocation="inverse-sqrt-channels")],
    ids=["fixed", "sampled", "joint", "shared", "sandwich", "allocated"])
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
    with pytest.raises(ValueError, match="unknown allocation 'nope'; choose from uniform, inverse-channels, inverse-sqrt-channels"):
        JointConfigs(allocation="nope")
    for bad in ({"share_images": True}, {"configs_per_step": 3}):
        with pytest.raises(ValueError, match="own images"):
            JointConfigs(allocation="inverse-channels", **bad)
    with pytest.raises(ValueError, match="fewer than 2 images"):
        JointConfigs(allocation="inverse-channels").group_sizes(14)  # RGB would get 1 of 14
    with pytest.raises(ValueError, match="--configs-per-step, --share-images: options of --strategy joint; not with --strategy sampled"):
        Task1Options(strategy="sampled", configs_per_step=3, share_images=True)
    with pytest.raises(ValueError, match="not with --strategy sampled"):
        Task1Options(strategy="sampled", allocation="inverse-channels")
    assert SampledConfig().group_sizes(128) == [128]
    # The default's description is what checkpoints written before the option hold: they resume.
    assert "allocation" not in JointConfigs().describe()
    assert JointConfigs(allocation="inverse-channels").describe()["allocation"] == "inverse-channels"


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
    (["--allocation", "nope"], "unknown allocation 'nope'"),
    (["--models", ""], "--models: no model given; choose from adaptive, naive, course"),
    (["--nproc", "2", "--strategy", "bogus"], "unknown training strategy 'bogus'"),  # before torchrun starts
    (["--nproc", "2", "--models", "naive", "--width", "2"], "--width: options of our model"),
    (["--nproc", "10", "--allocation", "inverse-channels"], "9 images per step, fewer than the 10 processes"),
    (["--models", "naive", "--width", "0.5", "--distill"], "--width, --distill: options of our model; add adaptive"),
    (["--strategy", "sampled", "--share-images"], "--share-images: options of --strategy joint"),
    (["--image-size", "8"], "--image-size 8 is too small for adaptive"),
    (["--image-size", "8", "--models", "naive"], "--image-size 8 is too small for naive"),
    (["--epochs", "0"], "'--epochs'"),
    (["--train-eval-samples", "0"], "'--train-eval-samples'"),
    (["--batch-size", "1"], "'--batch-size'"),
    (["--allocation", "inverse-channels", "--share-images"], "own images"),
    (["--mix", "blend"], "unknown --mix 'blend'; choose from none, mixup, cutmix"),
    (["--mix", "cutmix", "--share-images", "--distill"], "--mix cutmix with --distill"),
    (["--nproc", "2", "--mix", "mixup", "--mix-alpha", "-1"], "--mix-alpha must be positive"),
    (["--mix-alpha", "0.2"], "--mix-alpha 0.2 needs --mix mixup or cutmix"),
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


def test_the_sampled_strategy_passes_the_cli_checks(tmp_path):
    """``--strategy sampled`` (the earlier recipe) reaches the data, as every documented strategy must."""
    from typer.testing import CliRunner

    import cli

    missing = tmp_path / "missing"
    result = CliRunner().invoke(cli.app, ["train", "task1", "--strategy", "sampled", "--data", str(missing)])
    assert result.exit_code == 2 and f"dataset folder {missing} does not exist" in result.output, result.output


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
