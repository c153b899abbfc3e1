"""Batch mixing (--mix): what each group trains on, and how the loss uses it."""
import pytest
import torch
import torch.nn.functional as F

from runtime.channels import ALL_CONFIGS, ChannelConfig
from train.data.mixing import BatchMix, check_mix
from train.strategies import ConfigGroup, JointStrategy


def _groups(n=8, classes=5):
    torch.manual_seed(0)
    return [ConfigGroup(torch.randn(n, c.num_channels, 8, 8), torch.arange(n) % classes, c) for c in ALL_CONFIGS]


def test_no_mix_trains_on_the_groups_as_drawn():
    groups = _groups()
    assert BatchMix("none", 1.0, 5)(groups) is groups


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_each_group_is_mixed_within_itself_with_soft_targets(kind):
    groups = _groups()
    torch.manual_seed(1)
    mixed = BatchMix(kind, 1.0, 5)(groups)
    for before, after in zip(groups, mixed):
        assert after.config == before.config and after.inputs.shape == before.inputs.shape
        assert torch.equal(after.labels, before.labels)  # train accuracy counts against the unmixed labels
        assert after.targets.shape == (8, 5) and torch.allclose(after.targets.sum(1), torch.ones(8))
        # Each image is paired with its neighbour in the group (torchvision rolls the batch by one):
        # the targets put the rest of the mass on the neighbour's label, the same ratio for the whole group.
        own = after.targets[torch.arange(8), before.labels]
        other = after.targets[torch.arange(8), before.labels.roll(1)]
        assert torch.allclose(own + other, torch.ones(8)) and torch.allclose(own, own[0].expand(8))
        lam = float(own[0])
        if kind == "mixup":
            assert torch.allclose(after.inputs, lam * before.inputs + (1 - lam) * before.inputs.roll(1, 0), atol=1e-6)
        else:  # a box of the neighbour's pixels, whose area sets the ratio
            pasted = (after.inputs != before.inputs).any(1)[0]
            assert abs(float(pasted.float().mean()) - (1 - lam)) < 1e-6


def test_mixing_follows_the_global_generator():
    """fit seeds it per epoch and rank, so a resumed run mixes as an uninterrupted one."""
    mix = BatchMix("cutmix", 1.0, 5)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(mix(_groups()))
    for a, b in zip(*runs):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)


def test_a_group_of_one_image_is_left_as_it_is():
    one = [ConfigGroup(torch.randn(1, 3, 8, 8), torch.tensor([2]), ChannelConfig("RGB"))]
    assert BatchMix("mixup", 1.0, 5)(one)[0].targets is None


def test_the_loss_uses_the_mixed_targets():
    groups = BatchMix("mixup", 1.0, 5)(_groups())
    model = lambda x, config: x.flatten(1)[:, :5]  # noqa: E731 (logits that depend on the inputs)
    result = JointStrategy().loss(model, groups, label_smoothing=0.0)
    expected = torch.stack([F.cross_entropy(model(g.inputs, g.config), g.targets) for g in groups]).mean()
    assert torch.allclose(result.loss, expected)


@pytest.mark.parametrize("kind, alpha, distill, message", [
    ("blend", 1.0, False, "unknown --mix 'blend'; choose from none, mixup, cutmix"),
    ("cutmix", 0.0, False, "--mix-alpha must be positive"),
    ("mixup", 1.0, True, "--mix mixup with --distill"),
])
def test_bad_mix_options_are_named(kind, alpha, distill, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_mix(kind, alpha, distill)


def test_an_alpha_without_a_mix_is_refused():
    """Else a run without mixing would record another recipe than the default, and not resume it."""
    with pytest.raises(ValueError, match="--mix-alpha 0.5 needs --mix mixup or cutmix"):
        check_mix("none", 0.5)


def test_fit_refuses_mixing_with_in_place_distillation(tmp_path, synthetic_dataset):
    from train.engine import RunSpec, TrainConfig, fit
    from train.models import create_model

    spec = RunSpec("anychannel", "anychannel", {}, strategy="distill")
    model = create_model("anychannel", num_classes=synthetic_dataset.num_classes)
    with pytest.raises(ValueError, match="--mix cutmix with --distill"):
        fit(model, spec, synthetic_dataset, tmp_path, TrainConfig(epochs=1, mix="cutmix"), "task1", log=lambda _: None)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_task2_distillation_takes_mixed_targets():
    """Task 2's teacher loss gets soft targets under --mix; cross-entropy takes them as they are."""
    from train.distill import distillation_loss

    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    hard = torch.tensor([0, 1, 2, 3])
    one_hot = F.one_hot(hard, 5).float()
    assert torch.allclose(distillation_loss(student, teacher, one_hot), distillation_loss(student, teacher, hard))
