import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from runtime.channels import ALL_CONFIGS, ChannelConfig
from train.models import create_model, list_models
from train.models.layers import ChannelAdaptiveStem, DynamicConv2d, activate_groups, dynamic_conv

from conftest import TINY_ANYCHANNEL, first_body_norm


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (1, 0)])
def test_sum_form_equals_aggregated_kernel_definition(stride, padding):
    torch.manual_seed(0)
    x = torch.randn(5, 6, 9, 9)
    attention = torch.softmax(torch.randn(5, 4), dim=1)
    weight, bias = torch.randn(4, 7, 6, 3, 3), torch.randn(4, 7)
    expected = dynamic_conv(x, attention, weight, bias, stride, padding, form="aggregated")
    # The definition, written out per sample: one kernel sum_k a_k W_k for each image.
    for i in range(5):
        w = (attention[i].view(4, 1, 1, 1, 1) * weight).sum(0)
        b = attention[i] @ bias
        ref = torch.nn.functional.conv2d(x[i : i + 1], w, b, stride=stride, padding=padding)
        torch.testing.assert_close(expected[i : i + 1], ref, rtol=1e-5, atol=1e-5)
    for form in ("sum", "unfold", "stacked"):
        torch.testing.assert_close(dynamic_conv(x, attention, weight, bias, stride, padding, form=form), expected,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown dynamic convolution form 'nope'; choose from sum, aggregated"):
        dynamic_conv(x, attention, weight, form="nope")


def test_unfold_form_trains_channels_last_with_the_reference_gradients():
    """The training form hands the channels-last body a channels-last map (no conversion at
    every following layer), with the same values and gradients as the summed form."""
    torch.manual_seed(3)
    x = torch.randn(4, 2, 9, 9)
    attention = torch.softmax(torch.randn(4, 4), dim=1).requires_grad_()
    weight = torch.randn(4, 8, 2, 3, 3, requires_grad=True)
    bias = torch.randn(4, 8, requires_grad=True)
    y = dynamic_conv(x, attention, weight, bias, 1, 1, form="unfold")
    assert y.is_contiguous(memory_format=torch.channels_last)
    upstream = torch.randn_like(y)
    grads = torch.autograd.grad((y * upstream).sum(), (weight, bias, attention))
    ref = dynamic_conv(x, attention, weight, bias, 1, 1)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), (weight, bias, attention))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-4)


def test_dynamic_conv_module_forms_agree():
    torch.manual_seed(1)
    conv = DynamicConv2d(3, 8, 3, num_kernels=4)
    x = torch.randn(3, 3, 8, 8)
    y_sum = conv(x)
    for form in ("aggregated", "unfold", "stacked"):
        conv.form = form
        torch.testing.assert_close(conv(x), y_sum, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=str)
def test_resolved_stem_equals_stem(config):
    torch.manual_seed(2)
    stem = ChannelAdaptiveStem(8).eval()
    with torch.no_grad():
        stem.config_bias.normal_()
        for norm in stem.norm.norms:
            norm.running_mean.normal_()
    x = torch.randn(4, config.num_channels, 12, 12)
    torch.testing.assert_close(stem.resolve(config)(x), stem(x, config), rtol=1e-5, atol=1e-5)


def test_body_batch_norm_is_per_configuration_and_resolved():
    from train.models.layers import ConfigBatchNorm2d

    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=4, **TINY_ANYCHANNEL).train()
    model(torch.randn(8, 1, 16, 16), ChannelConfig("R"))
    first = first_body_norm(model)
    assert isinstance(first, ConfigBatchNorm2d)
    r, rgb = first.select(ChannelConfig("R")), first.select(ChannelConfig("RGB"))
    assert r.num_batches_tracked == 1 and rgb.num_batches_tracked == 0  # only R's statistics moved
    resolved = model.resolve(ChannelConfig("R"))
    assert not any(isinstance(m, ConfigBatchNorm2d) for m in resolved.modules())


def test_resolved_stem_holds_only_its_configuration():
    stem = ChannelAdaptiveStem(8)
    full = sum(p.numel() for p in stem.parameters())
    r = sum(p.numel() for p in stem.resolve(ChannelConfig("R")).parameters())
    rgb = sum(p.numel() for p in stem.resolve(ChannelConfig("RGB")).parameters())
    assert r < rgb < full


@pytest.mark.parametrize("name,kwargs", [("anychannel", TINY_ANYCHANNEL), ("course", {"hidden": (64, 32)})])
def test_multi_config_models_forward_all_seven(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **kwargs).eval()
    for config in ALL_CONFIGS:
        x = torch.randn(2, config.num_channels, 32, 32)
        logits = model(x, config)
        assert logits.shape == (2, 5) and torch.isfinite(logits).all()
        torch.testing.assert_close(model.resolve(config)(x), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=str)
def test_naive_model_per_configuration(config):
    model = create_model("naive", num_classes=4, channels=config.name).eval()
    assert model(torch.randn(2, config.num_channels, 16, 16)).shape == (2, 4)
    other = next(c for c in ALL_CONFIGS if c != config)
    with pytest.raises(ValueError, match="trained for"):
        model(torch.randn(2, other.num_channels, 16, 16), other)


def test_anychannel_rejects_wrong_channel_count():
    model = create_model("anychannel", num_classes=3, **TINY_ANYCHANNEL)
    with pytest.raises(ValueError, match="RG input needs 2 channels"):
        model(torch.randn(1, 3, 16, 16), ChannelConfig("RG"))


def test_registry():
    assert {"anychannel", "naive", "course", "static"} <= set(list_models())
    with pytest.raises(KeyError, match="known"):
        create_model("nope", num_classes=2)


def test_course_design_is_about_the_published_size():
    params = sum(p.numel() for p in create_model("course", num_classes=50).parameters())
    assert 14.5e6 < params < 16e6  # published: 15.35M


def test_anychannel_is_much_smaller_than_course():
    ours = sum(p.numel() for p in create_model("anychannel", num_classes=50).parameters())
    assert ours < 15.35e6 / 4


@pytest.mark.parametrize("body,width", [("plain", 1.0), ("residual", 1.0), ("plain", 0.7), ("residual", 0.5)])
def test_static_baseline_has_the_anychannel_models_body(body, width):
    """The export-latency baseline must differ from our model by its stem alone, at any width."""
    from runtime.channels import ChannelConfig

    rgb = ChannelConfig("RGB")
    anychannel = create_model("anychannel", num_classes=10, body=body, width=width).eval()
    static = create_model("static", num_classes=10, body=body, width=width).eval()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(static.body) == count(anychannel.resolve(rgb)[1])
    assert type(static.body) is type(anychannel.body)


def test_width_multiplier_scales_every_layer_of_ours_and_the_naive_cnn():
    def conv_widths(model: torch.nn.Module) -> list[int]:
        return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]

    naive = create_model("naive", num_classes=10, channels="RG", width=0.5)
    assert conv_widths(naive) == [16, 32, 64, 128]
    ours, ours_full = create_model("anychannel", num_classes=10, width=0.5), create_model("anychannel", num_classes=10)
    assert ours.stem.weight.shape[1] == 16 and conv_widths(ours.body) == [32, 64, 128]
    assert conv_widths(ours_full.body) == [64, 128, 256]
    x = torch.randn(2, 1, 32, 32)
    assert ours.eval()(x, ChannelConfig("G")).shape == (2, 10)
    for bad in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive number"):
            create_model("naive", num_classes=10, width=bad)


@pytest.mark.parametrize("kwargs", [{"width": 0.7}, {"width": 0.5, "body": "residual"},
                                    {"width": 2.0, "widths": (8, 16, 32), "stem_width": 8},
                                    {"config_layers": 2, "widths": (8, 16, 32), "stem_width": 8}])
def test_a_narrowed_model_comes_back_from_its_checkpoint(kwargs, tmp_path):
    """``width`` and ``config_layers`` travel in the checkpoint's model kwargs: export and resume rebuild
    the same shapes."""
    from train.checkpoint import model_from_checkpoint

    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=10, **kwargs).eval()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": "anychannel", "model_kwargs": kwargs, "class_names": [str(i) for i in range(10)],
                "state_dict": model.state_dict()}, path)
    restored = model_from_checkpoint(torch.load(path, weights_only=True)).eval()  # strict load
    x = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(restored(x, ChannelConfig("RB")), model(x, ChannelConfig("RB")))


def _grouped_batch(sizes=(5, 3, 4, 2, 6, 3, 4)):
    torch.manual_seed(1)
    return [torch.randn(n, c.num_channels, 16, 16) for n, c in zip(sizes, ALL_CONFIGS)]


@pytest.mark.parametrize("body", ["plain", "residual"])
@pytest.mark.parametrize("config_layers", [0, 1], ids=["shared-convs", "last-conv-per-config"])
def test_grouped_forward_equals_one_pass_per_group_forward_and_backward(config_layers, body):
    """One pass of the shared body over all groups: same logits, gradients and per-configuration
    batch-norm statistics (and per-configuration layers) as a pass per group, up to float error.
    The plain body runs each norm, ReLU and pool per slice; the residual one each norm per slice."""
    torch.manual_seed(0)
    per_group = create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL, dropout=0.0,
                             config_layers=config_layers, body=body).train()
    grouped = copy.deepcopy(per_group)
    xs = _grouped_batch()
    expected = [per_group(x, c) for x, c in zip(xs, ALL_CONFIGS)]
    got = grouped.forward_groups(xs, ALL_CONFIGS)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    weights = torch.randn(sum(len(x) for x in xs), 10)  # a loss that weighs every logit differently
    (torch.cat(expected) * weights).sum().backward()
    (torch.cat(got) * weights).sum().backward()
    for (name, p), q in zip(per_group.named_parameters(), grouped.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, b), c in zip(per_group.named_buffers(), grouped.buffers()):
        torch.testing.assert_close(c.float(), b.float(), rtol=1e-5, atol=1e-6, msg=name)
    # Each configuration's norms saw only its own slice: RGB's running mean moved, from RGB's images alone.
    body_norm = first_body_norm(grouped)
    assert not torch.allclose(body_norm.norms[0].running_mean, body_norm.norms[4].running_mean)
    # The slices are gone afterwards: a plain forward of one configuration works.
    assert grouped(xs[4], ALL_CONFIGS[4]).shape == (len(xs[4]), 10)


def test_plain_body_per_slice_tails_equal_whole_batch_ones():
    """The plain body's grouped pass with each norm, ReLU and pool per slice (the CPU's default) equals
    the one with a ReLU and a pool over the whole batch (elsewhere), forward and backward."""
    torch.manual_seed(0)
    model = create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL, dropout=0.0).train().double()
    other = copy.deepcopy(model)
    groups = list(zip(ALL_CONFIGS, (5, 3, 4, 2, 6, 3, 4)))
    x = torch.randn(sum(n for _, n in groups), 8, 8, 8, dtype=torch.float64)
    outputs = []
    for m, per_slice in ((model, True), (other, False)):
        activate_groups(m.body, groups)
        out = m.body.after_pool_groups(x, per_slice=per_slice)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1])
    for (name, p), q in zip(model.named_parameters(), other.parameters()):
        if p.grad is not None or q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, b), c in zip(model.named_buffers(), other.buffers()):
        torch.testing.assert_close(b, c, msg=name)


def _stem_groups(case: str, least: int) -> tuple[list[torch.Tensor], list[ChannelConfig]]:
    """Groups for ``case``; none under ``least`` images (a norm in training needs two)."""
    if case == "every-config":
        return [x.double() for x in _grouped_batch()], list(ALL_CONFIGS)
    configs = {"one-group": ["GB"], "repeated-configs": ["R", "RB", "R", "RGB"]}[case]
    sizes = [max(least, n) for n in {"one-group": [3], "repeated-configs": [1, 2, 3, 1]}[case]]
    torch.manual_seed(2)
    return ([torch.randn(n, len(c), 16, 16, dtype=torch.float64) for n, c in zip(sizes, configs)],
            [ChannelConfig(c) for c in configs])


@pytest.mark.parametrize("case", ["every-config", "one-group", "repeated-configs"])
@pytest.mark.parametrize("stem", ["conv-with-bias-strided", "stem"])
def test_stem_forward_groups_equals_one_call_per_group(stem, case):
    """The batched kernel attention and kernel mixing of a grouped step: the same outputs and gradients
    (kernels, attention, per-configuration biases and norms) as the stem called once per group, for
    any groups (one, repeated configurations, single images where no norm follows) and a strided,
    biased convolution; in
    evaluation the per-group exported form itself. In float64, so the two orders of summation agree to
    torch's float64 defaults on any CPU."""
    from train.models.layers import ChannelAdaptiveConv, ChannelAdaptiveStem

    torch.manual_seed(0)
    if stem == "stem":
        per_group = ChannelAdaptiveStem(6)
    else:  # a ResNet's first convolution made channel-adaptive
        per_group = ChannelAdaptiveConv.from_conv(torch.nn.Conv2d(3, 6, 7, stride=2, padding=3, bias=True))
        with torch.no_grad():
            per_group.bias.normal_()
    per_group.double()
    with torch.no_grad():
        per_group.config_bias.normal_()  # distinct per configuration, as after training
    batched = copy.deepcopy(per_group)
    xs, configs = _stem_groups(case, least=2 if stem == "stem" else 1)
    expected = [per_group(x, c) for x, c in zip(xs, configs)]
    got = batched.forward_groups(xs, configs)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e)
        assert g.is_contiguous(memory_format=torch.channels_last) == e.is_contiguous(memory_format=torch.channels_last)
    weights = [torch.randn_like(e) for e in expected]
    sum((e * w).sum() for e, w in zip(expected, weights)).backward()
    sum((g * w).sum() for g, w in zip(got, weights)).backward()
    for (name, p), q in zip(per_group.named_parameters(), batched.parameters()):
        if p.grad is None:
            assert q.grad is None or not q.grad.any(), name
            continue
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    batched.eval(), per_group.eval()  # (running statistics differ by the training outputs' float error)
    for x, c, g in zip(xs, configs, batched.forward_groups(xs, configs)):
        torch.testing.assert_close(g, per_group(x, c))
        assert torch.equal(g, batched(x, c))
    with pytest.raises(ValueError, match="RB input needs 2 channels, got 3"):
        batched.train().forward_groups([xs[0], torch.randn(2, 3, 16, 16, dtype=torch.float64)],
                                       [configs[0], ChannelConfig("RB")])


def test_config_layers_give_each_configuration_its_own_last_convolution():
    """``config_layers=1``: the body's last convolution is kept per configuration (each trains its own
    copy), FLOPs unchanged; ``resolve`` keeps one copy, so the exported graph is a plain network."""
    from train.models.layers import ConfigLayer
    from train.report import count_flops

    torch.manual_seed(0)
    shared = create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL)
    model = create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL, config_layers=1)
    (layer,) = [m for m in model.modules() if isinstance(m, ConfigLayer)]
    assert len(layer.layers) == len(ALL_CONFIGS) and layer.layers[0].out_channels == TINY_ANYCHANNEL["widths"][-1]
    x = torch.randn(3, 1, 16, 16)
    model(x, ChannelConfig("R")).sum().backward()  # only R's copy learns from an R batch
    grads = [c.weight.grad for c in layer.layers]
    assert grads[ChannelConfig("R").index] is not None and sum(g is not None for g in grads) == 1
    model.eval()
    for config in ALL_CONFIGS:
        resolved = model.resolve(config).eval()
        assert not any(isinstance(m, ConfigLayer) for m in resolved.modules())
        y = torch.randn(2, config.num_channels, 16, 16)
        torch.testing.assert_close(resolved(y), model(y, config))
        assert count_flops(resolved, config, 16) == count_flops(shared.resolve(config), config, 16)
    with pytest.raises(ValueError, match="between 0 and the body's 3 convolutions, got 4"):
        create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL, config_layers=4)
    from train.task1 import Task1Options

    with pytest.raises(ValueError, match="config_layers keeps the compact network's"):
        Task1Options(config_layers=1, backbone="resnet18")


def test_grouped_batch_refuses_per_configuration_weights_it_cannot_slice():
    from train.models.layers import ChannelAdaptiveConv, activate_groups

    with pytest.raises(TypeError, match="ChannelAdaptiveConv .*cannot run a grouped batch"):
        activate_groups(torch.nn.Sequential(ChannelAdaptiveConv(4)), [(ALL_CONFIGS[0], 2)])


def test_joint_steps_run_the_body_once_unless_asked_per_group(monkeypatch):
    from train.data import SplitTensors
    from train.data.cache import Split
    from train.strategies import JointStrategy

    rng = np.random.default_rng(0)
    split = SplitTensors(Split(rng.integers(0, 256, (70, 16, 16, 3), dtype=np.uint8), np.arange(70) % 10))
    groups = next(JointStrategy().steps(split, 70, torch.Generator().manual_seed(0)))
    model = create_model("anychannel", num_classes=10, **TINY_ANYCHANNEL).train()
    calls = []
    # The body's first convolution: shared by the grouped pass (the pools and norms around it run per slice).
    first_conv = model.body.blocks[0]
    monkeypatch.setattr(first_conv, "forward", lambda x: calls.append(len(x)) or nn.Conv2d.forward(first_conv, x))
    JointStrategy().loss(model, groups, 0.1)
    assert calls == [70]
    calls.clear()
    JointStrategy(grouped=False).loss(model, groups, 0.1)
    assert calls == [10] * 7
    # The default describes itself as before the option existed, so earlier checkpoints resume.
    assert "grouped" not in JointStrategy().describe() and JointStrategy(grouped=False).describe()["grouped"] is False
